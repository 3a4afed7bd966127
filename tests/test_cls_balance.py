"""`train.cls_balance`: rare classes' positive labels weighted in L_cls, by hand and wired into training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sia_core.train as train_module
from sia_core.config import get_preset
from sia_core.config_checks import validate_config
from sia_core.data.synthetic import make_synthetic_dataset
from sia_core.errors import SIAError
from sia_core.objective import cls_loss, rare_class_weights
from sia_core.run_config import resolve_train_config, training_samples
from sia_core.train import train_iter

LABELS = [np.array(v) for v in ([1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 0])]


def test_rare_class_weights_by_hand():
    # p = 3/4, 3/4, 1/4: only the third class is rare, its odds (1 - 1/4) / (1/4) = 3.
    np.testing.assert_allclose(rare_class_weights(LABELS, None, 1.0), [1, 1, 3])
    np.testing.assert_allclose(rare_class_weights(LABELS, None, 0.5), [1, 1, math.sqrt(3)])
    np.testing.assert_allclose(rare_class_weights(LABELS, None, 0.0), [1, 1, 1])
    # Drawn three times as often, the third image makes class 2 present in 3 / 6 draws: not rare any more.
    np.testing.assert_allclose(rare_class_weights(LABELS, np.array([1.0, 1.0, 3.0, 1.0]), 1.0), [1, 1, 1])


def test_cls_loss_is_the_soft_margin_loss_with_positives_weighted():
    logits = torch.tensor([[0.3, -1.2, 0.8], [-0.5, 2.0, -0.1]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    plain = F.multilabel_soft_margin_loss(logits, y)
    assert torch.equal(cls_loss(logits, y, None), plain)
    torch.testing.assert_close(cls_loss(logits, y, torch.ones(3)), plain)
    # By hand: the one positive of class 2 (logit 0.8) counts three times, the rest once; mean over 6 terms.
    weighted = cls_loss(logits, y, torch.tensor([1.0, 1.0, 3.0]))
    extra = 2 * -math.log(1 / (1 + math.exp(-0.8))) / 6
    assert float(weighted) == pytest.approx(float(plain) + extra, rel=1e-6)


def test_config_refuses_a_negative_cls_balance():
    cfg = get_preset("test")
    cfg.train.cls_balance = -1.0
    with pytest.raises(SIAError, match="train.cls_balance"):
        validate_config(cfg)


@pytest.mark.parametrize("power", [0.0, 1.0])
def test_training_passes_the_weights_of_its_own_draws(tmp_path, monkeypatch, power):
    data = make_synthetic_dataset(tmp_path / "data", n_train=8, n_val=2, size=64, seed=1)
    sets = ["train.iterations=1", "train.val_every=0", "train.balance=0.5", f"train.cls_balance={power}"]
    cfg = resolve_train_config(str(data), preset="test", overrides=sets)
    samples = training_samples(str(data), cfg)
    seen = []
    real = train_module.sia_losses

    def spy(*args, cls_pos_weight=None, **kw):
        seen.append(cls_pos_weight)
        return real(*args, cls_pos_weight=cls_pos_weight, **kw)

    monkeypatch.setattr(train_module, "sia_losses", spy)
    list(train_iter(cfg, samples, tmp_path / "run"))
    assert len(seen) == 1
    if power == 0:
        assert seen[0] is None
    else:
        draws = train_module.balanced_weights([s.labels for s in samples], 0.5)
        expected = rare_class_weights([s.labels for s in samples], draws, 1.0)
        assert expected.max() > 1  # the synthetic set has a rare class, so wrong wiring would show
        np.testing.assert_allclose(seen[0].cpu().numpy(), expected, rtol=1e-6)
