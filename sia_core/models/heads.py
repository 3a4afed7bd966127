"""Patch-token classifier (CAM) and the LargeFOV segmentation decoder (docs/method.md §1.3, §5.2)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CAMClassifier", "LargeFOV"]


class CAMClassifier(nn.Module):
    """Bias-free 1x1 convolution over the patch-token map; image logits from pooled tokens.

    Args:
        dim: token dimension D.
        num_classes: number of classes C.
        pooling: 'gmp' (global max pooling, the paper's setting), 'gap', or 'topk' (per feature, the mean of
            the ``topk`` largest token values: gradient reaches more tokens than with GMP, which helps
            training from random initialisation, while staying selective unlike GAP).
        topk: fraction of tokens for 'topk'.
    """

    def __init__(self, dim: int, num_classes: int, pooling: str = "gmp", topk: float = 0.25) -> None:
        super().__init__()
        if pooling not in ("gmp", "gap", "topk"):
            raise ValueError(f"unknown pooling '{pooling}' (use gmp, gap or topk)")
        self.pooling, self.topk = pooling, topk
        self.conv = nn.Conv2d(dim, num_classes, kernel_size=1, bias=False)

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D, 1, 1)."""
        if self.pooling == "gmp":
            return F.adaptive_max_pool2d(feats, 1)
        if self.pooling == "gap":
            return F.adaptive_avg_pool2d(feats, 1)
        flat = feats.flatten(2)
        k = max(1, round(self.topk * flat.shape[-1]))
        return flat.topk(k, dim=-1).values.mean(-1)[..., None, None]

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Image logits z = W . pool(P2d), (B, C)."""
        return self.conv(self.pool(feats)).flatten(1)

    def cam(self, feats: torch.Tensor) -> torch.Tensor:
        """Class activation map ReLU(W * P2d), (B, C, h, w)."""
        return F.relu(self.conv(feats))


class LargeFOV(nn.Module):
    """DeepLab LargeFOV head: two dilated 3x3 convolutions and a 1x1 classifier, bias-free (MoRe conv_head).

    Args:
        dim: input channels D.
        num_classes: output classes C (no background channel).
        channels: hidden width (512 in the paper setting).
        dilation: dilation of the 3x3 convolutions (5 in the paper setting).
    """

    def __init__(self, dim: int, num_classes: int, channels: int = 512, dilation: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.classifier = nn.Conv2d(channels, num_classes, 1, bias=False)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Segmentation logits on the token grid, (B, C, h, w)."""
        x = F.relu(self.conv1(feats))
        x = F.relu(self.conv2(x))
        return self.classifier(x)
