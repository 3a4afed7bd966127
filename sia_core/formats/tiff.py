"""Label maps and float maps as TIFF: zlib-compressed, tiled from 2048 px on, BigTIFF past 4 GB.

Class names and palette (or map names) travel as JSON in the ImageDescription (tifffile "shaped" metadata,
key ``"sia"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import SIAError
from ..io_utils import atomic_write
from .common import FORMAT_VERSION, Palette, PathLike, as_labels, check_overwrite, norm_classes, norm_palette

__all__ = ["read_float_tiff", "read_label_tiff", "write_float_tiff", "write_label_tiff"]

# tifffile only switches to BigTIFF by itself for uncompressed data, so decide from the raw size, keeping
# 64 MiB headroom for metadata and for zlib's worst-case growth on incompressible float data.
_BIGTIFF_BYTES = 2**32 - 2**26
_TIFF_TILE = 512
_TILED_FROM = 2048


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


def _read(path: Path, what: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The pixels of a TIFF and its ``sia`` metadata ({} for foreign files)."""
    import tifffile

    if not path.is_file():
        raise SIAError(f"{what} {path} not found")
    try:
        with tifffile.TiffFile(path) as tif:
            return tif.asarray(), _tiff_sia_metadata(tif)
    except Exception as err:  # TiffFileError, codec errors, short reads
        raise SIAError(f"cannot read TIFF {path}: {str(err)[:200]}", fix="re-export the file") from err


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
    check_overwrite(path, overwrite)
    arr = as_labels(labels)
    names = norm_classes(classes)
    meta = {
        "axes": "YX",
        "sia": {
            "kind": "labels",
            "version": FORMAT_VERSION,
            "classes": names,
            "palette": norm_palette(palette, len(names) if names else None),
        },
    }
    opts = _tiff_options(arr.shape, arr.nbytes)
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, arr, metadata=meta, **opts))


def read_label_tiff(path: PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a label TIFF (ours or any single-channel integer TIFF).

    Returns:
        ``(labels, meta)`` where meta has ``classes`` and ``palette`` (None when the file has none).
    """
    path = Path(path)
    arr, sia = _read(path, "label file")
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise SIAError(f"{path} is not a label map: expected one (H, W) channel, got shape {arr.shape}")
    labels = as_labels(arr, what=str(path))
    return labels, {"classes": sia.get("classes"), "palette": sia.get("palette"), "format": "tiff"}


def write_float_tiff(path: PathLike, maps: np.ndarray, names: Sequence[str], *, overwrite: bool = False) -> Path:
    """Write float maps (CAMs, inhibition maps, RSMs, probabilities) as a (C, H, W) float32 TIFF.

    Args:
        path: Target ``.tif`` file.
        maps: (C, H, W) or (H, W) array, stored as float32 (zlib + floating-point predictor).
        names: One name per channel, stored in the ImageDescription JSON.
        overwrite: Replace an existing file.
    """
    import tifffile

    path = Path(path)
    check_overwrite(path, overwrite)
    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise SIAError(f"float maps for {path} must be (C, H, W), got shape {arr.shape}")
    names = [str(n) for n in names]
    if len(names) != arr.shape[0]:
        raise SIAError(f"{len(names)} names given for {arr.shape[0]} channels when writing {path}")
    meta = {"axes": "CYX", "sia": {"kind": "float-maps", "version": FORMAT_VERSION, "names": names}}
    opts = _tiff_options(arr.shape, arr.nbytes)
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, arr, metadata=meta, predictor=True, **opts))


def read_float_tiff(path: PathLike) -> tuple[np.ndarray, list[str]]:
    """Read maps written by ``write_float_tiff``.

    Returns:
        ``(maps (C, H, W) float32, names)``; names default to ``channel_<i>`` for foreign files.
    """
    path = Path(path)
    arr, sia = _read(path, "map file")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise SIAError(f"{path} does not hold (C, H, W) maps: shape {arr.shape}")
    names = sia.get("names") or [f"channel_{i}" for i in range(arr.shape[0])]
    return arr.astype(np.float32, copy=False), list(names)
