"""Label maps as QuPath GeoJSON: one Polygon annotation per 4-connected region, exact pixel-edge outlines.

Coordinates are (x, y) full-resolution pixels, origin at the image's top-left corner. Every file SIA writes
also holds a top-level ``"sia"`` member (a GeoJSON "foreign member", which QuPath ignores) with the image
size, the class names, their colours and the ignore index, so it rasterises back to the identical map.
QuPath's own exports have no such member: their classes are read in order of first appearance and, without a
size, the canvas is the polygons' extent.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import SIAError
from ..io_utils import atomic_write
from .common import FORMAT_VERSION, Palette, PathLike, as_labels, check_overwrite, norm_classes, norm_palette
from .outlines import label_polygons, paint_polygons

__all__ = [
    "MAX_PIXELS",
    "geojson_classes",
    "geojson_to_labels",
    "labels_to_geojson",
    "read_geojson",
    "read_geojson_labels",
    "write_geojson",
]

MAX_PIXELS = 2**30
"""The largest canvas (pixels) a GeoJSON is rasterised onto in memory: 1 GiB of uint8, a 32k x 32k image."""


def labels_to_geojson(
    labels: np.ndarray,
    classes: Sequence[str],
    palette: Optional[Palette] = None,
    ignore_values: Iterable[int] = (255,),
    offset: tuple[float, float] = (0, 0),
    downsample: float = 1.0,
    image_shape: Optional[tuple[int, int]] = None,
) -> dict[str, Any]:
    """Convert a label map to a QuPath GeoJSON FeatureCollection.

    One ``Polygon`` feature per 4-connected region of each class (pixels touching only at a corner are
    separate regions whose outlines share that corner), holes as interior rings. Outlines follow pixel
    edges exactly, so :func:`geojson_to_labels` rasterises them back to the identical mask. The pixel at
    row 0, column 0 is the square (0,0)-(1,0)-(1,1)-(0,1).

    Args:
        labels: (H, W) class indices.
        classes: Class name per label value (QuPath's classification name).
        palette: RGB per label value (QuPath's classification colour); defaults to ``default_palette``.
        ignore_values: Label values not exported (unlabelled / background you do not want as annotations);
            the smallest is recorded as the ignore index.
        offset: (x, y) full-resolution position of the top-left corner of ``labels`` (for a crop).
        downsample: Full-resolution pixels per label pixel (for a label map predicted at lower resolution).
        image_shape: (H, W) of the full-resolution image, recorded in the ``sia`` member (default: the
            extent of ``labels`` in full-resolution pixels, offset included).

    Returns:
        A GeoJSON FeatureCollection dict (``json.dump``-able) of QuPath annotations.
    """
    arr = as_labels(labels)
    names = norm_classes(classes) or []
    pal = norm_palette(palette, len(names)) or []
    if downsample <= 0:
        raise SIAError(f"downsample must be positive, got {downsample}")
    ignore = {int(v) for v in ignore_values}
    present = [v for v in np.flatnonzero(np.bincount(arr.ravel())).tolist() if v not in ignore]
    unknown = [v for v in present if v >= len(names)]
    if unknown:
        raise SIAError(
            f"label values {unknown} have no class name ({len(names)} classes given)",
            fix="pass a class name for every value or list the values in ignore_values",
        )
    ox, oy = offset
    if image_shape is None:
        image_shape = (math.ceil(oy + arr.shape[0] * downsample), math.ceil(ox + arr.shape[1] * downsample))
    exact = float(downsample).is_integer() and float(ox).is_integer() and float(oy).is_integer()
    scale, shift = (int(downsample), (int(ox), int(oy))) if exact else (float(downsample), (ox, oy))
    coords, ring_bounds, poly_bounds, values = label_polygons(arr, ignore)
    # one tolist() for everything, then list slicing: far faster than per-ring numpy round trips
    points = (coords * scale + np.asarray(shift)).tolist()
    rings = [points[a:b] for a, b in zip(ring_bounds[:-1].tolist(), ring_bounds[1:].tolist())]
    features = []
    for a, b, value in zip(poly_bounds[:-1].tolist(), poly_bounds[1:].tolist(), values.tolist()):
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings[a:b]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": names[value], "color": list(pal[value])},
                },
            }
        )
    sia = {
        "version": FORMAT_VERSION,
        "shape": [int(image_shape[0]), int(image_shape[1])],
        "classes": names,
        "palette": pal[: len(names)],
        "ignore_index": min(ignore) if ignore else None,
    }
    return {"type": "FeatureCollection", "sia": sia, "features": features}


def write_geojson(
    path: PathLike,
    labels: np.ndarray,
    classes: Sequence[str],
    palette: Optional[Palette] = None,
    *,
    ignore_values: Iterable[int] = (255,),
    offset: tuple[float, float] = (0, 0),
    downsample: float = 1.0,
    image_shape: Optional[tuple[int, int]] = None,
    overwrite: bool = False,
) -> Path:
    """Write ``labels_to_geojson(...)`` to ``path`` (QuPath: File > Import objects, or drag and drop).

    Streamed feature by feature (the bytes of ``json.dumps(collection)`` without building them as one string:
    a slide's GeoJSON holds many thousand polygons).
    """
    path = Path(path)
    check_overwrite(path, overwrite)
    collection = labels_to_geojson(labels, classes, palette, ignore_values, offset, downsample, image_shape)

    def _write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write('{"type":"FeatureCollection","sia":' + json.dumps(collection["sia"], separators=(",", ":")))
            f.write(',"features":[')
            for i, feature in enumerate(collection["features"]):
                f.write(("," if i else "") + json.dumps(feature, separators=(",", ":")))
            f.write("]}")

    return atomic_write(path, _write)


# --------------------------------------------------------------------------------------------------------
# reading


def read_geojson(path: PathLike) -> dict[str, Any]:
    """Load a GeoJSON FeatureCollection, checking that it is one.

    Raises:
        SIAError: Missing file, invalid JSON, or JSON that is not a FeatureCollection of features.
    """
    path = Path(path)
    if not path.is_file():
        raise SIAError(f"GeoJSON file {path} not found")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise SIAError(f"{path} is not valid JSON: {str(err)[:200]}") from err
    _features(data, str(path), collection_only=True)
    return data


def _features(geojson: Any, where: str = "GeoJSON", collection_only: bool = False) -> list[dict[str, Any]]:
    """The features of a FeatureCollection (or of a Feature / a list of features), each checked to be a dict."""
    if isinstance(geojson, dict) and geojson.get("type") == "FeatureCollection":
        features = geojson.get("features", [])
    elif not collection_only and isinstance(geojson, dict) and geojson.get("type") == "Feature":
        features = [geojson]
    elif not collection_only and isinstance(geojson, list):
        features = geojson
    else:
        kind = geojson.get("type") if isinstance(geojson, dict) else type(geojson).__name__
        raise SIAError(
            f"{where} is not a GeoJSON FeatureCollection (found {kind!r})",
            fix="export the annotations as a FeatureCollection (QuPath: File > Export objects as GeoJSON)",
        )
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise SIAError(f"{where}: 'features' must be a list of Feature objects")
    return features


def _classification(feature: dict[str, Any]) -> tuple[Optional[str], Optional[list[int]]]:
    """(name, RGB colour) of a feature's QuPath classification; None where absent."""
    properties = feature.get("properties")
    cls = properties.get("classification") if isinstance(properties, dict) else None
    if isinstance(cls, str):
        return cls, None
    if not isinstance(cls, dict):
        return None, None
    name = cls.get("name") if isinstance(cls.get("name"), str) else None
    colour = None
    try:
        if "color" in cls:
            colour = [int(v) for v in cls["color"][:3]]
        elif "colorRGB" in cls:  # QuPath 0.2 wrote a packed (A)RGB int
            v = int(cls["colorRGB"]) & 0xFFFFFF
            colour = [v >> 16 & 255, v >> 8 & 255, v & 255]
    except (TypeError, ValueError):
        colour = None
    return name, colour


def geojson_classes(geojson: Any) -> tuple[list[str], list[Optional[list[int]]], Optional[int]]:
    """Class names, their colours and the ignore index of a GeoJSON.

    SIA's ``sia`` member when present; otherwise the classification names in order of first appearance
    with the colour of their first feature (None where none is given) and no ignore index.
    """
    sia = geojson.get("sia") if isinstance(geojson, dict) else None
    if isinstance(sia, dict) and isinstance(sia.get("classes"), list) and sia["classes"]:
        names = [str(n) for n in sia["classes"]]
        palette = list(sia.get("palette") or [])[: len(names)]
        palette += [None] * (len(names) - len(palette))
        ignore = sia.get("ignore_index")
        return names, palette, int(ignore) if isinstance(ignore, int) else None
    colours: dict[str, Optional[list[int]]] = {}
    for feature in _features(geojson):
        name, colour = _classification(feature)
        if name is not None and name not in colours:
            colours[name] = colour
    return list(colours), list(colours.values()), None


def _polygons(feature: dict[str, Any], i: int) -> list[list[np.ndarray]]:
    """The polygons of a feature as lists of (N, 2) float64 rings; points and lines have no area: none."""
    geometry = feature.get("geometry")
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    if kind not in ("Polygon", "MultiPolygon"):
        return []
    coordinates = geometry.get("coordinates")
    polygons = [coordinates] if kind == "Polygon" else coordinates
    out = []
    try:
        for polygon in polygons:
            rings = [np.asarray(ring, np.float64)[:, :2] for ring in polygon]
            out.append([r for r in rings if len(r) >= 3])
    except (TypeError, ValueError, IndexError) as err:
        raise SIAError(f"GeoJSON feature {i}: malformed {kind} coordinates ({str(err)[:100]})") from err
    for rings in out:
        for ring in rings:
            if not np.isfinite(ring).all():
                raise SIAError(f"GeoJSON feature {i} has coordinates that are not finite numbers (NaN or inf)")
            if (ring < 0).any():
                raise SIAError(
                    f"GeoJSON feature {i} has negative coordinates (down to {ring.min():g}): it is not in "
                    "image pixel coordinates",
                    fix="export the annotations in pixel coordinates with the origin at the image's top-left corner",
                )
    return out


def geojson_to_labels(
    geojson_or_path: Any,
    shape: tuple[int, int],
    classes: Sequence[str],
    *,
    fill: int = 255,
    offset: tuple[float, float] = (0, 0),
    downsample: float = 1.0,
    unknown: str = "error",
) -> np.ndarray:
    """Rasterise QuPath GeoJSON polygons (with holes) into a label map.

    A pixel gets a feature's class when its centre lies inside the feature's shell and outside its holes.
    Later features overwrite earlier ones of another class where they overlap. Polygon and MultiPolygon
    geometries are drawn; points and lines have no area and are skipped.

    Args:
        geojson_or_path: GeoJSON dict / list, or a path to a ``.geojson`` file.
        shape: (H, W) of the label map to produce.
        classes: Class names by label value; a feature's ``classification.name`` selects its value.
        fill: Value of pixels no feature covers.
        offset: (x, y) full-resolution position of the label map's top-left corner.
        downsample: Full-resolution pixels per label pixel.
        unknown: ``"error"`` (default) or ``"ignore"`` for features whose class is not in ``classes``.

    Returns:
        (H, W) uint8 (uint16 when needed) label map.

    Raises:
        SIAError: Not a FeatureCollection, malformed, non-finite or negative coordinates, an unknown class.
    """
    source = geojson_or_path
    if isinstance(source, (str, os.PathLike)):
        source = read_geojson(source)
    names = norm_classes(classes) or []
    if unknown not in ("error", "ignore"):
        raise SIAError(f"unknown must be 'error' or 'ignore', got {unknown!r}")
    index = {n: i for i, n in enumerate(names)}
    h, w = int(shape[0]), int(shape[1])
    dtype = np.uint8 if max(len(names) - 1, fill) <= 255 else np.uint16
    out = np.full((h, w), fill, dtype)
    origin = np.array([float(offset[0]), float(offset[1])])
    # consecutive features of one class are painted together: same result as one by one, far fewer passes
    batch: list[list[np.ndarray]] = []
    batch_value = -1
    for i, feature in enumerate(_features(source)):
        polygons = _polygons(feature, i)
        if not polygons:
            continue
        name, _ = _classification(feature)
        if name not in index:
            if unknown == "ignore":
                continue
            raise SIAError(
                f"GeoJSON feature {i} has class {name!r}, which is not among {names}",
                fix="add the class to the class list or pass unknown='ignore'",
            )
        if index[name] != batch_value:
            paint_polygons(out, batch, batch_value)
            batch, batch_value = [], index[name]
        batch.extend([(ring - origin) / downsample for ring in rings] for rings in polygons)
    paint_polygons(out, batch, batch_value)
    return out


def _extent(features: list[dict[str, Any]]) -> tuple[int, int]:
    """(H, W) of the polygons' bounding box from the origin."""
    top = np.zeros(2)
    for i, feature in enumerate(features):
        for rings in _polygons(feature, i):
            for ring in rings:
                top = np.maximum(top, ring.max(axis=0))
    return math.ceil(top[1]), math.ceil(top[0])


def read_geojson_labels(
    path: PathLike,
    shape: Optional[tuple[int, int]] = None,
    classes: Optional[Sequence[str]] = None,
    downsample: float = 1.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Rasterise a GeoJSON file into a label map, its size and classes from the file where it records them.

    Args:
        path: The ``.geojson`` file.
        shape: (H, W) of the map (default: the size the file records, else the polygons' extent), in label
            pixels (full-resolution pixels / ``downsample``).
        classes: Class names by value (default: the file's classes).
        downsample: Full-resolution pixels per label pixel (to read a slide's annotations at lower resolution).

    Returns:
        ``(labels, meta)`` with ``classes``, ``palette``, ``ignore_index``, ``shape`` (full resolution).

    Raises:
        SIAError: Unreadable or malformed GeoJSON, or a canvas larger than :data:`MAX_PIXELS`.
    """
    data = read_geojson(path)
    names, palette, ignore = geojson_classes(data)
    if classes is not None:
        given = list(classes)
        colour = dict(zip(names, palette))
        names, palette = given, [colour.get(n) for n in given]
    sia = data.get("sia") if isinstance(data.get("sia"), dict) else {}
    full = sia.get("shape")
    if not (isinstance(full, list) and len(full) == 2 and all(isinstance(v, int) and v > 0 for v in full)):
        full = _extent(_features(data))
    if shape is None:
        shape = (math.ceil(full[0] / downsample), math.ceil(full[1] / downsample))
    h, w = int(shape[0]), int(shape[1])
    if h * w > MAX_PIXELS:
        raise SIAError(
            f"{path} spans {w} x {h} px ({h * w / 1e6:.0f} Mpx), more than the {MAX_PIXELS / 1e6:.0f} Mpx SIA "
            "rasterises in memory",
            fix="read it at lower resolution (downsample=N) or give the image size (shape=(H, W))",
        )
    fill = ignore if ignore is not None else 255
    labels = geojson_to_labels(data, (h, w), names, fill=max(fill, 0), downsample=downsample, unknown="ignore")
    meta = {"classes": names, "palette": palette, "ignore_index": ignore, "shape": list(full), "format": "geojson"}
    return labels, meta
