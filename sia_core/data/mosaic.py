"""Synthetic training mosaics with exact masks, cut from single-label images (after HisynSeg, Fang et al. 2024).

An image whose label vector holds one class is that class (almost) everywhere: WSSS4LUAD labels a class
present from 2 % of the patch, LUAD-HistoSeg and BCSS-WSSS likewise. Pieces of such images, laid side by side
in irregular regions, make a training image whose every pixel's class is known. The decoder then learns from
exact boundaries between classes, not only from the CAM's guesses, and the rare classes (few of them in a
real label mix) reach it as often as the mosaic draws them.

The regions are a Voronoi partition of the canvas with 2-4 seeds whose distance field is perturbed by smooth
noise, so the boundaries curve like tissue borders instead of running straight (a straight seam would teach
the decoder to look for seams). Every draw is a function of the seed, so training stays reproducible and a
resumed run draws the same mosaics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["MosaicSource", "single_label_pools", "mosaic_labels"]


def single_label_pools(paths: Sequence[Path], labels: Sequence[np.ndarray], num_classes: int) -> list[list[Path]]:
    """For each class, the images labelled with that class alone."""
    pools: list[list[Path]] = [[] for _ in range(num_classes)]
    for path, lab in zip(paths, labels):
        lab = np.asarray(lab)
        if lab.sum() == 1:
            pools[int(lab.argmax())].append(Path(path))
    return pools


class MosaicSource:
    """Build mosaics of ``size`` x ``size`` px from single-label images.

    Args:
        pools: per class, the single-label images of that class (see :func:`single_label_pools`).
        size: the mosaic side (the training size).
        read: reads an image path to (H, W, 3) uint8.
        min_classes: classes with single-label images needed before mosaics are made (2: a mosaic of one
            class would teach no boundary).
    """

    def __init__(
        self,
        pools: Sequence[Sequence[Path]],
        size: int,
        read: Callable[[Path], np.ndarray],
        min_classes: int = 2,
    ) -> None:
        self.pools = [list(p) for p in pools]
        self.classes = [c for c, p in enumerate(self.pools) if p]
        self.size = size
        self.read = read
        self.available = len(self.classes) >= min_classes

    def __call__(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A mosaic (S, S, 3) uint8 and its class map (S, S) int64 (every pixel a class index)."""
        if not self.available:
            raise ValueError("mosaics need single-label images of at least two classes")
        rng = np.random.default_rng(seed)
        s = self.size
        regions = _irregular_partition(s, int(rng.integers(2, 5)), rng)
        n = int(regions.max()) + 1
        # Classes per region: at least two distinct classes, drawn evenly among classes (not images), so a
        # class with few single-label images is drawn as often as a common one.
        classes = rng.choice(self.classes, size=n, replace=True)
        if len(set(classes.tolist())) < 2:
            others = [c for c in self.classes if c != classes[0]]
            classes[int(rng.integers(1, n))] = rng.choice(others)
        rgb = np.empty((s, s, 3), dtype=np.uint8)
        mask = np.empty((s, s), dtype=np.int64)
        for r, c in enumerate(classes):
            pool = self.pools[int(c)]
            piece = _fit(self.read(pool[int(rng.integers(len(pool)))]), s, rng)
            inside = regions == r
            rgb[inside] = piece[inside]
            mask[inside] = c
        return rgb, mask


def _irregular_partition(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) region indices 0..n-1: nearest of n random seeds, distances perturbed by smooth noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    seeds = rng.random((n, 2)).astype(np.float32)
    dist = np.stack([np.hypot(yy - y, xx - x) for y, x in seeds])
    dist += 0.25 * np.stack([_smooth_noise(size, rng) for _ in range(n)])
    regions = dist.argmin(0)
    # Keep only regions that got pixels, renumbered 0..k-1.
    _, regions = np.unique(regions, return_inverse=True)
    return regions.reshape(size, size)


def _smooth_noise(size: int, rng: np.random.Generator, grid: int = 5) -> np.ndarray:
    """Noise in [-0.5, 0.5] varying over about size / grid px (bilinear upsampling of a coarse grid)."""
    coarse = rng.random((grid + 1, grid + 1)).astype(np.float32) - 0.5
    t = np.linspace(0, grid, size, dtype=np.float32)
    i = np.minimum(t.astype(int), grid - 1)
    f = t - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]  # (size, grid + 1)
    return rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]


def _fit(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random size x size view of ``image``: crop (or white padding), random flip and 90-degree rotation."""
    h, w = image.shape[:2]
    if h < size or w < size:
        padded = np.full((max(h, size), max(w, size), 3), 255, dtype=np.uint8)
        padded[:h, :w] = image
        image, h, w = padded, max(h, size), max(w, size)
    y0, x0 = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    piece = image[y0 : y0 + size, x0 : x0 + size]
    if rng.random() < 0.5:
        piece = piece[:, ::-1]
    return np.ascontiguousarray(np.rot90(piece, int(rng.integers(4))))


def mosaic_labels(mask: np.ndarray, ignore: np.ndarray, num_classes: int, min_fraction: float = 0.02) -> np.ndarray:
    """Image-level labels of a mosaic: the classes covering at least ``min_fraction`` of its tissue pixels (the
    rule WSSS4LUAD's labels follow); the largest class when none does."""
    tissue = mask[~ignore]
    counts = np.bincount(tissue, minlength=num_classes)[:num_classes].astype(np.float64)
    labels = (counts >= min_fraction * max(counts.sum(), 1)) & (counts > 0)
    if not labels.any():
        labels[int(np.bincount(mask.ravel(), minlength=num_classes)[:num_classes].argmax())] = True
    return labels.astype(np.float32)
