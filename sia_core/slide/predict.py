"""Whole-slide inference with bounded memory: :func:`predict_slide` and, over processes, :func:`predict_slides`.

The slide is read at the resolution the model was trained at (:mod:`.reader`), cut into blocks of tissue
tiles (:mod:`.plan`), predicted by a three-thread pipeline (:mod:`.pipeline`) that blends each block
(:mod:`.blend`) and writes it to the OME-Zarr result (:mod:`.store`). Memory holds one block's accumulator and
a few batches, whatever the slide size (peak RSS of a 16k x 16k slide within a few % of a 4k one, see
docs/slides.md); the blocks' margins double as the resume state.

Scale-out: :func:`predict_slides` under ``torchrun`` gives each rank its share of the slides, or, for
fewer slides than ranks, its share of the block rows of each slide (a rank recomputes the one row of
tiles above its band that overlaps into it, so ranks exchange nothing); rank 0 then only builds the
lower pyramid levels and the GeoJSON from what is on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import SIAError
from ..io_utils import WriteError, write_error
from ..runtime import dist_info
from .blend import Blender
from .options import RFM_MAPS, SlideOptions
from .pipeline import run_steps
from .plan import Grid, plan_steps
from .reader import choose_resolution, open_slide, slide_overview, tissue_mask
from .store import SlideStore, geojson_path_for

__all__ = ["SlideResult", "predict_slide", "predict_slides", "slide_outputs"]

PathLike = Union[str, os.PathLike]
Progress = Optional[Callable[[int, int], None]]

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


def _broadcast(value: Any, world: int) -> Any:
    """Rank 0's ``value`` on every rank (an exception travels too, and is raised everywhere)."""
    box = [value]
    if world > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _all_true(flag: bool, world: int) -> bool:
    if world == 1:
        return flag
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([1 if flag else 0])
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def predict_slide(
    predictor: Any,
    slide_path: PathLike,
    out_path: PathLike,
    options: Optional[SlideOptions] = None,
    *,
    progress: Progress = None,
    should_stop: Optional[Callable[[], bool]] = None,
    **changes: Any,
) -> SlideResult:
    """Segment a whole-slide image into an OME-Zarr label pyramid (+ class maps, + QuPath GeoJSON).

    An unfinished result at ``out_path`` made with the same model and options is resumed from the last
    block written; a complete one is replaced only with ``overwrite``, and a folder SIA did not write never.

    Args:
        predictor: A :class:`sia_core.predictor.SIAPredictor`.
        slide_path: TIFF / BigTIFF / OME-TIFF / SVS file.
        out_path: The ``.zarr`` directory to write (``.ome.zarr`` is a good name).
        options: How to predict and store (:class:`SlideOptions`; default: its defaults).
        progress: Called as ``progress(tiles_done, tiles_total)`` from the calling thread; raising from it
            aborts the run (it resumes later).
        should_stop: Polled before every batch; True ends the run early, keeping what is written.
        **changes: Options to change from ``options`` by name (e.g. ``overwrite=True, chunk=2048``).

    Returns:
        A :class:`SlideResult`.
    """
    opts = (options or SlideOptions()).replace(**changes)
    return _predict_one(predictor, Path(slide_path), Path(out_path).expanduser(), opts, progress, should_stop)


def _predict_one(
    predictor: Any,
    slide_path: Path,
    out: Path,
    options: SlideOptions,
    progress: Progress,
    should_stop: Optional[Callable[[], bool]],
    rank: int = 0,
    world: int = 1,
) -> SlideResult:
    t_start = time.perf_counter()
    cfg = predictor.cfg
    opts = options.resolved(cfg)
    if getattr(predictor.model, "rfm", None) is None and any(m in RFM_MAPS for m in opts.maps):
        raise SIAError(
            f"this model was trained without the RFM, so it has no {', '.join(m for m in opts.maps if m in RFM_MAPS)} "
            "map",
            fix="store probabilities and/or cam only",
        )
    map_names = ["probabilities", *[m for m in opts.maps if m != "probabilities"]]
    n_classes = cfg.num_classes
    classes, palette = list(cfg.data.classes), [list(map(int, p)) for p in cfg.data.palette]
    bg_value = int(cfg.data.ignore_index)
    fill = bg_value if n_classes <= bg_value <= 255 else 255
    background = (cfg.data.white_threshold, cfg.data.white_min_size) if cfg.data.white_background else None
    geo_path = geojson_path_for(out) if opts.geojson is True else Path(opts.geojson) if opts.geojson else None
    store = SlideStore(out, geo_path)
    slide = open_slide(slide_path)
    fresh = False
    try:
        res = choose_resolution(slide, opts.level, opts.mpp, opts.slide_mpp, opts.training_mpp)
        mask = tissue_mask(slide, res, opts.tile, cfg.data.white_threshold)  # a slide that does not decode: no store
        record = {"slide": str(slide.path.resolve()), "slide_shape": list(slide.shape), "level": res.level,
                  "factor": res.factor, "shape": list(res.shape)}  # fmt: skip
        params = {"format": _FORMAT, **record, "slide_bytes": slide.path.stat().st_size, **opts.resume_record(),
                  "model": _model_fingerprint(predictor)}  # fmt: skip
        attrs = {"version": _FORMAT, **record, "downsample": res.downsample, "mpp": res.mpp, "tile": opts.tile,
                 "overlap": opts.overlap, "chunk": opts.chunk, "classes": classes, "fill": fill,
                 "background": bg_value if background else None, "maps": map_names if opts.maps else [],
                 "maps_downsample": opts.maps_downsample if opts.maps else 0, "note": res.note}  # fmt: skip
        mode: Any = None
        if rank == 0:
            try:
                mode = store.decide(params, opts.overwrite)
                if mode == "fresh":
                    fresh = True
                    maps = dict.fromkeys(map_names, n_classes) if opts.maps else {}
                    store.create(params, attrs, res.shape, classes, palette, opts.chunk, fill, res.mpp, maps,
                                 opts.maps_downsample, opts.pyramid_min_side,
                                 overview=lambda shape: slide_overview(slide, res, shape))  # fmt: skip
            except SIAError as err:
                mode = err
            except OSError as err:  # a full disk, a read-only file system: one line, nothing half-made left
                mode = write_error(err, out)  # the free space before what was made is removed
                with contextlib.suppress(OSError):
                    store.discard()
                fresh = False
        resumed = _broadcast(mode, world) == "resume"
        store.open()
        grid = Grid.make(res.shape, opts.tile, opts.overlap, opts.chunk)
        band = (rank * grid.n_rows // world, (rank + 1) * grid.n_rows // world)
        steps, skipped = plan_steps(grid, mask, opts.min_tissue, band)
        start = min(store.band_done(band), len(steps))
        total = sum(len(s.tiles) for s in steps)
        done_before = sum(len(s.tiles) for s in steps[:start])
        map_slices = {n: slice(i * n_classes, (i + 1) * n_classes) for i, n in enumerate(map_names)}
        blender = Blender(store, band, len(steps), grid, opts.overlap, map_slices, n_classes, background is not None,
                          fill, bg_value, opts.maps_downsample if opts.maps else 0)  # fmt: skip
        timings = dict.fromkeys(("model", "wait_read", "wait_write", "write", "finish"), 0.0)
        if progress is not None:
            progress(done_before, total)
        done, stopped = 0, False
        if start < len(steps):
            done, stopped = run_steps(predictor, slide, res, steps[start:], blender, opts.tile, opts.batch_size,
                                      opts.labels, map_names, background, progress, should_stop, done_before, total,
                                      opts.prefetch, timings)  # fmt: skip
        all_complete = _all_true(not stopped and store.band_done(band) >= len(steps), world)
        complete = False
        if all_complete and rank == 0:
            t0 = time.perf_counter()
            ignore = tuple(sorted({fill, bg_value}))
            min_area = opts.tile * opts.tile / 16 if opts.geojson_min_area is None else opts.geojson_min_area
            _trim_heap()
            store.finish(classes, palette, ignore, res.downsample, opts.geojson_max_side, min_area, slide.shape)
            timings["finish"] = time.perf_counter() - t0
            complete = True
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # the result is complete for every rank once this returns
            complete = all_complete
    except SIAError as err:
        if fresh and not isinstance(err, WriteError):
            store.discard()  # bad input (a tile that does not decode): nothing half-made is left behind
        raise  # a full disk keeps the finished blocks, like a kill: once there is space the same command resumes
    except OSError as err:  # zarr's own writes of a block or of the pyramid: a full disk, a read-only remount
        raise write_error(err, out) from None
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
    options: Optional[SlideOptions] = None,
    *,
    progress: Progress = None,
    should_stop: Optional[Callable[[], bool]] = None,
    **changes: Any,
) -> list[SlideResult]:
    """Predict several slides, sharded over ``torchrun`` ranks when there are several processes.

    Each rank (:func:`sia_core.runtime.dist_info`) takes ``slides[rank::world]`` (``shard='slides'``; no
    communication at all), or every slide's block rows in ``world`` bands (``shard='tiles'``, for fewer
    slides than ranks; a gloo process group only synchronises: no tile or map crosses processes, and
    rank 0 only builds the lower pyramid levels and the GeoJSON). ``'auto'`` picks 'slides' when there
    are at least as many slides as ranks. The output store must be on a file system every rank sees.

    Args:
        predictor: The model, on this rank's device.
        slides: Slide files.
        out: A ``.zarr`` path for one slide, a folder for several (see :func:`slide_outputs`).
        shard: 'auto', 'slides' or 'tiles'.
        options, progress, should_stop, changes: As for :func:`predict_slide`.

    Returns:
        The results of the slides this rank worked on.
    """
    if not slides:
        raise SIAError("no slide given", fix="pass one or more slide files")
    if shard not in ("auto", "slides", "tiles"):
        raise SIAError(f"unknown shard mode {shard!r}", fix="use auto, slides or tiles")
    opts = (options or SlideOptions()).replace(**changes)
    outs = slide_outputs(slides, out)
    if len(slides) > 1:
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise SIAError(f"{folder} is a file; several slides need a folder as --out", fix="choose another --out")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            msg = f"cannot create the output folder {folder}: {err.strerror}"
            raise SIAError(msg, fix="choose a writable --out") from err
    info = dist_info()
    pairs = [(Path(s), Path(o).expanduser()) for s, o in zip(slides, outs)]
    mode = shard if shard != "auto" else ("slides" if len(slides) >= info.world else "tiles")
    if info.world == 1 or mode == "slides":
        mine = pairs if info.world == 1 else pairs[info.rank :: info.world]
        return [_predict_one(predictor, s, o, opts, progress, should_stop) for s, o in mine]
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        # gloo: only barriers and a flag cross processes, so no GPU collective backend is needed; ranks
        # wait at the barrier while others finish their bands, hence the long timeout
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
    return [_predict_one(predictor, s, o, opts, progress, should_stop, info.rank, info.world) for s, o in pairs]
