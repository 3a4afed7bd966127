"""Convolutional patch embedding (Xiao et al., *Early Convolutions Help Transformers See Better*, NeurIPS 2021).

A ViT's patch embedding is one 16x16 stride-16 convolution: every token starts as a linear function of its own
16x16 pixels. Trained from random init on a few hundred H&E patches, such a model has to learn texture (nuclear
crowding, collagen fibres, alveolar septa) from scratch inside that one linear map. A stack of small stride-2
convolutions with batch norm gives each token a local, translation-equivariant texture descriptor instead, and is
what Xiao et al. found makes ViTs train faster and more stably. The transformer after it is unchanged: same
tokens, same grid, same position embeddings.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ConvStem"]


class ConvStem(nn.Module):
    """Drop-in replacement of ``vit.patch_embed.proj``: (B, 3, H, W) -> (B, dim, H / patch, W / patch).

    ``log2(patch)`` blocks of 3x3 stride-2 convolution + batch norm + ReLU, then a 1x1 convolution to ``dim``.
    Widths double at each stride as in Xiao et al., the last 3x3 conv ``dim`` wide (ViT-Tiny: 24, 48, 96, 192).
    ``depth`` > 1 adds ``depth - 1`` stride-1 3x3 convolutions (+ batch norm + ReLU) after each stride-2 one,
    VGG-style: more texture capacity at each scale, the same grid.

    Args:
        dim: token width of the ViT.
        patch: the ViT's patch size, a power of two (>= 2).
        in_chans: image channels.
        depth: 3x3 convolutions per stride-2 stage (>= 1).
    """

    def __init__(self, dim: int, patch: int = 16, in_chans: int = 3, depth: int = 1) -> None:
        super().__init__()
        steps = int(round(math.log2(patch)))
        if patch < 2 or 2**steps != patch:
            raise ValueError(f"a convolutional stem needs a power-of-two patch size, not {patch}")
        if depth < 1:
            raise ValueError(f"a convolutional stem needs at least one convolution per stage, not {depth}")
        widths = [max(dim // 2 ** (steps - 1 - i), 8) for i in range(steps)]
        layers: list[nn.Module] = []
        c_in = in_chans
        for width in widths:
            for i in range(depth):
                layers += [
                    nn.Conv2d(c_in, width, kernel_size=3, stride=1 if i else 2, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                c_in = width
        layers.append(nn.Conv2d(c_in, dim, kernel_size=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
