"""Shared by the quality benchmarks on WSSS4LUAD (ablation, levers, floors): the tune/report split of val,
training a run that is reused when already done, scoring it on each part, and mean +- sd over seeds.

The split: val's 76 patches come from 17 regions. Patches of one region look alike (same slide, same
staining, overlapping crops), so the parts are split **by region**, never by patch: in sorted order, regions
at even positions form the *tune* part (what every choice is made on), the others the *report* part (only
ever reported). Each part holds one of the two regions with normal lung (test01 in tune, val08 in report),
so normal's IoU on the report part is one region's: read it as such.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

from sia_core.config import SIAConfig, get_preset
from sia_core.data.layout import EvalItem, find_split
from sia_core.evaluate import evaluate_items
from sia_core.predictor import SIAPredictor
from sia_core.run_config import resolve_train_config, training_samples
from sia_core.run_files import RunFiles
from sia_core.train import train_iter

TUNE_REGIONS = ("test01", "test09", "test17", "test25", "test33", "val04", "val12", "val20", "val28")
REPORT_REGIONS = ("test05", "test13", "test21", "test29", "val00", "val08", "val16", "val24")
PARTS = ("tune", "report")


def region(path: Path) -> str:
    """The region a WSSS4LUAD patch was cut from: its name up to the first underscore."""
    return Path(path).name.split("_")[0]


def val_parts(data: str) -> dict[str, list[EvalItem]]:
    """The val split of ``data`` cut into the tune and report parts (by region)."""
    items = find_split(data, "val")
    unknown = sorted({region(i.image) for i in items} - set(TUNE_REGIONS) - set(REPORT_REGIONS))
    if unknown:
        raise SystemExit(f"val regions {unknown} are in neither part: this split is made for WSSS4LUAD's val")
    return {
        "tune": [i for i in items if region(i.image) in TUNE_REGIONS],
        "report": [i for i in items if region(i.image) in REPORT_REGIONS],
    }


def train_run(
    run: Path, data: str, preset: str, variant: str, seed: int, overrides: Sequence[str] = (), log: str = ""
) -> tuple[Path, float]:
    """Train (or reuse, when a finished run of the identical config is there) and return (run, seconds).

    An interrupted run is resumed. Validation during training is off: nothing is chosen on val here.
    """
    files = RunFiles(run)
    sets = [f"train.seed={seed}", "train.val_every=0", *overrides]
    cfg = resolve_train_config(data, preset=preset, overrides=sets, variant=variant)
    if files.last.is_file():
        from sia_core.build import read_weights

        _, done_cfg, meta = read_weights(files.last)
        if meta.get("iteration") == cfg.train.iterations and training_part(done_cfg) == training_part(cfg):
            print(f"[{log}] already trained: {files.last}", flush=True)
            timing = run / "train_seconds.txt"
            return run, float(timing.read_text()) if timing.is_file() else float("nan")
    resume = files.state.is_file() and files.config.is_file()
    samples = training_samples(data, cfg)
    t0 = time.time()
    print(
        f"[{log}] training {cfg.train.iterations} iterations ({'resuming' if resume else 'from scratch'})", flush=True
    )
    for info in train_iter(cfg, samples, run, resume=resume, force=not resume):
        if info.iteration % 50 == 0 or info.iteration == info.total:
            print(
                f"[{log}] {info.iteration}/{info.total} loss {info.logs.get('loss', float('nan')):.3f} "
                f"{info.images_per_s:.2f} img/s",
                flush=True,
            )
    seconds = time.time() - t0
    timing = run / "train_seconds.txt"
    if not resume:
        timing.write_text(f"{seconds:.1f}\n")
    else:  # a resumed run's time would count only its second part: the first full training's, if known
        seconds = float(timing.read_text()) if timing.is_file() else float("nan")
    print(f"[{log}] trained in {seconds:.0f} s", flush=True)
    return run, seconds


def training_part(cfg: SIAConfig) -> dict[str, Any]:
    """The config without its ``infer`` section: what decides the trained weights (a run trained before an
    inference default changed is still the same training)."""
    return {k: v for k, v in cfg.to_dict().items() if k != "infer"}


def preset_infer(preset: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The ``infer`` section of ``preset`` with ``overrides`` as keyword arguments for :func:`score_run`: runs are
    scored as the preset infers today, not with the inference settings saved when they were trained."""
    return dataclasses.asdict(get_preset(preset).with_overrides(list(overrides)).infer)


def train_side_by_side(base: Sequence[str], workers: Sequence[str], jobs: int) -> None:
    """Run ``base --only-train W`` for every worker W, at most ``jobs`` at a time, one thread each (on 2 cores
    two one-thread runs finish a list sooner than one two-thread run after another)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: list[subprocess.Popen] = []
    for worker in workers:
        while len(running) >= jobs:  # a free slot as soon as any run ends, not only the first one started
            time.sleep(2)
            running = [p for p in running if p.poll() is None]
        running.append(subprocess.Popen([*base, "--only-train", worker], env=env))
    for p in running:
        p.wait()


def trained_weights(run: Path, device: str = "auto") -> SIAPredictor:
    """The predictor of a run's trained weights (``state.pt``) rather than the weights it serves: under
    ``train.ema`` the two differ, and scoring both compares the average with what it averages on the same
    training (GPU runs of one seed are not bit-reproducible, so two trainings would not be a fair pair)."""
    import torch

    from sia_core.build import build_model

    files = RunFiles(run)
    cfg = SIAConfig.load(files.config)
    model = build_model(cfg, pretrained=False)  # the checkpoint holds the trained backbone, as in load_model
    model.load_state_dict(torch.load(files.state, map_location="cpu", weights_only=True)["model"])
    return SIAPredictor(model, cfg, device)


def score_run(
    run: Union[Path, SIAPredictor], parts: dict[str, list[EvalItem]], device: str = "auto", **infer: Any
) -> dict[str, Any]:
    """Evaluate a run (its folder, or its predictor already loaded) on every part: ``{part: evaluate_items(...)}``;
    ``infer`` overrides ``cfg.infer`` (on a loaded predictor, for this and later calls)."""
    pred = run if isinstance(run, SIAPredictor) else SIAPredictor.from_run(run, device=device)
    for key, value in infer.items():
        setattr(pred.cfg.infer, key, value)
    return {name: evaluate_items(pred, items, batch_size=pred.cfg.infer.batch_size) for name, items in parts.items()}


def mean_sd(values: Sequence[float]) -> str:
    """'0.512 +- 0.013' (sample sd over seeds), or the value alone for one seed."""
    values = [float(v) for v in values]
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
