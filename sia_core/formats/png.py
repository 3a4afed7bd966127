"""Label maps as palette PNG: pixel values stay class indices, any viewer shows the class colours.

The one palette-PNG writer of the project (masks, pseudo-labels, corrections, exports). Label values beyond
the palette (the ignore index of a palette without an ignore colour, 255 = unlabelled) are shown white, the
colour of glass. Class names and the palette also travel as JSON in an iTXt chunk (key ``sia``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..classes import IGNORE_COLOUR
from ..errors import SIAError
from ..io_utils import atomic_write
from .common import FORMAT_VERSION, Palette, PathLike, as_labels, check_overwrite, norm_classes, norm_palette

__all__ = ["palette_lut", "read_label_png", "write_label_png"]


def palette_lut(palette: Optional[Palette]) -> np.ndarray:
    """(256, 3) uint8 colour of every label value: the palette, then white."""
    lut = np.full((256, 3), IGNORE_COLOUR, dtype=np.uint8)
    for i, colour in enumerate(list(palette or [])[:256]):
        if len(colour) not in (3, 4):
            raise SIAError(f"palette colour {list(colour)} is not [r, g, b]", fix="write each colour as [r, g, b]")
        lut[i] = [int(v) for v in list(colour)[:3]]
    return lut


def write_label_png(
    path: PathLike,
    labels: np.ndarray,
    palette: Optional[Palette] = None,
    classes: Optional[Sequence[str]] = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a uint8 label map as a palette-mode PNG, atomically.

    Args:
        path: Target ``.png``.
        labels: (H, W) class indices in 0..255.
        palette: RGB per label value (default: ``default_palette`` for the classes given).
        classes: Class names by label value, stored in the ``sia`` iTXt chunk.
        overwrite: Replace an existing file.
    """
    from PIL import Image, PngImagePlugin

    path = Path(path)
    check_overwrite(path, overwrite)
    arr = as_labels(labels, what=f"labels for {path}")
    if arr.dtype != np.uint8:
        raise SIAError(
            f"{path}: a palette PNG holds label values 0..255, the map goes up to {int(arr.max())}",
            fix="export as .tif or .zarr instead",
        )
    names = norm_classes(classes)
    pal = norm_palette(palette, len(names) if names else None) or []
    if len(pal) > 256:
        raise SIAError(f"{path}: a PNG palette holds at most 256 colours, got {len(pal)}")
    info = PngImagePlugin.PngInfo()
    info.add_itxt("sia", json.dumps({"kind": "labels", "version": FORMAT_VERSION, "classes": names, "palette": pal}))

    def _write(tmp: Path) -> None:
        img = Image.fromarray(np.ascontiguousarray(arr))
        img.putpalette(palette_lut(pal).reshape(-1).tolist())  # "L" becomes "P", the indices untouched
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
    return as_labels(arr, what=str(path)), {
        "classes": sia.get("classes"),
        "palette": palette,
        "format": "png",
    }
