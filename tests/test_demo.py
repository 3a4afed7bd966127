"""``sia-core demo``: every phase says what it does, the figure carries its caption and the scores."""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from tqdm import tqdm

import sia_core.demo as demo
import sia_core.train as train


def test_demo_prints_every_phase_and_the_label_free_score(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO_TRAIN", 6)
    monkeypatch.setattr(demo, "DEMO_VAL", 3)
    monkeypatch.setattr(demo, "DEMO_SIZE", 64)
    monkeypatch.setattr(demo, "DEMO_PRESET", "test")
    result = demo.run_demo(tmp_path / "demo", iterations=2, device="cpu")
    out = capsys.readouterr().out
    phases = re.findall(r"^\[(\d)/5\] (\w+)", out, flags=re.M)
    assert phases == [("1", "making"), ("2", "training"), ("3", "scoring"), ("4", "writing"), ("5", "drawing")]
    assert len(re.findall(r"^      done in \d+ s", out, flags=re.M)) == 5
    last = out.strip().splitlines()[-1]
    assert re.search(r"with no image labels given, on the 3 validation patches: mIoU \d\.\d\d \(tumor", last)
    assert last.endswith(f"Open {tmp_path / 'demo' / 'overview.png'}")
    figure = Image.open(result["figure"])
    assert figure.width >= 1400 and figure.height >= 700  # 7 columns at a readable size


def test_caption_names_the_budget_and_both_scores_in_either_result_layout():
    cfg = SimpleNamespace(
        data=SimpleNamespace(classes=["tumor", "stroma", "normal"]),
        model=SimpleNamespace(
            backbone="vit_tiny_patch16_224", backbone_kwargs={"depth": 6}, pretrained=None, conv_stem=True
        ),
        train=SimpleNamespace(batch_size=16),
    )
    decoder = {"mIoU": 0.61, "IoU": [0.7, 0.6, 0.53]}
    rsm = {"mIoU": 0.72, "IoU": [0.8, 0.7, 0.66]}
    flat = {"decoder": decoder, "rsm": rsm}
    by_protocol = {"label_free": {"decoder": decoder}, "labels_given": {"decoder": {}, "rsm": rsm}}
    for results in (flat, by_protocol):
        caption = demo.figure_caption(results, cfg, 100, 250.0, 192, 24)
        assert "100 steps of 16 patches" in caption and "192 patches" in caption and "4.2 min" in caption
        assert "prediction (no labels given) mIoU 0.61 (tumor 0.70, stroma 0.60, normal 0.53)" in caption
        assert "refined masks (image labels given): mIoU 0.72" in caption
        assert "6 blocks, conv stem, random init" in caption and "not real tissue" in caption
    cfg.model.pretrained, cfg.model.conv_stem = "vit_tiny_patch16_224.augreg_in21k", False
    assert "random init" not in demo.figure_caption(by_protocol, cfg, 100, 250.0, 192, 24)


def test_the_figure_rows_are_the_patches_with_the_most_classes(tmp_path):
    from sia_core.data.images import write_palette_png

    items = []
    for i, values in enumerate([[0], [0, 1, 2], [1], [0, 2]]):
        mask = np.full((8, 8), values[0], np.uint8)
        for j, v in enumerate(values):
            mask[j] = v
        path = tmp_path / f"m{i}.png"
        write_palette_png(path, mask, [[0, 0, 0], [1, 1, 1], [2, 2, 2], [255, 255, 255]])
        items.append(SimpleNamespace(mask=path))
    chosen = demo._varied(items, 3, 3, 2)
    assert [c.mask.name for c in chosen] == ["m1.png", "m3.png"]  # kept in their order


def test_ctrl_c_during_demo_training_closes_the_run_inside_the_demo(tmp_path, monkeypatch):
    """A Ctrl-C that lands in the demo's own loop, between two steps: the training generator is closed (its final
    checkpoint written) inside run_demo, so an error of that save reaches the user as an error, not as
    'Exception ignored in: <generator object train_iter>' from the generator's finalizer."""
    monkeypatch.setattr(demo, "DEMO_TRAIN", 4)
    monkeypatch.setattr(demo, "DEMO_VAL", 1)
    monkeypatch.setattr(demo, "DEMO_SIZE", 64)
    monkeypatch.setattr(demo, "DEMO_PRESET", "test")
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    real_iter = train.train_iter

    def saving_fails(*args, **kwargs):
        try:
            yield from real_iter(*args, **kwargs)  # close() is passed on to the real generator
        finally:
            raise OSError("No space left on device")  # as if the final checkpoint's save failed

    monkeypatch.setattr(train, "train_iter", saving_fails)
    real_update = tqdm.update

    def update(bar, n=1):
        real_update(bar, n)
        if bar.n >= 1 and bar.desc.strip() == "train":
            raise KeyboardInterrupt  # Ctrl-C after step 1, in the demo's loop, outside the generator

    monkeypatch.setattr(tqdm, "update", update)
    with pytest.raises(OSError, match="No space left"):
        demo.run_demo(tmp_path / "demo", iterations=3, device="cpu")
    assert unraisable == []
    assert (tmp_path / "demo" / "run" / "last.safetensors").exists()  # the real close ran: step 1 is saved
