"""Every option of slide inference, its default and its help, written once.

:class:`SlideOptions` is what :func:`sia_core.slide.predict_slide` takes; ``sia-core predict-slide`` builds its
flags from the fields (:func:`add_option_arguments`), the napari widget passes one, and the fields marked
``resume`` (after :meth:`SlideOptions.resolved`) are the record an unfinished result must match to be resumed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..errors import SIAError
from .reader import DEFAULT_TRAINING_MPP

__all__ = ["MAP_NAMES", "RFM_MAPS", "SlideOptions", "add_option_arguments", "options_from_args"]

MAP_NAMES = ("probabilities", "cam", "inhibition", "activation", "rsm")
"""Float maps of :class:`sia_core.predictor.Prediction` that can be blended and stored."""
RFM_MAPS = ("inhibition", "activation", "rsm")
"""The maps only a model with the RFM has."""


def _opt(default: Any, help: Optional[str] = None, *, resume: bool = False, **cli: Any) -> Any:  # noqa: A002
    """A field; ``help`` makes it a command-line flag (``cli``: more add_argument keywords), ``resume`` part of
    the resume record."""
    return field(default=default, metadata={"help": help, "resume": resume, **cli})


@dataclass
class SlideOptions:
    """How a slide is predicted and stored (see docs/slides.md for each option at length)."""

    level: Optional[int] = _opt(None, "pyramid level to read (default: the level matching --mpp)", type=int)
    mpp: Optional[float] = _opt(
        None,
        f"model resolution in µm/px (default {DEFAULT_TRAINING_MPP}, i.e. 20x, when the slide records its pixel "
        "size; without it level 0 is used)",
        type=float,
    )
    slide_mpp: Optional[float] = _opt(None, "the slide's level-0 µm/px, when the file does not say", type=float)
    training_mpp: Optional[float] = _opt(None)
    """The model's training resolution, when known (``mpp`` wins)."""
    tile: Optional[int] = _opt(None, "tile size (default: the model's infer.tile_size)", resume=True, type=int)
    overlap: Optional[int] = _opt(
        None, "tile overlap, cross-faded (default: infer.tile_overlap)", resume=True, type=int
    )
    batch_size: Optional[int] = _opt(None, "tiles per model call (default: infer.batch_size)", type=int)
    chunk: int = _opt(
        1024, "output block / zarr chunk side, rounded to a multiple of the tile stride", resume=True, type=int
    )
    maps: tuple[str, ...] = _opt(
        ("probabilities",),
        "float maps to store, comma-separated from " + ",".join(MAP_NAMES) + ", or 'none'",
        resume=True,
        type=lambda text: () if text.strip().lower() == "none" else tuple(m.strip() for m in text.split(",") if m),
    )
    maps_downsample: int = _opt(4, "store float maps at 1/N resolution (0: none)", resume=True, type=int)
    min_tissue: float = _opt(
        0.05, "skip tiles with less tissue (non-white) than this fraction", resume=True, type=float
    )
    geojson: Union[bool, str] = _opt(
        True, "also write QuPath GeoJSON beside OUT", action=argparse.BooleanOptionalAction
    )
    geojson_max_side: int = _opt(2048)
    """The GeoJSON is traced on the first label pyramid level this small."""
    geojson_min_area: Optional[float] = _opt(
        None, "merge GeoJSON regions smaller than this many label pixels into their surroundings (default tile²/16)",
        type=float,
    )  # fmt: skip
    labels: Optional[tuple[int, ...]] = _opt(None, resume=True)
    """Image-level labels (C,) 0/1 for every tile; None = the classifier's own per tile."""
    overwrite: bool = _opt(False, "replace a complete or unfinished slide prediction in OUT", action="store_true")
    prefetch: int = _opt(4)
    """Batches queued between reader, model and writer."""
    pyramid_min_side: int = _opt(1024)
    """Output pyramids halve until the longer side is at most this."""

    def replace(self, **changes: Any) -> SlideOptions:
        """A copy with ``changes``; an unknown option is a TypeError naming it."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown slide option(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def resolved(self, cfg: Any) -> SlideOptions:
        """Defaults from the model's config filled in and every value checked.

        Raises:
            SIAError: A value out of range, an unknown map, or an RFM map of a model without the RFM.
        """
        out = self.replace(
            tile=int(self.tile or cfg.infer.tile_size),
            overlap=int(cfg.infer.tile_overlap if self.overlap is None else self.overlap),
            batch_size=int(self.batch_size or cfg.infer.batch_size),
            maps=tuple(m for m in dict.fromkeys(self.maps) if m),
            labels=None if self.labels is None else tuple(int(v) for v in self.labels),
        )
        unknown = [m for m in out.maps if m not in MAP_NAMES]
        if unknown:
            raise SIAError(f"unknown map name(s) {unknown}", fix=f"choose from {', '.join(MAP_NAMES)} or 'none'")
        if out.tile < 16:
            raise SIAError(f"tile must be at least 16 px, got {out.tile}", fix="use the model's tile size (e.g. 224)")
        if not 0 <= out.overlap < out.tile:
            raise SIAError(f"overlap must be in 0..tile-1 (tile={out.tile}), got {out.overlap}", fix="lower --overlap")
        if out.batch_size < 1:
            raise SIAError(f"batch size must be >= 1, got {out.batch_size}")
        if out.chunk < 1:
            raise SIAError(f"chunk must be a positive number of pixels, got {out.chunk}", fix="use e.g. --chunk 1024")
        if not 0 <= out.maps_downsample <= 64:
            raise SIAError(
                f"maps downsample must be in 0..64, got {out.maps_downsample}",
                fix="use a power of two such as 1, 2, 4 or 8 (0: no float maps)",
            )
        if not 0 <= out.min_tissue <= 1:
            raise SIAError(f"min_tissue is a fraction in 0..1, got {out.min_tissue}")
        if not out.maps_downsample:
            out.maps = ()
        stride = out.tile - out.overlap
        ds = out.maps_downsample if out.maps else 0
        step = stride * ds // math.gcd(stride, ds) if ds else stride
        # blocks: a multiple of the tile stride (tiles start on block borders and reach into the next block
        # by just the overlap) and of the maps' downsample (blocks map to whole map pixels); at least a tile
        out.chunk = step * max(1, round(out.chunk / step), -(-out.tile // step))
        return out

    def resume_record(self) -> dict[str, Any]:
        """The options an unfinished result must have been made with to be resumed (JSON-ready)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
            if f.metadata.get("resume")
        }


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per option that has a help text, with the option's default."""
    defaults = SlideOptions()
    for f in dataclasses.fields(SlideOptions):
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        if help_text is None:
            continue
        meta.pop("resume")
        default = getattr(defaults, f.name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        suffix = f" (default {shown})" if default not in (None, False, True) else ""
        parser.add_argument("--" + f.name.replace("_", "-"), default=default, help=help_text + suffix, **meta)


def options_from_args(args: argparse.Namespace, names: Sequence[str] = ()) -> SlideOptions:
    """The SlideOptions of parsed arguments (the fields that are flags)."""
    flags = [f.name for f in dataclasses.fields(SlideOptions) if f.metadata.get("help")]
    return SlideOptions(**{name: getattr(args, name) for name in [*flags, *names]})
