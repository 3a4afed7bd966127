"""The training loop (docs/method.md §5): one generator that the CLI, the napari widget and torchrun all drive.

A run directory holds::

    config.yaml         the full config of the run (written once everything is checked)
    last.safetensors    latest weights (+ config in the metadata)
    best.safetensors    weights with the best validation mIoU of the decoder (when a val split exists)
    state.pt            the checkpoint: weights, optimiser state, iteration, best score (sia_core.checkpoint)
    log.jsonl           one JSON object per logged step and per validation

Every write is atomic. Stopping (Ctrl-C, SIGTERM, the GUI's Stop button, closing the generator) saves a
checkpoint first. ``resume=True`` continues exactly where the run stopped: the batch schedule and every random
draw are functions of (seed, iteration), so a resumed run matches an uninterrupted one bit for bit.

Nothing is written before the config, the data, the device, the backbone file and the model to start from are
checked, so a run that fails to start leaves no run behind; a run directory without a checkpoint yet (stopped
before its first save) is simply started again.

Distributed: under ``torchrun`` (WORLD_SIZE > 1) each rank trains on its share of every global batch and the
gradients are averaged with all-reduce (gloo on CPU, NCCL on GPUs); only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.distributed as dist
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader

from .build import build_model, read_weights, resolve_weights_path, save_weights
from .checkpoint import load_checkpoint, save_checkpoint
from .config import SIAConfig
from .config_checks import validate_config
from .data.layout import EvalItem
from .data.train_dataset import BatchSchedule, TrainSample, WeakLabelDataset, balanced_weights
from .errors import SIAError
from .io_utils import WriteError, append_line, atomic_write_text, check_output_dir, remove_stale_tmp
from .lr_schedule import lr_at
from .models.freeze import trainable_parameters
from .objective import TrainBatch, rare_class_weights, sia_losses
from .pretrained import resolve_pretrained
from .run_files import RUN_FILE_NAMES, RunFiles
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


def _prepare_run_dir(files: RunFiles, cfg: SIAConfig, resume: bool, force: bool, start: int) -> None:
    """Write the run's config (a new run) or drop what was logged after the checkpoint (a resumed run). Called
    only once everything that can fail on bad input has been checked."""
    remove_stale_tmp(files.root, RUN_FILE_NAMES)
    if resume:
        _truncate_log(files.log, start)
        return
    if force:
        for p in (files.config, files.last, files.best, files.state, files.log):
            p.unlink(missing_ok=True)
    else:
        files.log.unlink(missing_ok=True)  # a run stopped before its first checkpoint: started again
    cfg.save(files.config)


def _check_run_dir(files: RunFiles, resume: bool, force: bool) -> None:
    """Refuse, before anything is built, a new run over a run that has a checkpoint."""
    check_output_dir(files.root, what="run directory")
    if not resume and not force and files.holds_run():
        raise SIAError(
            f"run directory {files.root} already holds a run",
            fix="pass --resume to continue it, --force to overwrite it, or choose another --out",
        )


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
    # the encoder must match name for name (heads a variant lacks may differ): a model with and one without
    # model.conv_stem share every other name, and would load with a random patch embedding
    unmatched = sorted({k for k in own if k.startswith("encoder.")} ^ {k for k in state if k.startswith("encoder.")})
    stem = init_cfg.model.conv_stem != cfg.model.conv_stem
    if mismatched or unmatched or stem or init_cfg.model.backbone != cfg.model.backbone:
        k = mismatched[0] if mismatched else None
        if k:
            detail = f"{k} is {list(state[k].shape)} there, {list(own[k].shape)} here; {len(mismatched)} tensors differ"
        elif stem:
            there, here = (str(c.model.conv_stem).lower() for c in (init_cfg, cfg))
            detail = f"model.conv_stem is {there} there, {here} here"
        elif unmatched:
            detail = f"{unmatched[0]} is in one of them only; {len(unmatched)} encoder tensors differ"
        else:
            detail = f"{init_cfg.model.backbone} there, {cfg.model.backbone} here"
        raise SIAError(
            f"{weights} has another architecture than this run ({detail})",
            fix="use the model.* settings (backbone, backbone_kwargs, conv_stem, decoder_channels...) of the model you "
            "start from",
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


def _make_optimizer(params: list[torch.nn.Parameter], t: Any) -> torch.optim.Optimizer:
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    raise SIAError(f"unknown optimizer '{t.optimizer}'", fix="use train.optimizer=adam or adamw")


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
    ``out_dir/last.safetensors`` (and ``best.safetensors`` when ``val_items`` are given). Nothing is written
    to ``out_dir`` until the config, the images, the device, the backbone weights, ``init_from`` and (on resume)
    the checkpoint have been checked.

    Args:
        cfg: the run's configuration (ignored on resume: the saved one is used).
        samples: training images with their image-level labels (and corrected masks).
        out_dir: the run directory.
        val_items: image/mask pairs for validation every ``train.val_every`` steps.
        resume: continue the run in ``out_dir`` (one saved without a checkpoint yet starts from the beginning).
        force: overwrite a run already in ``out_dir``.
        init_from: a SIA run directory or weights file to start from (fine-tuning).
    """
    files = RunFiles(Path(out_dir))
    di = dist_info()
    if resume:
        if not files.config.is_file():
            raise SIAError(f"nothing to resume in {files.root} (no config.yaml)", fix="start the run without --resume")
        cfg = SIAConfig.load(files.config)
    else:
        cfg = resolve_pretrained(cfg)  # fetch the starting weights, record which they are (no-op for random init)
    validate_config(cfg)
    if not samples:
        raise SIAError("no training images", fix="give a folder with images whose names hold their labels")
    if di.is_main:
        _check_run_dir(files, resume, force)
    _preflight(samples, cfg)

    t = cfg.train
    device = resolve_device(t.device)
    if di.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
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
    opt = _make_optimizer(params, t)
    # the average starts from the starting weights (random or --init-from); on resume the checkpoint's replaces it
    ema = ModelEmaV3(model, decay=t.ema) if t.ema else None
    averaged = None if ema is None else ema.module
    served = model if averaged is None else averaged  # what is validated and written for use

    start, best_score = 0, -math.inf
    if resume and not files.has_checkpoint() and files.holds_run():
        raise SIAError(
            f"cannot resume {files.root}: it holds weights but no checkpoint (state.pt)",
            fix=f"fine-tune from them with --init-from {files.last} into another --out, or start again with --force",
        )
    if resume and files.has_checkpoint():
        start, best_score = load_checkpoint(files, model, opt, cfg, device, repair=di.is_main, ema=averaged)

    mean = torch.tensor(cfg.data.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg.data.std, device=device).view(1, 3, 1, 1) * 255
    dataset = WeakLabelDataset(samples, cfg, dam=cfg.dam.enabled)
    per_rank = max(1, t.batch_size // di.world)
    labels = [s.labels for s in samples]
    weights = balanced_weights(labels, t.balance) if t.balance else None
    cls_pos_weight = None
    if t.cls_balance > 0:
        pos = rare_class_weights(labels, weights, t.cls_balance)
        cls_pos_weight = torch.tensor(pos, dtype=torch.float32, device=device)
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
        worker_init_fn=_quiet_worker if t.num_workers else None,
    )
    if di.is_main:
        _prepare_run_dir(files, cfg, resume, force, start)
    if di.world > 1:
        dist.barrier()

    def norm(img: torch.Tensor) -> torch.Tensor:
        return (img.to(device, non_blocking=True).float() - mean) / std

    def checkpoint(iteration: int) -> Optional[Path]:
        nonlocal saved_at
        path = None
        if di.is_main:
            path = save_checkpoint(files, model, opt, cfg, iteration, best_score, averaged)
        saved_at = iteration
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
            lr = lr_at(t.lr, t.lr_schedule, it, t.iterations)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext():
                out = sia_losses(model, batch, cfg, progress=it / t.iterations, cls_pos_weight=cls_pos_weight)
            if not torch.isfinite(out.loss):
                raise SIAError(
                    f"training diverged at iteration {it + 1} (loss {float(out.loss)})",
                    fix="lower train.lr, or resume from the last checkpoint with --resume",
                )
            out.loss.backward()
            if di.world > 1:
                # batch-norm buffers (model.conv_stem) stay per rank: each normalises its share of the batch and
                # rank 0's running statistics are the ones saved, as DDP's default broadcast_buffers would keep
                _allreduce_grads(params, di.world)
            opt.step()
            if ema is not None:
                ema.update(model)
            it += 1
            n_last += batch.image.shape[0] * di.world
            info = StepInfo(iteration=it, total=t.iterations)
            if it % t.log_every == 0 or it == t.iterations or it == start + 1:
                now = time.perf_counter()
                ips = n_last / max(now - t_last, 1e-9)
                t_last, n_last = now, 0
                logs = {k: round(float(v), 5) for k, v in out.logs.items()}
                logs["lr"] = lr
                if di.is_main:
                    _append_log(files.log, {"iteration": it, "images_per_s": round(ips, 3), **logs})
            info.logs, info.images_per_s = logs, ips
            # Validate before the checkpoint of the same step, so the checkpoint's best score includes it.
            if val_items and t.val_every and (it % t.val_every == 0 or it == t.iterations):
                info.val = _validate(served, cfg, val_items, device, di)
                model.train()
                if di.is_main:
                    score = info.val["label_free"]["decoder"]["mIoU"]
                    _append_log(files.log, {"iteration": it, "split": "val", **_val_summary(info.val)})
                    if score > best_score:
                        best_score = score
                        save_weights(files.best, served, cfg, iteration=it, val_mIoU=score)
            if it == t.iterations or (t.ckpt_every and it % t.ckpt_every == 0):
                info.checkpoint = checkpoint(it)
            yield info
    except WriteError:
        saved_at = it  # the disk refused a write: a second save would fail the same way
        raise
    finally:
        # Stop, Ctrl-C, SIGTERM, an error, or the generator being closed: keep what was learned since the last
        # save.
        if it != saved_at and it > start:
            checkpoint(it)
        if di.world > 1 and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.barrier()


def _quiet_worker(worker_id: int) -> None:
    """DataLoader worker set-up. Ctrl-C is left to the main process, which stops the workers itself. And when the
    main process, interrupted, hangs up in the middle of receiving a batch, the worker's file-descriptor sharing
    thread gets a ConnectionResetError (or EOFError) and would print its traceback on the user's terminal; those
    are expected then and dropped, any other error is reported as before."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if not issubclass(kind, (ConnectionError, EOFError)):
            previous(kind, value, tb)

    sys.excepthook = hook


def _validate(
    model: torch.nn.Module, cfg: SIAConfig, items: list[EvalItem], device: torch.device, di: DistInfo
) -> dict:
    from .evaluate import evaluate_items
    from .predictor import SIAPredictor

    if di.world > 1:
        # Rank 0 scores the whole split; the others wait so every rank leaves validation together.
        result: list[Any] = [None]
        if di.is_main:
            result[0] = evaluate_items(SIAPredictor(model, cfg, device), items, batch_size=cfg.infer.batch_size)
        dist.broadcast_object_list(result, src=0)
        return result[0]
    return evaluate_items(SIAPredictor(model, cfg, device), items, batch_size=cfg.infer.batch_size)


def _val_summary(val: dict[str, Any]) -> dict[str, Any]:
    from .evaluate import summary

    return summary(val)


def _append_log(path: Path, record: dict[str, Any]) -> None:
    record = {"time": round(time.time(), 3), **record}
    append_line(path, json.dumps(record))


def _log_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) of every complete line; a line torn by a crash mid-write is left out."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append((line, record))
    return out


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again), and any torn
    line."""
    if not path.is_file():
        return
    kept = [line for line, record in _log_records(path) if record.get("iteration", 0) <= iteration]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_log(run_dir: Union[str, Path]) -> list[dict[str, Any]]:
    """The run's log records."""
    path = RunFiles(Path(run_dir)).log
    if not path.is_file():
        return []
    return [record for _, record in _log_records(path)]
