"""Region Self-modulation Module (docs/method.md §4): training-free fusion of the CAM A and the inhibition map I.

    A'   = Norm(up(AvgPool_k(A_grid)))                 region-consistent activation
    I'   = Norm(up(AvgPool_k(I_grid)))                 class-wise average-pooled inhibition map
    I'_h = I' * erode(I' >= delta_obj)                 high-confidence core
    R    = max(A, I'_h * A')                           the paper's Eq. 3
    label = argmax over present classes of R

Norm(x) = ReLU(x) / (max_spatial ReLU(x) + 1e-5). No parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..argmax import channel_argmax

__all__ = ["RSMOutput", "max_norm", "erode", "rsm_fuse", "masked_argmax"]


@dataclass
class RSMOutput:
    """Maps at the output resolution, all (B, C, H, W) in [0, 1] and zero for absent classes."""

    activation: torch.Tensor
    """A', the region-consistent activation map."""
    inhibition: torch.Tensor
    """I', the class-wise average-pooled inhibition map."""
    inhibition_core: torch.Tensor
    """I'_h, I' inside its eroded object mask."""
    result: torch.Tensor
    """R = max(A, I'_h * A')."""


def max_norm(x: torch.Tensor) -> torch.Tensor:
    """ReLU, then divide each (B, C) channel by its spatial max (+1e-5)."""
    x = F.relu(x)
    return x / (x.flatten(2).amax(-1)[..., None, None] + 1e-5)


def erode(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Binary erosion of a float {0, 1} mask (B, C, H, W) with a k x k square (k odd): a pixel stays 1 when its
    whole window (clipped at the border) is 1. Same result as ``1 - max_pool(1 - mask)``; the window mean is
    about twice as fast on the CPU (one zero pulls the mean to at most 1 - 1/k^2)."""
    if k <= 1:
        return mask
    mean = F.avg_pool2d(mask, k, stride=1, padding=k // 2, count_include_pad=False)
    return (mean > 1 - 0.5 / (k * k)).to(mask.dtype)


def rsm_fuse(
    cam: torch.Tensor,
    inhibition_grid: torch.Tensor,
    labels: torch.Tensor,
    pool: int = 3,
    obj_threshold: float = 0.5,
    erosion: int = 7,
    cam_grid: torch.Tensor | None = None,
) -> RSMOutput:
    """Fuse A and I.

    Args:
        cam: A, the normalised CAM at the output resolution (B, C, H, W) in [0, 1].
        inhibition_grid: I on the token grid (B, C, h, w), min-max normalised.
        labels: present classes (B, C) in {0, 1}; absent classes are zeroed.
        pool: average-pool kernel on the token grid.
        obj_threshold: delta_obj for the object mask of I'.
        erosion: erosion kernel in output pixels.
        cam_grid: A on the token grid; by default A area-downsampled to the grid of I.
    """
    size = cam.shape[-2:]
    grid = inhibition_grid.shape[-2:]
    if cam_grid is None:
        cam_grid = F.adaptive_avg_pool2d(cam, grid)
    present = labels[:, :, None, None].to(cam.dtype)

    def smooth(x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, pool, stride=1, padding=pool // 2, count_include_pad=False)
        return max_norm(F.interpolate(x, size=size, mode="bilinear", align_corners=False))

    a_prime = smooth(cam_grid.to(cam.dtype)) * present
    i_prime = smooth(inhibition_grid.to(cam.dtype)) * present
    core = erode((i_prime >= obj_threshold).to(cam.dtype), erosion)
    i_core = i_prime * core
    result = torch.maximum(cam * present, i_core * a_prime)
    return RSMOutput(activation=a_prime, inhibition=i_prime, inhibition_core=i_core, result=result)


def masked_argmax(maps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Argmax over the present classes only (absent channels can never win, even on all-zero ties)."""
    neg = torch.finfo(maps.dtype).min
    return channel_argmax(maps.masked_fill(labels[:, :, None, None] < 0.5, neg))
