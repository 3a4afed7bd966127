"""Reading RGB images and label masks, writing palette masks.

Every failure to read a file becomes a :class:`SIAError` that names the file, so a single bad patch in a
folder of thousands is easy to find. PNG/JPEG go through Pillow, with ``load()`` called at once so that a
truncated file fails here rather than as a silently grey image (``LOAD_TRUNCATED_IMAGES`` stays off).
TIFF (incl. OME-TIFF and pyramids) goes through tifffile: first series, full-resolution level.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from PIL import Image

from ..errors import SIAError
from ..formats.png import palette_lut, write_label_png
from .sidecars import OUTPUT_DIRS

__all__ = [
    "IMAGE_EXTENSIONS",
    "TIFF_EXTENSIONS",
    "list_images",
    "read_rgb",
    "read_mask",
    "image_size",
    "write_palette_png",
    "palette_to_rgb",
    "full_palette",
    "to_rgb_uint8",
]

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TIFF_EXTENSIONS = (".tif", ".tiff")

_WHITE = (255, 255, 255)


def list_images(folder: PathLike, recursive: bool = True) -> list[Path]:
    """Image files (by extension, case-insensitive) in ``folder``, sorted by path.

    Hidden files and folders (name starting with '.') are skipped: they are usually macOS ``._*``
    resource forks or tool caches, not images. So are the masks SIA writes beside the images
    (``sia_masks/``, ``sia_pseudo/``, ``sia_exports/``): they are outputs, not training images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    found = []
    for path in candidates:
        rel = path.relative_to(folder)
        if any(part.startswith(".") or part in OUTPUT_DIRS for part in rel.parts[:-1]):
            continue
        if rel.name.startswith("."):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.as_posix())


def read_rgb(path: PathLike) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB.

    Grayscale is repeated to three channels; alpha is composited over white (transparent = glass);
    16-bit and float images are scaled to 0..255; planar (C, H, W) TIFFs are transposed.

    Raises:
        SIAError: Missing, truncated, corrupt or non-image file, or an array that is not a 2-D image.
    """
    path = Path(path)
    if path.suffix.lower() in TIFF_EXTENSIONS:
        arr = _channels_last(_read_tiff(path), path)
        return to_rgb_uint8(arr, path)
    img = _open_pil(path)
    if img.mode in ("RGB", "L", "I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img)
    elif img.mode == "1":
        arr = np.asarray(img.convert("L"))
    elif "A" in img.getbands() or "transparency" in img.info:
        arr = np.asarray(img.convert("RGBA"))
    else:  # P, CMYK, YCbCr, LAB, HSV ...
        arr = np.asarray(img.convert("RGB"))
    return to_rgb_uint8(arr, path)


def image_size(path: PathLike) -> tuple[int, int]:
    """(height, width) of an image from its header, without decoding the pixels."""
    path = Path(path)
    if not path.is_file():
        raise SIAError(f"image not found: {path}", fix="check the path")
    try:
        if path.suffix.lower() in TIFF_EXTENSIONS:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape = series.levels[0].shape if series.levels else series.shape
                axes = series.levels[0].axes if series.levels else series.axes
            return int(shape[axes.index("Y")]), int(shape[axes.index("X")])
        with Image.open(path) as img:
            return img.height, img.width
    except Exception as err:
        raise SIAError(f"cannot read image header of {path}: {err}", fix="re-export the image") from err


def read_mask(
    path: PathLike,
    num_classes: int,
    ignore_index: int,
    palette: Optional[Sequence[Sequence[int]]] = None,
) -> np.ndarray:
    """Read a label mask as (H, W) uint8 class indices.

    A palette-mode or single-channel PNG/TIFF holds the indices directly. An RGB(A) mask is mapped back
    through ``palette`` (see :func:`full_palette` for how the ignore colour is chosen).

    Args:
        path: Mask file.
        num_classes: Valid class indices are 0..num_classes-1.
        ignore_index: The one other allowed value (background / not scored).
        palette: RGB colour per class (optionally followed by the ignore colour); needed for RGB masks.

    Raises:
        SIAError: Unreadable file, an RGB mask with colours not in the palette (or no palette), or index
            values outside {0..num_classes-1, ignore_index}; the message names the file and the values.
    """
    path = Path(path)
    if path.suffix.lower() in TIFF_EXTENSIONS:
        arr = _read_tiff(path)
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
            arr = np.moveaxis(arr, 0, -1)
    else:
        img = _open_pil(path)
        if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
            arr = np.asarray(img)
        elif img.mode in ("PA", "LA"):
            arr = np.asarray(img)[..., 0]  # the index band; alpha says nothing about the class
        elif img.mode in ("RGB", "RGBA"):
            arr = np.asarray(img)
        else:
            arr = np.asarray(img.convert("RGB"))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            # A gray RGB file is most likely an index mask saved as RGB; use it unless it is in the palette.
            try:
                return _rgb_to_index(rgb, path, num_classes, ignore_index, palette)
            except SIAError:
                arr = rgb[..., 0]
        else:
            return _rgb_to_index(rgb, path, num_classes, ignore_index, palette)
    if arr.ndim != 2:
        raise SIAError(
            f"mask {path} has shape {arr.shape}; expected a single-channel (H, W) index image or an RGB mask",
            fix="save the mask as a palette or grayscale PNG of class indices",
        )
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.array_equal(arr, np.round(arr))):
        raise SIAError(f"mask {path} holds non-integer values", fix="save integer class indices")
    _check_values(arr, path, num_classes, ignore_index)
    return arr.astype(np.uint8)


def full_palette(
    palette: Sequence[Sequence[int]], num_classes: int, ignore_index: int
) -> dict[int, tuple[int, int, int]]:
    """Colour of each valid mask value.

    ``palette[i]`` colours class ``i``. The ignore index takes ``palette[num_classes]`` when the palette
    has that entry (the WSSS-Tissue convention: one colour per class, then the background), else white.
    """
    colours = {i: _rgb_tuple(palette[i]) for i in range(min(num_classes, len(palette)))}
    colours[ignore_index] = _rgb_tuple(palette[num_classes]) if len(palette) > num_classes else _WHITE
    return colours


def palette_to_rgb(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Colour an index map: (H, W) ints -> (H, W, 3) uint8; indices outside the palette become white."""
    labels = np.asarray(labels)
    lut = palette_lut(palette)
    idx = np.where((labels >= 0) & (labels < 256), labels, 255).astype(np.intp)
    return lut[idx]


def write_palette_png(path: PathLike, labels: np.ndarray, palette: Sequence[Sequence[int]]) -> Path:
    """Write an index map as a palette-mode PNG, replacing an existing file: the one palette-PNG writer,
    :func:`sia_core.formats.png.write_label_png`, with ``overwrite=True``.

    ``np.array(Image.open(path))`` then returns the indices; viewers show the palette colours (indices beyond
    the palette white).

    Raises:
        SIAError: ``labels`` is not 2-D or holds values outside 0..255.
    """
    return write_label_png(path, labels, palette, overwrite=True)


# ------------------------------------------------------------------------------------------- helpers


def _open_pil(path: Path) -> Image.Image:
    if not path.is_file():
        raise SIAError(f"image not found: {path}", fix="check the path, or remove the entry that names it")
    try:
        with Image.open(path) as img:  # closes the file on failure too
            img.load()  # decode now: a truncated file raises here instead of returning a partly grey image
    except Exception as err:  # Pillow raises OSError, ValueError, SyntaxError... for corrupt data
        raise SIAError(
            f"cannot read image {path}: {err}",
            fix="re-export the image (it is truncated, corrupt or not an image), or remove it",
        ) from err
    return img


def _read_tiff(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SIAError(f"image not found: {path}", fix="check the path, or remove the entry that names it")
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            level = series.levels[0] if series.levels else series
            arr = level.asarray()
            axes = level.axes
    except Exception as err:
        raise SIAError(
            f"cannot read TIFF {path}: {err}",
            fix="re-export the image (it is truncated, corrupt or not a TIFF), or remove it",
        ) from err
    # Drop singleton T/Z/C... axes so OME 'TCZYX' stacks with one plane become (C, Y, X) or (Y, X).
    keep = [i for i, (ax, n) in enumerate(zip(axes, arr.shape)) if n > 1 or ax in "YX"]
    return arr.reshape([arr.shape[i] for i in keep])


def _channels_last(arr: np.ndarray, path: Union[str, Path]) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4)):
        raise SIAError(
            f"image {path} has shape {arr.shape}; expected (H, W), (H, W, C) or (C, H, W) with C <= 4",
            fix="export a single 2-D RGB or grayscale plane",
        )
    return arr


def to_rgb_uint8(
    arr: Any, source: Union[str, Path] = "image", contrast: Optional[tuple[float, float]] = None
) -> np.ndarray:
    """Any image array as (H, W, 3) uint8 RGB: the one converter (files, napari layers).

    Grayscale is repeated to three channels; alpha is composited over white (transparent = glass); planar
    (C, H, W) is transposed; a multiscale list gives its full-resolution level. Non-uint8 values map
    ``contrast`` (lo, hi) linearly to 0..255 when given (a napari layer's contrast limits), else 16-bit is
    divided by 257 and floats in 0..1 are scaled by 255.

    Raises:
        SIAError: Not a 2-D image with at most 4 channels, or empty (naming ``source``).
    """
    arr = _channels_last(np.asarray(arr[0] if isinstance(arr, list) else arr), source)
    if arr.size == 0:
        raise SIAError(f"image {source} is empty (shape {arr.shape})", fix="re-export the image")
    if arr.dtype == np.uint8:
        img = arr
    elif contrast is not None:
        lo, hi = float(contrast[0]), float(contrast[1])
        img = np.clip((arr.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255)
    else:
        img = _scale_to_uint8(arr, source).astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[-1]
    if channels in (2, 4):  # gray+alpha or RGBA: composite over white, the colour of glass
        alpha = img[..., -1:].astype(np.float32) / 255.0
        colour = img[..., :-1].astype(np.float32)
        img = colour * alpha + 255.0 * (1.0 - alpha)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def _scale_to_uint8(arr: np.ndarray, path: Union[str, Path]) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return np.rint(arr.astype(np.float32) / 257.0)  # 65535 -> 255
    if arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        top = float(finite.max()) if finite.size else 0.0
        # Floats in 0..1 are the usual convention; larger floats are taken as already on 0..255.
        scaled = arr * 255.0 if top <= 1.0 else arr
        return np.clip(np.nan_to_num(scaled), 0, 255)
    if arr.dtype.kind in "iu":
        # Pillow opens 16-bit PNGs as 32-bit 'I': treat values up to 65535 as 16-bit, like uint16.
        top = int(arr.max(initial=0))
        if top <= 255:
            return np.clip(arr, 0, 255)
        if top <= 65535:
            return np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255)
        return np.clip(arr.astype(np.float64) * 255.0 / top, 0, 255)
    raise SIAError(f"image {path} has unsupported pixel type {arr.dtype}", fix="export 8- or 16-bit RGB")


def _rgb_tuple(colour: Sequence[int]) -> tuple[int, int, int]:
    if len(colour) != 3:
        raise SIAError(f"palette colour {list(colour)} is not [r, g, b]", fix="write each colour as [r, g, b]")
    return int(colour[0]), int(colour[1]), int(colour[2])


def _check_values(arr: np.ndarray, path: Path, num_classes: int, ignore_index: int) -> None:
    values = np.unique(arr)
    allowed = np.append(np.arange(num_classes), ignore_index)
    bad = values[~np.isin(values, allowed)]
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10].tolist()) + (" ..." if bad.size > 10 else "")
        raise SIAError(
            f"mask {path} holds values {shown} outside the classes 0..{num_classes - 1} "
            f"and the ignore index {ignore_index}",
            fix="re-export the mask with class indices, or fix classes/ignore_index in dataset.yaml",
        )


def _rgb_to_index(
    rgb: np.ndarray,
    path: Path,
    num_classes: int,
    ignore_index: int,
    palette: Optional[Sequence[Sequence[int]]],
) -> np.ndarray:
    if palette is None:
        raise SIAError(
            f"mask {path} is an RGB image but no palette is known to map its colours to classes",
            fix="add 'palette: [[r, g, b], ...]' to dataset.yaml, or save the mask as a palette PNG",
        )
    colours = full_palette(palette, num_classes, ignore_index)
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    # Later entries must not override earlier ones when two classes share a colour: insert in reverse.
    table = {}
    for index, (r, g, b) in reversed(list(colours.items())):
        table[(r << 16) | (g << 8) | b] = index
    keys = np.array(sorted(table), dtype=np.int32)
    values = np.array([table[k] for k in keys.tolist()], dtype=np.uint8)
    pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
    known = keys[pos] == codes
    if not known.all():
        unknown = np.unique(codes[~known])
        shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in unknown[:5].tolist())
        more = f" and {unknown.size - 5} more" if unknown.size > 5 else ""
        raise SIAError(
            f"RGB mask {path} has colours {shown}{more} that are not in the palette {list(colours.values())}",
            fix="re-export the mask with the dataset palette (no anti-aliasing/JPEG), or fix 'palette' in dataset.yaml",
        )
    return values[pos]
