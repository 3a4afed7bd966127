"""Stain augmentation: H and E amounts scaled independently, the image otherwise unchanged, glass white."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import rgb2hed

from sia_core.config import AugmentConfig
from sia_core.data.stain import random_stain_scale, scale_stains
from sia_core.data.synthetic import make_synthetic_region
from sia_core.data.views import TrainViews


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    return make_synthetic_region(96, np.random.default_rng(7))[0]


def test_factors_of_one_give_the_image_back(tissue: np.ndarray) -> None:
    np.testing.assert_array_equal(scale_stains(tissue, (1.0, 1.0, 1.0)), tissue)


def test_each_stain_is_scaled_by_its_own_factor(tissue: np.ndarray) -> None:
    before, after = rgb2hed(tissue), rgb2hed(scale_stains(tissue, (1.3, 0.7, 1.0)))
    dark = before[..., 0] > 0.05  # stained pixels, where uint8 rounding is small against the amount
    assert after[..., 0][dark].mean() / before[..., 0][dark].mean() == pytest.approx(1.3, abs=0.03)
    pink = before[..., 1] > 0.05
    assert after[..., 1][pink].mean() / before[..., 1][pink].mean() == pytest.approx(0.7, abs=0.03)


def test_glass_stays_white() -> None:
    white = np.full((8, 8, 3), 255, np.uint8)
    np.testing.assert_array_equal(scale_stains(white, (1.5, 0.5, 1.0)), white)


def test_random_scale_is_off_at_zero_and_seeded(tissue: np.ndarray) -> None:
    img = torch.from_numpy(tissue).permute(2, 0, 1).contiguous()
    assert random_stain_scale(img, 0.0) is img
    torch.manual_seed(3)
    a = random_stain_scale(img, 0.3)
    torch.manual_seed(3)
    b = random_stain_scale(img, 0.3)
    assert a.shape == img.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, img)


def test_training_views_apply_the_stain_draw(tissue: np.ndarray) -> None:
    # With every other augmentation off, the classification view is the stain-scaled image itself.
    aug = AugmentConfig(flip=False, rot90=False, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, stain=0.3)
    img = torch.from_numpy(tissue).permute(2, 0, 1).contiguous()
    torch.manual_seed(0)
    out = TrainViews(96, aug, dam=False)(tissue, np.zeros(tissue.shape[:2], bool))
    torch.manual_seed(0)
    assert torch.equal(out["image"], random_stain_scale(img, 0.3)) and not torch.equal(out["image"], img)
