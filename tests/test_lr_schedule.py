"""The learning-rate schedules by hand, and an unknown one refused by its config key."""

from __future__ import annotations

import math

import pytest

from sia_core.config import get_preset
from sia_core.config_checks import validate_config
from sia_core.errors import SIAError
from sia_core.lr_schedule import lr_at


def test_constant_poly_and_cosine_by_hand():
    assert [lr_at(1e-3, "constant", i, 10) for i in (0, 5, 9)] == [1e-3] * 3
    # poly: base (1 - t/T)^0.9
    assert lr_at(1e-3, "poly", 0, 10) == pytest.approx(1e-3)
    assert lr_at(1e-3, "poly", 5, 10) == pytest.approx(1e-3 * 0.5**0.9)
    assert lr_at(1e-3, "poly", 9, 10) == pytest.approx(1e-3 * 0.1**0.9)
    assert lr_at(1e-3, "poly", 10, 10) == 0.0
    # cosine: base (1 + cos(pi t/T)) / 2
    assert lr_at(2.0, "cosine", 0, 4) == pytest.approx(2.0)
    assert lr_at(2.0, "cosine", 1, 4) == pytest.approx(1 + math.cos(math.pi / 4))
    assert lr_at(2.0, "cosine", 2, 4) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        lr_at(1.0, "step", 0, 4)


def test_an_unknown_schedule_is_refused_by_name():
    cfg = get_preset("test")
    cfg.train.lr_schedule = "step"
    with pytest.raises(SIAError, match="train.lr_schedule"):
        validate_config(cfg)
