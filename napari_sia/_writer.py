"""npe2 writer for Labels layers: TIFF, palette PNG, OME-Zarr and QuPath GeoJSON via ``sia_core.formats``.

Class names and colours come from the layer's ``metadata['sia']`` (every Labels layer SIA makes carries
them); any other Labels layer is written with napari's convention, 0 = background, classes ``class_1``...
A GeoJSON file records the image size, the classes and the ignore index under a top-level ``"sia"`` member (a
GeoJSON "foreign member", which QuPath ignores), so SIA's reader rasterises it back to the identical layer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from sia_core.formats import LABEL_SUFFIXES

from ._classes import SIA_META, ClassSet

__all__ = ["write_labels", "write_mask", "classes_of_layer", "GEOJSON_SUFFIXES"]

GEOJSON_SUFFIXES = LABEL_SUFFIXES["geojson"]


def classes_of_layer(data: np.ndarray, metadata: Optional[dict[str, Any]]) -> ClassSet:
    """The class set stored with a layer, or napari's convention (0 = background) for other layers."""
    meta = (metadata or {}).get(SIA_META)
    if isinstance(meta, dict) and meta.get("classes"):
        return ClassSet.from_metadata(meta)
    arr = np.asarray(data)
    top = int(arr.max()) if arr.size else 0
    names = ["background", *(f"class_{i}" for i in range(1, top + 1))]
    classes = ClassSet.custom(names)
    classes.ignore_index = 0 if top < 255 else 65535  # napari's background: not an annotation in GeoJSON
    return classes


def write_mask(path: Union[str, os.PathLike], labels: np.ndarray, classes: ClassSet, overwrite: bool = False) -> Path:
    """Write a label map in the format named by the extension (.tif/.tiff, .png, .zarr/.ome.zarr, .geojson).

    Args:
        path: Target file (a directory for OME-Zarr).
        labels: (H, W) class indices; the ignore index marks unlabelled pixels.
        classes: names and colours stored with the file.
        overwrite: replace an existing file; otherwise an existing target is an SIAError.
    """
    from sia_core.errors import SIAError
    from sia_core.formats import write_labels

    path = Path(path)
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise SIAError(f"cannot save a {arr.ndim}-D Labels layer to {path}", fix="save a 2-D (H, W) mask")
    if path.suffix.lower() in GEOJSON_SUFFIXES:
        # the smallest ignored value is recorded as the ignore index, with the image size and the classes
        ignore = sorted({classes.ignore_index, 255 if arr.dtype == np.uint8 else 65535})
        return write_labels(path, arr, classes.names, classes.palette, overwrite=overwrite, ignore_values=ignore)
    palette = classes.full_palette() if path.suffix.lower() == ".png" else classes.palette
    return write_labels(path, arr, classes.names, palette, overwrite=overwrite)


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: napari has already confirmed the path, so an existing file is replaced."""
    arr = np.asarray(data[0] if isinstance(data, list) else data)  # multiscale: the full resolution
    classes = classes_of_layer(arr, attributes.get("metadata"))
    return [str(write_mask(path, arr, classes, overwrite=True))]
