"""The training loop (METHOD §5): one generator that the CLI, the napari widget and torchrun all drive.

A run directory holds::

    config.yaml         the full config of the run (written first)
    last.safetensors    latest weights (+ config in the metadata)
    best.safetensors    weights with the best validation mIoU of the decoder (when a val split exists)
    state.pt            optimiser state, iteration, best score (plain tensors/numbers: weights_only-safe)
    log.jsonl           one JSON object per logged step and per validation

Every write is atomic. Stopping (Ctrl-C, the GUI's Stop button, closing the generator) saves a checkpoint
first. ``resume=True`` continues exactly where the run stopped: the batch schedule and every random draw are
functions of (seed, iteration), so a resumed run matches an uninterrupted one.

Distributed: under ``torchrun`` (WORLD_SIZE > 1) each rank trains on its share of every global batch and the
gradients are averaged with all-reduce (gloo on CPU, NCCL on GPUs); only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .build import build_model, read_weights, resolve_weights_path, save_weights
from .config import SIAConfig
from .data.layout import EvalItem
from .data.train_dataset import BatchSchedule, TrainSample, WeakLabelDataset, balanced_weights
from .errors import SIAError
from .io_utils import atomic_write, atomic_write_text
from .models.freeze import trainable_parameters
from .objective import TrainBatch, sia_losses
from .pretrained import resolve_pretrained
from .run_files import RunFiles
from .runtime import DistInfo, dist_info, resolve_device

__all__ = ["StepInfo", "RunFiles", "train_iter", "DistInfo", "dist_info"]


@dataclass
class StepInfo:
    """What the loop reports after each step."""

    iteration: int
    """Iterations done (1-based after the first step)."""
    total: int
    logs: dict[str, float] = field(default_factory=dict)
    """Latest logged losses (refreshed every ``log_every`` steps)."""
    images_per_s: float = 0.0
    val: Optional[dict[str, Any]] = None
    """Validation metrics when this step validated."""
    checkpoint: Optional[Path] = None
    """The weights file written at this step, if any."""


def _prepare_run_dir(files: RunFiles, cfg: SIAConfig, resume: bool, force: bool) -> None:
    if resume:
        if not files.state.is_file() or not files.last.is_file():
            raise SIAError(
                f"nothing to resume in {files.root} (no state.pt / last.safetensors)",
                fix="start the run without --resume",
            )
        return
    if files.holds_run():
        if not force:
            raise SIAError(
                f"run directory {files.root} already holds a run",
                fix="pass --resume to continue it, --force to overwrite it, or choose another --out",
            )
        for p in (files.config, files.last, files.best, files.state, files.log):
            p.unlink(missing_ok=True)
    files.root.mkdir(parents=True, exist_ok=True)
    cfg.save(files.config)


def _load_init(model: torch.nn.Module, path: Union[str, Path], cfg: SIAConfig) -> None:
    """Start from a trained SIA model (fine-tuning): same classes and backbone; heads a variant lacks are
    left at their initialisation."""
    weights = resolve_weights_path(path)
    state, init_cfg, _ = read_weights(weights)
    if init_cfg.num_classes != cfg.num_classes:
        raise SIAError(
            f"{weights} was trained for {init_cfg.num_classes} classes {init_cfg.data.classes}, this run has "
            f"{cfg.num_classes} {cfg.data.classes}",
            fix="start from scratch or from a model with the same classes",
        )
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched or init_cfg.model.backbone != cfg.model.backbone:
        raise SIAError(
            f"{weights} has another architecture ({init_cfg.model.backbone}, e.g. {mismatched[:2]}) than this run "
            f"({cfg.model.backbone})",
            fix="set the same model.backbone / backbone_kwargs as the model you start from",
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _allreduce_grads(params: list[torch.nn.Parameter], world: int) -> None:
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def _preflight(samples: list[TrainSample], cfg: SIAConfig) -> None:
    """Fail before training starts, naming the file, on what can be checked cheaply: missing files,
    unreadable headers, label vectors of the wrong length, corrected masks of another size."""
    from .data.images import image_size

    for s in samples:
        labels = s.labels
        if len(labels) != cfg.num_classes or not any(labels):
            raise SIAError(
                f"labels {list(labels)} of {s.path} do not fit {cfg.num_classes} classes {cfg.data.classes}",
                fix=f"give {cfg.num_classes} values of 0/1 with at least one 1",
            )
        size = image_size(s.path)
        if s.mask is not None and image_size(s.mask) != size:
            raise SIAError(
                f"corrected mask {s.mask} is not the size of its image {s.path} ({size[1]}x{size[0]})",
                fix="save the correction from the same image, or delete the mask file",
            )


def _worker_error(err: SIAError) -> SIAError:
    """DataLoader workers re-raise a SIAError with the worker's traceback in its text; keep the one line."""
    text = str(err)
    marker = "SIAError: "
    if marker in text:
        return SIAError(text.rsplit(marker, 1)[1].strip().splitlines()[0])
    return err


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def train_iter(
    cfg: SIAConfig,
    samples: list[TrainSample],
    out_dir: Union[str, Path],
    val_items: Optional[list[EvalItem]] = None,
    resume: bool = False,
    force: bool = False,
    init_from: Optional[Union[str, Path]] = None,
) -> Generator[StepInfo, None, None]:
    """Train, yielding a :class:`StepInfo` after every step.

    Closing the generator (or Ctrl-C) writes a checkpoint before it ends. The final weights are in
    ``out_dir/last.safetensors`` (and ``best.safetensors`` when ``val_items`` are given).

    Args:
        cfg: the run's configuration (ignored on resume: the saved one is used).
        samples: training images with their image-level labels (and corrected masks).
        out_dir: the run directory.
        val_items: image/mask pairs for validation every ``train.val_every`` steps.
        resume: continue the run in ``out_dir``.
        force: overwrite a run already in ``out_dir``.
        init_from: a SIA run directory or weights file to start from (fine-tuning).
    """
    files = RunFiles(Path(out_dir))
    di = dist_info()
    if di.world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    if resume:
        if not files.config.is_file():
            raise SIAError(
                f"nothing to resume in {files.root} (no config.yaml)", fix="start the run without --resume"
            )
        cfg = SIAConfig.load(files.config)
    else:
        cfg = resolve_pretrained(cfg)  # fetch the starting weights, record which they are (no-op for random init)
    if not samples:
        raise SIAError("no training images", fix="give a folder with images whose names hold their labels")
    _preflight(samples, cfg)
    if di.is_main:
        _prepare_run_dir(files, cfg, resume, force)
    if di.world > 1:
        dist.barrier()

    t = cfg.train
    device = resolve_device(t.device)
    if device.type == "cuda" and di.world > 1:
        device = torch.device("cuda", di.local_rank)
        torch.cuda.set_device(device)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    use_amp = device.type == "cuda" and t.amp in ("auto", "bf16")
    torch.manual_seed(t.seed)
    model = build_model(cfg)
    if init_from is not None and not resume:
        _load_init(model, init_from, cfg)
    model.to(device).train()
    params = trainable_parameters(model, cfg.model.freeze)
    if t.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    elif t.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    else:
        raise SIAError(f"unknown optimizer '{t.optimizer}'", fix="use train.optimizer=adam or adamw")

    start, best_score = 0, -math.inf
    if resume:
        state_dict, _, _ = read_weights(files.last)
        model.load_state_dict(state_dict)
        state = torch.load(files.state, map_location=device, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        start, best_score = int(state["iteration"]), float(state["best_score"])
        if di.is_main:
            _truncate_log(files.log, start)

    mean = torch.tensor(cfg.data.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg.data.std, device=device).view(1, 3, 1, 1) * 255
    dataset = WeakLabelDataset(samples, cfg, dam=cfg.dam.enabled)
    per_rank = max(1, t.batch_size // di.world)
    weights = balanced_weights([s.labels for s in samples], t.balance) if t.balance else None
    mosaics = round(t.mosaic * per_rank * di.world) if dataset.mosaics.available else 0
    if t.mosaic > 0 and not dataset.mosaics.available and di.is_main:
        warnings.warn(
            f"train.mosaic={t.mosaic} is off for this run: mosaics need images labelled with one class alone for at "
            f"least two classes, and this data has them for {len(dataset.mosaics.classes)}",
            stacklevel=2,
        )
    schedule = BatchSchedule(
        len(samples), per_rank * di.world, t.iterations, t.seed, start, di.rank, di.world, weights, mosaics
    )
    loader = DataLoader(
        dataset,
        batch_sampler=schedule,
        num_workers=t.num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )

    def norm(img: torch.Tensor) -> torch.Tensor:
        return (img.to(device, non_blocking=True).float() - mean) / std

    def checkpoint(iteration: int) -> Optional[Path]:
        if not di.is_main:
            return None
        path = save_weights(files.last, model, cfg, iteration=iteration)
        state = {"optimizer": opt.state_dict(), "iteration": iteration, "best_score": best_score}
        atomic_write(files.state, lambda p: torch.save(state, p))
        return path

    it = start
    saved_at = start
    logs: dict[str, float] = {}
    t_last, n_last = time.perf_counter(), 0
    ips = 0.0

    def batches() -> Generator[dict[str, torch.Tensor], None, None]:
        try:
            yield from loader
        except SIAError as err:
            raise _worker_error(err) from None

    try:
        for raw in batches():
            torch.manual_seed(t.seed * 1_000_003 + it * 7919 + di.rank)
            batch = TrainBatch(
                image=norm(raw["image"]),
                labels=raw["labels"].to(device),
                global2=norm(raw["global2"]) if "global2" in raw else None,
                local=norm(raw["local"]) if "local" in raw else None,
                ignore=raw["ignore"].to(device),
                mask=raw["mask"].to(device),
                has_mask=raw["has_mask"].to(device),
            )
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext():
                out = sia_losses(model, batch, cfg, progress=it / t.iterations)
            if not torch.isfinite(out.loss):
                raise SIAError(
                    f"training diverged at iteration {it + 1} (loss {float(out.loss)})",
                    fix="lower train.lr, or resume from the last checkpoint with --resume",
                )
            out.loss.backward()
            if di.world > 1:
                _allreduce_grads(params, di.world)
            opt.step()
            it += 1
            n_last += batch.image.shape[0] * di.world
            info = StepInfo(iteration=it, total=t.iterations)
            if it % t.log_every == 0 or it == t.iterations or it == start + 1:
                now = time.perf_counter()
                ips = n_last / max(now - t_last, 1e-9)
                t_last, n_last = now, 0
                logs = {k: round(float(v), 5) for k, v in out.logs.items()}
                if di.is_main:
                    _append_log(files.log, {"iteration": it, "images_per_s": round(ips, 3), **logs})
            info.logs, info.images_per_s = logs, ips
            if t.ckpt_every and it % t.ckpt_every == 0 and it != t.iterations:
                info.checkpoint = checkpoint(it)
                saved_at = it
            if val_items and t.val_every and (it % t.val_every == 0 or it == t.iterations):
                info.val = _validate(model, cfg, val_items, device, di)
                model.train()
                if di.is_main:
                    score = info.val["label_free"]["decoder"]["mIoU"]
                    _append_log(files.log, {"iteration": it, "split": "val", **_val_summary(info.val)})
                    if score > best_score:
                        best_score = score
                        save_weights(files.best, model, cfg, iteration=it, val_mIoU=score)
            if it == t.iterations:
                info.checkpoint = checkpoint(it)
                saved_at = it
            yield info
    finally:
        # Stop, Ctrl-C, an error, or the generator being closed: keep what was learned since the last save.
        if it != saved_at and it > start:
            checkpoint(it)
        if di.world > 1 and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.barrier()


def _validate(
    model: torch.nn.Module, cfg: SIAConfig, items: list[EvalItem], device: torch.device, di: DistInfo
) -> dict:
    from .evaluate import evaluate_items
    from .predictor import SIAPredictor

    if di.world > 1:
        # Rank 0 scores the whole split; the others wait so every rank leaves validation together.
        result: list[Any] = [None]
        if di.is_main:
            result[0] = evaluate_items(
                SIAPredictor(model, cfg, device), items, batch_size=cfg.infer.batch_size
            )
        dist.broadcast_object_list(result, src=0)
        return result[0]
    return evaluate_items(SIAPredictor(model, cfg, device), items, batch_size=cfg.infer.batch_size)


def _val_summary(val: dict[str, Any]) -> dict[str, Any]:
    from .evaluate import summary

    return summary(val)


def _append_log(path: Path, record: dict[str, Any]) -> None:
    record = {"time": round(time.time(), 3), **record}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("iteration", 0) <= iteration
    ]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_log(run_dir: Union[str, Path]) -> list[dict[str, Any]]:
    """The run's log records."""
    path = RunFiles(Path(run_dir)).log
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
