"""The three-thread pipeline of slide inference: a reader prefetches each block's region and cuts it into
batches, the calling thread runs the predictor, a writer blends and writes. On CPU the run is bound by the
model; memory holds a few batches and one block.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from .blend import Blender
from .plan import Step
from .reader import Resolution, Slide, read_region

__all__ = ["run_steps"]


_END = ("end",)


def _put(q: queue.Queue, item: Any, give_up: Callable[[], bool]) -> bool:
    """Put without deadlocking when the other side is gone: retry until ``give_up()``."""
    while True:
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            if give_up():
                return False


def _read_steps(
    slide: Slide,
    res: Resolution,
    steps: list[Step],
    tile: int,
    batch_size: int,
    background: Optional[tuple[int, int]],
    out: queue.Queue,
    halt: threading.Event,
    errors: list[BaseException],
) -> None:
    """Reader thread: one region read per block, cut into batches (with glass masks) in step order."""
    from ..data.background import white_background_mask

    try:
        for step in steps:
            if halt.is_set():
                return
            if not step.tiles:
                _put(out, ("batch", step, [], None, None, True), halt.is_set)
                continue
            by0, bx0 = min(y for y, _ in step.tiles), min(x for _, x in step.tiles)
            by1, bx1 = max(y for y, _ in step.tiles) + tile, max(x for _, x in step.tiles) + tile
            region = read_region(slide, res, by0, by1, bx0, bx1)
            n = len(step.tiles)
            for i in range(0, n, batch_size):
                coords = step.tiles[i : i + batch_size]
                crops = np.stack([region[y - by0 : y - by0 + tile, x - bx0 : x - bx0 + tile] for y, x in coords])
                bg = None
                if background is not None:
                    bg = np.stack([white_background_mask(c, *background) for c in crops])
                if not _put(out, ("batch", step, coords, crops, bg, i + batch_size >= n), halt.is_set):
                    return
    except BaseException as err:  # noqa: BLE001 (re-raised in the calling thread)
        errors.append(err)
    finally:
        _put(out, _END, halt.is_set)


def _write_steps(
    blender: Blender,
    inbox: queue.Queue,
    abort: threading.Event,
    errors: list[BaseException],
    busy: list[float],
) -> None:
    """Writer thread: blend batches into the current block, finish it after its last batch."""
    acc: Optional[np.ndarray] = None
    current: Optional[Step] = None
    try:
        while True:
            item = inbox.get()
            if item is _END or abort.is_set():
                return  # an unfinished block is dropped: it was never committed, a resume redoes it
            t0 = time.perf_counter()
            _, step, coords, maps, bg, last = item
            if current is not step:
                acc, current = blender.begin(step), step
            if coords:
                blender.add(acc, step, coords, maps, bg)
            if last:
                blender.finish(step, acc)
                acc, current = None, None
            busy[0] += time.perf_counter() - t0
    except BaseException as err:  # noqa: BLE001 (re-raised in the calling thread)
        errors.append(err)
        abort.set()


def run_steps(
    predictor: Any,
    slide: Slide,
    res: Resolution,
    steps: list[Step],
    blender: Blender,
    tile: int,
    batch_size: int,
    labels: Any,
    map_names: list[str],
    background: Optional[tuple[int, int]],
    progress: Optional[Callable[[int, int], None]],
    should_stop: Optional[Callable[[], bool]],
    done_before: int,
    total: int,
    prefetch: int,
    timings: dict[str, float],
) -> tuple[int, bool]:
    """Run the pipeline over ``steps``; returns (tiles predicted, stopped early)."""
    to_model: queue.Queue = queue.Queue(maxsize=prefetch)
    to_writer: queue.Queue = queue.Queue(maxsize=prefetch)
    halt, abort = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    busy = [0.0]
    reader = threading.Thread(
        target=_read_steps,
        args=(slide, res, steps, tile, batch_size, background, to_model, halt, errors),
        name="sia-slide-reader",
        daemon=True,
    )
    writer = threading.Thread(
        target=_write_steps, args=(blender, to_writer, abort, errors, busy), name="sia-slide-writer", daemon=True
    )
    reader.start()
    writer.start()
    done, stopped, failed = 0, False, True
    try:
        while True:
            t0 = time.perf_counter()
            while True:
                try:
                    item = to_model.get(timeout=0.2)
                    break
                except queue.Empty:
                    if errors:
                        raise errors[0] from None
            timings["wait_read"] += time.perf_counter() - t0
            if item is _END:
                break
            _, step, coords, crops, bg, last = item
            maps = None
            if coords:
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                t0 = time.perf_counter()
                preds = predictor.predict_batch(crops, labels, mask_background=False)
                timings["model"] += time.perf_counter() - t0
                maps = np.stack([np.concatenate([getattr(p, n) for n in map_names]) for p in preds])
            t0 = time.perf_counter()
            if not _put(to_writer, ("batch", step, coords, maps, bg, last), lambda: bool(errors)):
                raise errors[0]
            timings["wait_write"] += time.perf_counter() - t0
            if coords:
                done += len(coords)
                if progress is not None:
                    progress(done_before + done, total)
        failed = False
    finally:
        halt.set()
        if failed:
            abort.set()
        _put(to_writer, _END, lambda: not writer.is_alive())
        writer.join()
        reader.join()
        timings["write"] += busy[0]
    if errors:
        raise errors[0]
    return done, stopped
