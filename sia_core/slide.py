"""Whole-slide inference with bounded memory: ``sia-core predict-slide`` and :func:`predict_slide`.

The slide is cut into tiles on the grid of :func:`sia_core.tiling.tile_grid` (stride ``tile - overlap``)
at the resolution the model was trained at (:mod:`sia_core.slide_io`); tiles on glass are never read.
The output grid is split into blocks of about ``chunk`` px (a multiple of the tile stride, so tiles start on
block borders) processed in row-major order. Each step owns the tiles whose top-left corner lies in its
block and blends their maps (``blend_weights`` cross-fades) into an accumulator covering the block plus
the overlap-wide margin its tiles reach into to the right and below. When the step's tiles
are in, the block itself is final: its label map (argmax of the blended decoder probabilities) and its
float maps are written to the OME-Zarr, and the two margins go to small files on disk that the block to
the right and the block below pick up. So memory holds one block's accumulator and a few batches, whatever
the slide size (peak RSS of a 16k x 16k slide within a few % of a 4k one, see docs/slides.md); the
margins double as the resume state (:mod:`sia_core.slide_store`).

Three threads overlap the work: a reader prefetches each block's region and cuts it into batches, the
calling thread runs the predictor, a writer blends and writes. On CPU the run is bound by the model.

Scale-out: :func:`predict_slides` under ``torchrun`` gives each rank its share of the slides, or, for
fewer slides than ranks, its share of the block rows of each slide (a rank recomputes the one row of
tiles above its band that overlaps into it, so ranks exchange nothing); rank 0 then only builds the
lower pyramid levels and the GeoJSON from what is on disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .argmax import class_argmax
from .errors import SIAError
from .slide_io import (
    DEFAULT_TRAINING_MPP,
    Resolution,
    Slide,
    TissueMask,
    choose_resolution,
    open_slide,
    open_slide_levels,
    read_region,
    tissue_mask,
)
from .slide_store import SlideStore, geojson_path_for, open_slide_prediction

__all__ = [
    "MAP_NAMES",
    "SlideResult",
    "add_slide_parser",
    "open_slide_levels",
    "open_slide_prediction",
    "predict_slide",
    "predict_slides",
    "slide_layer_data",
]

PathLike = Union[str, os.PathLike]

MAP_NAMES = ("probabilities", "cam", "inhibition", "activation", "rsm")
"""Float maps of :class:`sia_core.predictor.Prediction` that can be blended and stored."""
_RFM_MAPS = ("inhibition", "activation", "rsm")
_FORMAT = 1


@dataclass
class SlideResult:
    """What :func:`predict_slide` did.

    Attributes:
        slide: The slide file.
        out: The OME-Zarr result.
        geojson: The QuPath GeoJSON (None when not asked for or not complete yet).
        shape: (H, W) of the label map (the working grid).
        level: Slide pyramid level read.
        downsample: Level-0 slide pixels per label pixel.
        mpp: Label pixel size in µm (None when the slide records no pixel size).
        tiles_total: Tissue tiles of this run's share (all of them for a single process).
        tiles_done: Tiles predicted by this call (fewer than ``tiles_total`` after a resume or a stop).
        tiles_skipped: Glass tiles never read.
        complete: The whole result is written (pyramids, GeoJSON); False after a stop.
        resumed: An unfinished result was continued.
        stopped: ``should_stop`` ended the run early; run again to resume.
        seconds: Wall time of the call.
        timings: Seconds spent in ``model`` (predict_batch), ``wait_read`` (the model waiting for the
            reader), ``wait_write`` (waiting for the writer), ``write`` (writer busy), ``finish``
            (pyramids + GeoJSON).
        rows: Block rows this process owned (start, stop).
        note: How the level was chosen.
    """

    slide: Path
    out: Path
    geojson: Optional[Path]
    shape: tuple[int, int]
    level: int
    downsample: float
    mpp: Optional[float]
    tiles_total: int
    tiles_done: int
    tiles_skipped: int
    complete: bool
    resumed: bool
    stopped: bool
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    rows: tuple[int, int] = (0, 0)
    note: str = ""

    @property
    def tiles_per_s(self) -> float:
        """Tiles predicted per second of this call, end to end."""
        return self.tiles_done / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------------------
# planning


@dataclass
class _Step:
    """One block of the output: the tissue tiles whose top-left corner lies in it.

    A ``halo`` step belongs to the block row above a rank's band: only its tiles that reach into the band
    are predicted, and only the margin below is kept.
    """

    index: int
    row: int
    col: int
    halo: bool
    tiles: list[tuple[int, int]]


def _grid_starts(length: int, tile: int, overlap: int) -> list[int]:
    from .tiling import tile_grid

    return [y for y, _ in tile_grid(length, 1, tile, overlap)]


def _block_size(chunk: int, tile: int, overlap: int, maps_downsample: int) -> int:
    """The block side used for ``chunk``: a multiple of the tile stride, so that tiles start on block borders
    and reach into the next block by just the overlap (small margins to carry), and of the float maps'
    downsample, so that blocks map to whole map pixels; at least one tile."""
    stride = tile - overlap
    step = stride * maps_downsample // math.gcd(stride, maps_downsample) if maps_downsample else stride
    return step * max(1, round(chunk / step), -(-tile // step))


@dataclass
class _Grid:
    """The tile grid of the working image cut into ``block`` x ``block`` blocks.

    ``ys[r]`` / ``xs[c]``: tile starts whose corner lies in block row r / column c; ``margin_y[r]`` /
    ``margin_x[c]``: how far those tiles reach past the block (the overlap, more for the last tile, which is
    flush with the image edge).
    """

    shape: tuple[int, int]
    tile: int
    block: int
    ys: dict[int, list[int]]
    xs: dict[int, list[int]]
    margin_y: list[int]
    margin_x: list[int]

    @classmethod
    def make(cls, shape: tuple[int, int], tile: int, overlap: int, block: int) -> _Grid:
        starts = []
        for length in shape:
            n = -(-length // block)
            by: dict[int, list[int]] = {}
            for v in _grid_starts(length, tile, overlap):
                by.setdefault(v // block, []).append(v)
            margin = [max([0] + [min(v + tile, length) - (i + 1) * block for v in by.get(i, [])]) for i in range(n)]
            starts.append((by, margin))
        (ys, my), (xs, mx) = starts
        return cls(shape, tile, block, ys, xs, my, mx)

    @property
    def n_rows(self) -> int:
        return len(self.margin_y)

    @property
    def n_cols(self) -> int:
        return len(self.margin_x)


def _plan(grid: _Grid, mask: TissueMask, min_tissue: float, rows: tuple[int, int]) -> tuple[list[_Step], int]:
    """Steps of the block rows ``rows`` (plus the halo row above them), and the count of glass tiles."""
    steps: list[_Step] = []
    skipped = 0
    tile = grid.tile

    def add(r: int, ys: list[int], halo: bool) -> None:
        nonlocal skipped
        for c in range(grid.n_cols):
            tiles = []
            for y in ys:
                for x in grid.xs.get(c, []):
                    if mask.fraction(y, x, tile) >= min_tissue:
                        tiles.append((y, x))
                    elif not halo:
                        skipped += 1
            steps.append(_Step(len(steps), r, c, halo, tiles))

    r0, r1 = rows
    if 0 < r0 < r1:
        add(r0 - 1, [y for y in grid.ys.get(r0 - 1, []) if y + tile > r0 * grid.block], True)
    for r in range(r0, r1):
        add(r, grid.ys.get(r, []), False)
    return steps, skipped


# --------------------------------------------------------------------------------------------------------
# blending one block


class _Blender:
    """Accumulates the weighted maps of one block plus its right/bottom margin and finishes the block.

    Channels of the accumulator: the stored maps (probabilities first), then the glass vote (when white
    glass is masked), then the summed blend weight.
    """

    def __init__(
        self,
        store: SlideStore,
        band: tuple[int, int],
        n_steps: int,
        grid: _Grid,
        overlap: int,
        map_slices: dict[str, slice],
        n_classes: int,
        with_bg: bool,
        fill: int,
        bg_value: int,
        maps_downsample: int,
    ) -> None:
        from .tiling import blend_weights

        self.store, self.band, self.n_steps = store, band, n_steps
        self.grid = grid
        self.h, self.w = grid.shape
        self.k, self.t = grid.block, grid.tile
        self.weights = blend_weights(grid.tile, overlap)
        self.map_slices = map_slices
        self.n_map = max(s.stop for s in map_slices.values())
        self.n_classes = n_classes
        self.with_bg = with_bg
        self.channels = self.n_map + int(with_bg) + 1
        self.fill, self.bg_value = fill, bg_value
        self.ds = maps_downsample

    def _extent(self, step: _Step) -> tuple[int, int, int, int]:
        y0, x0 = step.row * self.k, step.col * self.k
        eh = min(self.k + self.grid.margin_y[step.row], self.h - y0)
        ew = min(self.k + self.grid.margin_x[step.col], self.w - x0)
        return y0, x0, eh, ew

    def begin(self, step: _Step) -> np.ndarray:
        """A zero accumulator with the margins left by the block to the left and the block above."""
        _, _, eh, ew = self._extent(step)
        acc = np.zeros((self.channels, eh, ew), np.float32)
        for name in (f"right_{step.row}_{step.col - 1}", f"bottom_{step.row - 1}_{step.col}"):
            piece = self.store.load_piece(self.band, name)
            if piece is not None:
                acc[:, : piece.shape[1], : piece.shape[2]] += piece
        return acc

    def add(self, acc: np.ndarray, step: _Step, coords: Sequence[tuple[int, int]], maps: np.ndarray, bg: Any) -> None:
        y0, x0, _, _ = self._extent(step)
        for i, (y, x) in enumerate(coords):
            th, tw = min(self.t, self.h - y), min(self.t, self.w - x)
            wts = self.weights[:th, :tw]
            dy, dx = y - y0, x - x0
            view = acc[:, dy : dy + th, dx : dx + tw]
            view[: self.n_map] += maps[i, :, :th, :tw] * wts
            if self.with_bg:
                view[self.n_map] += bg[i, :th, :tw] * wts
            view[-1] += wts

    def finish(self, step: _Step, acc: np.ndarray) -> None:
        """Write the block (unless halo), save its margins, commit, drop the margins it consumed."""
        y0, x0, eh, ew = self._extent(step)
        kh, kw = min(self.k, eh), min(self.k, ew)
        if not step.halo:
            core = acc[:, :kh, :kw]
            wsum = core[-1]
            covered = wsum > 0
            if covered.any():
                # argmax of the weighted sum = argmax of the weighted mean: no division needed
                labels = class_argmax(core[self.map_slices["probabilities"]])
                labels[~covered] = self.fill
                if self.with_bg:
                    labels[covered & (core[self.n_map] > 0.5 * wsum)] = self.bg_value
                self.store.write_labels(y0, x0, labels)
                if self.ds:
                    inv = np.where(covered, 1.0 / np.where(covered, wsum, 1.0), 0.0).astype(np.float32)
                    for name in self.store.map_names:
                        block = _mean_downsample(core[self.map_slices[name]] * inv, self.ds)
                        self.store.write_map(name, y0 // self.ds, x0 // self.ds, block)
        if ew > self.k and acc[-1, :, self.k :].any():
            self.store.save_piece(self.band, f"right_{step.row}_{step.col}", acc[:, :, self.k :])
        if eh > self.k and acc[-1, self.k :, : self.k].any():
            self.store.save_piece(self.band, f"bottom_{step.row}_{step.col}", acc[:, self.k :, : self.k])
        self.store.commit(self.band, step.index + 1, self.n_steps)
        self.store.drop_piece(self.band, f"right_{step.row}_{step.col - 1}")
        self.store.drop_piece(self.band, f"bottom_{step.row - 1}_{step.col}")


def _mean_downsample(maps: np.ndarray, ds: int) -> np.ndarray:
    """(C, h, w) -> (C, ceil(h/ds), ceil(w/ds)) block means (edge rows repeated for partial blocks)."""
    if ds == 1:
        return maps.astype(np.float32, copy=False)
    c, h, w = maps.shape
    ph, pw = (-h) % ds, (-w) % ds
    if ph or pw:
        maps = np.pad(maps, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return maps.reshape(c, (h + ph) // ds, ds, (w + pw) // ds, ds).mean((2, 4), dtype=np.float32)


# --------------------------------------------------------------------------------------------------------
# the three-thread pipeline


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
    steps: list[_Step],
    tile: int,
    batch_size: int,
    background: Optional[tuple[int, int]],
    out: queue.Queue,
    halt: threading.Event,
    errors: list[BaseException],
) -> None:
    """Reader thread: one region read per block, cut into batches (with glass masks) in step order."""
    from .data.background import white_background_mask

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
    blender: _Blender,
    inbox: queue.Queue,
    abort: threading.Event,
    errors: list[BaseException],
    busy: list[float],
) -> None:
    """Writer thread: blend batches into the current block, finish it after its last batch."""
    acc: Optional[np.ndarray] = None
    current: Optional[_Step] = None
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


def _run_steps(
    predictor: Any,
    slide: Slide,
    res: Resolution,
    steps: list[_Step],
    blender: _Blender,
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


# --------------------------------------------------------------------------------------------------------
# one slide


def _trim_heap() -> None:
    """Hand memory freed by the pipeline threads back to the OS (glibc keeps it in its arenas), so the
    GeoJSON step starts from live memory rather than from the high-water mark. No-op off glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _model_fingerprint(predictor: Any) -> str:
    """Hash of the config and every weight: a resume must not mix two models in one map."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(predictor.cfg.to_dict(), sort_keys=True).encode())
    for key, value in sorted(predictor.model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _check_options(
    tile: int, overlap: int, batch_size: int, chunk: int, maps_downsample: int, min_tissue: float
) -> None:
    if tile < 16:
        raise SIAError(f"tile must be at least 16 px, got {tile}", fix="use the model's tile size (e.g. 224)")
    if not 0 <= overlap < tile:
        raise SIAError(f"overlap must be in 0..tile-1 (tile={tile}), got {overlap}", fix="lower --overlap")
    if batch_size < 1:
        raise SIAError(f"batch size must be >= 1, got {batch_size}")
    if chunk < 1:
        raise SIAError(f"chunk must be a positive number of pixels, got {chunk}", fix="use e.g. --chunk 1024")
    if not 0 <= maps_downsample <= 64:
        raise SIAError(
            f"maps downsample must be in 0..64, got {maps_downsample}",
            fix="use a power of two such as 1, 2, 4 or 8 (0: no float maps)",
        )
    if not 0 <= min_tissue <= 1:
        raise SIAError(f"min_tissue is a fraction in 0..1, got {min_tissue}")


def _predict_one(
    predictor: Any,
    slide_path: PathLike,
    out_path: PathLike,
    *,
    level: Optional[int],
    mpp: Optional[float],
    tile: Optional[int],
    overlap: Optional[int],
    batch_size: Optional[int],
    progress: Optional[Callable[[int, int], None]],
    should_stop: Optional[Callable[[], bool]],
    slide_mpp: Optional[float],
    training_mpp: Optional[float],
    chunk: int,
    maps: Sequence[str],
    maps_downsample: int,
    min_tissue: float,
    geojson: Union[bool, PathLike],
    geojson_max_side: int,
    geojson_min_area: Optional[float],
    labels: Any,
    overwrite: bool,
    prefetch: int,
    pyramid_min_side: int,
    rank: int = 0,
    world: int = 1,
) -> SlideResult:
    t_start = time.perf_counter()
    cfg = predictor.cfg
    tile = int(tile or cfg.infer.tile_size)
    overlap = int(cfg.infer.tile_overlap if overlap is None else overlap)
    batch_size = int(batch_size or cfg.infer.batch_size)
    chunk = int(chunk)
    maps = [m for m in dict.fromkeys(maps) if m]
    unknown = [m for m in maps if m not in MAP_NAMES]
    if unknown:
        raise SIAError(f"unknown map name(s) {unknown}", fix=f"choose from {', '.join(MAP_NAMES)} or 'none'")
    if getattr(predictor.model, "rfm", None) is None and any(m in _RFM_MAPS for m in maps):
        raise SIAError(
            f"this model was trained without the RFM, so it has no {', '.join(m for m in maps if m in _RFM_MAPS)} map",
            fix="store probabilities and/or cam only",
        )
    _check_options(tile, overlap, batch_size, chunk, maps_downsample, min_tissue)
    stored = maps if maps_downsample else []
    chunk = _block_size(chunk, tile, overlap, maps_downsample if stored else 0)
    map_names = ["probabilities", *[m for m in stored if m != "probabilities"]]
    n_classes = cfg.num_classes
    map_slices = {n: slice(i * n_classes, (i + 1) * n_classes) for i, n in enumerate(map_names)}
    bg_value = int(cfg.data.ignore_index)
    fill = bg_value if n_classes <= bg_value <= 255 else 255
    background = (cfg.data.white_threshold, cfg.data.white_min_size) if cfg.data.white_background else None

    out = Path(out_path).expanduser()
    if geojson is True:
        geo_path: Optional[Path] = geojson_path_for(out)
    elif geojson:
        geo_path = Path(geojson)
    else:
        geo_path = None
    slide = open_slide(slide_path)
    try:
        res = choose_resolution(slide, level, mpp, slide_mpp, training_mpp)
        params = {
            "format": _FORMAT,
            "slide": str(slide.path.resolve()),
            "slide_bytes": slide.path.stat().st_size,
            "slide_shape": list(slide.shape),
            "level": res.level,
            "factor": res.factor,
            "shape": list(res.shape),
            "tile": tile,
            "overlap": overlap,
            "chunk": chunk,
            "min_tissue": min_tissue,
            "maps": stored,
            "maps_downsample": maps_downsample,
            "labels": None if labels is None else np.asarray(labels).tolist(),
            "model": _model_fingerprint(predictor),
        }
        palette = [list(map(int, p)) for p in cfg.data.palette]
        attrs = {
            "version": _FORMAT,
            "slide": str(slide.path.resolve()),
            "slide_shape": list(slide.shape),
            "level": res.level,
            "factor": res.factor,
            "downsample": res.downsample,
            "mpp": res.mpp,
            "shape": list(res.shape),
            "tile": tile,
            "overlap": overlap,
            "chunk": chunk,
            "classes": list(cfg.data.classes),
            "fill": fill,
            "background": bg_value if background else None,
            "maps": map_names if stored else [],
            "maps_downsample": maps_downsample if stored else 0,
            "note": res.note,
        }
        store = SlideStore(out, geo_path)
        status: list[Any] = [None]
        if rank == 0:
            try:
                mode = store.decide(params, overwrite)
                if mode == "fresh":
                    store.create(
                        params,
                        attrs,
                        res.shape,
                        list(cfg.data.classes),
                        palette,
                        chunk,
                        fill,
                        res.mpp,
                        dict.fromkeys(map_names, n_classes) if stored else {},
                        maps_downsample,
                        pyramid_min_side,
                    )
                status[0] = mode
            except SIAError as err:
                status[0] = err
        if world > 1:
            import torch.distributed as dist

            dist.broadcast_object_list(status, src=0)
        if isinstance(status[0], BaseException):
            raise status[0]
        resumed = status[0] == "resume"
        store.open()
        mask = tissue_mask(slide, res, tile, cfg.data.white_threshold)
        grid = _Grid.make(res.shape, tile, overlap, chunk)
        band = (rank * grid.n_rows // world, (rank + 1) * grid.n_rows // world)
        steps, skipped = _plan(grid, mask, min_tissue, band)
        start = min(store.band_done(band), len(steps))
        total = sum(len(s.tiles) for s in steps)
        done_before = sum(len(s.tiles) for s in steps[:start])
        blender = _Blender(
            store,
            band,
            len(steps),
            grid,
            overlap,
            map_slices,
            n_classes,
            background is not None,
            fill,
            bg_value,
            maps_downsample if stored else 0,
        )
        timings = dict.fromkeys(("model", "wait_read", "wait_write", "write", "finish"), 0.0)
        if progress is not None:
            progress(done_before, total)
        done, stopped = 0, False
        if start < len(steps):
            done, stopped = _run_steps(
                predictor,
                slide,
                res,
                steps[start:],
                blender,
                tile,
                batch_size,
                labels,
                map_names,
                background,
                progress,
                should_stop,
                done_before,
                total,
                prefetch,
                timings,
            )
        band_complete = not stopped and store.band_done(band) >= len(steps)
        all_complete = band_complete
        if world > 1:
            import torch
            import torch.distributed as dist

            flag = torch.tensor([1 if band_complete else 0])
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            all_complete = bool(flag.item())
        complete = False
        if all_complete and rank == 0:
            t0 = time.perf_counter()
            ignore = tuple(sorted({fill, bg_value}))
            min_area = tile * tile / 16 if geojson_min_area is None else geojson_min_area
            _trim_heap()
            store.finish(list(cfg.data.classes), palette, ignore, res.downsample, geojson_max_side, min_area)
            timings["finish"] = time.perf_counter() - t0
            complete = True
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # the result is complete for every rank once this returns
            complete = all_complete
    finally:
        slide.close()
    return SlideResult(
        slide=slide.path,
        out=out,
        geojson=geo_path if complete else None,
        shape=res.shape,
        level=res.level,
        downsample=res.downsample,
        mpp=res.mpp,
        tiles_total=total,
        tiles_done=done,
        tiles_skipped=skipped,
        complete=complete,
        resumed=resumed,
        stopped=stopped,
        seconds=time.perf_counter() - t_start,
        timings=timings,
        rows=band,
        note=res.note,
    )


def predict_slide(
    predictor: Any,
    slide_path: PathLike,
    out_path: PathLike,
    level: Optional[int] = None,
    mpp: Optional[float] = None,
    tile: Optional[int] = None,
    overlap: Optional[int] = None,
    batch_size: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    *,
    slide_mpp: Optional[float] = None,
    training_mpp: Optional[float] = None,
    chunk: int = 1024,
    maps: Sequence[str] = ("probabilities",),
    maps_downsample: int = 4,
    min_tissue: float = 0.05,
    geojson: Union[bool, PathLike] = True,
    geojson_max_side: int = 2048,
    geojson_min_area: Optional[float] = None,
    labels: Optional[Sequence[int]] = None,
    overwrite: bool = False,
    prefetch: int = 4,
    pyramid_min_side: int = 1024,
) -> SlideResult:
    """Segment a whole-slide image into an OME-Zarr label pyramid (+ class maps, + QuPath GeoJSON).

    An unfinished result at ``out_path`` made with the same model and options is resumed from the last
    block written; a complete one is refused unless ``overwrite``.

    Args:
        predictor: A :class:`sia_core.predictor.SIAPredictor`.
        slide_path: TIFF / BigTIFF / OME-TIFF / SVS file.
        out_path: The ``.zarr`` directory to write (``.ome.zarr`` is a good name).
        level: Pyramid level to read (default: the one matching ``mpp``).
        mpp: Target µm per pixel, the model's training resolution (default ``training_mpp``, else
            :data:`sia_core.slide_io.DEFAULT_TRAINING_MPP`, when the slide records its pixel size).
        tile: Tile side (default ``cfg.infer.tile_size``).
        overlap: Overlap of neighbouring tiles, cross-faded (default ``cfg.infer.tile_overlap``).
        batch_size: Tiles per predictor call (default ``cfg.infer.batch_size``).
        progress: Called as ``progress(tiles_done, tiles_total)`` from the calling thread; raising from it
            aborts the run (it resumes later).
        should_stop: Polled before every batch; True ends the run early, keeping what is written.
        slide_mpp: Level-0 µm/px of the slide, for files that do not record it (or record it wrongly).
        training_mpp: The model's training resolution, when known.
        chunk: About the side of the output blocks (zarr chunks); rounded to a multiple of the tile stride
            (``tile - overlap``, e.g. 1024 -> 960 for 224/32) so that tiles start on block borders. Memory
            holds one block plus an overlap-wide margin.
        maps: Float maps to store beside the labels (any of :data:`MAP_NAMES`).
        maps_downsample: Store the float maps at 1/n resolution (0: none; they are smooth at the token
            scale of 16 px, so 4 loses nothing visible and saves 16x disk).
        min_tissue: Predict a tile when at least this fraction of it is tissue (not white glass).
        geojson: Write QuPath GeoJSON beside the store (True), to this path, or not (False).
        geojson_max_side: The GeoJSON is traced on the first label pyramid level this small (coordinates
            are scaled back to level-0 slide pixels).
        geojson_min_area: GeoJSON regions smaller than this many label pixels are merged into their
            surroundings (default a sixteenth of a tile, e.g. 56 x 56 px; 0 keeps every speckle). The
            label pyramid keeps them.
        labels: Image-level labels for every tile (C,) 0/1; None = the classifier's own per tile.
        overwrite: Replace a complete or foreign result.
        prefetch: Batches queued between reader, model and writer.
        pyramid_min_side: Output pyramids halve until the longer side is at most this.

    Returns:
        A :class:`SlideResult`.
    """
    return _predict_one(
        predictor,
        slide_path,
        out_path,
        level=level,
        mpp=mpp,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        progress=progress,
        should_stop=should_stop,
        slide_mpp=slide_mpp,
        training_mpp=training_mpp,
        chunk=chunk,
        maps=maps,
        maps_downsample=maps_downsample,
        min_tissue=min_tissue,
        geojson=geojson,
        geojson_max_side=geojson_max_side,
        geojson_min_area=geojson_min_area,
        labels=labels,
        overwrite=overwrite,
        prefetch=prefetch,
        pyramid_min_side=pyramid_min_side,
    )


# --------------------------------------------------------------------------------------------------------
# many slides, many processes


def _out_name(slide: Path) -> str:
    name = slide.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs", ".btf", ".ndpi", ".scn"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] + ".ome.zarr"
    return slide.stem + ".ome.zarr"


def slide_outputs(slides: Sequence[PathLike], out: PathLike) -> list[Path]:
    """Where each slide's result goes: ``out`` itself for one slide, ``out/<name>.ome.zarr`` for several."""
    out = Path(out)
    if len(slides) == 1:
        return [out]
    names = [_out_name(Path(s)) for s in slides]
    if len(set(names)) != len(names):
        raise SIAError("two slides have the same file name", fix="predict them into different --out folders")
    return [out / n for n in names]


def predict_slides(
    predictor: Any,
    slides: Sequence[PathLike],
    out: PathLike,
    shard: str = "auto",
    **kwargs: Any,
) -> list[SlideResult]:
    """Predict several slides, sharded over ``torchrun`` ranks when there are several processes.

    Each rank (``sia_core.train.dist_info``) takes ``slides[rank::world]`` (``shard='slides'``; no
    communication at all), or every slide's block rows in ``world`` bands (``shard='tiles'``, for fewer
    slides than ranks; a gloo process group only synchronises: no tile or map crosses processes, and
    rank 0 only builds the lower pyramid levels and the GeoJSON). ``'auto'`` picks 'slides' when there
    are at least as many slides as ranks. The output store must be on a file system every rank sees.

    Args:
        predictor: The model, on this rank's device.
        slides: Slide files.
        out: A ``.zarr`` path for one slide, a folder for several (see :func:`slide_outputs`).
        shard: 'auto', 'slides' or 'tiles'.
        **kwargs: Options of :func:`predict_slide`.

    Returns:
        The results of the slides this rank worked on.
    """
    from .train import dist_info

    if not slides:
        raise SIAError("no slide given", fix="pass one or more slide files")
    if shard not in ("auto", "slides", "tiles"):
        raise SIAError(f"unknown shard mode {shard!r}", fix="use auto, slides or tiles")
    outs = slide_outputs(slides, out)
    if len(slides) > 1:
        Path(out).mkdir(parents=True, exist_ok=True)
    info = dist_info()
    if info.world == 1:
        return [predict_slide(predictor, s, o, **kwargs) for s, o in zip(slides, outs)]
    mode = shard if shard != "auto" else ("slides" if len(slides) >= info.world else "tiles")
    if mode == "slides":
        return [predict_slide(predictor, s, o, **kwargs) for s, o in list(zip(slides, outs))[info.rank :: info.world]]
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        # gloo: only barriers and a flag cross processes, so no GPU collective backend is needed; ranks
        # wait at the barrier while others finish their bands, hence the long timeout
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
    options = {**_DEFAULTS, **kwargs}
    unknown = set(kwargs) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected options {sorted(unknown)}")
    return [_predict_one(predictor, s, o, rank=info.rank, world=info.world, **options) for s, o in zip(slides, outs)]


_DEFAULTS: dict[str, Any] = {
    "level": None,
    "mpp": None,
    "tile": None,
    "overlap": None,
    "batch_size": None,
    "progress": None,
    "should_stop": None,
    "slide_mpp": None,
    "training_mpp": None,
    "chunk": 1024,
    "maps": ("probabilities",),
    "maps_downsample": 4,
    "min_tissue": 0.05,
    "geojson": True,
    "geojson_max_side": 2048,
    "geojson_min_area": None,
    "labels": None,
    "overwrite": False,
    "prefetch": 4,
    "pyramid_min_side": 1024,
}


# --------------------------------------------------------------------------------------------------------
# viewers


def slide_layer_data(result_path: PathLike, slide_path: Optional[PathLike] = None) -> list[tuple[Any, dict, str]]:
    """napari layer-data tuples (no napari import): the slide's multiscale image, then the label pyramid
    on top of it, scaled to the slide's level-0 pixels.

    Use as ``for data, kwargs, kind in slide_layer_data(out): getattr(viewer, f"add_{kind}")(data, **kwargs)``.

    Args:
        result_path: The ``.zarr`` written by :func:`predict_slide`.
        slide_path: The slide (default: the path recorded in the result).
    """
    pred = open_slide_prediction(result_path)
    slide = Path(slide_path) if slide_path is not None else Path(pred["slide"])
    layers: list[tuple[Any, dict, str]] = []
    if slide.is_file():
        layers.append((open_slide_levels(slide), {"name": slide.name, "multiscale": True, "rgb": True}, "image"))
    colors: dict[Any, Any] = {None: (0.0, 0.0, 0.0, 0.0)}
    for i, rgb in enumerate(pred["palette"] or []):
        if rgb is not None:
            colors[i] = tuple(v / 255 for v in rgb) + (1.0,)
    for value in (pred["fill"], pred["background"]):
        if value is not None:
            colors[int(value)] = (0.0, 0.0, 0.0, 0.0)
    s = pred["scale"]
    layers.append(
        (
            pred["labels"],
            {
                "name": f"{Path(result_path).name} labels",
                "multiscale": True,
                "scale": (s, s),
                "opacity": 0.5,
                "colormap": colors,
                "metadata": {"classes": pred["classes"], "sia_slide": pred["info"]},
            },
            "labels",
        )
    )
    return layers


# --------------------------------------------------------------------------------------------------------
# command line


def add_slide_parser(subparsers: Any) -> None:
    """Add ``predict-slide`` to the ``sia-core`` sub-commands."""
    p = subparsers.add_parser(
        "predict-slide",
        help="segment whole-slide images (TIFF/BigTIFF/OME-TIFF/SVS) into OME-Zarr + QuPath GeoJSON",
        description="Tile-by-tile inference on a slide pyramid with overlap blending and glass skipping, in "
        "bounded memory. Writes OUT.zarr (labels/sia label pyramid, maps/<name> class maps) and OUT.geojson. "
        "Running the same command on an unfinished OUT resumes it. Under torchrun each rank takes its share "
        "of the slides (or of the tiles, for fewer slides than ranks).",
    )
    p.add_argument("run", help="run directory or .safetensors")
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files")
    p.add_argument("--out", required=True, help="OUT.zarr for one slide; a folder for several (one .ome.zarr each)")
    p.add_argument("--level", type=int, help="pyramid level to read (default: the level matching --mpp)")
    p.add_argument(
        "--mpp",
        type=float,
        help=f"model resolution in µm/px (default {DEFAULT_TRAINING_MPP}, i.e. 20x, when the slide records its "
        "pixel size; without it level 0 is used)",
    )
    p.add_argument("--slide-mpp", type=float, help="the slide's level-0 µm/px, when the file does not say")
    p.add_argument("--tile", type=int, help="tile size (default: the model's infer.tile_size)")
    p.add_argument("--overlap", type=int, help="tile overlap, cross-faded (default: infer.tile_overlap)")
    p.add_argument("--batch-size", type=int, help="tiles per model call (default: infer.batch_size)")
    p.add_argument("--chunk", type=int, default=1024, help="output block / zarr chunk side (default 1024)")
    p.add_argument(
        "--maps",
        default="probabilities",
        help="float maps to store, comma-separated from " + ",".join(MAP_NAMES) + ", or 'none' (default probabilities)",
    )
    p.add_argument("--maps-downsample", type=int, default=4, help="store float maps at 1/N resolution (default 4)")
    p.add_argument("--min-tissue", type=float, default=0.05, help="skip tiles with less tissue than this (0.05)")
    p.add_argument(
        "--geojson",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write QuPath GeoJSON beside OUT (default on)",
    )
    p.add_argument(
        "--geojson-min-area",
        type=float,
        help="merge GeoJSON regions smaller than this many label pixels into their surroundings (default tile²/16)",
    )
    p.add_argument("--shard", choices=["auto", "slides", "tiles"], default="auto", help="torchrun split (auto)")
    p.add_argument("--overwrite", action="store_true", help="replace a complete or foreign OUT")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (torchrun: cuda:LOCAL_RANK)")
    p.set_defaults(func=cmd_predict_slide)


def cmd_predict_slide(args: argparse.Namespace) -> int:
    """Handler of ``sia-core predict-slide``."""
    from tqdm import tqdm

    from .predictor import SIAPredictor
    from .train import dist_info

    info = dist_info()
    device = args.device
    if info.world > 1 and device == "auto":
        import torch

        device = f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"
    maps = [] if args.maps.strip().lower() == "none" else [m.strip() for m in args.maps.split(",") if m.strip()]
    predictor = SIAPredictor.from_run(args.run, device=device)
    bar = tqdm(
        total=0, unit="tile", desc="predict-slide", file=sys.stderr, dynamic_ncols=True, disable=not info.is_main
    )

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    try:
        results = predict_slides(
            predictor,
            args.slides,
            args.out,
            shard=args.shard,
            level=args.level,
            mpp=args.mpp,
            slide_mpp=args.slide_mpp,
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            chunk=args.chunk,
            maps=maps,
            maps_downsample=args.maps_downsample if maps else 0,
            min_tissue=args.min_tissue,
            geojson=args.geojson,
            geojson_min_area=args.geojson_min_area,
            overwrite=args.overwrite,
            progress=progress,
        )
    except KeyboardInterrupt:
        bar.close()
        print(
            f"interrupted: finished blocks are kept in {args.out}; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    bar.close()
    for r in results:
        where = f"{r.out}" + (f" + {r.geojson}" if r.geojson else "")
        mpp = f"{r.mpp:.3g} µm/px" if r.mpp else "unknown µm/px"
        print(
            f"{r.slide.name}: {r.shape[1]}x{r.shape[0]} px at {mpp} ({r.note}); {r.tiles_done} tiles predicted"
            f"{' (resumed)' if r.resumed else ''}, {r.tiles_skipped} glass tiles skipped, "
            f"{r.tiles_per_s:.1f} tiles/s -> {where}"
        )
    return 0
