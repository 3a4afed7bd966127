"""Synthetic whole-slide images: H&E-like tissue on glass, written as a tiled pyramidal OME-TIFF of any size.

For tests and benchmarks of slide inference without downloading slides. Tissue blobs with wavy outlines
lie on white glass, as on a real slide (about half of the area is glass, which slide inference must skip);
inside them, every ``tile`` x ``tile`` block is a :func:`sia_core.data.synthetic.make_synthetic_region`.

Memory is bounded by one band of ``tile`` rows: level 0 is generated band by band and streamed into the
TIFF; the lower levels (2x2 means of the level above) are computed from each band on the fly, parked in
raw temporary files beside the target and streamed in after level 0, as sub-IFDs (the OME-TIFF pyramid
layout that QuPath, Bio-Formats and tifffile read).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import SIAError
from ..io_utils import atomic_write

__all__ = ["write_synthetic_slide"]

_GLASS = np.array([243, 241, 245], np.float32)
_SHAPE_STEP = 8
"""The tissue outline is evaluated every 8 px: outlines are smooth over hundreds of pixels anyway."""


def write_synthetic_slide(
    path: Union[str, os.PathLike],
    size: Union[int, tuple[int, int]],
    *,
    tile: int = 512,
    mpp: float = 0.5,
    seed: int = 0,
    classes: int = 3,
    compression: str = "jpeg",
    min_side: int = 1024,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic H&E slide as a tiled, pyramidal OME-TIFF (BigTIFF), atomically.

    Args:
        path: Target ``.ome.tif``.
        size: Side, or (height, width), of level 0 in pixels.
        tile: TIFF tile side (a power of two >= 16); also the side of each synthetic tissue block.
        mpp: Pixel size written as OME ``PhysicalSizeX/Y`` (µm) and TIFF resolution tags.
        seed: Same seed, same slide.
        classes: Tissue classes of the synthetic generator (1..4).
        compression: TIFF compression: 'jpeg' (quality 90, like most scanners) or 'zlib'.
        min_side: Pyramid levels halve until the longer side is at most this.
        overwrite: Replace an existing file.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise SIAError(f"{path} already exists; refusing to overwrite it", fix="pass overwrite=True")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1 or tile < 16 or tile & (tile - 1):
        raise SIAError(f"bad synthetic slide geometry: size {h}x{w}, tile {tile}", fix="use a tile of 2**k >= 16")
    shapes = [(h, w)]
    while max(shapes[-1]) > max(1, min_side) and len(shapes) <= tile.bit_length() - 1:
        ph, pw = shapes[-1]
        shapes.append((-(-ph // 2), -(-pw // 2)))
    comp = {"jpeg": ("jpeg", {"level": 90}), "zlib": ("zlib", {})}
    if compression not in comp:
        raise SIAError(f"unknown compression {compression!r}", fix="use 'jpeg' or 'zlib'")
    codec, codec_args = comp[compression]
    outline = _Outline(np.random.default_rng([seed, 7]), h, w)

    def _write(tmp: Path) -> None:
        import tifffile

        with tempfile.TemporaryDirectory(prefix=".synthetic-slide-", dir=path.parent) as scratch:
            raws = [Path(scratch) / f"level{k}.raw" for k in range(len(shapes))]
            common = {
                "tile": (tile, tile),
                "photometric": "rgb",
                "compression": codec,
                "compressionargs": codec_args,
                "dtype": np.uint8,
            }
            with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
                tif.write(
                    _level0_tiles(h, w, tile, seed, classes, outline, shapes, raws),
                    shape=(h, w, 3),
                    subifds=len(shapes) - 1,
                    resolution=(1e4 / mpp, 1e4 / mpp),
                    resolutionunit="CENTIMETER",
                    metadata={
                        "axes": "YXS",
                        "PhysicalSizeX": mpp,
                        "PhysicalSizeXUnit": "µm",
                        "PhysicalSizeY": mpp,
                        "PhysicalSizeYUnit": "µm",
                    },
                    **common,
                )
                for k in range(1, len(shapes)):
                    kh, kw = shapes[k]
                    tif.write(_raw_tiles(raws[k], kh, kw, tile), shape=(kh, kw, 3), subfiletype=1, **common)

    return atomic_write(path, _write)


class _Outline:
    """Two or three tissue blobs with wavy outlines, as a function of level-0 pixel position."""

    def __init__(self, rng: np.random.Generator, h: int, w: int) -> None:
        self.h, self.w = h, w
        n = int(rng.integers(2, 4))
        self.centres = rng.uniform(0.3, 0.7, (n, 2))
        self.axes = rng.uniform(0.22, 0.36, (n, 2))
        self.freq = rng.uniform(1.0, 5.0, (n, 6, 2)) * rng.choice([-1, 1], (n, 6, 2))
        self.phase = rng.uniform(0, 2 * np.pi, (n, 6))
        self.amp = rng.uniform(0.03, 0.08, (n, 6))

    def tissue(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1-y0, x1-x0) bool, True inside a blob."""
        s = _SHAPE_STEP
        v = (np.arange(y0 - y0 % s, y1, s, dtype=np.float32) / self.h)[:, None]
        u = (np.arange(x0 - x0 % s, x1, s, dtype=np.float32) / self.w)[None, :]
        inside = np.zeros((v.shape[0], u.shape[1]), bool)
        blobs = zip(self.centres, self.axes, self.freq, self.phase, self.amp)
        for (cy, cx), (ay, ax), freq, phase, amp in blobs:
            waves = zip(freq, phase, amp)
            wobble = sum(a * np.sin(2 * np.pi * (f[0] * v + f[1] * u) + p) for f, p, a in waves)
            inside |= ((u - cx) / ax) ** 2 + ((v - cy) / ay) ** 2 < (1.0 + wobble) ** 2
        full = inside.repeat(s, 0).repeat(s, 1)
        oy, ox = y0 % s, x0 % s
        return full[oy : oy + y1 - y0, ox : ox + x1 - x0]


def _band(y0: int, h: int, w: int, tile: int, seed: int, classes: int, outline: _Outline) -> np.ndarray:
    """Level-0 rows [y0, y0 + tile) (fewer at the bottom) as (rows, w, 3) uint8."""
    from ..data.synthetic import make_synthetic_region

    rows = min(tile, h - y0)
    noise = np.random.default_rng([seed, 11, y0]).normal(0, 1.5, (rows, w, 1)).astype(np.float32)
    band = np.clip(_GLASS + noise, 0, 255).astype(np.uint8)
    for x0 in range(0, w, tile):
        cols = min(tile, w - x0)
        inside = outline.tissue(y0, y0 + rows, x0, x0 + cols)
        if not inside.any():
            continue
        rng = np.random.default_rng([seed, y0 // tile, x0 // tile])
        rgb, _ = make_synthetic_region((rows, cols), rng, classes)
        view = band[:, x0 : x0 + cols]
        view[inside] = rgb[inside]
    return band


def _halve(img: np.ndarray) -> np.ndarray:
    """2x2 mean, the last row/column repeated for odd sides (level k has ceil(side / 2**k) pixels)."""
    ph, pw = img.shape[0] % 2, img.shape[1] % 2
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
    f = img.astype(np.uint16)
    s = f[0::2, 0::2] + f[1::2, 0::2] + f[0::2, 1::2] + f[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def _level0_tiles(
    h: int,
    w: int,
    tile: int,
    seed: int,
    classes: int,
    outline: _Outline,
    shapes: list[tuple[int, int]],
    raws: list[Path],
) -> Iterator[np.ndarray]:
    """Yield level-0 TIFF tiles in row-major order; append each band's lower levels to their raw files.

    A band's lower levels are written before its tiles are yielded, and the files closed before the last
    band's tiles: the TIFF writer stops pulling after the last tile, so code after it would never run.
    """
    files = [open(p, "wb") for p in raws[1:]]  # noqa: SIM115 (closed below, written band by band)
    try:
        for y0 in range(0, h, tile):
            band = _band(y0, h, w, tile, seed, classes, outline)
            lower = band
            for f in files:
                # tile is a power of two, so every band but the last halves to whole rows at each level
                lower = _halve(lower)
                lower.tofile(f)
            if y0 + tile >= h:
                for f in files:
                    f.close()
            for x0 in range(0, w, tile):
                yield band[:, x0 : x0 + tile]
    finally:
        for f in files:
            f.close()


def _raw_tiles(raw: Path, h: int, w: int, tile: int) -> Iterator[np.ndarray]:
    """Yield the TIFF tiles of a level parked in a raw (h, w, 3) uint8 file, one band of rows at a time."""
    with open(raw, "rb") as f:
        for y0 in range(0, h, tile):
            rows = min(tile, h - y0)
            band = np.fromfile(f, np.uint8, rows * w * 3).reshape(rows, w, 3)
            for x0 in range(0, w, tile):
                yield band[:, x0 : x0 + tile]
