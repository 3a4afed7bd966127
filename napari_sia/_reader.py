"""Read label files SIA wrote (TIFF, palette PNG, OME-Zarr, GeoJSON) back as Labels layers with class colours.

The npe2 reader is registered for ``*.geojson`` and ``*.zarr`` only (formats napari's built-in reader does not
open as labels); registering it for every PNG/TIFF would make napari ask which plugin to use for every image
a user opens. It claims only what it can read: OME-Zarr stores with a ``labels/`` label image (any store that
follows the spec, not only SIA's) and GeoJSON FeatureCollections with polygons; napari offers anything else to
other readers. The widget's "Open mask..." button reads all four formats through :func:`read_mask_layer`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Union

from sia_core.formats import LABEL_SUFFIXES, label_format

from ._classes import SIA_META, ClassSet, label_colormap

__all__ = ["napari_get_reader", "read_mask_layer", "read_mask"]

LayerData = tuple[Any, dict[str, Any], str]


def _classes_from(meta: dict[str, Any], fallback_n: int) -> ClassSet:
    names = [str(n) for n in (meta.get("classes") or []) if n is not None] or [f"class_{i}" for i in range(fallback_n)]
    classes = ClassSet.custom(names, [c for c in (meta.get("palette") or []) if c is not None][: len(names)] or None)
    ignore = meta.get("ignore_index", meta.get("fill"))
    if ignore is not None:
        classes.ignore_index = int(ignore)
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
    from sia_core.formats import read_labels
    from sia_core.formats.geojson import read_geojson_labels
    from sia_core.formats.ome_zarr import read_label_zarr

    path = Path(path)
    kind = label_format(path)
    if kind == "geojson":
        labels, meta = read_geojson_labels(path, shape)
        if meta["ignore_index"] is None:
            meta["ignore_index"] = 255  # what geojson_to_labels fills unlabelled pixels with
        return labels, _classes_from(meta, 0)
    if kind == "zarr":
        levels, meta = read_label_zarr(path)
        return (levels if len(levels) > 1 else levels[0]), _classes_from(meta, 0)
    labels, meta = read_labels(path)
    return labels, _classes_from(meta, int(labels.max()) + 1 if labels.size else 0)


def read_mask_layer(path: Union[str, os.PathLike], shape: Optional[tuple[int, int]] = None) -> LayerData:
    """A label file as napari layer data: Labels with the class colours and ``metadata['sia']``."""
    data, classes = read_mask(path, shape)
    name = Path(path).name
    for suffix in (".ome.zarr", *(s for group in LABEL_SUFFIXES.values() for s in group)):
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


def _claims(path: Path) -> bool:
    """Whether SIA can read this store or file as labels (cheap checks, no pixels decoded)."""
    name = path.name.lower().rstrip("/")
    if name.endswith(LABEL_SUFFIXES["zarr"]) and path.is_dir():
        from sia_core.formats.ome_zarr import find_label_group

        find_label_group(path)
        return True
    if name.endswith(".geojson") and path.is_file():
        from sia_core.formats.geojson import geojson_classes, read_geojson

        data = read_geojson(path)
        kinds = {(f.get("geometry") or {}).get("type") for f in data["features"] if isinstance(f.get("geometry"), dict)}
        return bool(kinds & {"Polygon", "MultiPolygon"}) and bool(geojson_classes(data)[0])
    return False


def napari_get_reader(path: Union[str, list[str]]) -> Optional[Callable[[Any], list[LayerData]]]:
    """npe2 reader: OME-Zarr stores with labels and GeoJSON with classified polygons; None for anything else
    (napari then tries other readers)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        return _read if _claims(Path(path)) else None
    except Exception:  # noqa: BLE001 (anything unreadable is simply not ours to open)
        return None


def _read(path: Union[str, list[str]]) -> list[LayerData]:
    if isinstance(path, list):
        path = path[0]
    return [read_mask_layer(path)]
