"""The random rescale of the training views: image, ignore mask and corrected mask move together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sia_core.config import AugmentConfig, get_preset
from sia_core.config_checks import validate_config
from sia_core.data.views import IGNORE, TrainViews
from sia_core.errors import SIAError

PLAIN = {"flip": False, "rot90": False, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0}


def half_and_half(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top half red class 1, bottom half blue class 0; an ignored glass band (a quarter of the width) at the left."""
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[: size // 2] = (200, 0, 0)
    rgb[size // 2 :] = (0, 0, 200)
    mask = np.zeros((size, size), np.uint8)
    mask[: size // 2] = 1
    ignore = np.zeros((size, size), bool)
    ignore[:, : size // 4] = True
    return rgb, ignore, mask


def test_off_by_default_gives_the_image_back():
    rgb, ignore, mask = half_and_half(32)
    out = TrainViews(32, AugmentConfig(**PLAIN), dam=False)(rgb, ignore, mask)
    assert torch.equal(out["image"], torch.from_numpy(rgb).permute(2, 0, 1))
    assert torch.equal(out["mask"], torch.from_numpy(mask).long())


def test_a_half_size_draw_pads_with_ignored_glass_and_keeps_the_masks_on_the_image():
    rgb, ignore, mask = half_and_half(32)
    torch.manual_seed(0)
    out = TrainViews(32, AugmentConfig(**PLAIN, scale=(0.5, 0.5)), dam=False)(rgb, ignore, mask)
    img, ign, msk = out["image"], out["ignore"], out["mask"]
    # The 16 x 16 copy sits at the top left (the pad goes right and down); the rest is white, ignored glass.
    # (The antialiased resize blends the two rows at the colour edge.)
    assert (img[0, :7, :16] == 200).all() and (img[2, :7, :16] == 0).all()
    assert (img[0, 9:16, :16] == 0).all() and (img[2, 9:16, :16] == 200).all()
    assert (msk[:8, :16] == 1).all() and (msk[8:16, :16] == 0).all()
    assert ign[:16, :4].all() and not ign[:16, 4:16].any()
    assert (img[:, 16:] == 255).all() and (img[:, :, 16:] == 255).all()
    assert ign[16:].all() and ign[:, 16:].all() and (msk[16:] == IGNORE).all() and (msk[:, 16:] == IGNORE).all()


def test_a_double_size_draw_crops_one_window_from_image_and_masks_alike():
    rgb, ignore, mask = half_and_half(32)
    torch.manual_seed(3)
    out = TrainViews(32, AugmentConfig(**PLAIN, scale=(2.0, 2.0)), dam=False)(rgb, ignore, mask)
    red = out["image"][0] > out["image"][2]
    assert torch.equal(red, out["mask"] == 1)
    # Ignored columns are the leftmost 16 of the 64-wide copy: inside the window they stay a left band.
    cols = out["ignore"].any(0)
    assert torch.equal(out["ignore"], cols[None].expand_as(out["ignore"]))
    assert not cols[-1]


def test_out_of_range_scale_is_refused():
    cfg = get_preset("test")
    cfg.train.augment.scale = (1.2, 0.8)
    with pytest.raises(SIAError, match="train.augment.scale"):
        validate_config(cfg)
