"""Write and read label maps and float maps in the formats pathologists and their tools use.

Label maps are ``(H, W)`` uint8 or uint16 arrays of class indices; 255 (uint8) or 65535 (uint16) is the
conventional "unlabelled / ignore" value. Formats:

* TIFF (``write_label_tiff``): zlib-compressed, tiled from 2048 px on, BigTIFF past 4 GB; class names and
  palette travel as JSON in the ImageDescription (tifffile "shaped" metadata, key ``"sia"``).
* PNG (``write_label_png``): palette mode, so pixel values stay class indices and any viewer shows colours.
* OME-Zarr (``write_label_zarr``): NGFF v0.4 image-label multiscales in zarr format 2, the combination that
  napari-ome-zarr, ome-zarr-py and QuPath read.
* QuPath GeoJSON (``labels_to_geojson``): one Polygon annotation per 4-connected region, exact pixel-edge
  outlines at full-resolution pixel coordinates.

Every writer refuses to replace an existing file unless ``overwrite=True`` and writes atomically (temporary
file or directory beside the target, then a rename), so an interrupted export never leaves a half file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import SIAError
from .io_utils import atomic_write

PathLike = Union[str, os.PathLike]
Palette = Sequence[Sequence[int]]

__all__ = [
    "build_pyramid",
    "create_label_zarr",
    "default_palette",
    "geojson_to_labels",
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

# Distinct colours (Trubetskoy's 20-colour list, most distinct first), cycled for more classes.
_PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240),
    (245, 130, 48), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
)  # fmt: skip

# tifffile only switches to BigTIFF by itself for uncompressed data, so decide from the raw size, keeping
# 64 MiB headroom for metadata and for zlib's worst-case growth on incompressible float data.
_BIGTIFF_BYTES = 2**32 - 2**26
_TIFF_TILE = 512
_TILED_FROM = 2048
_PYRAMID_MAX_SIDE = 1024
_NGFF_VERSION = "0.4"
_SIA_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------------
# shared helpers


def default_palette(n: int) -> list[list[int]]:
    """Return ``n`` distinct RGB colours (0-255), cycling a 20-colour list."""
    return [list(_PALETTE[i % len(_PALETTE)]) for i in range(n)]


def _check_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SIAError(
            f"{path} already exists; refusing to overwrite it",
            fix="pass overwrite=True (CLI: --overwrite) or choose another file name",
        )


def _as_labels(labels: Any, what: str = "labels") -> np.ndarray:
    """Validate a label map and return it as uint8 or uint16 (H, W) without copying when already so."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise SIAError(f"{what} must be a 2-D (H, W) array of class indices, got shape {arr.shape}")
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise SIAError(
            f"{what} must hold integer class indices, got dtype {arr.dtype}",
            fix="take the argmax over classes (or round) before exporting",
        )
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 65535:
        raise SIAError(f"{what} values must lie in 0..65535, found {lo}..{hi}")
    return arr.astype(np.uint8 if hi <= 255 else np.uint16)


def _norm_classes(classes: Optional[Iterable[str]]) -> Optional[list[str]]:
    if classes is None:
        return None
    out = [str(c) for c in classes]
    if len(set(out)) != len(out):
        raise SIAError(f"class names must be unique, got {out}")
    return out


def _norm_palette(palette: Optional[Palette], n: Optional[int]) -> Optional[list[list[int]]]:
    """RGB triples as plain ints; RGBA input loses its alpha (label formats here store opaque colours)."""
    if palette is None:
        return default_palette(n) if n else None
    out = []
    for i, col in enumerate(np.asarray(palette).reshape(len(palette), -1).tolist()):
        if len(col) not in (3, 4) or any(not 0 <= v <= 255 for v in col):
            raise SIAError(f"palette entry {i} must be RGB (or RGBA) values in 0..255, got {col}")
        out.append([int(v) for v in col[:3]])
    if n is not None and len(out) < n:
        out += default_palette(n)[len(out) :]
    return out


def _ignore_fill(dtype: np.dtype) -> int:
    return 255 if np.dtype(dtype) == np.uint8 else 65535


def _atomic_dir(path: Path, build: Callable[[Path], None], overwrite: bool) -> Path:
    """Build a directory at a temporary name beside ``path``, then rename it into place.

    A directory cannot be renamed over a non-empty one, so an existing target is first moved aside and only
    deleted once the new one is in place.
    """
    _check_overwrite(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not mkdtemp: its 0700 mode would survive the rename and hide the store from other users
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        build(tmp)
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _tiff_options(shape: tuple[int, ...], nbytes: int) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "compression": "zlib",
        "photometric": "minisblack",
        "bigtiff": nbytes > _BIGTIFF_BYTES,
    }
    if max(shape[-2:]) >= _TILED_FROM:
        opts["tile"] = (_TIFF_TILE, _TIFF_TILE)
    return opts


def _tiff_sia_metadata(tif: Any) -> dict[str, Any]:
    shaped = tif.shaped_metadata
    if shaped and isinstance(shaped[0].get("sia"), dict):
        return shaped[0]["sia"]
    return {}


# --------------------------------------------------------------------------------------------------------
# TIFF


def write_label_tiff(
    path: PathLike,
    labels: np.ndarray,
    classes: Optional[Sequence[str]] = None,
    palette: Optional[Palette] = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a label map as a zlib-compressed (tiled when large, BigTIFF when needed) greyscale TIFF.

    Args:
        path: Target ``.tif``/``.tiff`` file.
        labels: (H, W) class indices (uint8/uint16, or any non-negative integers that fit).
        classes: Class names by label value; stored in the ImageDescription JSON.
        palette: RGB colour per label value; stored alongside. Defaults to ``default_palette`` when
            ``classes`` is given.
        overwrite: Replace an existing file.

    Returns:
        The path written.
    """
    import tifffile

    path = Path(path)
    _check_overwrite(path, overwrite)
    arr = _as_labels(labels)
    names = _norm_classes(classes)
    meta = {
        "axes": "YX",
        "sia": {
            "kind": "labels",
            "version": _SIA_FORMAT_VERSION,
            "classes": names,
            "palette": _norm_palette(palette, len(names) if names else None),
        },
    }
    opts = _tiff_options(arr.shape, arr.nbytes)
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, arr, metadata=meta, **opts))


def read_label_tiff(path: PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a label TIFF (ours or any single-channel integer TIFF).

    Returns:
        ``(labels, meta)`` where meta has ``classes`` and ``palette`` (None when the file has none).
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise SIAError(f"label file {path} not found")
    with tifffile.TiffFile(path) as tif:
        arr = tif.asarray()
        sia = _tiff_sia_metadata(tif)
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise SIAError(f"{path} is not a label map: expected one (H, W) channel, got shape {arr.shape}")
    labels = _as_labels(arr, what=str(path))
    return labels, {"classes": sia.get("classes"), "palette": sia.get("palette"), "format": "tiff"}


def write_float_tiff(
    path: PathLike, maps: np.ndarray, names: Sequence[str], *, overwrite: bool = False
) -> Path:
    """Write float maps (CAMs, inhibition maps, RSMs, probabilities) as a (C, H, W) float32 TIFF.

    Args:
        path: Target ``.tif`` file.
        maps: (C, H, W) or (H, W) array, stored as float32 (zlib + floating-point predictor).
        names: One name per channel, stored in the ImageDescription JSON.
        overwrite: Replace an existing file.
    """
    import tifffile

    path = Path(path)
    _check_overwrite(path, overwrite)
    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise SIAError(f"float maps for {path} must be (C, H, W), got shape {arr.shape}")
    names = [str(n) for n in names]
    if len(names) != arr.shape[0]:
        raise SIAError(f"{len(names)} names given for {arr.shape[0]} channels when writing {path}")
    meta = {"axes": "CYX", "sia": {"kind": "float-maps", "version": _SIA_FORMAT_VERSION, "names": names}}
    opts = _tiff_options(arr.shape, arr.nbytes)
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, arr, metadata=meta, predictor=True, **opts))


def read_float_tiff(path: PathLike) -> tuple[np.ndarray, list[str]]:
    """Read maps written by ``write_float_tiff``.

    Returns:
        ``(maps (C, H, W) float32, names)``; names default to ``channel_<i>`` for foreign files.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise SIAError(f"map file {path} not found")
    with tifffile.TiffFile(path) as tif:
        arr = tif.asarray()
        sia = _tiff_sia_metadata(tif)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise SIAError(f"{path} does not hold (C, H, W) maps: shape {arr.shape}")
    names = sia.get("names") or [f"channel_{i}" for i in range(arr.shape[0])]
    return arr.astype(np.float32, copy=False), list(names)


# --------------------------------------------------------------------------------------------------------
# PNG


def write_label_png(
    path: PathLike,
    labels: np.ndarray,
    palette: Optional[Palette] = None,
    classes: Optional[Sequence[str]] = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a uint8 label map as a palette-mode PNG: pixel values stay class indices, viewers show colours.

    Label values beyond the palette (e.g. 255 = unlabelled) are drawn black. Class names and the palette
    are also stored as JSON in an iTXt chunk (key ``sia``) so they round-trip.
    """
    from PIL import Image, PngImagePlugin

    path = Path(path)
    _check_overwrite(path, overwrite)
    arr = _as_labels(labels)
    if arr.dtype != np.uint8:
        raise SIAError(
            f"{path}: a palette PNG holds label values 0..255, the map goes up to {int(arr.max())}",
            fix="export as .tif or .zarr instead",
        )
    names = _norm_classes(classes)
    pal = _norm_palette(palette, len(names) if names else None) or []
    if len(pal) > 256:
        raise SIAError(f"{path}: a PNG palette holds at most 256 colours, got {len(pal)}")
    flat = [v for col in pal for v in col] + [0] * (3 * (256 - len(pal)))
    info = PngImagePlugin.PngInfo()
    sia = {"kind": "labels", "version": _SIA_FORMAT_VERSION, "classes": names, "palette": pal}
    info.add_itxt("sia", json.dumps(sia))

    def _write(tmp: Path) -> None:
        img = Image.fromarray(np.ascontiguousarray(arr))
        img.putpalette(flat)  # turns the greyscale image into a "P" image without touching the indices
        img.save(tmp, format="PNG", pnginfo=info, optimize=False)

    return atomic_write(path, _write)


def read_label_png(path: PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a palette (or greyscale) label PNG. Returns ``(labels, meta)`` like ``read_label_tiff``."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise SIAError(f"label file {path} not found")
    with Image.open(path) as img:
        if img.mode not in ("P", "L", "I", "I;16"):
            raise SIAError(
                f"{path} is a {img.mode} image, not a label map",
                fix="export labels as a palette or greyscale PNG (write_label_png)",
            )
        arr = np.array(img)
        text = dict(getattr(img, "text", {}) or {})
        plte = img.getpalette() if img.mode == "P" else None
    sia: dict[str, Any] = {}
    if "sia" in text:
        try:
            sia = json.loads(text["sia"])
        except ValueError:
            sia = {}
    palette = sia.get("palette")
    if palette is None and plte:
        used = int(arr.max()) + 1 if arr.size else 0
        palette = [plte[3 * i : 3 * i + 3] for i in range(min(used, len(plte) // 3))]
    return _as_labels(arr, what=str(path)), {
        "classes": sia.get("classes"),
        "palette": palette,
        "format": "png",
    }


# --------------------------------------------------------------------------------------------------------
# OME-Zarr (NGFF v0.4 image-label, zarr format 2)


def _n_levels(shape: tuple[int, int], levels: Optional[int]) -> int:
    if levels is not None:
        if levels < 1:
            raise SIAError(f"levels must be >= 1, got {levels}")
        return int(levels)
    n, (h, w) = 1, shape
    while max(h, w) > _PYRAMID_MAX_SIDE:
        h, w, n = (h + 1) // 2, (w + 1) // 2, n + 1
    return n


def _level_shape(shape: tuple[int, int], k: int) -> tuple[int, int]:
    # labels[::2, ::2] applied k times keeps ceil(side / 2**k) pixels
    return (-(-shape[0] // 2**k), -(-shape[1] // 2**k))


def _label_group_attrs(
    name: str,
    n_levels: int,
    classes: list[str],
    palette: list[list[int]],
    fill: int,
    pixel_size: Optional[float],
) -> dict[str, Any]:
    unit = {"unit": "micrometer"} if pixel_size else {}
    base = float(pixel_size) if pixel_size else 1.0
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [{"type": "scale", "scale": [base * 2**k, base * 2**k]}],
        }
        for k in range(n_levels)
    ]
    colors = [{"label-value": i, "rgba": [*palette[i], 255]} for i in range(len(classes))]
    if fill >= len(classes):
        # unlabelled pixels shown transparent rather than in a random colour
        colors.append({"label-value": fill, "rgba": [0, 0, 0, 0]})
    return {
        "multiscales": [
            {
                "version": _NGFF_VERSION,
                "name": name,
                "axes": [{"name": "y", "type": "space", **unit}, {"name": "x", "type": "space", **unit}],
                "datasets": datasets,
                # picking every second pixel keeps label values intact (no averaging of class indices) and
                # keeps pixel k of level n at level-0 pixel k * 2**n, so a pure scale transform is exact
                "type": "nearest",
                "metadata": {"method": "labels[::2, ::2]"},
            }
        ],
        "image-label": {
            "version": _NGFF_VERSION,
            "colors": colors,
            "properties": [{"label-value": i, "class": c} for i, c in enumerate(classes)],
        },
        "sia": {"kind": "labels", "version": _SIA_FORMAT_VERSION, "fill": fill, "complete": False},
    }


def _create_label_zarr_at(
    root: Path,
    shape: tuple[int, int],
    classes: list[str],
    palette: list[list[int]],
    chunks: int,
    name: str,
    fill: int,
    levels: Optional[int],
    dtype: np.dtype,
    pixel_size: Optional[float],
) -> Any:
    import zarr
    from numcodecs import Blosc

    n = _n_levels(shape, levels)
    # zarr-python 2's default codec: every OME-Zarr v0.4 reader (Python and Java) decodes it
    compressor = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)
    group = zarr.open_group(str(root), mode="w", zarr_format=2)
    labels_group = group.create_group("labels")
    labels_group.attrs["labels"] = [name]
    image = labels_group.create_group(name)
    image.attrs.update(_label_group_attrs(name, n, classes, palette, fill, pixel_size))
    arrays = []
    for k in range(n):
        lshape = _level_shape(shape, k)
        arrays.append(
            image.create_array(
                str(k),
                shape=lshape,
                chunks=(min(chunks, lshape[0]), min(chunks, lshape[1])),
                dtype=dtype,
                fill_value=fill,
                compressors=compressor,
                # NGFF v0.4 requires nested chunk keys ("0/1") for zarr format 2
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
        )
    return arrays[0]


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
    """Create an empty OME-Zarr label pyramid for a writer that fills level 0 chunk by chunk.

    Layout: ``<path>/labels/<name>/{0,1,...}`` with NGFF v0.4 ``multiscales`` and ``image-label`` metadata
    (zarr format 2). Every level starts filled with ``fill``. Write level 0 (ideally in chunk-aligned
    blocks), then call ``build_pyramid(path)``, which computes the lower levels and marks the store
    complete (``read_label_zarr`` reports ``meta["complete"]``). Unlike ``write_label_zarr`` this writes in
    place, not atomically: the store exists, incomplete, while it is being filled.

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
    path = Path(path)
    _check_overwrite(path, overwrite)
    names = _norm_classes(classes) or []
    dt = np.dtype(dtype) if dtype is not None else np.dtype(np.uint8 if len(names) < 255 else np.uint16)
    if dt not in (np.uint8, np.uint16):
        raise SIAError(f"label zarr dtype must be uint8 or uint16, got {dt}")
    fill = _ignore_fill(dt) if fill is None else int(fill)
    shape = (int(shape[0]), int(shape[1]))
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    pal = _norm_palette(palette, len(names)) or []
    return _create_label_zarr_at(path, shape, names, pal, int(chunks), name, fill, levels, dt, pixel_size)


def _open_label_group(path: Path, name: Optional[str], mode: str = "r") -> Any:
    """Open the label image group given the store root or the ``labels/<name>`` group itself."""
    import zarr

    if not path.is_dir():
        raise SIAError(f"OME-Zarr store {path} not found")
    try:
        group = zarr.open_group(str(path), mode=mode)
    except Exception as err:  # zarr raises several types for "not a group"
        raise SIAError(f"{path} is not a zarr group: {err}") from err
    attrs = group.attrs.asdict()
    if "multiscales" in attrs:
        return group
    if "labels" in group and "labels" in group["labels"].attrs:
        names = list(group["labels"].attrs["labels"])
        pick = name or (names[0] if names else None)
        if pick is None or pick not in group["labels"]:
            raise SIAError(f"{path}: no label image {pick!r} under labels/ (found {names})")
        return group["labels"][pick]
    raise SIAError(
        f"{path} holds no OME-Zarr label image (no multiscales and no labels/ group)",
        fix="point to a store written by write_label_zarr or to its labels/<name> group",
    )


def _levels_of(group: Any) -> list[Any]:
    datasets = group.attrs["multiscales"][0]["datasets"]
    return [group[d["path"]] for d in datasets]


def build_pyramid(group_path: PathLike, name: Optional[str] = None) -> None:
    """(Re)compute pyramid levels 1.. from level 0, one output chunk at a time.

    Each output chunk reads only the 2x2-chunk block of the level above, so memory stays at a few chunks
    whatever the slide size. Level ``k`` equals ``level0[::2**k, ::2**k]``. Marks the store complete.

    Args:
        group_path: The store root (``.../x.ome.zarr``) or its ``labels/<name>`` group.
        name: Label image name when the root holds several.
    """
    group = _open_label_group(Path(group_path), name, mode="r+")
    levels = _levels_of(group)
    for src, dst in zip(levels[:-1], levels[1:]):
        ch, cw = dst.chunks
        h, w = dst.shape
        for y in range(0, h, ch):
            for x in range(0, w, cw):
                block = src[2 * y : 2 * (y + ch), 2 * x : 2 * (x + cw)]
                dst[y : y + ch, x : x + cw] = block[::2, ::2]
    sia = dict(group.attrs.get("sia", {}))
    sia["complete"] = True
    group.attrs["sia"] = sia


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
    overwrite: bool = False,
) -> Path:
    """Write a label map as an OME-Zarr (NGFF v0.4, zarr format 2) image-label pyramid, atomically.

    Levels are built by nearest 2x downsampling (``labels[::2, ::2]``) until the longer side is <= 1024,
    unless ``levels`` is given. See ``create_label_zarr`` for the layout.
    """
    path = Path(path)
    arr = _as_labels(labels)
    names = _norm_classes(classes) or []
    pal = _norm_palette(palette, len(names)) or []
    dt = np.dtype(np.uint16) if arr.dtype == np.uint16 or len(names) >= 255 else np.dtype(np.uint8)

    def _build(tmp: Path) -> None:
        level0 = _create_label_zarr_at(
            tmp, arr.shape, names, pal, int(chunks), name, _ignore_fill(dt), levels, dt, pixel_size
        )
        group = _open_label_group(tmp, name, mode="r+")
        for k, level in enumerate([level0, *_levels_of(group)[1:]]):
            level[...] = arr[:: 2**k, :: 2**k]
        group.attrs["sia"] = {**dict(group.attrs["sia"]), "complete": True}

    return _atomic_dir(path, _build, overwrite)


def read_label_zarr(path: PathLike, name: Optional[str] = None) -> tuple[list[Any], dict[str, Any]]:
    """Open an OME-Zarr label pyramid lazily.

    Args:
        path: Store root or its ``labels/<name>`` group.
        name: Label image name when the root holds several (default: the first listed).

    Returns:
        ``(levels, meta)``: zarr arrays from full resolution down, and ``classes``, ``palette``, ``scales``,
        ``name``, ``fill`` and ``complete`` (False while a chunk-by-chunk writer has not finished).
    """
    group = _open_label_group(Path(path), name)
    attrs = group.attrs.asdict()
    ms = attrs["multiscales"][0]
    label_meta = attrs.get("image-label", {})
    props = {p["label-value"]: p.get("class") for p in label_meta.get("properties", [])}
    colors = {c["label-value"]: c.get("rgba") for c in label_meta.get("colors", [])}
    n = max(props) + 1 if props else 0
    classes = [props.get(i) for i in range(n)] if props else None
    palette = [list(colors[i][:3]) if colors.get(i) else None for i in range(n)] if n else None
    scales = [
        next((t["scale"] for t in d.get("coordinateTransformations", []) if t["type"] == "scale"), None)
        for d in ms["datasets"]
    ]
    sia = attrs.get("sia", {})
    meta = {
        "classes": classes,
        "palette": palette,
        "scales": scales,
        "name": ms.get("name"),
        "fill": sia.get("fill"),
        "complete": sia.get("complete", True),
        "format": "ome-zarr",
    }
    return _levels_of(group), meta


# --------------------------------------------------------------------------------------------------------
# QuPath GeoJSON: exact pixel-edge outlines


def _run_bounds(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs along axis 1 from start/end flags: (row, first column, last column + 1), in row-major order."""
    rows, first = np.nonzero(start)
    _, last = np.nonzero(end)  # row-major order pairs each run's start with its end
    return rows, first, last + 1


def _cycles(succ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decompose the permutation ``succ`` into cycles, with numpy only.

    Pointer doubling: after round k every element knows the smallest index among its next 2**k successors
    and how many steps ahead it is, so after log2(n) rounds it knows its cycle's smallest index (the
    leader) and its distance to it. O(n log n) vectorised work instead of a Python walk over every corner.

    Returns:
        ``(order, bounds)``: indices grouped by cycle (cycles ordered by leader), each cycle starting at its
        leader and following ``succ``; cycle ``i`` is ``order[bounds[i]:bounds[i+1]]``.
    """
    n = len(succ)
    leader = np.arange(n)
    dist = np.zeros(n, np.int64)  # steps from each element forward to ``leader``
    p = succ.copy()
    span = 1
    while span < n:
        ahead = leader[p]
        better = ahead < leader  # strict: on a tie the nearer occurrence (already stored) wins
        leader = np.where(better, ahead, leader)
        dist = np.where(better, dist[p] + span, dist)
        p = p[p]
        span *= 2
    sizes = np.bincount(leader, minlength=n)
    first = np.cumsum(sizes) - sizes  # start of each leader's block in the output
    size = sizes[leader]
    order = np.empty(n, np.int64)
    order[first[leader] + (size - dist) % size] = np.arange(n)
    leaders = np.flatnonzero(sizes)
    return order, np.r_[first[leaders], n]


def _split_at(keys: np.ndarray, piece: np.ndarray, key: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    pos = np.flatnonzero(keys[piece] == key)
    if len(pos) < 2:
        return None
    a, b = int(pos[0]), int(pos[1])
    return np.concatenate([piece[:a], piece[b:]]), piece[a:b]


def _label_polygons(
    labels: np.ndarray, ignore: set[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact outlines of the 4-connected single-class regions of a label map.

    Returns ``(coords, ring_bounds, poly_bounds, values)``: ``coords`` (N, 2) int64 (x, y) pixel-corner
    points of closed rings (first point repeated at the end); ring ``i`` is
    ``coords[ring_bounds[i]:ring_bounds[i+1]]``; polygon ``j`` is rings ``poly_bounds[j]:poly_bounds[j+1]``,
    its shell first, then its holes, and has label value ``values[j]``. Polygons are sorted by value, then
    by the raster position of the region's first pixel. Shells run counter-clockwise and holes clockwise
    in (x, y) (RFC 7946 orientation); only corners are kept.

    Method: every pixel edge between a region and a pixel of another value (or the image border) is a
    directed boundary edge with the region on its left; straight runs of edges become segments, so every
    segment start is a corner. At a corner where a class touches itself only diagonally, two segments of
    that class start; the walk turns left, staying on the same pixel, which is what makes regions
    4-connected and keeps rings from crossing. A ring that still passes such a corner twice (a background
    pocket joined to the outside only through a corner) is split there into a shell and a hole touching at
    one point, which is valid polygon geometry (OGC / JTS, what QuPath uses), unlike a self-touching ring.
    All classes are traced in one pass; cycles are found with numpy pointer doubling, not a Python walk.
    """
    from skimage.measure import label as cc_label

    h, w = labels.shape
    empty = (np.zeros((0, 2), np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))
    if labels.size == 0:
        return empty
    pad = np.full((h + 2, w + 2), -1, np.int32)  # -1 differs from every label, so borders are boundaries
    pad[1:-1, 1:-1] = labels
    mid = pad[1:-1, 1:-1]
    up, down, lft, rgt = (
        mid != pad[:-2, 1:-1],
        mid != pad[2:, 1:-1],
        mid != pad[1:-1, :-2],
        mid != pad[1:-1, 2:],
    )
    # an edge run continues into the next pixel only if that pixel has the same value and the same edge
    cont_r = np.zeros((h, w), bool)
    cont_r[:, :-1] = ~rgt[:, :-1]  # pixel (r, c + 1) has the same value
    cont_d = np.zeros((h, w), bool)
    cont_d[:-1] = ~down[:-1]

    def _h_runs(edge: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nxt = np.zeros((h, w), bool)
        nxt[:, :-1] = edge[:, 1:]
        prv = np.zeros((h, w), bool)
        prv[:, 1:] = edge[:, :-1] & cont_r[:, :-1]
        return _run_bounds(edge & ~prv, edge & ~(nxt & cont_r))

    def _v_runs(edge: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nxt = np.zeros((h, w), bool)
        nxt[:-1] = edge[1:]
        prv = np.zeros((h, w), bool)
        prv[1:] = edge[:-1] & cont_d[:-1]
        return _run_bounds((edge & ~prv).T, (edge & ~(nxt & cont_d)).T)

    parts = []
    r, c0, c1 = _h_runs(up)  # direction 0: +x along y = r
    parts.append((c0, r, c1, r, 0, r, c0))
    c, r0, r1 = _v_runs(rgt)  # direction 1: +y along x = c + 1
    parts.append((c + 1, r0, c + 1, r1, 1, r0, c))
    r, c0, c1 = _h_runs(down)  # direction 2: -x along y = r + 1
    parts.append((c1, r + 1, c0, r + 1, 2, r, c0))
    c, r0, r1 = _v_runs(lft)  # direction 3: -y along x = c
    parts.append((c, r1, c, r0, 3, r0, c))
    del up, down, lft, rgt, pad  # free the full-size masks before the segment arrays grow

    sx, sy, ex, ey, pr, pc = (
        np.concatenate([p[i] for p in parts]).astype(np.int64) for i in (0, 1, 2, 3, 5, 6)
    )
    dirs = np.concatenate([np.full(len(p[0]), p[4], np.int8) for p in parts])
    value = labels[pr, pc].astype(np.int64)
    if ignore:
        keep = ~np.isin(value, np.fromiter(ignore, np.int64))
        sx, sy, ex, ey, pr, pc, dirs, value = (a[keep] for a in (sx, sy, ex, ey, pr, pc, dirs, value))
    if len(sx) == 0:
        return empty
    n_vertices = (h + 1) * (w + 1)
    # one key per (class, corner): the walk of one class never continues on another class's segments
    skey = value * n_vertices + sy * (w + 1) + sx
    ekey = value * n_vertices + ey * (w + 1) + ex

    # successor: the segment starting where this one ends; at a diagonal-contact corner two start there and
    # the left turn (direction + 1) keeps the walk on the same pixel
    by_start = np.argsort(skey * 4 + dirs)
    sorted_keys = np.r_[skey[by_start], -1]
    lo = np.searchsorted(sorted_keys[:-1], ekey)
    succ = by_start[lo]
    two = np.flatnonzero(sorted_keys[lo + 1] == ekey)
    if len(two):
        alt = by_start[lo[two] + 1]
        want = (dirs[two] + 1) % 4
        succ[two] = np.where(dirs[succ[two]] == want, succ[two], alt)

    order, bounds = _cycles(succ)
    starts = bounds[:-1]
    cycle_of = np.repeat(np.arange(len(starts)), np.diff(bounds))
    cid = np.empty(len(order), np.int64)
    cid[order] = cycle_of

    # cycles passing a diagonal-contact corner twice (rare: background pocket joined to the rest by a corner)
    pinched: dict[int, list[int]] = {}
    if len(two):
        amb = np.unique(skey[by_start[lo[two]]])
        at = np.searchsorted(sorted_keys, amb, "left")
        same = cid[by_start[at]] == cid[by_start[at + 1]]
        for key, c in zip(amb[same].tolist(), cid[by_start[at[same]]].tolist()):
            pinched.setdefault(c, []).append(key)

    seq = order
    if pinched:
        # cut each pinched cycle at its repeated corners; the pieces go after the untouched cycles
        hit = np.zeros(len(starts), bool)
        hit[np.fromiter(pinched, np.int64)] = True
        pieces = [order[~hit[cycle_of]]]
        lengths = [np.diff(bounds)[~hit]]
        for i in np.flatnonzero(hit):
            todo = [order[bounds[i] : bounds[i + 1]]]
            for key in pinched[int(i)]:
                for j, piece in enumerate(todo):
                    parts = _split_at(skey, piece, key)
                    if parts is not None:
                        todo[j] = parts[0]
                        todo.append(parts[1])
                        break
            pieces += todo
            lengths.append(np.array([len(t) for t in todo]))
        seq = np.concatenate(pieces)
        bounds = np.r_[0, np.cumsum(np.concatenate(lengths))]
    starts, n_seg = bounds[:-1], np.diff(bounds)

    # regions of equal value, 4-connected; a region's shell and holes all have it on their left
    comp = cc_label(labels, background=-1, connectivity=1)
    x, y = sx[seq], sy[seq]
    nxt = np.arange(1, len(seq) + 1)
    nxt[bounds[1:] - 1] = starts
    area2 = np.add.reduceat(x * y[nxt] - x[nxt] * y, starts)  # > 0: shell, < 0: hole
    region = comp[pr[seq[starts]], pc[seq[starts]]]
    ring_value = value[seq[starts]]
    perm = np.lexsort((area2 < 0, region, ring_value))  # per region: its one shell, then its holes

    # closed rings in that order: each ring's corners followed by its first corner again
    closed_len = n_seg[perm] + 1
    ring_bounds = np.r_[0, np.cumsum(closed_len)]
    offs = np.arange(ring_bounds[-1]) - np.repeat(ring_bounds[:-1], closed_len)
    offs[ring_bounds[1:] - 1] = 0
    idx = np.repeat(starts[perm], closed_len) + offs
    coords = np.stack([x[idx], y[idx]], axis=1)
    reg = region[perm]
    poly_starts = np.flatnonzero(np.r_[True, reg[1:] != reg[:-1]])
    return coords, ring_bounds, np.r_[poly_starts, len(perm)], ring_value[perm][poly_starts]


def labels_to_geojson(
    labels: np.ndarray,
    classes: Sequence[str],
    palette: Optional[Palette] = None,
    ignore_values: Iterable[int] = (255,),
    offset: tuple[float, float] = (0, 0),
    downsample: float = 1.0,
) -> dict[str, Any]:
    """Convert a label map to a QuPath GeoJSON FeatureCollection.

    One ``Polygon`` feature per 4-connected region of each class (pixels touching only at a corner are
    separate regions whose outlines share that corner), holes as interior rings. Outlines follow pixel
    edges exactly, so ``geojson_to_labels`` rasterises them back to the identical mask. Coordinates are
    (x, y) in full-resolution pixels with origin at the top-left corner of the image: the pixel at row 0,
    column 0 is the square (0,0)-(1,0)-(1,1)-(0,1).

    Args:
        labels: (H, W) class indices.
        classes: Class name per label value (QuPath's classification name).
        palette: RGB per label value (QuPath's classification colour); defaults to ``default_palette``.
        ignore_values: Label values not exported (unlabelled / background you do not want as annotations).
        offset: (x, y) full-resolution position of the top-left corner of ``labels`` (for a crop).
        downsample: Full-resolution pixels per label pixel (for a label map predicted at lower resolution).

    Returns:
        A GeoJSON FeatureCollection dict (``json.dump``-able) of QuPath annotations.
    """
    arr = _as_labels(labels)
    names = _norm_classes(classes) or []
    pal = _norm_palette(palette, len(names)) or []
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
    exact = float(downsample).is_integer() and float(ox).is_integer() and float(oy).is_integer()
    scale, shift = (int(downsample), (int(ox), int(oy))) if exact else (float(downsample), (ox, oy))
    coords, ring_bounds, poly_bounds, values = _label_polygons(arr, ignore)
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
    return {"type": "FeatureCollection", "features": features}


def write_geojson(
    path: PathLike,
    labels: np.ndarray,
    classes: Sequence[str],
    palette: Optional[Palette] = None,
    *,
    ignore_values: Iterable[int] = (255,),
    offset: tuple[float, float] = (0, 0),
    downsample: float = 1.0,
    overwrite: bool = False,
) -> Path:
    """Write ``labels_to_geojson(...)`` to ``path`` (QuPath: File > Import objects, or drag and drop).

    Streamed feature by feature (the bytes of ``json.dumps(collection)`` without building them as one string:
    a slide's GeoJSON holds many thousand polygons).
    """
    path = Path(path)
    _check_overwrite(path, overwrite)
    collection = labels_to_geojson(labels, classes, palette, ignore_values, offset, downsample)

    def _write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write('{"type":"FeatureCollection","features":[')
            for i, feature in enumerate(collection["features"]):
                f.write(("," if i else "") + json.dumps(feature, separators=(",", ":")))
            f.write("]}")

    return atomic_write(path, _write)


def _features(geojson: Any) -> list[dict[str, Any]]:
    if isinstance(geojson, list):
        return geojson
    if isinstance(geojson, dict):
        if geojson.get("type") == "FeatureCollection":
            return list(geojson.get("features", []))
        if geojson.get("type") == "Feature":
            return [geojson]
    raise SIAError("not GeoJSON: expected a FeatureCollection, a Feature or a list of features")


def _class_name(feature: dict[str, Any]) -> Optional[str]:
    cls = (feature.get("properties") or {}).get("classification")
    if isinstance(cls, dict):
        return cls.get("name")
    return cls if isinstance(cls, str) else None


def _class_color(feature: dict[str, Any]) -> Optional[list[int]]:
    cls = (feature.get("properties") or {}).get("classification")
    if not isinstance(cls, dict):
        return None
    if "color" in cls:
        return [int(v) for v in cls["color"][:3]]
    if "colorRGB" in cls:  # QuPath 0.2 wrote a packed (A)RGB int
        v = int(cls["colorRGB"]) & 0xFFFFFF
        return [v >> 16 & 255, v >> 8 & 255, v & 255]
    return None


def _paint(out: np.ndarray, polygons: list[list[np.ndarray]], value: int) -> None:
    """Set ``out`` to ``value`` at every pixel whose centre lies inside the union of ``polygons``.

    Each polygon is a list of (N, 2) float (x, y) rings in ``out``'s pixel units, shell first. Rings are
    re-oriented (shell +1, holes -1) and a pixel is inside where the winding number is non-zero, so holes
    are subtracted and overlapping polygons of one class simply unite. skimage.draw.polygon tests every
    bounding-box pixel against every vertex, far too slow for slide-sized outlines; instead each edge
    crossing of a pixel-centre row adds its winding step at the first pixel right of it and a cumulative
    sum along the row gives the winding number: the same pixel-centre rule, cost ~ crossings + area,
    processed in row bands so memory stays bounded.
    """
    h, w = out.shape
    rings, wanted = [], []
    for polygon in polygons:
        for k, ring in enumerate(polygon):
            if len(ring) >= 3:
                rings.append(ring)
                wanted.append(1 if k == 0 else -1)
    if not rings:
        return
    lengths = np.array([len(r) for r in rings])
    pts = np.concatenate(rings)
    ring_starts = np.cumsum(lengths) - lengths
    nxt = np.arange(1, len(pts) + 1)
    nxt[ring_starts + lengths - 1] = ring_starts
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = x0[nxt], y0[nxt]
    area2 = np.add.reduceat(x0 * y1 - x1 * y0, ring_starts)
    factor = np.repeat(np.sign(area2) * np.array(wanted), lengths)
    keep = (y0 != y1) & (factor != 0)
    x0, y0, x1, y1, factor = x0[keep], y0[keep], x1[keep], y1[keep], factor[keep]
    # pixel-centre rows i with min(y) <= i + 0.5 < max(y): half-open, so a shared vertex counts once
    first = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, h).astype(np.int64)
    stop = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, h).astype(np.int64)
    counts = stop - first
    total = int(counts.sum())
    if total == 0:
        return
    edge = np.repeat(np.arange(len(counts)), counts)
    rows = first[edge] + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    t = (rows + 0.5 - y0[edge]) / (y1[edge] - y0[edge])
    xc = x0[edge] + t * (x1[edge] - x0[edge])
    # a counter-clockwise shell descends (y decreasing) on its left side: +1 entering, -1 leaving
    step = np.where(y1[edge] < y0[edge], 1.0, -1.0) * factor[edge]
    cols = np.floor(xc - 0.5).astype(np.int64) + 1  # first pixel whose centre is right of the crossing
    c_lo, c_hi = max(0, int(cols.min())), min(w, int(cols.max()))
    if c_lo >= c_hi:
        return
    inside_cols = cols < c_hi  # crossings at or right of c_hi change nothing inside [c_lo, c_hi)
    rows, cols, step = rows[inside_cols], np.maximum(cols[inside_cols], c_lo) - c_lo, step[inside_cols]
    by_row = np.argsort(rows, kind="stable")
    rows, cols, step = rows[by_row], cols[by_row], step[by_row]
    bw = c_hi - c_lo
    band = max(1, (1 << 22) // bw)
    for b0 in range(int(rows[0]), int(rows[-1]) + 1, band):
        i0, i1 = np.searchsorted(rows, [b0, b0 + band])
        if i0 == i1:
            continue
        bh = min(band, h - b0)
        winding = np.bincount((rows[i0:i1] - b0) * bw + cols[i0:i1], weights=step[i0:i1], minlength=bh * bw)
        inside = np.cumsum(winding.reshape(bh, bw), axis=1) != 0
        out[b0 : b0 + bh, c_lo:c_hi][inside] = value


def read_geojson(path: PathLike) -> Any:
    """Load a GeoJSON file (FeatureCollection, Feature or list of features)."""
    path = Path(path)
    if not path.is_file():
        raise SIAError(f"GeoJSON file {path} not found")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise SIAError(f"{path} is not valid JSON: {err}") from err


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
    Later features overwrite earlier ones of another class where they overlap.
    Polygon and MultiPolygon geometries are drawn; points and lines have no area and are skipped.

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
    """
    source = geojson_or_path
    if isinstance(source, (str, os.PathLike)):
        source = read_geojson(source)
    names = _norm_classes(classes) or []
    if unknown not in ("error", "ignore"):
        raise SIAError(f"unknown must be 'error' or 'ignore', got {unknown!r}")
    index = {n: i for i, n in enumerate(names)}
    h, w = int(shape[0]), int(shape[1])
    dtype = np.uint8 if max(len(names) - 1, fill) <= 255 else np.uint16
    out = np.full((h, w), fill, dtype)
    ox, oy = float(offset[0]), float(offset[1])
    # consecutive features of one class are painted together: same result as one by one, far fewer passes
    batch: list[list[np.ndarray]] = []
    batch_value = -1
    for i, feature in enumerate(_features(source)):
        geometry = feature.get("geometry") or {}
        kind = geometry.get("type")
        if kind == "Polygon":
            polygons = [geometry["coordinates"]]
        elif kind == "MultiPolygon":
            polygons = geometry["coordinates"]
        else:
            continue
        name = _class_name(feature)
        if name not in index:
            if unknown == "ignore":
                continue
            raise SIAError(
                f"GeoJSON feature {i} has class {name!r}, which is not among {names}",
                fix="add the class to the class list or pass unknown='ignore'",
            )
        if index[name] != batch_value:
            _paint(out, batch, batch_value)
            batch, batch_value = [], index[name]
        for polygon in polygons:
            batch.append(
                [(np.asarray(r, np.float64)[:, :2] - (ox, oy)) / downsample for r in polygon if len(r) >= 3]
            )
    _paint(out, batch, batch_value)
    return out


# --------------------------------------------------------------------------------------------------------
# dispatch on the file name


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith(".png"):
        return "png"
    if name.endswith(".zarr"):
        return "zarr"
    if name.endswith((".geojson", ".json")):
        return "geojson"
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
    kind = _kind(path)
    if kind == "tiff":
        return write_label_tiff(path, labels, classes, palette, overwrite=overwrite, **kwargs)
    if kind == "png":
        return write_label_png(path, labels, palette, classes, overwrite=overwrite, **kwargs)
    if classes is None:
        if kind == "geojson":
            raise SIAError(f"{path}: GeoJSON needs class names (QuPath classifications)", fix="pass classes")
        arr = _as_labels(labels)
        used = np.flatnonzero(np.bincount(arr.ravel(), minlength=1))
        used = used[used != _ignore_fill(arr.dtype)]
        classes = [f"class_{i}" for i in range(int(used.max()) + 1 if used.size else 0)]
    if kind == "zarr":
        return write_label_zarr(path, labels, classes, palette, overwrite=overwrite, **kwargs)
    return write_geojson(path, labels, classes, palette, overwrite=overwrite, **kwargs)


def read_labels(
    path: PathLike, shape: Optional[tuple[int, int]] = None, classes: Optional[Sequence[str]] = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a label map written by ``write_labels`` (full resolution, in memory).

    Args:
        path: Label file; the extension selects the reader.
        shape: (H, W); required for GeoJSON, which does not record the image size.
        classes: Class names; for GeoJSON they map classification names to values (default: the names in
            the file, in order of first appearance).

    Returns:
        ``(labels, meta)`` with ``meta["classes"]`` and ``meta["palette"]``.
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "tiff":
        return read_label_tiff(path)
    if kind == "png":
        return read_label_png(path)
    if kind == "zarr":
        levels, meta = read_label_zarr(path)
        return np.asarray(levels[0][...]), meta
    if shape is None:
        raise SIAError(f"{path}: GeoJSON does not store the image size", fix="pass shape=(height, width)")
    data = read_geojson(path)
    names = list(classes) if classes is not None else []
    colors: dict[str, Optional[list[int]]] = {}
    for feature in _features(data):
        name = _class_name(feature)
        if name is not None and name not in colors:
            colors[name] = _class_color(feature)
        if classes is None and name is not None and name not in names:
            names.append(name)
    labels = geojson_to_labels(data, shape, names)
    return labels, {"classes": names, "palette": [colors.get(n) for n in names], "format": "geojson"}
