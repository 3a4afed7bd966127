"""Label maps as OME-Zarr (NGFF v0.4, zarr format 2): the one owner of SIA's OME-Zarr layout.

Every store SIA writes is an OME-Zarr *image* at its root, with the label pyramid under ``labels/<name>``, so
that ome-zarr-py's Reader, napari-ome-zarr, ome-zarr-models and QuPath open it at the root::

    x.ome.zarr/.zattrs            multiscales + omero: an RGB overview (c, y, x uint8) at the lowest label level
    x.ome.zarr/0                  the overview: the image itself for a slide, the labels in class colours else
    x.ome.zarr/labels/.zattrs     {"labels": ["sia"]}
    x.ome.zarr/labels/sia/0, 1..  uint8/uint16 label pyramid (nearest: labels[::2, ::2] per level)
    x.ome.zarr/maps/<name>/0, 1.. float32 (c, y, x) map pyramids (slides: class probabilities, CAMs)

The ``image-label`` metadata lists a property and a colour for every class and for the fill value (pixels no
writer touched, drawn transparent). Chunks use zarr-python 2's default codec (Blosc lz4) and nested keys
("0/1"), which every v0.4 reader, Python or Java, decodes. SIA's reader finds ``labels/`` in any spec store
(zarr format 2 or 3, NGFF 0.4 or 0.5) and refuses stores without labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import SIAError
from .common import (
    FORMAT_VERSION,
    Palette,
    PathLike,
    as_labels,
    atomic_dir,
    check_overwrite,
    ignore_fill,
    norm_classes,
    norm_palette,
)
from .png import palette_lut

__all__ = [
    "LEVEL_MAX_SIDE",
    "build_pyramid",
    "create_image_pyramid",
    "create_label_zarr",
    "fill_mean_pyramid",
    "find_label_group",
    "level_shapes",
    "pyramid_levels",
    "read_label_zarr",
    "write_label_zarr",
    "write_overview",
]

NGFF_VERSION = "0.4"
LEVEL_MAX_SIDE = 1024
"""Pyramids halve (rounding up) until the longer side is at most this."""
_FILL_ROLE = "unlabelled"


def level_shapes(shape: tuple[int, int], min_side: int = LEVEL_MAX_SIDE, levels: Optional[int] = None) -> list:
    """Pyramid level shapes, full resolution first: ``levels`` of them, or halving (rounding up, as
    ``labels[::2, ::2]`` does) until the longer side is at most ``min_side``."""
    if levels is not None and levels < 1:
        raise SIAError(f"levels must be >= 1, got {levels}")
    shapes = [(int(shape[0]), int(shape[1]))]
    while (len(shapes) < levels) if levels is not None else max(shapes[-1]) > max(1, min_side):
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def _compressor() -> Any:
    from numcodecs import Blosc

    return Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)


def _create_array(group: Any, name: str, shape: tuple, chunks: tuple, dtype: Any, fill: Any) -> Any:
    return group.create_array(
        name,
        shape=shape,
        chunks=tuple(min(c, s) for c, s in zip(chunks, shape)),
        dtype=dtype,
        fill_value=fill,
        compressors=_compressor(),
        chunk_key_encoding={"name": "v2", "separator": "/"},  # NGFF v0.4 wants nested keys in zarr format 2
    )


def _multiscales(name: str, channels: bool, scales: Sequence[float], unit: bool, kind: str, method: str) -> list:
    axes = [{"name": a, "type": "space", **({"unit": "micrometer"} if unit else {})} for a in ("y", "x")]
    lead = [1.0] if channels else []
    return [
        {
            "version": NGFF_VERSION,
            "name": name,
            "axes": ([{"name": "c", "type": "channel"}] if channels else []) + axes,
            "datasets": [
                {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [*lead, s, s]}]}
                for k, s in enumerate(scales)
            ],
            "type": kind,
            "metadata": {"method": method},
        }
    ]


def create_image_pyramid(
    group: Any,
    shape: tuple[int, int],
    channels: int,
    *,
    name: str,
    chunk: int,
    dtype: Any,
    scale: float,
    unit: bool,
    n_levels: int,
    channel_names: Sequence[str],
    colours: Sequence[Sequence[int]],
    window: tuple[float, float],
    kind: str = "mean",
) -> list[Any]:
    """Empty (c, y, x) multiscale image in ``group``: arrays ``0..n_levels-1``, ``multiscales`` and ``omero``.

    ``scale`` is the pixel size of level 0 (micrometres when ``unit``, else the caller's pixel units).
    """
    shapes = level_shapes(shape, levels=n_levels)
    group.attrs["multiscales"] = _multiscales(
        name, True, [scale * 2**k for k in range(n_levels)], unit, kind, "2x2 mean of the level above"
    )
    group.attrs["omero"] = {
        "name": name,
        "channels": [
            {
                "label": str(n),
                "color": "{:02X}{:02X}{:02X}".format(*[int(v) for v in colours[i][:3]]),
                "window": {"start": window[0], "end": window[1], "min": window[0], "max": window[1]},
                "active": True,
            }
            for i, n in enumerate(channel_names)
        ],
        "rdefs": {"model": "color"},
    }
    chunks = (channels, chunk, chunk)
    return [_create_array(group, str(k), (channels, h, w), chunks, dtype, 0) for k, (h, w) in enumerate(shapes)]


def _label_attrs(
    name: str, classes: list[str], palette: list[list[int]], fill: int, scales: list[float], unit: bool
) -> dict[str, Any]:
    properties: list[dict[str, Any]] = [{"label-value": i, "class": c} for i, c in enumerate(classes)]
    colors = [{"label-value": i, "rgba": [*palette[i], 255]} for i in range(len(classes))]
    if fill >= len(classes):
        # the fill value gets a property too: readers require the same values in colors and properties
        properties.append({"label-value": fill, "sia-role": _FILL_ROLE})
        colors.append({"label-value": fill, "rgba": [0, 0, 0, 0]})
    return {
        # picking every second pixel keeps label values intact (no averaging of class indices) and keeps
        # pixel k of level n at level-0 pixel k * 2**n, so a pure scale transform is exact
        "multiscales": _multiscales(name, False, scales, unit, "nearest", "labels[::2, ::2]"),
        "image-label": {
            "version": NGFF_VERSION,
            "colors": colors,
            "properties": properties,
            "source": {"image": "../../"},
        },
        "sia": {"kind": "labels", "version": FORMAT_VERSION, "fill": fill, "complete": False},
    }


def _create_store(
    root_path: Path,
    shape: tuple[int, int],
    classes: list[str],
    palette: list[list[int]],
    chunks: int,
    name: str,
    fill: int,
    n_levels: int,
    dtype: np.dtype,
    pixel_size: Optional[float],
) -> tuple[Any, list[Any]]:
    """The whole empty store: the root overview image (white) and ``labels/<name>``. Returns (root, levels)."""
    import zarr

    shapes = level_shapes(shape, levels=n_levels)
    base = float(pixel_size) if pixel_size else 1.0
    root = zarr.open_group(str(root_path), mode="w", zarr_format=2)
    last = n_levels - 1
    overview = create_image_pyramid(
        root,
        shapes[-1],
        3,
        name="overview",
        chunk=chunks,
        dtype=np.uint8,
        scale=base * 2**last,
        unit=bool(pixel_size),
        n_levels=1,
        channel_names=("red", "green", "blue"),
        colours=((255, 0, 0), (0, 255, 0), (0, 0, 255)),
        window=(0.0, 255.0),
    )
    overview[0][...] = 255
    group = root.create_group("labels")
    group.attrs["labels"] = [name]
    image = group.create_group(name)
    scales = [base * 2**k for k in range(n_levels)]
    image.attrs.update(_label_attrs(name, classes, palette, fill, scales, bool(pixel_size)))
    levels = [_create_array(image, str(k), s, (chunks, chunks), dtype, fill) for k, s in enumerate(shapes)]
    return root, levels


def _store_arguments(classes: Sequence[str], palette: Optional[Palette], dtype: Any, fill: Optional[int]) -> tuple:
    names = norm_classes(classes) or []
    dt = np.dtype(dtype) if dtype is not None else np.dtype(np.uint8 if len(names) < 255 else np.uint16)
    if dt not in (np.uint8, np.uint16):
        raise SIAError(f"label zarr dtype must be uint8 or uint16, got {dt}")
    return names, norm_palette(palette, len(names)) or [], dt, ignore_fill(dt) if fill is None else int(fill)


def create_label_zarr(
    path: PathLike,
    shape: tuple[int, int],
    classes: Sequence[str],
    palette: Optional[Palette] = None,
    chunks: int = 1024,
    name: str = "sia",
    *,
    fill: Optional[int] = None,
    levels: Optional[int] = None,
    dtype: Any = None,
    pixel_size: Optional[float] = None,
    overwrite: bool = False,
) -> Any:
    """Create an empty store for a writer that fills the label map's level 0 chunk by chunk.

    Every level starts filled with ``fill``. Write level 0 (ideally in chunk-aligned blocks), then call
    :func:`build_pyramid`, which computes the lower levels, the overview (unless :func:`write_overview` gave
    one) and marks the store complete. Unlike :func:`write_label_zarr` this writes in place, not atomically.

    Args:
        path: Target ``.zarr`` / ``.ome.zarr`` directory.
        shape: Full-resolution (H, W).
        classes: Class names by label value.
        palette: RGB per class; defaults to ``default_palette``.
        chunks: Square chunk side.
        name: Name of the label image under ``labels/``.
        fill: Value of pixels never written; 255 for uint8, 65535 for uint16 by default.
        levels: Number of pyramid levels; default halves until the longer side is <= 1024.
        dtype: uint8 (default when there are < 255 classes) or uint16.
        pixel_size: Level-0 pixel size in micrometres, written into the scale transforms.
        overwrite: Replace an existing store.

    Returns:
        The level-0 zarr array, open for writing.
    """
    import shutil

    path = Path(path)
    check_overwrite(path, overwrite)
    names, pal, dt, fill = _store_arguments(classes, palette, dtype, fill)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(level_shapes(shape, levels=levels))
    _, arrays = _create_store(path, shape, names, pal, int(chunks), name, fill, n, dt, pixel_size)
    return arrays[0]


def write_overview(path: PathLike, rgb: np.ndarray) -> None:
    """Store ``rgb`` ((h, w, 3) uint8, the size of the lowest label level) as the store's root image."""
    import zarr

    root = zarr.open_group(str(path), mode="r+", zarr_format=2)
    target = root["0"]
    arr = np.asarray(rgb, np.uint8)
    if arr.shape != (target.shape[1], target.shape[2], 3):
        raise SIAError(f"overview of shape {arr.shape} for a store whose overview is {target.shape[1:]} x 3")
    target[...] = np.moveaxis(arr, -1, 0)
    root.attrs["sia_overview"] = "given"


def build_pyramid(path: PathLike, name: Optional[str] = None) -> None:
    """(Re)compute label levels 1.. from level 0, one output chunk at a time, and the overview; mark complete.

    Each output chunk reads only the 2x2-chunk block of the level above, so memory stays at a few chunks
    whatever the slide size. Level ``k`` equals ``level0[::2**k, ::2**k]``.

    Args:
        path: The store root.
        name: Label image name when the store holds several.
    """
    import zarr

    group = find_label_group(Path(path), name, mode="r+")
    levels = pyramid_levels(group)
    for src, dst in zip(levels[:-1], levels[1:]):
        ch, cw = dst.chunks
        h, w = dst.shape
        for y in range(0, h, ch):
            for x in range(0, w, cw):
                block = src[2 * y : 2 * (y + ch), 2 * x : 2 * (x + cw)]
                dst[y : y + ch, x : x + cw] = block[::2, ::2]
    root = zarr.open_group(str(path), mode="r+", zarr_format=2)
    if "sia_overview" not in root.attrs:
        _, meta = _label_meta(group)
        lowest = np.minimum(np.asarray(levels[-1][...]), 255)  # uint16 classes past the palette: white
        root["0"][...] = np.moveaxis(palette_lut(meta["palette"])[lowest], -1, 0)
    sia = dict(group.attrs.get("sia", {}))
    sia["complete"] = True
    group.attrs["sia"] = sia


def fill_mean_pyramid(levels: Sequence[Any]) -> None:
    """(c, y, x) levels 1.. as 2x2 means of the level above, one output chunk at a time (bounded memory)."""
    for src, dst in zip(levels[:-1], levels[1:]):
        _, ch, cw = dst.chunks
        _, h, w = dst.shape
        for y in range(0, h, ch):
            for x in range(0, w, cw):
                block = np.asarray(src[:, 2 * y : 2 * (y + ch), 2 * x : 2 * (x + cw)])
                ph, pw = block.shape[1] % 2, block.shape[2] % 2
                if ph or pw:
                    block = np.pad(block, ((0, 0), (0, ph), (0, pw)), mode="edge")
                half = block[:, 0::2, 0::2] + block[:, 1::2, 0::2] + block[:, 0::2, 1::2] + block[:, 1::2, 1::2]
                half *= 0.25
                dst[:, y : y + half.shape[1], x : x + half.shape[2]] = half


def write_label_zarr(
    path: PathLike,
    labels: np.ndarray,
    classes: Sequence[str],
    palette: Optional[Palette] = None,
    chunks: int = 1024,
    levels: Optional[int] = None,
    *,
    name: str = "sia",
    pixel_size: Optional[float] = None,
    overview: Optional[np.ndarray] = None,
    overwrite: bool = False,
) -> Path:
    """Write a label map as an OME-Zarr store (layout in the module docstring), atomically.

    Levels are built by nearest 2x downsampling (``labels[::2, ::2]``) until the longer side is <= 1024,
    unless ``levels`` is given. ``overview`` ((h, w, 3) uint8 at the lowest level's size, e.g. the image the
    labels belong to) is the root image; without it, the labels in class colours.
    """
    arr = as_labels(labels)
    names, pal, dt, fill = _store_arguments(classes, palette, np.uint16 if arr.dtype == np.uint16 else None, None)

    def _build(tmp: Path) -> None:
        n = len(level_shapes(arr.shape, levels=levels))
        _, arrays = _create_store(tmp, arr.shape, names, pal, int(chunks), name, fill, n, dt, pixel_size)
        for k, level in enumerate(arrays):
            level[...] = arr[:: 2**k, :: 2**k]
        if overview is not None:
            write_overview(tmp, overview)
        build_pyramid(tmp, name)

    return atomic_dir(Path(path), _build, overwrite)


# --------------------------------------------------------------------------------------------------------
# reading


def _attrs(group: Any) -> dict[str, Any]:
    """NGFF attributes of a group: under ``ome`` in NGFF 0.5 (zarr format 3), top level in 0.4."""
    attrs = group.attrs.asdict()
    return attrs["ome"] if isinstance(attrs.get("ome"), dict) else attrs


def find_label_group(path: Path, name: Optional[str] = None, mode: str = "r") -> Any:
    """The label image of a store: its ``labels/<name>`` group (default: the first listed), or the store
    itself when it is a label image.

    Raises:
        SIAError: Not a zarr group, no ``labels/`` with a label image, or a label image without its arrays.
    """
    import zarr

    if not path.is_dir():
        raise SIAError(f"OME-Zarr store {path} not found")
    try:
        group = zarr.open_group(str(path), mode=mode)
    except Exception as err:  # zarr raises several types for "not a group"
        raise SIAError(f"{path} is not a zarr group: {str(err)[:200]}") from err
    if "image-label" not in _attrs(group):
        listed = _attrs(group["labels"]).get("labels") if "labels" in group.group_keys() else None
        if not isinstance(listed, list) or not listed:
            raise SIAError(
                f"{path} holds no OME-Zarr labels (no labels/ group listing a label image)",
                fix="open a store written by SIA (write_label_zarr, predict-slide) or another with labels/",
            )
        pick = name or str(listed[0])
        if pick not in listed or pick not in group["labels"].group_keys():
            raise SIAError(f"{path}: no label image {pick!r} under labels/ (found {listed})")
        group = group["labels"][pick]
        if "image-label" not in _attrs(group):
            raise SIAError(f"{path}/labels/{pick} is not an OME-Zarr label image (no image-label metadata)")
    pyramid_levels(group, str(path))
    return group


def pyramid_levels(group: Any, where: str = "") -> list[Any]:
    """The arrays of a multiscale group, full resolution first."""
    try:
        datasets = _attrs(group)["multiscales"][0]["datasets"]
        return [group[d["path"]] for d in datasets]
    except (KeyError, IndexError, TypeError) as err:
        raise SIAError(f"{where or group.path}: multiscales metadata names no existing arrays ({err})") from err


def _label_meta(group: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    attrs = _attrs(group)
    label_meta = attrs.get("image-label", {})
    props = {p["label-value"]: p.get("class") for p in label_meta.get("properties", []) if "class" in p}
    colors = {c["label-value"]: c.get("rgba") for c in label_meta.get("colors", [])}
    n = max(props) + 1 if props else 0
    classes = [props.get(i) for i in range(n)] if props else None
    palette = [list(colors[i][:3]) if colors.get(i) else None for i in range(n)] if n else None
    return attrs, {"classes": classes, "palette": palette}


def read_label_zarr(path: PathLike, name: Optional[str] = None) -> tuple[list[Any], dict[str, Any]]:
    """Open the label pyramid of an OME-Zarr store lazily.

    Args:
        path: Store root (or a label image group itself).
        name: Label image name when the store holds several (default: the first listed).

    Returns:
        ``(levels, meta)``: zarr arrays from full resolution down, and ``classes``, ``palette``, ``scales``,
        ``name``, ``fill`` and ``complete`` (False while a chunk-by-chunk writer has not finished).
    """
    group = find_label_group(Path(path), name)
    attrs, meta = _label_meta(group)
    ms = attrs["multiscales"][0]
    scales = [
        next((t["scale"] for t in d.get("coordinateTransformations", []) if t["type"] == "scale"), None)
        for d in ms["datasets"]
    ]
    roles = [p["label-value"] for p in attrs["image-label"].get("properties", []) if p.get("sia-role") == _FILL_ROLE]
    sia = attrs.get("sia", {})
    meta.update(
        scales=scales,
        name=ms.get("name"),
        fill=sia.get("fill", roles[0] if roles else None),
        complete=sia.get("complete", True),
        format="ome-zarr",
    )
    return pyramid_levels(group), meta
