"""Whole-slide images: open TIFF / BigTIFF / OME-TIFF / SVS pyramids lazily, pick the level to predict at,
read regions at the model's resolution and find the tissue.

Pixels are never loaded whole: every level is a lazy (H, W, 3) uint8 array on top of tifffile's zarr
interface (``TiffFile.aszarr(level=k)`` opened with zarr), so slicing decodes only the TIFF tiles it
touches. Tested with tifffile 2026.3 + zarr 3.1 (older tifffile / zarr 3 pairs broke the aszarr store:
tifffile issues #272, #289, #297, #310).

Resolution: a model sees tissue at the scale it was trained at. The slide level closest to that scale is
chosen and, when no level matches within 10 %, the region is resampled to it, so 224 px of slide cover
as many micrometres as a training patch did.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import SIAError

__all__ = [
    "DEFAULT_TRAINING_MPP",
    "Resolution",
    "Slide",
    "TissueMask",
    "choose_resolution",
    "open_slide",
    "open_slide_levels",
    "read_region",
    "slide_overview",
    "tissue_mask",
]

PathLike = Union[str, os.PathLike]

DEFAULT_TRAINING_MPP = 0.5
"""Micrometres per pixel assumed for a model whose run does not record its training resolution.

0.5 µm/px is the pixel size of a 20x whole-slide scan (40x scanners give ~0.25, 10x ~1.0), the
magnification at which H&E tissue-segmentation patches such as WSSS4LUAD's and LUAD-HistoSeg's 224 px
patches are usually cut. Neither dataset's paper abstract states a pixel size, so this is a convention,
not a measured property of the data: pass ``mpp`` (``--mpp``) when you know your training resolution.
"""

_MATCH_TOLERANCE = 0.10
"""A level whose pixel size is within 10 % of the target is used as is, without resampling."""
_MASK_TILE_PIXELS = 8
"""Tissue-mask pixels per tile side: enough to measure a tile's tissue fraction, small for any slide."""
_MASK_BLOCK = 2048
"""Side of the blocks the mask level is read in, so even a slide without a pyramid stays in bounded memory."""
_PLAUSIBLE_MPP = (0.05, 100.0)
_UNITS_TO_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}


# --------------------------------------------------------------------------------------------------------
# opening


class _RGBView:
    """A lazy (H, W, 3) uint8 view of a level stored with other axes (planar CYX, RGBA, singleton T/Z).

    Slicing reads only the requested region from the underlying zarr array; napari and the predictor
    see the same (H, W, 3) interface as for interleaved RGB levels.
    """

    def __init__(self, array: Any, axes: str) -> None:
        self._array = array
        self._axes = axes
        self._y, self._x = axes.index("Y"), axes.index("X")
        self._c = axes.index("S") if "S" in axes else axes.index("C")
        self.shape = (int(array.shape[self._y]), int(array.shape[self._x]), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        index: list[Any] = [0] * len(self._axes)
        index[self._y], index[self._x], index[self._c] = key[0], key[1], slice(0, 3)
        block = np.asarray(self._array[tuple(index)])
        # the block keeps the stored order of the axes not indexed away; bring them to (y, x, c)
        kept = sorted((self._y, self._x, self._c))
        stored = [i for i in kept if not isinstance(index[i], (int, np.integer))]
        wanted = [i for i in (self._y, self._x, self._c) if i in stored]
        block = np.transpose(block, [stored.index(i) for i in wanted])
        return block[..., key[2]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :, :]
        return out.astype(dtype) if dtype is not None else out

    def __len__(self) -> int:
        return self.shape[0]


@dataclass
class Slide:
    """An open whole-slide image.

    Attributes:
        path: The file.
        levels: Lazy (H, W, 3) uint8 arrays, full resolution first.
        downsamples: Level-0 pixels per pixel of each level (1.0 for level 0).
        mpp: Level-0 pixel size in micrometres, when the file records it (OME PhysicalSizeX, Aperio
            ``MPP =``, or TIFF resolution tags in cm/inch), else None.
        kind: tifffile's series kind ('ome', 'svs', 'generic', ...).
    """

    path: Path
    levels: list[Any]
    downsamples: list[float]
    mpp: Optional[float]
    kind: str
    _tif: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        """Level-0 (H, W)."""
        return int(self.levels[0].shape[0]), int(self.levels[0].shape[1])

    def level_mpp(self, level: int) -> Optional[float]:
        return None if self.mpp is None else self.mpp * self.downsamples[level]

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_slide(path: PathLike) -> Slide:
    """Open a TIFF / BigTIFF / OME-TIFF / SVS slide (first image series, all pyramid levels), lazily.

    Raises:
        SIAError: Missing file, not a TIFF, no 8-bit RGB image, or a level whose shape does not fit.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SIAError(f"slide not found: {path}", fix="give the path of a TIFF, OME-TIFF or SVS file")
    with _tifffile_quiet():
        return _open_tiff(path)


@contextlib.contextmanager
def _tifffile_quiet() -> Iterator[None]:
    """Drop tifffile's log records while a file is parsed. It logs what it tolerates in a damaged file
    ('<TiffTag.fromfile> raised ...', 'generic series raised ...'), which on a terminal came out as lines before
    SIA's own one-line error about the same file."""

    def drop(record: logging.LogRecord) -> bool:
        return False

    logger = logging.getLogger("tifffile")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _open_tiff(path: Path) -> Slide:
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(path)
    except Exception as err:  # TiffFileError, struct errors on garbage, OSError
        raise SIAError(
            f"{path} is not a readable TIFF/SVS slide ({str(err)[:120]})",
            fix="convert it to a tiled pyramidal OME-TIFF (e.g. bfconvert -pyramid-resolutions 4 "
            "-tilex 512 -tiley 512 in.ext out.ome.tif, or vips tiffsave --tile --pyramid)",
        ) from err
    try:
        if not tif.series:
            raise SIAError(f"{path} holds no image", fix="give a slide file with an RGB image")
        series = tif.series[0]
        levels_meta = series.levels or [series]
        axes = levels_meta[0].axes
        if "Y" not in axes or "X" not in axes or not ({"S", "C"} & set(axes)):
            raise SIAError(
                f"{path}: first image has axes {axes}, not an RGB image",
                fix="give an RGB (brightfield H&E) slide; fluorescence/greyscale slides are not supported",
            )
        channel = "S" if "S" in axes else "C"
        n_channels = levels_meta[0].shape[axes.index(channel)]
        if n_channels not in (3, 4) or np.dtype(levels_meta[0].dtype) != np.uint8:
            raise SIAError(
                f"{path}: first image is {n_channels}-channel {levels_meta[0].dtype}, not 8-bit RGB",
                fix="give an 8-bit RGB (brightfield H&E) slide",
            )
        arrays = []
        h0 = w0 = None
        downsamples = []
        for k, lvl in enumerate(levels_meta):
            if lvl.axes != axes:
                break  # a level with other axes is not part of this pyramid
            arr = zarr.open(tif.aszarr(series=0, level=k), mode="r")
            shape = arr.shape
            others = [shape[i] for i, a in enumerate(axes) if a not in ("Y", "X", channel)]
            if any(s != 1 for s in others):
                raise SIAError(
                    f"{path}: image has extra non-singleton axes ({axes} {tuple(shape)})",
                    fix="export a single 2-D RGB plane (one time point, one z-plane)",
                )
            view = arr if axes == "YXS" and n_channels == 3 else _RGBView(arr, axes)
            h, w = int(view.shape[0]), int(view.shape[1])
            if h0 is None:
                h0, w0 = h, w
            downsamples.append(0.5 * (h0 / h + w0 / w))
            arrays.append(view)
        mpp = _slide_mpp(tif)
    except SIAError:
        tif.close()
        raise
    except Exception as err:
        tif.close()
        raise SIAError(f"cannot read the image pyramid of {path}: {str(err)[:200]}", fix="re-export the slide") from err
    return Slide(path, arrays, downsamples, mpp, str(series.kind), tif)


def open_slide_levels(path: PathLike) -> list[Any]:
    """The pyramid of a slide as lazy (H, W, 3) uint8 arrays, full resolution first (for napari's
    ``add_image(levels, multiscale=True, rgb=True)``). The file stays open while the arrays live."""
    return open_slide(path).levels


def _slide_mpp(tif: Any) -> Optional[float]:
    """Level-0 micrometres per pixel from OME-XML, an Aperio description or TIFF resolution tags."""
    import tifffile

    candidates: list[Optional[float]] = []
    if tif.is_ome and tif.ome_metadata:
        try:
            ome = tifffile.xml2dict(tif.ome_metadata)["OME"]
            image = ome["Image"][0] if isinstance(ome["Image"], list) else ome["Image"]
            pixels = image["Pixels"]
            size = pixels.get("PhysicalSizeX")
            unit = str(pixels.get("PhysicalSizeXUnit", "µm"))
            if size is not None and unit in _UNITS_TO_UM:
                candidates.append(float(size) * _UNITS_TO_UM[unit])
        except (KeyError, TypeError, ValueError, IndexError):
            pass
    description = tif.pages.first.description or ""
    if description.startswith("Aperio"):
        found = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description)
        if found:
            candidates.append(float(found.group(1)))
    page = tif.pages.first
    unit = int(page.resolutionunit)
    xres = page.resolution[0] if page.resolution else 0
    if xres and unit in (2, 3):  # 2 inch, 3 centimetre; 1 (none) says nothing
        candidates.append((25400.0 if unit == 2 else 10000.0) / xres)
    for mpp in candidates:
        if mpp is not None and _PLAUSIBLE_MPP[0] <= mpp <= _PLAUSIBLE_MPP[1]:
            return float(mpp)
    return None


# --------------------------------------------------------------------------------------------------------
# resolution


@dataclass
class Resolution:
    """Where on the slide the model works: a level, resampled by ``factor`` when needed.

    Attributes:
        level: Pyramid level read.
        factor: Level pixels per working pixel (1.0: the level as is; 2.0: halved).
        shape: Working-grid (H, W): the size of the label map.
        downsample: Level-0 pixels per working pixel (what QuPath and napari need to overlay).
        mpp: Working pixel size in micrometres, None when the slide records none.
        note: Why this level was chosen, for the user.
    """

    level: int
    factor: float
    shape: tuple[int, int]
    downsample: float
    mpp: Optional[float]
    note: str


def choose_resolution(
    slide: Slide,
    level: Optional[int] = None,
    mpp: Optional[float] = None,
    slide_mpp: Optional[float] = None,
    training_mpp: Optional[float] = None,
) -> Resolution:
    """Pick the level (and resampling) to predict at.

    Args:
        slide: The open slide.
        level: Use this level; with ``mpp`` it is resampled to ``mpp``, else used as is.
        mpp: Target micrometres per pixel (the model's training resolution).
        slide_mpp: Level-0 pixel size to use instead of (or when missing from) the file's metadata.
        training_mpp: Target used when ``mpp`` is None and the slide's pixel size is known (default
            :data:`DEFAULT_TRAINING_MPP`). Without a known slide pixel size, level 0 is used as is.

    Raises:
        SIAError: Level out of range, non-positive mpp, or ``mpp`` asked for a slide of unknown pixel size.
    """
    n = len(slide.levels)
    if level is not None and not 0 <= level < n:
        raise SIAError(
            f"{slide.path} has {n} pyramid level(s) (0..{n - 1}); level {level} does not exist",
            fix=f"pass --level between 0 and {n - 1}",
        )
    for name, value in (("mpp", mpp), ("slide_mpp", slide_mpp)):
        if value is not None and not value > 0:
            raise SIAError(f"{name} must be a positive number of micrometres per pixel, got {value}")
    base = slide_mpp if slide_mpp is not None else slide.mpp
    if mpp is not None and base is None:
        raise SIAError(
            f"{slide.path} does not record its pixel size, so --mpp {mpp} cannot pick a level",
            fix="pass --slide-mpp (the scanner's µm/px at full resolution) or choose a --level",
        )
    target = mpp
    if target is None and level is None:
        target = training_mpp or DEFAULT_TRAINING_MPP
    if base is None or target is None:
        lvl = level or 0
        h, w = (int(s) for s in slide.levels[lvl].shape[:2])
        note = (
            f"level {lvl} as is"
            if level is not None
            else "level 0 as is: the slide records no pixel size (pass --slide-mpp or --level to choose)"
        )
        lvl_mpp = None if base is None else base * slide.downsamples[lvl]
        return Resolution(lvl, 1.0, (h, w), slide.downsamples[lvl], lvl_mpp, note)
    mpps = [base * d for d in slide.downsamples]
    if level is None:
        # the coarsest level that is not coarser than the target (beyond tolerance): downsampling
        # keeps detail, upsampling a coarse level would invent it
        fine_enough = [k for k, m in enumerate(mpps) if m <= target * (1 + _MATCH_TOLERANCE)]
        level = fine_enough[-1] if fine_enough else 0
    factor = target / mpps[level]
    if abs(factor - 1.0) <= _MATCH_TOLERANCE:
        factor = 1.0
    lh, lw = (int(s) for s in slide.levels[level].shape[:2])
    shape = (max(1, round(lh / factor)), max(1, round(lw / factor)))
    how = f"resampled x{1 / factor:.3g} to" if factor != 1.0 else "for target"
    note = f"level {level} ({mpps[level]:.3g} µm/px) {how} {target:.3g} µm/px"
    return Resolution(level, factor, shape, slide.downsamples[level] * factor, mpps[level] * factor, note)


def _decode(slide: Slide, level: int, ys: slice, xs: slice) -> np.ndarray:
    """Pixels [ys, xs] of a level as (h, w, 3); a tile that does not decode is an SIAError naming the slide."""
    try:
        return np.asarray(slide.levels[level][ys, xs])[..., :3]
    except Exception as err:  # imagecodecs' Jpeg8Error, zlib errors, short reads of a truncated file
        raise SIAError(
            f"cannot decode {slide.path} (level {level}, rows {ys.start}..{ys.stop}, columns {xs.start}..{xs.stop}): "
            f"{type(err).__name__}: {str(err)[:120]}; the file is truncated or corrupt",
            fix="copy or export the slide again",
        ) from err


def slide_overview(slide: Slide, res: Resolution, shape: tuple[int, int]) -> np.ndarray:
    """The working grid resampled to ``shape`` ((h, w, 3) uint8), read block by block from the coarsest level
    fine enough for it: the RGB overview stored at the root of a slide result."""
    h, w = int(shape[0]), int(shape[1])
    down = res.shape[0] / h  # working px per overview px
    want = res.downsample * down
    usable = [k for k, d in enumerate(slide.downsamples) if d <= want * (1 + _MATCH_TOLERANCE)] or [0]
    level = usable[-1]
    factor = want / slide.downsamples[level]
    view = Resolution(level, factor, (h, w), want, None, "overview")
    out = np.empty((h, w, 3), np.uint8)
    step = max(16, int(_MASK_BLOCK / max(factor, 1.0)))  # bounded reads even from a slide without a pyramid
    for y in range(0, h, step):
        for x in range(0, w, step):
            out[y : y + step, x : x + step] = read_region(slide, view, y, min(y + step, h), x, min(x + step, w))
    return out


def read_region(slide: Slide, res: Resolution, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Working-grid region [y0:y1, x0:x1] as (h, w, 3) uint8; parts outside the slide are white (glass).

    With resampling, the matching level region is read once and resized as a whole (antialiased), so
    neighbouring tiles cut from one region agree exactly where they overlap.
    """
    h, w = y1 - y0, x1 - x0
    out = np.full((h, w, 3), 255, np.uint8)
    arr = slide.levels[res.level]
    lh, lw = int(arr.shape[0]), int(arr.shape[1])
    if res.factor == 1.0:
        sy1, sx1 = min(y1, lh), min(x1, lw)
        if sy1 > y0 and sx1 > x0:
            out[: sy1 - y0, : sx1 - x0] = _decode(slide, res.level, slice(y0, sy1), slice(x0, sx1))
        return out
    from PIL import Image

    f = res.factor
    sy0, sx0 = math.floor(y0 * f), math.floor(x0 * f)
    sy1, sx1 = math.ceil(y1 * f), math.ceil(x1 * f)
    src = np.full((sy1 - sy0, sx1 - sx0, 3), 255, np.uint8)
    cy1, cx1 = min(sy1, lh), min(sx1, lw)
    if cy1 > sy0 and cx1 > sx0:
        src[: cy1 - sy0, : cx1 - sx0] = _decode(slide, res.level, slice(sy0, cy1), slice(sx0, cx1))
    # box = the exact source rectangle of the working region (sub-pixel), so regions line up
    box = (x0 * f - sx0, y0 * f - sy0, x1 * f - sx0, y1 * f - sy0)
    return np.asarray(Image.fromarray(src).resize((w, h), Image.BILINEAR, box=box))


# --------------------------------------------------------------------------------------------------------
# tissue


@dataclass
class TissueMask:
    """Low-resolution tissue mask of the working grid.

    Attributes:
        mask: (h, w) bool, True on tissue, one pixel per ``scale`` x ``scale`` working pixels (about 1/8 of a
            tile, so even a 100k px slide's mask is a few MB).
        scale: Working pixels per mask pixel.
    """

    mask: np.ndarray
    scale: float

    def fraction(self, y0: int, x0: int, size: int) -> float:
        """Tissue fraction of the working-grid square [y0, y0+size) x [x0, x0+size)."""
        h, w = self.mask.shape
        a0 = min(h, int(y0 / self.scale))
        b0 = min(w, int(x0 / self.scale))
        a1 = min(h, max(a0 + 1, math.ceil((y0 + size) / self.scale)))
        b1 = min(w, max(b0 + 1, math.ceil((x0 + size) / self.scale)))
        if a1 <= a0 or b1 <= b0:
            return 0.0
        return float(np.count_nonzero(self.mask[a0:a1, b0:b1])) / ((a1 - a0) * (b1 - b0))


def tissue_mask(slide: Slide, res: Resolution, tile: int, threshold: int = 200) -> TissueMask:
    """Tissue (not white glass) of the slide at about ``tile / 8`` working pixels per mask pixel.

    Reads the coarsest pyramid level fine enough for that, block by block, so memory stays bounded even
    for a slide without a pyramid. A mask pixel is tissue when its mean gray level (BT.601 luma) is at
    most ``threshold``: the rule of :func:`sia_core.data.background.white_background_mask`, applied to
    block means.
    """
    from ..data.background import rgb_to_gray

    want = max(1.0, tile / _MASK_TILE_PIXELS) * res.downsample  # level-0 px per mask px
    usable = [k for k, d in enumerate(slide.downsamples) if d <= want + 1e-6] or [0]
    k = usable[-1]
    step = max(1, int(want / slide.downsamples[k]))
    arr = slide.levels[k]
    lh, lw = int(arr.shape[0]), int(arr.shape[1])
    mh, mw = -(-lh // step), -(-lw // step)
    mask = np.zeros((mh, mw), bool)
    block = max(step, (_MASK_BLOCK // step) * step)
    for y in range(0, lh, block):
        for x in range(0, lw, block):
            rgb = _decode(slide, k, slice(y, y + block), slice(x, x + block))
            bh, bw = rgb.shape[:2]
            ph, pw = (-bh) % step, (-bw) % step
            if ph or pw:  # edge blocks: repeat the last row/column so partial cells stay unbiased
                rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")
            gray = rgb_to_gray(rgb)
            means = gray.reshape(gray.shape[0] // step, step, gray.shape[1] // step, step).mean((1, 3))
            my, mx = y // step, x // step
            mask[my : my + means.shape[0], mx : mx + means.shape[1]] = means <= threshold
    # mask px -> working px: level-k px per mask px times working px per level-k px
    scale = step * slide.downsamples[k] / res.downsample
    return TissueMask(mask, scale)
