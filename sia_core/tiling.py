"""Tile-wise processing of images larger than the model's input tile, with overlap and blending.

The model sees ``tile x tile`` crops taken on a grid with stride ``tile - overlap``; their outputs are
cross-faded where they overlap (linear ramps), which removes the seams a plain stitch leaves at tile
borders. Memory is bounded by the output: the accumulators hold ``C*H*W + H*W`` values, and the input is
only sliced, so it can be a lazy array (zarr, tifffile's ``aszarr`` store, dask) as well as numpy.
Pure numpy: the caller's ``fn`` runs the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

import numpy as np

from .errors import SIAError

__all__ = ["TiledBlender", "blend_weights", "iter_tiles", "tile_grid", "tiled_map"]


def _check_tile(tile: int, overlap: int) -> None:
    if tile < 1:
        raise SIAError(f"tile size must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise SIAError(f"overlap must be in 0..tile-1 (tile={tile}), got {overlap}", fix="lower the overlap")


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)  # last tile flush with the edge rather than hanging over it
    return starts


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left corners ``(y0, x0)`` of tiles covering an image, in row-major order.

    Tiles step by ``tile - overlap``; the last row and column are shifted to end flush with the image
    edge (so they may overlap their neighbour by more than ``overlap``). An axis shorter than the tile
    gets a single tile at 0 that extends past the image: the caller pads it (``iter_tiles`` does).
    """
    _check_tile(tile, overlap)
    if height < 1 or width < 1:
        raise SIAError(f"image size must be positive, got {height}x{width}")
    stride = tile - overlap
    return [(y, x) for y in _starts(height, tile, stride) for x in _starts(width, tile, stride)]


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) float32 weights: 1 in the centre, ramping linearly down across the overlap band.

    The 1-D ramp is ``min(k + 1, overlap + 1) / (overlap + 1)`` at distance ``k`` from the nearest edge:
    strictly positive (a pixel seen by one tile only, at the image border, still normalises), and across
    an overlap of exactly ``overlap`` pixels the fading-out and fading-in tiles sum to 1, a linear
    cross-fade. The 2-D weight is the outer product of the 1-D ramp; ``overlap=0`` gives all ones. With
    ``overlap >= tile / 2`` the two ramps meet before reaching 1 and the ramp is rescaled to peak at 1
    (scale does not matter: ``TiledBlender`` divides by the summed weights).
    """
    _check_tile(tile, overlap)
    i = np.arange(tile, dtype=np.float64)
    ramp = np.minimum(np.minimum(i + 1, tile - i) / (overlap + 1), 1.0)
    ramp /= ramp.max()  # overlap >= tile / 2: the ramps meet before reaching 1; keep the centre at 1
    return np.outer(ramp, ramp).astype(np.float32)


class TiledBlender:
    """Accumulate overlapping tile outputs into full-size maps, weighted by ``blend_weights``.

    Args:
        shape: Output shape (C, H, W).
        tile: Tile side the maps are produced at.
        overlap: Overlap between neighbouring tiles (sets the ramp width).
        dtype: Accumulator dtype.
        out: Optional preallocated (C, H, W) accumulator (numpy array, or zarr array for outputs that do
            not fit in memory); must start at zero. ``result()`` normalises it in place and returns it.

    Memory: the (C, H, W) accumulator plus an (H, W) weight sum, nothing else.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        tile: int,
        overlap: int,
        dtype: Any = np.float32,
        out: Optional[Any] = None,
    ) -> None:
        if len(shape) != 3:
            raise SIAError(f"blender shape must be (C, H, W), got {shape}")
        self.shape = tuple(int(s) for s in shape)
        self.tile, self.overlap = int(tile), int(overlap)
        self._weights = blend_weights(self.tile, self.overlap)
        if out is None:
            out = np.zeros(self.shape, dtype=dtype)
        elif tuple(out.shape) != self.shape:
            raise SIAError(f"preallocated output has shape {tuple(out.shape)}, expected {self.shape}")
        self.out = out
        self.weight_sum = np.zeros(self.shape[1:], dtype=dtype)

    def add(self, y0: int, x0: int, maps: np.ndarray) -> None:
        """Add a tile's maps (C, th, tw) whose top-left pixel is at (y0, x0).

        Parts beyond the image (a padded border tile) are cropped; a tile smaller than ``tile`` uses the
        top-left part of the weights.
        """
        maps = np.asarray(maps)
        c, h, w = self.shape
        if maps.ndim != 3 or maps.shape[0] != c:
            raise SIAError(f"tile maps must be ({c}, th, tw), got {maps.shape}")
        th, tw = min(maps.shape[1], self.tile, h - y0), min(maps.shape[2], self.tile, w - x0)
        if th <= 0 or tw <= 0 or y0 < 0 or x0 < 0:
            raise SIAError(f"tile at ({y0}, {x0}) lies outside the {h}x{w} image")
        wts = self._weights[:th, :tw]
        ys, xs = slice(y0, y0 + th), slice(x0, x0 + tw)
        self.out[:, ys, xs] = self.out[:, ys, xs] + maps[:, :th, :tw] * wts
        self.weight_sum[ys, xs] += wts

    def result(self, fill: float = 0.0) -> Any:
        """Normalise by the weight sum (in place) and return the (C, H, W) maps.

        Pixels no tile covered (tiles skipped by the caller, e.g. glass) get ``fill``. For a zarr output the
        division runs in row bands of one tile height so memory stays bounded.
        """
        c, h, w = self.shape
        band = self.tile if not isinstance(self.out, np.ndarray) else h
        for y in range(0, h, band):
            ws = self.weight_sum[y : y + band]
            covered = ws > 0
            block = np.asarray(self.out[:, y : y + band])
            block = np.where(covered, block / np.where(covered, ws, 1), fill).astype(block.dtype, copy=False)
            self.out[:, y : y + band] = block
        return self.out


def iter_tiles(image: Any, tile: int, overlap: int, pad_value: int = 255) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(y0, x0, crop)`` for every tile of ``tile_grid``, crops always ``tile x tile (x C)``.

    Crops reaching past the image are padded bottom/right with ``pad_value``: 255 (white), since glass
    is white in H&E and a white border reads as background to the model, not as tissue.
    ``image`` is (H, W) or (H, W, C), any array that supports slicing (numpy, zarr, dask).
    """
    h, w = int(image.shape[0]), int(image.shape[1])
    for y0, x0 in tile_grid(h, w, tile, overlap):
        crop = np.asarray(image[y0 : y0 + tile, x0 : x0 + tile])
        if crop.shape[:2] != (tile, tile):
            padded = np.full((tile, tile, *crop.shape[2:]), pad_value, dtype=crop.dtype)
            padded[: crop.shape[0], : crop.shape[1]] = crop
            crop = padded
        yield y0, x0, crop


def tiled_map(
    fn: Callable[[np.ndarray], Mapping[str, Any]],
    image: Any,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    *,
    pad_value: int = 255,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict[str, np.ndarray]:
    """Run ``fn`` over overlapping tiles of ``image`` and blend its outputs into full-size maps.

    Args:
        fn: Takes a uint8 batch (B, tile, tile, 3) and returns a dict of float arrays (B, C_k, tile, tile)
            (e.g. CAMs, inhibition maps, probabilities). Numpy or anything ``np.asarray`` accepts.
        image: (H, W, 3) uint8 image (numpy or a lazy sliceable array).
        tile: Model input size.
        overlap: Overlap between neighbouring tiles; 0 stitches without blending.
        batch_size: Tiles per ``fn`` call.
        pad_value: Fill of border tiles that reach past the image.
        progress: Called as ``progress(done_tiles, total_tiles)`` after every batch; raise from it to
            cancel.

    Returns:
        ``{key: (C_k, H, W) float32}`` for every key ``fn`` returned.
    """
    if batch_size < 1:
        raise SIAError(f"batch_size must be >= 1, got {batch_size}")
    h, w = int(image.shape[0]), int(image.shape[1])
    total = len(tile_grid(h, w, tile, overlap))
    blenders: dict[str, TiledBlender] = {}
    done = 0

    def _run(batch: list[tuple[int, int, np.ndarray]]) -> None:
        nonlocal done
        outputs = fn(np.stack([crop for _, _, crop in batch]))
        for key, value in outputs.items():
            value = np.asarray(value, dtype=np.float32)
            if value.ndim != 4 or value.shape[0] != len(batch) or value.shape[2:] != (tile, tile):
                raise SIAError(
                    f"tiled function returned {key!r} with shape {value.shape}, "
                    f"expected ({len(batch)}, C, {tile}, {tile})",
                    fix="upsample the model outputs to the tile size before returning them",
                )
            if key not in blenders:
                blenders[key] = TiledBlender((value.shape[1], h, w), tile, overlap)
            for (y0, x0, _), maps in zip(batch, value):
                blenders[key].add(y0, x0, maps)
        done += len(batch)
        if progress is not None:
            progress(done, total)

    batch: list[tuple[int, int, np.ndarray]] = []
    for item in iter_tiles(image, tile, overlap, pad_value):
        batch.append(item)
        if len(batch) == batch_size:
            _run(batch)
            batch = []
    if batch:
        _run(batch)
    return {key: blender.result() for key, blender in blenders.items()}
