"""White-glass background of H&E images (docs/method.md §6.4, WSSS-Tissue ``gen_bg_mask``).

LUAD pseudo-labels get the ignore index on white glass; BCSS does not use this, because its white regions
(fat) are tissue.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["white_background_mask", "rgb_to_gray"]

# ITU-R BT.601 luma, the weights of OpenCV's RGB2GRAY that WSSS-Tissue thresholds.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3+) RGB on 0..255 -> (H, W) float32 gray on 0..255, rounded like OpenCV's uint8 result."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise ValueError(f"expected (H, W) or (H, W, 3) image, got shape {rgb.shape}")
    return np.rint(rgb[..., :3].astype(np.float32) @ _LUMA)


def white_background_mask(rgb: np.ndarray, threshold: int = 200, min_size: int = 50) -> np.ndarray:
    """Mark white glass: gray > ``threshold``, without 4-connected specks smaller than ``min_size`` px.

    Args:
        rgb: (H, W, 3) uint8 image (RGBA and grayscale are accepted too).
        threshold: Gray level (0..255) above which a pixel is white.
        min_size: Connected white components with fewer pixels are kept as tissue (WSSS-Tissue uses 50,
            TPRO 80 at test time).

    Returns:
        (H, W) bool, True on background.
    """
    white = rgb_to_gray(rgb) > threshold
    if min_size <= 1 or not white.any():
        return white
    # Same result as skimage remove_small_objects(white, min_size, connectivity=1), whose keyword
    # changed name in skimage 0.26; labelling directly works on every version without warnings.
    components, count = ndimage.label(white)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[components]
