"""Blending one output block: the weighted maps of its tiles, its margins carried to the neighbours.

Each step owns the tiles whose top-left corner lies in its block and blends their maps (``blend_weights``
cross-fades) into an accumulator covering the block plus the overlap-wide margin its tiles reach into to
the right and below. When the step's tiles are in, the block is final: its labels (argmax of the blended
probabilities) and float maps are written, and the two margins go to small files that the block to the right
and the block below pick up. They double as the resume state (:mod:`sia_core.slide.store`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..argmax import class_argmax
from .plan import Grid, Step
from .store import SlideStore

__all__ = ["Blender", "mean_downsample"]


class Blender:
    """Accumulates the weighted maps of one block plus its right/bottom margin and finishes the block.

    Channels of the accumulator: the stored maps (probabilities first), then the glass vote (when white
    glass is masked), then the summed blend weight.
    """

    def __init__(
        self,
        store: SlideStore,
        band: tuple[int, int],
        n_steps: int,
        grid: Grid,
        overlap: int,
        map_slices: dict[str, slice],
        n_classes: int,
        with_bg: bool,
        fill: int,
        bg_value: int,
        maps_downsample: int,
    ) -> None:
        from ..tiling import blend_weights

        self.store, self.band, self.n_steps = store, band, n_steps
        self.grid = grid
        self.h, self.w = grid.shape
        self.k, self.t = grid.block, grid.tile
        self.weights = blend_weights(grid.tile, overlap)
        self.map_slices = map_slices
        self.n_map = max(s.stop for s in map_slices.values())
        self.n_classes = n_classes
        self.with_bg = with_bg
        self.channels = self.n_map + int(with_bg) + 1
        self.fill, self.bg_value = fill, bg_value
        self.ds = maps_downsample

    def _extent(self, step: Step) -> tuple[int, int, int, int]:
        y0, x0 = step.row * self.k, step.col * self.k
        eh = min(self.k + self.grid.margin_y[step.row], self.h - y0)
        ew = min(self.k + self.grid.margin_x[step.col], self.w - x0)
        return y0, x0, eh, ew

    def begin(self, step: Step) -> np.ndarray:
        """A zero accumulator with the margins left by the block to the left and the block above."""
        _, _, eh, ew = self._extent(step)
        acc = np.zeros((self.channels, eh, ew), np.float32)
        for name in (f"right_{step.row}_{step.col - 1}", f"bottom_{step.row - 1}_{step.col}"):
            piece = self.store.load_piece(self.band, name)
            if piece is not None:
                acc[:, : piece.shape[1], : piece.shape[2]] += piece
        return acc

    def add(self, acc: np.ndarray, step: Step, coords: Sequence[tuple[int, int]], maps: np.ndarray, bg: Any) -> None:
        y0, x0, _, _ = self._extent(step)
        for i, (y, x) in enumerate(coords):
            th, tw = min(self.t, self.h - y), min(self.t, self.w - x)
            wts = self.weights[:th, :tw]
            dy, dx = y - y0, x - x0
            view = acc[:, dy : dy + th, dx : dx + tw]
            view[: self.n_map] += maps[i, :, :th, :tw] * wts
            if self.with_bg:
                view[self.n_map] += bg[i, :th, :tw] * wts
            view[-1] += wts

    def finish(self, step: Step, acc: np.ndarray) -> None:
        """Write the block (unless halo), save its margins, commit, drop the margins it consumed."""
        y0, x0, eh, ew = self._extent(step)
        kh, kw = min(self.k, eh), min(self.k, ew)
        if not step.halo:
            core = acc[:, :kh, :kw]
            wsum = core[-1]
            covered = wsum > 0
            if covered.any():
                # argmax of the weighted sum = argmax of the weighted mean: no division needed
                labels = class_argmax(core[self.map_slices["probabilities"]])
                labels[~covered] = self.fill
                if self.with_bg:
                    labels[covered & (core[self.n_map] > 0.5 * wsum)] = self.bg_value
                self.store.write_labels(y0, x0, labels)
                if self.ds:
                    inv = np.where(covered, 1.0 / np.where(covered, wsum, 1.0), 0.0).astype(np.float32)
                    for name in self.store.map_names:
                        block = mean_downsample(core[self.map_slices[name]] * inv, self.ds)
                        self.store.write_map(name, y0 // self.ds, x0 // self.ds, block)
        if ew > self.k and acc[-1, :, self.k :].any():
            self.store.save_piece(self.band, f"right_{step.row}_{step.col}", acc[:, :, self.k :])
        if eh > self.k and acc[-1, self.k :, : self.k].any():
            self.store.save_piece(self.band, f"bottom_{step.row}_{step.col}", acc[:, self.k :, : self.k])
        self.store.commit(self.band, step.index + 1, self.n_steps)
        self.store.drop_piece(self.band, f"right_{step.row}_{step.col - 1}")
        self.store.drop_piece(self.band, f"bottom_{step.row - 1}_{step.col}")


def mean_downsample(maps: np.ndarray, ds: int) -> np.ndarray:
    """(C, h, w) -> (C, ceil(h/ds), ceil(w/ds)) block means (edge rows repeated for partial blocks)."""
    if ds == 1:
        return maps.astype(np.float32, copy=False)
    c, h, w = maps.shape
    ph, pw = (-h) % ds, (-w) % ds
    if ph or pw:
        maps = np.pad(maps, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return maps.reshape(c, (h + ph) // ds, ds, (w + pw) // ds, ds).mean((2, 4), dtype=np.float32)
