"""Training views of one image (docs/method.md §3.1, §5.4): the classification input (= global view 1), the second
global view and the local-crop source, plus the ignore mask and an optional corrected mask.

All geometric augmentation (an optional rescale, flips, 90 degree rotations, crop/pad to the training size) is
applied once and shared by the classification input, the local source, the ignore mask and the corrected mask,
so that the CAM-derived crop ROI and the pixel targets stay aligned with the image. Colour augmentation differs
per view. Tensors stay uint8 here; normalisation happens on the training device.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torchvision.transforms import v2

from ..config import AugmentConfig
from .stain import random_stain_scale

__all__ = ["TrainViews", "IGNORE"]

IGNORE = 255


class TrainViews:
    """Make the views of one training image.

    Args:
        size: training size S (images are padded with white and randomly cropped to S x S).
        aug: augmentation settings.
        dam: also make the second global view and the local source.
    """

    def __init__(self, size: int, aug: AugmentConfig, dam: bool) -> None:
        self.size = size
        self.aug = aug
        self.dam = dam
        jitter = v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue)

        def colour(blur_p: float, solarize_p: float = 0.0) -> v2.Compose:
            ops = [v2.RandomApply([jitter], p=aug.jitter_p), v2.RandomGrayscale(p=aug.grayscale_p)]
            if blur_p > 0:
                ops.append(v2.RandomApply([v2.GaussianBlur(9, sigma=(0.1, 2.0))], p=blur_p))
            if solarize_p > 0:
                ops.append(v2.RandomSolarize(128, p=solarize_p))
            return v2.Compose(ops)

        self.colour_main = colour(aug.blur_p)
        self.colour_local = colour(0.5)
        self.global2 = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=tuple(aug.global_crop_scale), antialias=True),
                v2.RandomHorizontalFlip(),
                colour(0.1, aug.solarize_p),
            ]
        )

    def __call__(
        self, rgb: np.ndarray, ignore: np.ndarray, mask: Optional[np.ndarray] = None
    ) -> dict[str, torch.Tensor]:
        """Views of ``rgb`` (H, W, 3) uint8 with its ignore mask (H, W) bool and optional mask (H, W) uint8.

        Randomness comes from torch's global generator: seed it per sample for reproducible views.
        """
        img = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W) uint8
        ign = torch.from_numpy(np.array(ignore, dtype=bool))[None]
        msk = torch.from_numpy(np.array(mask)).long()[None] if mask is not None else None
        img, ign, msk = self._rescale(img, ign, msk)
        img, ign, msk = self._fit(img, ign, msk)
        if self.aug.flip:
            if torch.rand(()) < 0.5:
                img, ign, msk = (t.flip(-1) if t is not None else None for t in (img, ign, msk))
            if torch.rand(()) < 0.5:
                img, ign, msk = (t.flip(-2) if t is not None else None for t in (img, ign, msk))
        if self.aug.rot90:
            k = int(torch.randint(0, 4, ()))
            if k:
                img, ign, msk = (t.rot90(k, (-2, -1)) if t is not None else None for t in (img, ign, msk))
        img = random_stain_scale(img, self.aug.stain)  # shared by every view: the slide's stain, not the view's
        out = {"image": self.colour_main(img).contiguous(), "ignore": ign[0].contiguous()}
        if msk is not None:
            out["mask"] = msk[0].contiguous()
        if self.dam:
            out["global2"] = self.global2(img).contiguous()
            out["local"] = self.colour_local(img).contiguous()
        return out

    def _rescale(
        self, img: torch.Tensor, ign: torch.Tensor, msk: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Resize by a factor drawn from ``aug.scale`` (bilinear for the image, nearest for the masks)."""
        lo, hi = self.aug.scale
        if lo == hi == 1.0:
            return img, ign, msk
        f = lo + (hi - lo) * float(torch.rand(()))
        _, h, w = img.shape
        size = [max(1, round(h * f)), max(1, round(w * f))]
        img = v2.functional.resize(img, size, antialias=True)
        near = v2.InterpolationMode.NEAREST
        ign = v2.functional.resize(ign.to(torch.uint8), size, interpolation=near).bool()
        if msk is not None:
            msk = v2.functional.resize(msk, size, interpolation=near)
        return img, ign, msk

    def _fit(
        self, img: torch.Tensor, ign: torch.Tensor, msk: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Pad with white glass (ignored) up to S, then take a random S x S crop."""
        s = self.size
        _, h, w = img.shape
        ph, pw = max(0, s - h), max(0, s - w)
        if ph or pw:
            img = torch.nn.functional.pad(img, (0, pw, 0, ph), value=255)
            ign = torch.nn.functional.pad(ign, (0, pw, 0, ph), value=True)
            if msk is not None:
                msk = torch.nn.functional.pad(msk, (0, pw, 0, ph), value=IGNORE)
            h, w = h + ph, w + pw
        if h > s or w > s:
            y0 = int(torch.randint(0, h - s + 1, ()))
            x0 = int(torch.randint(0, w - s + 1, ()))
            img, ign = img[:, y0 : y0 + s, x0 : x0 + s], ign[:, y0 : y0 + s, x0 : x0 + s]
            if msk is not None:
                msk = msk[:, y0 : y0 + s, x0 : x0 + s]
        return img, ign, msk
