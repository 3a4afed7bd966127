"""The training loop: run directory, checkpoints, exact resume, stop, corrected masks, distributed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sia_core.build import read_weights
from sia_core.data.images import write_palette_png
from sia_core.data.sidecars import correction_path
from sia_core.data.synthetic import make_synthetic_dataset
from sia_core.data.train_dataset import BatchSchedule
from sia_core.errors import SIAError
from sia_core.lr_schedule import lr_at
from sia_core.run_config import resolve_train_config, training_samples
from sia_core.train import train_iter


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "data", n_train=12, n_val=4, size=64, seed=1)


def cfg_for(data: Path, iterations: int = 4, **over):
    sets = [f"train.iterations={iterations}", "train.val_every=0", "train.ckpt_every=2"]
    sets += [f"{k}={v}" for k, v in over.items()]
    return resolve_train_config(str(data), preset="test", overrides=sets)


def run_all(cfg, data: Path, out: Path, **kw) -> list:
    return list(train_iter(cfg, training_samples(str(data), cfg), out, **kw))


def test_run_directory_contents(synth, tmp_path):
    cfg = cfg_for(synth)
    infos = run_all(cfg, synth, tmp_path / "run")
    assert [i.iteration for i in infos] == [1, 2, 3, 4]
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.yaml", "last.safetensors", "state.pt", "log.jsonl"}
    _, saved_cfg, meta = read_weights(run / "last.safetensors")
    assert saved_cfg.to_dict() == cfg.to_dict() and meta["iteration"] == 4
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3, 4] and all("loss" in r for r in log)
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["iteration"] == 4


def test_refuses_existing_run_unless_resume_or_force(synth, tmp_path):
    cfg = cfg_for(synth, iterations=2)
    run_all(cfg, synth, tmp_path / "run")
    with pytest.raises(SIAError, match="already holds a run"):
        run_all(cfg, synth, tmp_path / "run")
    assert len(run_all(cfg, synth, tmp_path / "run", force=True)) == 2
    with pytest.raises(SIAError, match="nothing to resume"):
        run_all(cfg, synth, tmp_path / "fresh", resume=True)


@pytest.mark.parametrize(
    ("schedule", "conv_stem", "ema"),
    [("constant", False, 0), ("poly", False, 0), ("constant", True, 0), ("constant", True, 0.5)],
    # the stem's batch-norm running statistics must resume too, and so must the moving average of the weights
    ids=["constant", "poly", "conv_stem", "ema"],
)
def test_resume_matches_uninterrupted_run(synth, tmp_path, schedule, conv_stem, ema):
    over = {"train.lr_schedule": schedule, "model.conv_stem": conv_stem, "train.ema": ema}
    cfg = cfg_for(synth, iterations=4, **over)
    run_all(cfg, synth, tmp_path / "straight")
    gen = train_iter(cfg, training_samples(str(synth), cfg), tmp_path / "stopped")
    for info in gen:
        if info.iteration == 3:  # between checkpoints: stopping must save iteration 3
            break
    gen.close()
    state = torch.load(tmp_path / "stopped" / "state.pt", weights_only=True)
    assert state["iteration"] == 3
    infos = run_all(cfg, synth, tmp_path / "stopped", resume=True)
    assert [i.iteration for i in infos] == [4]
    a, _, _ = read_weights(tmp_path / "straight" / "last.safetensors")
    b, _, _ = read_weights(tmp_path / "stopped" / "last.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    if ema:  # the trained weights resume too, not only the average that last.safetensors serves
        a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)["model"]
        b = torch.load(tmp_path / "stopped" / "state.pt", weights_only=True)["model"]
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    log = [json.loads(line) for line in (tmp_path / "stopped" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3, 4]
    # the rate of every step, resumed ones included, is the schedule's at that step
    assert [r["lr"] for r in log] == pytest.approx([lr_at(cfg.train.lr, schedule, i, 4) for i in range(4)])


def test_moving_average_is_what_the_run_serves(synth, tmp_path):
    from sia_core.build import build_model

    cfg = cfg_for(synth, iterations=2, **{"train.ema": 0.5, "train.ckpt_every": 1, "model.conv_stem": True})
    torch.manual_seed(cfg.train.seed)  # the starting weights, drawn as train_iter draws them
    start = build_model(cfg).state_dict()
    gen = train_iter(cfg, training_samples(str(synth), cfg), tmp_path / "run")
    next(gen)  # one step: average = 0.5 start + 0.5 trained
    state1 = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    list(gen)
    state2 = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    served, _, meta = read_weights(tmp_path / "run" / "last.safetensors")
    assert meta["iteration"] == 2 and set(served) == set(start)
    for k, v in start.items():
        if not v.is_floating_point():  # batch-norm's step count is copied, not averaged
            assert torch.equal(state2["ema"][k], state2["model"][k]), k
            continue
        step1 = 0.5 * v + 0.5 * state1["model"][k]
        torch.testing.assert_close(state1["ema"][k], step1, msg=k)
        torch.testing.assert_close(state2["ema"][k], 0.5 * step1 + 0.5 * state2["model"][k], msg=k)
        torch.testing.assert_close(served[k], state2["ema"][k], msg=k)
    assert any(not torch.equal(served[k], state2["model"][k]) for k in served)


def test_the_average_leaves_training_unchanged(synth, tmp_path):
    # benchmarks/ablation.py --weights trained relies on it: an averaged run's trained weights are a plain run's
    run_all(cfg_for(synth, iterations=3), synth, tmp_path / "plain")
    run_all(cfg_for(synth, iterations=3, **{"train.ema": 0.9}), synth, tmp_path / "averaged")
    plain = torch.load(tmp_path / "plain" / "state.pt", weights_only=True)["model"]
    trained = torch.load(tmp_path / "averaged" / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(plain[k], trained[k]) for k in plain)


def test_resume_refuses_a_config_with_an_average_its_checkpoint_lacks(synth, tmp_path):
    cfg = cfg_for(synth, iterations=2)
    run_all(cfg, synth, tmp_path / "run")
    config = tmp_path / "run" / "config.yaml"
    config.write_text(config.read_text().replace("ema: 0.0", "ema: 0.9"))
    with pytest.raises(SIAError, match="no moving average") as err:
        run_all(cfg, synth, tmp_path / "run", resume=True)
    assert "train.ema" in err.value.fix


def test_validation_keeps_best_checkpoint(synth, tmp_path):
    cfg = cfg_for(synth, iterations=4, **{"train.val_every": 2})
    from sia_core.data.layout import find_split

    infos = run_all(cfg, synth, tmp_path / "run", val_items=find_split(synth, "val"))
    vals = [i.val for i in infos if i.val]
    assert len(vals) == 2 and {"decoder", "cam", "inhibition", "rsm"} <= set(vals[0]["label_free"])
    _, _, meta = read_weights(tmp_path / "run" / "best.safetensors")
    # the best checkpoint is chosen by the label-free decoder, the output a user gets
    assert meta["val_mIoU"] == pytest.approx(max(v["label_free"]["decoder"]["mIoU"] for v in vals))


def test_corrected_mask_becomes_pixel_supervision(synth, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth, data)
    cfg = cfg_for(data)
    first = training_samples(str(data), cfg)[0]
    assert first.mask is None
    mask = np.zeros((64, 64), dtype=np.uint8)
    write_palette_png(correction_path(first.path), mask, cfg.data.palette)
    samples = training_samples(str(data), cfg)
    assert samples[0].mask == correction_path(first.path)
    assert len(samples) == 12  # the saved mask is not taken for a training image
    from sia_core.data.train_dataset import WeakLabelDataset

    item = WeakLabelDataset(samples, cfg, dam=True)[(0, 123)]
    assert bool(item["has_mask"]) and int(item["mask"].max()) == 0  # all pixels class 0, rotated/flipped
    bad = np.zeros((32, 32), dtype=np.uint8)
    write_palette_png(correction_path(first.path), bad, cfg.data.palette)
    with pytest.raises(SIAError, match="not the size of its image"):
        run_all(cfg, data, tmp_path / "run")


def test_batch_schedule_is_deterministic_and_sharded():
    a = BatchSchedule(10, 4, 6, seed=3)
    full = [a.batch(i) for i in range(6)]
    assert list(BatchSchedule(10, 4, 6, seed=3, start=2)) == full[2:]
    r0 = BatchSchedule(10, 4, 6, seed=3, rank=0, world=2)
    r1 = BatchSchedule(10, 4, 6, seed=3, rank=1, world=2)
    for i in range(6):
        assert sorted(r0.batch(i) + r1.batch(i)) == sorted(full[i])
    seen = [idx for batch in full[:5] for idx, _ in batch][:10]  # epoch 0 visits every image once
    assert sorted(seen) == list(range(10))


def test_truncated_image_is_one_clear_error(synth, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth, data)
    victim = sorted((data / "train").glob("*.png"))[3]
    victim.write_bytes(victim.read_bytes()[:300])
    cfg = cfg_for(data, **{"train.num_workers": 1})
    with pytest.raises(SIAError) as err:
        run_all(cfg, data, tmp_path / "run")
    assert victim.name in str(err.value) and "\n" not in str(err.value)


DDP_SCRIPT = textwrap.dedent(
    """
    import hashlib, os, sys
    import torch
    from sia_core.run_config import resolve_train_config, training_samples
    from sia_core.train import train_iter
    data, out, digests = sys.argv[1:4]
    cfg = resolve_train_config(data, preset="test", overrides=["train.iterations=3", "train.val_every=0",
                               "train.ckpt_every=0", "train.batch_size=4"])
    import sia_core.train as t
    built = []
    real_build = t.build_model
    t.build_model = lambda c: built.append(real_build(c)) or built[-1]  # keep each rank's own model
    for info in train_iter(cfg, training_samples(data, cfg), out):
        pass
    import torch.distributed as dist
    rank = int(os.environ["RANK"])
    # every rank reports a digest of the weights it holds in memory (not of rank 0's file)
    h = hashlib.sha256()
    for k, v in sorted(built[0].state_dict().items()):
        h.update(v.detach().cpu().numpy().tobytes())
    open(os.path.join(digests, f"rank{rank}.txt"), "w").write(h.hexdigest())
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_process_training_agrees_and_only_rank0_writes(synth, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    digests = tmp_path / "digests"
    digests.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        str(script),
        str(synth),
        str(tmp_path / "run"),
        str(digests),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    d0, d1 = (digests / "rank0.txt").read_text(), (digests / "rank1.txt").read_text()
    assert d0 == d1  # gradients were averaged: both ranks hold the same weights
    log = [json.loads(line)["iteration"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]  # one writer: no duplicated lines
    assert {p.name for p in (tmp_path / "run").iterdir()} == {
        "config.yaml",
        "last.safetensors",
        "state.pt",
        "log.jsonl",
    }
