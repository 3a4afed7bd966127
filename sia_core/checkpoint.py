"""The checkpoint ``--resume`` continues from: weights, optimiser state, iteration and best score in one file.

``state.pt`` holds the model's weights as well as the optimiser state, so the pair can never be torn: it is
written whole to a temporary file, flushed to the disk and renamed over the previous one, and a crash, a kill
or a second Ctrl-C at any moment leaves either the old checkpoint or the new one, never weights of one step
with optimiser state of another. ``last.safetensors`` (the weights file users, the predictor and the napari
widget open) is written right after it; when an interruption left it behind, resuming rewrites it from
``state.pt``. Only plain tensors and numbers are stored, so ``torch.load(weights_only=True)`` reads it. With
``train.ema`` on, state.pt holds the moving average of the weights beside the trained ones, and
``last.safetensors`` is the average.

A state.pt written before the weights moved into it (format 1: optimiser state only) is still resumed, from
``last.safetensors``, but only when both record the same iteration.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import torch

from .build import read_weights, save_weights
from .config import SIAConfig
from .errors import SIAError
from .io_utils import atomic_write
from .run_files import RunFiles

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_iteration", "interrupts_deferred"]

STATE_FORMAT = 2

_FIX_DAMAGED = (
    "start the run again with --force (or fine-tune from its weights with --init-from); a checkpoint SIA writes "
    "is never half-written, so the file was changed or copied incompletely"
)


def _state_bytes(state: Any) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


def save_checkpoint(
    files: RunFiles,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: SIAConfig,
    iteration: int,
    best_score: float,
    ema: Optional[torch.nn.Module] = None,
) -> Path:
    """Write the run's checkpoint (``state.pt``, then ``last.safetensors``); returns the weights file.

    With ``ema`` (the moving average of the weights, ``train.ema``) state.pt holds both weight sets and
    ``last.safetensors`` the average: what the run serves; the trained weights are what it continues from.

    Ctrl-C and SIGTERM arriving during the save are held until it is done (a second Ctrl-C abandons it, leaving
    the previous checkpoint), so a stop request never tears it.

    Raises:
        WriteError: the disk is full or the run directory cannot be written; the previous checkpoint is intact.
    """
    model = getattr(model, "module", model)
    state = {
        "format": STATE_FORMAT,
        "iteration": int(iteration),
        "best_score": float(best_score),
        "model": _cpu_weights(model),
        "optimizer": optimizer.state_dict(),
    }
    if ema is not None:
        state["ema"] = _cpu_weights(ema)
    with interrupts_deferred(f"saving the checkpoint of iteration {iteration}"):
        atomic_write(files.state, lambda p: torch.save(state, p), needed=_state_bytes(state), fsync=True)
        return save_weights(files.last, model if ema is None else ema, cfg, iteration=iteration)


def _cpu_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _read_state(files: RunFiles, device: torch.device) -> dict[str, Any]:
    try:
        state = torch.load(files.state, map_location=device, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, unreadable file: all one message
        reason = " ".join(str(err).split()).split(". ")[0][:160] or type(err).__name__
        raise SIAError(
            f"checkpoint {files.state} is damaged or not a SIA checkpoint ({reason})", fix=_FIX_DAMAGED
        ) from None
    if not isinstance(state, dict) or not {"iteration", "optimizer", "best_score"} <= set(state):
        raise SIAError(f"{files.state} is not a SIA checkpoint (keys missing)", fix=_FIX_DAMAGED)
    return state


def _check_last(files: RunFiles, model: torch.nn.Module, cfg: SIAConfig, iteration: int) -> bool:
    """Whether ``last.safetensors`` holds exactly the checkpoint's weights. A stale file of this run (a save
    interrupted after state.pt) is fine to rewrite; any other file is refused, never overwritten."""
    if not files.last.is_file():
        return False
    fix = f"move {files.last.name} out of {files.root} (--resume then writes it again from state.pt)"
    try:
        tensors, last_cfg, extra = read_weights(files.last)
    except SIAError as err:
        raise SIAError(f"{files.last} is not this run's weights file ({err.message})", fix=fix) from None
    own = model.state_dict()
    theirs, ours = last_cfg.to_dict(), cfg.to_dict()
    differences = [
        f"model.{k} {theirs['model'].get(k)!r} there, {v!r} here"
        for k, v in ours["model"].items()
        if theirs["model"].get(k) != v
    ]
    if theirs["data"]["classes"] != ours["data"]["classes"]:
        differences.append(f"classes {theirs['data']['classes']} there, {ours['data']['classes']} here")
    differences += [
        f"{k} {list(tensors[k].shape)} there, {list(v.shape)} here"
        for k, v in own.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if set(tensors) != set(own):
        differences.append(f"{len(set(tensors) ^ set(own))} tensors that only one of them has")
    if differences:
        raise SIAError(
            f"{files.last} holds another model than this run ({'; '.join(differences[:2])})",
            fix=fix,
        )
    return extra.get("iteration") == iteration and all(torch.equal(tensors[k], own[k].cpu()) for k in own)


def load_checkpoint(
    files: RunFiles,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: SIAConfig,
    device: torch.device,
    repair: bool = True,
    ema: Optional[torch.nn.Module] = None,
) -> tuple[int, float]:
    """Load the run's checkpoint into ``model`` and ``optimizer``; returns (iteration, best score).

    Args:
        repair: rewrite ``last.safetensors`` from the checkpoint when an interrupted save left it behind (only
            the process that writes the run directory passes True).
        ema: the run's moving average of the weights (``train.ema``), loaded from the checkpoint too.

    Raises:
        SIAError: state.pt damaged, of another architecture, or (format 1) not of the same iteration as
            last.safetensors; last.safetensors of another model. Nothing is written then.
    """
    state = _read_state(files, device)
    iteration = int(state["iteration"])
    if "model" in state:
        weights = state["model"]
        source = files.state
    else:  # format 1: the weights are only in last.safetensors, trust them only for the same iteration
        if not files.last.is_file():
            raise SIAError(f"{files.state} has no weights and {files.last} is missing", fix=_FIX_DAMAGED)
        weights, _, extra = read_weights(files.last)
        if extra.get("iteration") != iteration:
            raise SIAError(
                f"{files.last} holds iteration {extra.get('iteration')} but {files.state} iteration {iteration}: "
                "the checkpoint was torn by an interrupted save",
                fix="start the run again with --force, or fine-tune from last.safetensors with --init-from",
            )
        source = files.last
    if ema is not None and "ema" not in state:
        raise SIAError(
            f"{files.state} holds no moving average of the weights, and {files.config} sets train.ema={cfg.train.ema}",
            fix="restore the run's own config.yaml (train.ema as it was trained), or start the run again with --force",
        )
    try:
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SIAError(
            f"checkpoint {source} does not fit the model of {files.config} ({first[:160]})",
            fix="restore the run's own config.yaml, or start the run again with --force",
        ) from None
    served = model if ema is None else ema
    if repair and not _check_last(files, served, cfg, iteration):
        save_weights(files.last, served, cfg, iteration=iteration)
    return iteration, float(state["best_score"])


def checkpoint_iteration(run_dir: Path) -> Optional[int]:
    """The iteration of the run's checkpoint, or None when there is none (or it cannot be read). Cheap: the
    tensors are memory-mapped, not read."""
    path = RunFiles(Path(run_dir)).state
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["iteration"])
    except Exception:
        return None


@contextlib.contextmanager
def interrupts_deferred(doing: str) -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM while a short critical write runs; deliver them after it.

    A second Ctrl-C during the write abandons it at once (KeyboardInterrupt; the atomic write leaves the previous
    file). Signal handlers can only be set from the main thread: elsewhere (the napari worker) this does nothing,
    as stopping there is cooperative anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if pending and signum == signal.SIGINT:
            raise KeyboardInterrupt
        pending.append(signum)
        print(f"{doing}; press Ctrl-C again to abandon it", file=sys.stderr, flush=True)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, hold)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for signum in pending[:1]:
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)
        elif signum == signal.SIGINT and handler == signal.default_int_handler:
            raise KeyboardInterrupt
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)
