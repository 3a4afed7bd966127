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

import importlib
from typing import Any

# Names -> the submodule that defines them. Loaded on first use (PEP 562), so that ``sia-core --help`` and the
# predict-slide parser (which needs only .options) do not import torch and the model.
_WHERE = {
    "MAP_NAMES": "options",
    "SlideOptions": "options",
    "SlideResult": "predict",
    "predict_slide": "predict",
    "predict_slides": "predict",
    "slide_outputs": "predict",
    "DEFAULT_TRAINING_MPP": "reader",
    "Resolution": "reader",
    "Slide": "reader",
    "TissueMask": "reader",
    "choose_resolution": "reader",
    "open_slide": "reader",
    "open_slide_levels": "reader",
    "read_region": "reader",
    "tissue_mask": "reader",
    "open_slide_prediction": "store",
    "write_synthetic_slide": "synthetic",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = sorted(_WHERE)
