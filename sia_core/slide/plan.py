"""Cutting a slide's working grid into blocks of tiles: which tissue tiles each output block owns.

The tile grid is :func:`sia_core.tiling.tile_grid`'s (stride ``tile - overlap``); blocks are about ``chunk`` px,
a multiple of the stride (:meth:`sia_core.slide.options.SlideOptions.resolved`), so tiles start on block
borders and reach into the next block by just the overlap. Tiles on glass are never read.
"""

from __future__ import annotations

from dataclasses import dataclass

from .reader import TissueMask

__all__ = ["Grid", "Step", "plan_steps"]


@dataclass
class Step:
    """One block of the output: the tissue tiles whose top-left corner lies in it.

    A ``halo`` step belongs to the block row above a rank's band: only its tiles that reach into the band
    are predicted, and only the margin below is kept.
    """

    index: int
    row: int
    col: int
    halo: bool
    tiles: list[tuple[int, int]]


def _grid_starts(length: int, tile: int, overlap: int) -> list[int]:
    from ..tiling import tile_grid

    return [y for y, _ in tile_grid(length, 1, tile, overlap)]


@dataclass
class Grid:
    """The tile grid of the working image cut into ``block`` x ``block`` blocks.

    ``ys[r]`` / ``xs[c]``: tile starts whose corner lies in block row r / column c; ``margin_y[r]`` /
    ``margin_x[c]``: how far those tiles reach past the block (the overlap, more for the last tile, which is
    flush with the image edge).
    """

    shape: tuple[int, int]
    tile: int
    block: int
    ys: dict[int, list[int]]
    xs: dict[int, list[int]]
    margin_y: list[int]
    margin_x: list[int]

    @classmethod
    def make(cls, shape: tuple[int, int], tile: int, overlap: int, block: int) -> Grid:
        starts = []
        for length in shape:
            n = -(-length // block)
            by: dict[int, list[int]] = {}
            for v in _grid_starts(length, tile, overlap):
                by.setdefault(v // block, []).append(v)
            margin = [max([0] + [min(v + tile, length) - (i + 1) * block for v in by.get(i, [])]) for i in range(n)]
            starts.append((by, margin))
        (ys, my), (xs, mx) = starts
        return cls(shape, tile, block, ys, xs, my, mx)

    @property
    def n_rows(self) -> int:
        return len(self.margin_y)

    @property
    def n_cols(self) -> int:
        return len(self.margin_x)


def plan_steps(grid: Grid, mask: TissueMask, min_tissue: float, rows: tuple[int, int]) -> tuple[list[Step], int]:
    """Steps of the block rows ``rows`` (plus the halo row above them), and the count of glass tiles."""
    steps: list[Step] = []
    skipped = 0
    tile = grid.tile

    def add(r: int, ys: list[int], halo: bool) -> None:
        nonlocal skipped
        for c in range(grid.n_cols):
            tiles = []
            for y in ys:
                for x in grid.xs.get(c, []):
                    if mask.fraction(y, x, tile) >= min_tissue:
                        tiles.append((y, x))
                    elif not halo:
                        skipped += 1
            steps.append(Step(len(steps), r, c, halo, tiles))

    r0, r1 = rows
    if 0 < r0 < r1:
        add(r0 - 1, [y for y in grid.ys.get(r0 - 1, []) if y + tile > r0 * grid.block], True)
    for r in range(r0, r1):
        add(r, grid.ys.get(r, []), False)
    return steps, skipped
