"""Argmax over the class axis of stacked class maps, for numpy (C, H, W) and torch (B, C, H, W) arrays.

Both give exactly what ``argmax`` over that axis gives (the first maximum wins) but avoid the reduction over
a strided axis, which numpy and torch run on the CPU up to ten times slower than a few whole-plane passes:
label maps and pseudo-labels are taken for every tile, so this is on the inference hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:  # torch only for the annotation: slide inference imports this module before torch
    import torch

__all__ = ["class_argmax", "channel_argmax"]


def class_argmax(maps: np.ndarray, present: Optional[np.ndarray] = None) -> np.ndarray:
    """Argmax over axis 0 of (C, H, W) maps as uint8, over the ``present`` classes only when given.

    Same as ``np.where(present[:, None, None] > 0, maps, -np.inf).argmax(0)``: absent classes never win, and an
    image with no present class gets 0 everywhere.
    """
    classes = list(range(maps.shape[0])) if present is None else [int(c) for c in np.flatnonzero(present)]
    if not classes:
        return np.zeros(maps.shape[1:], np.uint8)
    best = maps[classes[0]].copy()
    index = np.full(best.shape, classes[0], np.uint8)
    for c in classes[1:]:
        better = maps[c] > best
        index[better] = c
        np.maximum(best, maps[c], out=best)
    return index


def channel_argmax(maps: torch.Tensor) -> torch.Tensor:
    """``maps.argmax(1)`` of (B, C, H, W) maps, with the class axis made the contiguous one first."""
    return maps.permute(0, 2, 3, 1).contiguous().argmax(-1)
