"""Whole-slide images: read them lazily, predict them tile by tile in bounded memory, store the result as an
OME-Zarr label pyramid with a QuPath GeoJSON beside it, resume what was interrupted.

* :mod:`.reader`: open TIFF / OME-TIFF / SVS pyramids, choose the resolution, find the tissue.
* :mod:`.options`: :class:`SlideOptions`, every option and its default once.
* :mod:`.plan`, :mod:`.blend`, :mod:`.pipeline`: tiles per block, blending, the reader / model / writer threads.
* :mod:`.predict`: :func:`predict_slide`, :func:`predict_slides` (torchrun sharding).
* :mod:`.store`: the result on disk, its resume state, :func:`open_slide_prediction`.
* :mod:`.synthetic`: synthetic H&E slides of any size for tests and benchmarks.
"""

from __future__ import annotations

from .options import MAP_NAMES, SlideOptions
from .predict import SlideResult, predict_slide, predict_slides, slide_outputs
from .reader import (
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
from .store import open_slide_prediction
from .synthetic import write_synthetic_slide

__all__ = [
    "DEFAULT_TRAINING_MPP",
    "MAP_NAMES",
    "Resolution",
    "Slide",
    "SlideOptions",
    "SlideResult",
    "TissueMask",
    "choose_resolution",
    "open_slide",
    "open_slide_levels",
    "open_slide_prediction",
    "predict_slide",
    "predict_slides",
    "read_region",
    "slide_outputs",
    "tissue_mask",
    "write_synthetic_slide",
]
