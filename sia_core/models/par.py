"""Pixel-adaptive refinement (PAR, ToCo / MoRe; docs/method.md §4 "optional refinement"): class maps made at token
resolution (one value per 16 x 16 px) are propagated along the image's own colour edges.

Each pixel repeatedly takes the affinity-weighted mean of its neighbours' class scores, 8 neighbours at each
of several dilations. The affinity of a neighbour falls with its colour distance (scaled by the local colour
spread) and, a little, with its distance, so scores flow freely inside a region of one colour and stop at a
colour edge. Boundaries between tumour epithelium (dark, hematoxylin) and stroma (pink, eosin) then follow
the tissue instead of the token grid. No parameters; a few element-wise passes at image resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["pixel_adaptive_refine"]

_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _neighbours(x: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """(B, K, H, W) -> (B, K, N, H, W): the 8 neighbours at every dilation (replicate padding at borders)."""
    pad = max(dilations)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    h, w = x.shape[-2:]
    out = [
        padded[..., pad + dy * d : pad + dy * d + h, pad + dx * d : pad + dx * d + w]
        for d in dilations
        for dy, dx in _OFFSETS
    ]
    return torch.stack(out, dim=2)


def pixel_adaptive_refine(
    image: torch.Tensor,
    maps: torch.Tensor,
    dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
    iterations: int = 10,
    colour_scale: float = 0.3,
    distance_weight: float = 0.01,
) -> torch.Tensor:
    """Refine class maps along colour edges.

    Args:
        image: the (normalised or raw) image (B, 3, H, W).
        maps: class scores or probabilities (B, C, H', W'); resized to (H, W) first.
        dilations: neighbour distances in px.
        iterations: propagation steps.
        colour_scale: w1 of ToCo: smaller = sharper colour edges.
        distance_weight: w2 of ToCo: the share of the purely spatial affinity.

    Returns:
        The refined maps (B, C, H, W); a convex combination of neighbours at every step, so values stay in
        the input's range and probabilities stay probabilities.
    """
    image = image.float()
    maps = F.interpolate(maps.float(), size=image.shape[-2:], mode="bilinear", align_corners=False)
    near = _neighbours(image, dilations)  # (B, 3, N, H, W)
    diff = (near - image[:, :, None]).abs()
    spread = near.std(dim=2, keepdim=True)
    colour = -((diff / (spread + 1e-8) / colour_scale) ** 2).mean(1)  # (B, N, H, W)
    dist = torch.tensor(
        [float(d * (dy * dy + dx * dx) ** 0.5) for d in dilations for dy, dx in _OFFSETS], device=image.device
    )
    spatial = -((dist / (dist.std() + 1e-8) / colour_scale) ** 2)
    affinity = colour.softmax(1) + distance_weight * spatial.softmax(0)[None, :, None, None]
    affinity = affinity / affinity.sum(1, keepdim=True)
    for _ in range(iterations):
        maps = (_neighbours(maps, dilations) * affinity[:, None]).sum(2)
    return maps
