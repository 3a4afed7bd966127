"""What the decoder trains on: mosaics with exact masks, class-balanced L_seg, the confidence band, glass."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sia_core.build import build_model
from sia_core.config import apply_variant, get_preset
from sia_core.data.mosaic import MosaicSource, mosaic_labels, single_label_pools
from sia_core.data.train_dataset import MOSAIC, BatchSchedule, TrainSample, WeakLabelDataset
from sia_core.objective import IGNORE, TrainBatch, seg_loss, sia_losses

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=np.uint8)


def solid_pools(n_per_class: int = 2) -> tuple[list[list[Path]], dict[Path, np.ndarray]]:
    """Single-label 'images' of one solid colour per class, read from a dict instead of files."""
    images: dict[Path, np.ndarray] = {}
    pools: list[list[Path]] = [[], [], []]
    for c in range(3):
        for k in range(n_per_class):
            p = Path(f"class{c}_{k}.png")
            images[p] = np.broadcast_to(COLOURS[c], (40, 50, 3)).copy()
            pools[c].append(p)
    return pools, images


def test_single_label_pools_keep_one_class_images_only():
    paths = [Path(f"{i}.png") for i in range(5)]
    labels = [np.array(v) for v in ([1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1])]
    assert single_label_pools(paths, labels, 3) == [[paths[0]], [paths[3]], [paths[2], paths[4]]]


def test_mosaic_mask_is_exact_and_reproducible():
    pools, images = solid_pools()
    src = MosaicSource(pools, 32, images.__getitem__)
    assert src.available
    for seed in range(20):
        rgb, mask = src(seed)
        assert rgb.shape == (32, 32, 3) and mask.shape == (32, 32)
        # every pixel shows the colour of the class its mask names (pieces larger than the canvas are cropped)
        np.testing.assert_array_equal(rgb, COLOURS[mask])
        assert len(np.unique(mask)) >= 2  # a mosaic always has a boundary
        rgb2, mask2 = src(seed)
        np.testing.assert_array_equal(rgb, rgb2)
        np.testing.assert_array_equal(mask, mask2)
    assert not np.array_equal(src(0)[1], src(1)[1])


def test_mosaics_need_two_classes():
    pools, images = solid_pools()
    src = MosaicSource([pools[0], [], []], 32, images.__getitem__)
    assert not src.available
    with pytest.raises(ValueError, match="two classes"):
        src(0)


def test_mosaic_labels_follow_the_two_percent_rule():
    mask = np.zeros((10, 10), dtype=np.int64)
    mask[0, :1] = 1  # 1 % of tissue: not labelled
    mask[5:, :] = 2
    ignore = np.zeros((10, 10), dtype=bool)
    assert mosaic_labels(mask, ignore, 3).tolist() == [1, 0, 1]
    ignore[5:, :] = True  # class 2 is all glass: not labelled; class 1 is now 2 % of the tissue: labelled
    assert mosaic_labels(mask, ignore, 3).tolist() == [1, 1, 0]


def test_schedule_puts_mosaics_in_the_last_slots_and_is_resumable():
    s = BatchSchedule(10, 4, 6, seed=3, mosaics=1)
    full = [s.batch(i) for i in range(6)]
    assert all(batch[-1][0] == MOSAIC and all(i >= 0 for i, _ in batch[:-1]) for batch in full)
    assert len({seed for b in full for _, seed in b}) == 24  # every slot its own seed
    assert list(BatchSchedule(10, 4, 6, seed=3, start=2, mosaics=1)) == full[2:]
    seen = [i for b in full[:4] for i, _ in b if i != MOSAIC][:10]
    assert sorted(seen) == list(range(10))  # the real images still go round in epochs
    weighted = BatchSchedule(10, 4, 6, seed=3, weights=np.ones(10), mosaics=2)
    assert [i for i, _ in weighted.batch(0)][2:] == [MOSAIC, MOSAIC]
    assert BatchSchedule(10, 4, 6, seed=3, mosaics=9).batch(0)[0][0] != MOSAIC  # one real image at least


def test_dataset_makes_mosaic_samples_with_exact_supervision(tmp_path):
    from PIL import Image

    samples = []
    for c in range(3):
        p = tmp_path / f"c{c}.png"
        Image.fromarray(np.broadcast_to(COLOURS[c], (64, 64, 3)).copy()).save(p)
        samples.append(TrainSample(p, np.eye(3)[c]))
    cfg = get_preset("test")
    cfg.data.classes = ["a", "b", "c"]
    cfg.data.white_background = False
    cfg.train.augment.jitter_p = cfg.train.augment.grayscale_p = cfg.train.augment.blur_p = 0.0
    ds = WeakLabelDataset(samples, cfg, dam=False)
    out = ds[(MOSAIC, 123)]
    assert bool(out["has_mask"])
    mask = out["mask"].numpy()
    assert set(np.unique(mask)) <= {0, 1, 2} and len(np.unique(mask)) >= 2
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), COLOURS[mask])
    assert out["labels"].tolist() == [float(c in np.unique(mask)) for c in range(3)]


def test_seg_loss_class_balance_by_hand():
    logits = torch.tensor([[[[2.0, 0.0, 0.0, 1.0]], [[0.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 3.0, 0.0]]]])  # (1,3,1,4)
    target = torch.tensor([[[0, 0, 1, IGNORE]]])
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")[0, 0, :3]
    assert seg_loss(logits, target, 3, 0.0) == pytest.approx(float(ce.mean()))
    # 3 counted pixels, 2 classes present: class 0 weighs 3 / (2 * 2) = 0.75, class 1 3 / (2 * 1) = 1.5
    w = torch.tensor([0.75, 0.75, 1.5])
    assert seg_loss(logits, target, 3, 1.0) == pytest.approx(float((ce * w).sum() / w.sum()))
    w_half = w.sqrt()
    assert seg_loss(logits, target, 3, 0.5) == pytest.approx(float((ce * w_half).sum() / w_half.sum()))
    assert seg_loss(logits, torch.full_like(target, IGNORE), 3, 1.0) == 0.0


def _targets(cfg, batch, monkeypatch) -> torch.Tensor:
    """The L_seg target sia_losses builds for ``batch`` (captured from its seg_loss call)."""
    seen = {}

    def capture(logits, target, num_classes, balance):
        seen["target"] = target.clone()
        return logits.sum() * 0

    monkeypatch.setattr("sia_core.objective.seg_loss", capture)
    torch.manual_seed(0)
    sia_losses(build_model(cfg).train(), batch, cfg, progress=0.9)
    return seen["target"]


def _batch(glass: bool) -> TrainBatch:
    g = torch.Generator().manual_seed(0)
    ignore = torch.zeros(2, 64, 64, dtype=torch.bool)
    ignore[:, :8] = glass
    return TrainBatch(
        image=torch.randn(2, 3, 64, 64, generator=g),
        labels=torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        ignore=ignore,
        mask=torch.full((2, 64, 64), IGNORE, dtype=torch.long),
        has_mask=torch.zeros(2, dtype=torch.bool),
    )


def test_confidence_band_ignores_unsure_pixels_of_multi_class_images_only(monkeypatch):
    cfg = apply_variant(get_preset("test"), "a")
    cfg.data.classes = ["tumor", "stroma", "normal"]
    base = _targets(cfg, _batch(False), monkeypatch)
    assert (base != IGNORE).all()
    cfg.train.seg_confidence = 0.6
    banded = _targets(cfg, _batch(False), monkeypatch)
    changed = banded != base
    assert changed[0].any() and (banded[0][changed[0]] == IGNORE).all()  # some unsure pixels left out
    assert not changed[1].any()  # single-class image: every pixel stays


def test_glass_is_ignored_unless_seg_on_glass(monkeypatch):
    cfg = apply_variant(get_preset("test"), "a")
    cfg.data.classes = ["tumor", "stroma", "normal"]
    t = _targets(cfg, _batch(True), monkeypatch)
    assert (t[:, :8] == IGNORE).all() and (t[:, 8:] != IGNORE).all()
    cfg.train.seg_on_glass = True
    t = _targets(cfg, _batch(True), monkeypatch)
    assert (t != IGNORE).all() and (t[1] == 2).all()


def test_training_par_refines_on_the_half_size_image_and_targets_stay_full_size(monkeypatch):
    from sia_core.models.par import pixel_adaptive_refine

    seen = []

    def spy(image, maps, *args, **kwargs):
        seen.append((tuple(image.shape[-2:]), tuple(maps.shape)))
        return pixel_adaptive_refine(image, maps, *args, **kwargs)

    monkeypatch.setattr("sia_core.objective.pixel_adaptive_refine", spy)
    cfg = apply_variant(get_preset("test"), "a")
    cfg.data.classes = ["tumor", "stroma", "normal"]
    plain = _targets(cfg, _batch(False), monkeypatch)
    assert seen == []
    cfg.train.refine_pseudo = True
    refined = _targets(cfg, _batch(False), monkeypatch)
    assert [s[0] for s in seen] == [(32, 32)]  # the 64 px batch, downsampled x2 (ToCo), once per step
    assert refined.shape == plain.shape == (2, 64, 64)
    assert (refined[1] == 2).all()  # a single-class image keeps its one class
    assert (refined[0] != plain[0]).any() and set(refined[0].unique().tolist()) <= {0, 1}


def test_detached_decoder_leaves_the_encoder_to_the_other_losses():
    cfg = apply_variant(get_preset("test"), "a")
    cfg.data.classes = ["tumor", "stroma", "normal"]
    cfg.model.decoder_detach = True
    torch.manual_seed(0)
    model = build_model(cfg).train()
    x = torch.randn(1, 3, 64, 64)
    model(x).seg.sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert not math.isnan(float(model.decoder.classifier.weight.grad.sum()))


def test_par_moves_a_token_grid_boundary_onto_the_colour_edge():
    from sia_core.models.par import pixel_adaptive_refine

    image = torch.zeros(1, 3, 64, 64)
    image[:, 0, :, :32] = 1.0  # red left half, blue right half: the true boundary is x = 32
    image[:, 2, :, 32:] = 1.0
    image += 0.02 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    c0 = torch.tensor([1.0, 1.0, 0.7, 0.0]).expand(4, 4)  # the coarse map puts the boundary inside column 2
    coarse = torch.stack([c0, 1 - c0])[None]  # (1, 2, 4, 4)
    truth = (torch.arange(64) >= 32).expand(64, 64)
    before = F.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False).argmax(1)[0]
    after_maps = pixel_adaptive_refine(image, coarse)
    after = after_maps.argmax(1)[0]
    assert float((before == truth).float().mean()) < 0.9
    assert float((after == truth).float().mean()) > 0.97
    torch.testing.assert_close(after_maps.sum(1), torch.ones(1, 64, 64))  # probabilities stay probabilities


def test_refined_prediction_maps_agree_with_its_label_maps():
    from sia_core.argmax import class_argmax
    from sia_core.predictor import SIAPredictor

    cfg = apply_variant(get_preset("test"), "f")
    cfg.data.classes = ["tumor", "stroma", "normal"]
    cfg.infer.refine = True
    torch.manual_seed(0)
    pred = SIAPredictor(build_model(cfg), cfg, "cpu")
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    p = pred.predict(rgb, labels=[1, 1, 0], mask_background=False)
    np.testing.assert_array_equal(p.pseudo_label, class_argmax(p.rsm, p.labels))
    np.testing.assert_array_equal(p.label_map, class_argmax(p.probabilities))
    cfg.infer.refine = False
    plain = pred.predict(rgb, labels=[1, 1, 0], mask_background=False)
    assert not np.allclose(plain.rsm, p.rsm)  # the returned maps are the refined ones


def test_mosaic_asked_for_without_single_label_images_is_said(tmp_path):
    from sia_core.data.synthetic import make_synthetic_dataset
    from sia_core.run_config import resolve_train_config, training_samples
    from sia_core.train import train_iter

    data = make_synthetic_dataset(tmp_path / "data", n_train=4, n_val=0, size=64, seed=1)
    cfg = resolve_train_config(str(data), preset="test", overrides=["train.iterations=1", "train.mosaic=0.5"])
    samples = [s for s in training_samples(str(data), cfg) if s.labels.sum() > 1]  # no single-label image
    with pytest.warns(UserWarning, match="train.mosaic=0.5 is off"):
        list(train_iter(cfg, samples, tmp_path / "run"))
