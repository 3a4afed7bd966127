"""Label maps and float maps in the formats pathologists and their tools use, one module per format.

* :mod:`.tiff`: label TIFF and float-map TIFF (zlib, tiled when large, BigTIFF when needed).
* :mod:`.png`: palette PNG, the one palette-PNG writer of the project.
* :mod:`.ome_zarr`: OME-Zarr stores with an image at the root and ``labels/<name>`` under it (NGFF v0.4).
* :mod:`.geojson`: QuPath GeoJSON, exact pixel-edge polygons (:mod:`.outlines`), image size recorded.

:func:`write_labels` and :func:`read_labels` choose the format from the file name. Every writer refuses to
replace an existing file unless ``overwrite=True`` and writes atomically (temporary file or directory beside
the target, then a rename), so an interrupted export never leaves a half file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..classes import default_palette
from ..errors import SIAError
from .common import Palette, PathLike, as_labels, ignore_fill
from .geojson import geojson_to_labels, labels_to_geojson, read_geojson, read_geojson_labels, write_geojson
from .ome_zarr import build_pyramid, create_label_zarr, read_label_zarr, write_label_zarr
from .png import read_label_png, write_label_png
from .tiff import read_float_tiff, read_label_tiff, write_float_tiff, write_label_tiff

__all__ = [
    "LABEL_SUFFIXES",
    "build_pyramid",
    "create_label_zarr",
    "default_palette",
    "geojson_to_labels",
    "label_format",
    "labels_to_geojson",
    "read_float_tiff",
    "read_geojson",
    "read_label_png",
    "read_label_tiff",
    "read_label_zarr",
    "read_labels",
    "write_float_tiff",
    "write_geojson",
    "write_label_png",
    "write_label_tiff",
    "write_label_zarr",
    "write_labels",
]

LABEL_SUFFIXES = {
    "tiff": (".tif", ".tiff"),
    "png": (".png",),
    "zarr": (".zarr",),
    "geojson": (".geojson", ".json"),
}
"""File-name endings of each label format (``.ome.zarr`` ends in ``.zarr``)."""


def label_format(path: PathLike) -> str:
    """'tiff', 'png', 'zarr' or 'geojson', from the file name."""
    name = Path(path).name.lower().rstrip("/")
    for kind, suffixes in LABEL_SUFFIXES.items():
        if name.endswith(suffixes):
            return kind
    raise SIAError(
        f"cannot tell the label format of {path} from its extension",
        fix="use .tif/.tiff, .png, .zarr/.ome.zarr or .geojson/.json",
    )


def write_labels(
    path: PathLike,
    labels: np.ndarray,
    classes: Optional[Sequence[str]] = None,
    palette: Optional[Palette] = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> Path:
    """Write a label map in the format named by the extension (.tif/.tiff, .png, .zarr/.ome.zarr,
    .geojson/.json). Extra keyword arguments go to the format's writer (e.g. ``chunks``, ``ignore_values``).
    """
    path = Path(path)
    kind = label_format(path)
    if kind == "tiff":
        return write_label_tiff(path, labels, classes, palette, overwrite=overwrite, **kwargs)
    if kind == "png":
        return write_label_png(path, labels, palette, classes, overwrite=overwrite, **kwargs)
    if classes is None:
        if kind == "geojson":
            raise SIAError(f"{path}: GeoJSON needs class names (QuPath classifications)", fix="pass classes")
        arr = as_labels(labels)
        used = np.flatnonzero(np.bincount(arr.ravel(), minlength=1))
        used = used[used != ignore_fill(arr.dtype)]
        classes = [f"class_{i}" for i in range(int(used.max()) + 1 if used.size else 0)]
    if kind == "zarr":
        return write_label_zarr(path, labels, classes, palette, overwrite=overwrite, **kwargs)
    return write_geojson(path, labels, classes, palette, overwrite=overwrite, **kwargs)


def read_labels(
    path: PathLike, shape: Optional[tuple[int, int]] = None, classes: Optional[Sequence[str]] = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a label map written by :func:`write_labels` (full resolution, in memory).

    Args:
        path: Label file; the extension selects the reader.
        shape: (H, W) for GeoJSON (default: the size the file records, else the polygons' extent).
        classes: Class names; for GeoJSON they map classification names to values (default: the file's).

    Returns:
        ``(labels, meta)`` with ``meta["classes"]`` and ``meta["palette"]``.
    """
    kind = label_format(path)
    if kind == "tiff":
        return read_label_tiff(path)
    if kind == "png":
        return read_label_png(path)
    if kind == "zarr":
        levels, meta = read_label_zarr(path)
        return np.asarray(levels[0][...]), meta
    return read_geojson_labels(path, shape, classes)
