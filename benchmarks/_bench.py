"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``, so this folder is on
``sys.path``): a timer and the synthetic training batch both step benchmarks time."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from sia_core.objective import TrainBatch


def timed(fn: Callable[[], None], steps: int, warmup: int, sync: Callable[[], None]) -> float:
    """Fastest seconds of ``fn`` over ``steps`` calls after ``warmup`` calls.

    The minimum, not the median: on a shared 2-core machine other processes only ever add time, and two
    step benchmarks run minutes apart gave medians whose ratios differed by 25 %.
    """
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def synthetic_batch(x: torch.Tensor, y: torch.Tensor) -> TrainBatch:
    """A full training batch around images ``x`` and labels ``y``: random DAM views, nothing ignored, no
    corrected masks (so every loss runs, as after warm-up on real data)."""
    b, _, h, w = x.shape
    return TrainBatch(
        image=x,
        labels=y,
        global2=torch.randn_like(x),
        local=torch.randn_like(x),
        ignore=torch.zeros(b, h, w, dtype=torch.bool, device=x.device),
        mask=torch.full((b, h, w), 255, dtype=torch.long, device=x.device),
        has_mask=torch.zeros(b, dtype=torch.bool, device=x.device),
    )
