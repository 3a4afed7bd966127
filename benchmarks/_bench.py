"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``, so this folder is on
``sys.path``): timers and the synthetic training batch both step benchmarks time."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass
class Row:
    """One interleaved row: seconds per call and its ratio to the reference, per round."""

    name: str
    seconds: list[float]
    ratios: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.ratios), max(self.ratios)


def interleaved(
    reference: tuple[str, Callable[[], None]],
    variants: list[tuple[str, Callable[[], None]]],
    rounds: int,
    warmup: int,
    sync: Callable[[], None],
) -> list[Row]:
    """Time ``variants`` against ``reference`` interleaved: ref, v1, ref, v2, ref, ..., ref per round.

    Each variant call is divided by the mean of the reference calls just before and after it, so load that
    other processes put on a shared machine, and drift (thermal, memory being faulted in), cancel in the
    ratio; the spread of the ratios over the rounds says how far they still move. The first row is the
    reference itself (ratio 1, its spread over its neighbours).
    """

    def once(fn: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    for _ in range(warmup):
        for _, fn in [reference, *variants]:
            fn()
    sync()
    ref = Row(reference[0], [], [])
    rows = [Row(name, [], []) for name, _ in variants]
    for _ in range(rounds):
        before = once(reference[1])
        ref.seconds.append(before)
        for row, (_, fn) in zip(rows, variants):
            t = once(fn)
            after = once(reference[1])
            ref.seconds.append(after)
            row.seconds.append(t)
            row.ratios.append(t / ((before + after) / 2))
            before = after
    ref.ratios = [s / statistics.median(ref.seconds) for s in ref.seconds]
    return [ref, *rows]


def print_rows(title: str, rows: list[Row], extra_head: str = "", extra: dict[str, str] | None = None) -> None:
    """The table: median seconds, median ratio to the reference and its spread over the rounds (+ columns
    ``extra[row name]`` under ``extra_head``)."""
    print(f"\n{title}")
    print(f"{'row':<36} {'s/step':>8} {'ratio':>7} {'spread':>13}  {extra_head}".rstrip())
    for row in rows:
        lo, hi = row.spread
        tail = (extra or {}).get(row.name, "")
        print(f"{row.name:<36} {row.median_s:8.3f} {row.ratio:6.2f}x {lo:5.2f}-{hi:5.2f}x  {tail}".rstrip())


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
