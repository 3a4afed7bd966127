"""Stain augmentation in H&E space: scale each stain's concentration, as slides from other labs differ.

Colour jitter in RGB moves every hue together; between laboratories it is the amounts of hematoxylin and eosin
that differ. Following Tellez et al. (2018, "HED augmentation"), an image is unmixed into hematoxylin, eosin
and a residual channel with scikit-image's Ruifrok-Johnston matrices (``skimage.color.hed_from_rgb``), each
concentration is scaled by its own factor, and the image is mixed back. Glass (zero concentration) stays white.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import hed_from_rgb, rgb_from_hed

__all__ = ["scale_stains", "random_stain_scale"]


def scale_stains(rgb: np.ndarray, factors: tuple[float, float, float]) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with its hematoxylin, eosin and residual concentrations scaled by ``factors``."""
    # Optical density, unmixed with scikit-image's Ruifrok-Johnston matrices. Unlike skimage's rgb2hed this keeps
    # negative concentrations, so factors of 1 give the image back (rgb2hed clips them: up to 31 levels off).
    od = -np.log(np.maximum(rgb, 1).astype(np.float32) / 255.0)
    scale = (hed_from_rgb * np.asarray(factors)[None, :]) @ rgb_from_hed  # one 3x3 map: unmix, scale, mix
    out = 255.0 * np.exp(-(od @ scale.astype(np.float32)))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def random_stain_scale(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """``img`` (3, H, W) uint8 with H and E scaled by factors drawn from U(1 - sigma, 1 + sigma).

    Randomness comes from torch's global generator, as for the other training views. The residual channel
    is left as it is (it carries no stain).
    """
    if sigma <= 0:
        return img
    h, e = (1.0 + sigma * (2.0 * torch.rand(2) - 1.0)).tolist()
    rgb = img.permute(1, 2, 0).numpy()
    return torch.from_numpy(scale_stains(rgb, (h, e, 1.0))).permute(2, 0, 1).contiguous()
