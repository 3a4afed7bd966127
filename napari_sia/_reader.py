"""Read label files SIA wrote (TIFF, palette PNG, OME-Zarr, GeoJSON) back as Labels layers with class colours.

The npe2 reader is registered for ``*.geojson`` and ``*.zarr`` only (formats napari's built-in reader does not
open as labels); registering it for every PNG/TIFF would make napari ask which plugin to use for every image
a user opens. The widget's "Open mask..." button reads all four formats through :func:`read_mask_layer`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ._classes import SIA_META, ClassSet, label_colormap
from ._writer import GEOJSON_SUFFIXES

__all__ = ["napari_get_reader", "read_mask_layer", "read_mask"]

LayerData = tuple[Any, dict[str, Any], str]


def _classes_from(meta: dict[str, Any], fallback_n: int) -> ClassSet:
    names = [n for n in (meta.get("classes") or []) if n is not None]
    if not names:
        names = [f"class_{i}" for i in range(fallback_n)]
    palette = [c for c in (meta.get("palette") or []) if c is not None][: len(names)]
    classes = ClassSet.custom(names, palette or None)
    if meta.get("ignore_index") is not None:
        classes.ignore_index = int(meta["ignore_index"])
    return classes


def read_mask(path: Union[str, os.PathLike], shape: Optional[tuple[int, int]] = None) -> tuple[Any, ClassSet]:
    """Read a label file: (data, classes). OME-Zarr data is the lazy list of pyramid levels (full res first).

    Args:
        path: .tif/.tiff, .png, .zarr/.ome.zarr directory or .geojson/.json file.
        shape: (H, W) for GeoJSON that does not record its size (e.g. QuPath's own export); default: the
            bounding box of the polygons.

    Raises:
        SIAError: unreadable or not a label file.
    """
    from sia_core.export import geojson_to_labels, read_geojson, read_label_zarr, read_labels

    path = Path(path)
    name = path.name.lower()
    if name.endswith(GEOJSON_SUFFIXES):
        data = read_geojson(path)
        sia = data.get(SIA_META, {}) if isinstance(data, dict) else {}
        features = data.get("features", []) if isinstance(data, dict) else list(data)
        if sia.get("classes"):
            classes = ClassSet.from_metadata(sia)
        else:
            names: list[str] = []
            colours: list[Optional[list[int]]] = []
            for feature in features:
                cls = (feature.get("properties") or {}).get("classification")
                cls_name = cls.get("name") if isinstance(cls, dict) else cls
                if isinstance(cls_name, str) and cls_name not in names:
                    names.append(cls_name)
                    colour = cls.get("color") if isinstance(cls, dict) else None
                    colours.append([int(v) for v in colour[:3]] if colour else None)
            classes = ClassSet.custom(names, [c for c in colours if c is not None] or None)
        size = shape or tuple(sia.get("shape") or ()) or _extent(features)
        labels = geojson_to_labels(data, size, classes.names, fill=classes.ignore_index, unknown="ignore")
        return labels, classes
    if name.endswith(".zarr"):
        levels, meta = read_label_zarr(path)
        classes = _classes_from(meta, 0)
        return (levels if len(levels) > 1 else levels[0]), classes
    labels, meta = read_labels(path)
    top = int(labels.max()) + 1 if labels.size else 0
    return labels, _classes_from(meta, top)


def _extent(features: list[dict[str, Any]]) -> tuple[int, int]:
    xs, ys = [0.0], [0.0]
    for feature in features:
        geometry = feature.get("geometry") or {}
        polys = [geometry.get("coordinates", [])] if geometry.get("type") == "Polygon" else []
        if geometry.get("type") == "MultiPolygon":
            polys = geometry.get("coordinates", [])
        for poly in polys:
            for ring in poly:
                arr = np.asarray(ring, dtype=float).reshape(-1, 2)
                xs.append(float(arr[:, 0].max()))
                ys.append(float(arr[:, 1].max()))
    return int(np.ceil(max(ys))), int(np.ceil(max(xs)))


def read_mask_layer(path: Union[str, os.PathLike], shape: Optional[tuple[int, int]] = None) -> LayerData:
    """A label file as napari layer data: Labels with the class colours and ``metadata['sia']``."""
    data, classes = read_mask(path, shape)
    name = Path(path).name
    for suffix in (".ome.zarr", ".zarr", ".geojson", ".json", ".tiff", ".tif", ".png"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    attrs = {
        "name": name,
        "colormap": label_colormap(classes),
        "metadata": {SIA_META: {**classes.metadata(), "source": str(path)}},
        "opacity": 0.6,
    }
    if isinstance(data, list):
        attrs["multiscale"] = True
    return data, attrs, "labels"


def napari_get_reader(path: Union[str, list[str]]) -> Optional[Callable[[Any], list[LayerData]]]:
    """npe2 reader: SIA's OME-Zarr label stores and GeoJSON; None for anything else (napari tries others)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    name = p.name.lower().rstrip("/")
    if name.endswith(".zarr"):
        if not p.is_dir():
            return None
        from sia_core.errors import SIAError
        from sia_core.export import read_label_zarr

        try:
            read_label_zarr(p)
        except SIAError:
            return None  # an image store or another zarr: not ours
    elif not (name.endswith(".geojson") and p.is_file()):
        return None
    return _read


def _read(path: Union[str, list[str]]) -> list[LayerData]:
    if isinstance(path, list):
        path = path[0]
    return [read_mask_layer(path)]
