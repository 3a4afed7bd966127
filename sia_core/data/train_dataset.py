"""The weakly labelled training set as a torch Dataset, and the deterministic batch schedule.

Reproducibility: batch ``i`` always holds the same images with the same augmentations, whatever the number
of DataLoader workers or processes, and whether or not the run was interrupted and resumed: the image order
is a seeded permutation per epoch and every sample's augmentation is seeded by (seed, iteration, slot).
Corrected masks saved by the user (``<image folder>/sia_masks/<stem>.png``) are loaded as pixel supervision.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..config import SIAConfig
from .sidecars import find_correction
from .views import IGNORE, TrainViews

__all__ = [
    "MOSAIC",
    "TrainSample",
    "samples_with_corrections",
    "WeakLabelDataset",
    "BatchSchedule",
    "sample_seed",
    "balanced_weights",
]


MOSAIC = -1
"""Dataset index of a synthetic mosaic slot (its content is a function of the slot's seed)."""


@dataclass
class TrainSample:
    """One training image: its path, its image-level labels (C,) 0/1 and an optional corrected mask."""

    path: Path
    labels: np.ndarray
    mask: Optional[Path] = None


def samples_with_corrections(entries: Iterable[tuple[Union[str, Path], np.ndarray]]) -> list[TrainSample]:
    """Training samples of (image, labels) pairs, each with the corrected mask the user saved beside it
    (``sia_masks/<stem>.png``), if any. The CLI and the napari widget both build their samples here."""
    return [TrainSample(Path(p), np.asarray(v), find_correction(p)) for p, v in entries]


def sample_seed(seed: int, iteration: int, slot: int) -> int:
    """Augmentation seed of the ``slot``-th sample of batch ``iteration``."""
    return int(np.random.SeedSequence([seed, iteration, slot]).generate_state(1)[0])


class WeakLabelDataset(Dataset):
    """Indexed by ``(index, augmentation seed)`` pairs from :class:`BatchSchedule`.

    Args:
        samples: the training images.
        cfg: configuration (classes, ignore index, white background, size, augmentation).
        dam: make the DAM views too.
    """

    def __init__(self, samples: list[TrainSample], cfg: SIAConfig, dam: bool) -> None:
        from .images import read_rgb
        from .mosaic import MosaicSource, single_label_pools

        self.samples = samples
        self.cfg = cfg
        self.views = TrainViews(cfg.data.img_size, cfg.train.augment, dam)
        pools = single_label_pools([s.path for s in samples], [s.labels for s in samples], cfg.num_classes)
        self.mosaics = MosaicSource(pools, cfg.data.img_size, read_rgb)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        from .images import read_mask, read_rgb

        index, seed = key
        if index == MOSAIC:
            return self._mosaic(seed)
        s = self.samples[index]
        d = self.cfg.data
        rgb = read_rgb(s.path)
        ignore = self._glass(rgb)
        mask = None
        if s.mask is not None:
            mask = read_mask(s.mask, d.num_classes, d.ignore_index, d.palette).astype(np.int64)
            if mask.shape != rgb.shape[:2]:
                from ..errors import SIAError

                raise SIAError(
                    f"corrected mask {s.mask} is {mask.shape[1]}x{mask.shape[0]} but image {s.path} is "
                    f"{rgb.shape[1]}x{rgb.shape[0]}",
                    fix="save the correction from the same image, or delete the mask file",
                )
            mask[mask == d.ignore_index] = IGNORE
        torch.manual_seed(seed)
        out = self.views(rgb, ignore, mask)
        if "mask" not in out:
            out["mask"] = torch.full(out["ignore"].shape, IGNORE, dtype=torch.long)
        out["has_mask"] = torch.tensor(mask is not None)
        out["labels"] = torch.from_numpy(np.asarray(s.labels, dtype=np.float32))
        return out

    def _glass(self, rgb: np.ndarray) -> np.ndarray:
        from .background import white_background_mask

        d = self.cfg.data
        if d.white_background:
            return white_background_mask(rgb, d.white_threshold, d.white_min_size)
        return np.zeros(rgb.shape[:2], dtype=bool)

    def _mosaic(self, seed: int) -> dict[str, torch.Tensor]:
        """A synthetic mosaic of single-label images whose exact class map supervises the decoder."""
        from .mosaic import mosaic_labels

        rgb, mask = self.mosaics(seed)
        ignore = self._glass(rgb)
        labels = mosaic_labels(mask, ignore, self.cfg.num_classes)
        if not self.cfg.train.seg_on_glass:
            mask[ignore] = IGNORE
        torch.manual_seed(seed)
        out = self.views(rgb, ignore, mask)
        out["has_mask"] = torch.tensor(True)
        out["labels"] = torch.from_numpy(labels)
        return out


def balanced_weights(labels: list[np.ndarray], power: float = 1.0) -> np.ndarray:
    """Sampling weights that even out label combinations: an image weighs 1 / count(its label vector)^power.

    In real data most patches hold the same few classes together (230 of WSSS4LUAD's 295 training patches
    are tumor+stroma); the rare single-class patches are the ones that tell the classifier where one class
    ends, so drawing them more often sharpens the CAMs.
    """
    keys = [tuple(int(v) for v in lab) for lab in labels]
    counts = {k: keys.count(k) for k in set(keys)}
    return np.array([counts[k] ** -power for k in keys], dtype=np.float64)


class BatchSchedule(Sampler):
    """Yields, for iterations ``start .. iterations-1``, this rank's share of each global batch as
    ``(index, seed)`` pairs. Epochs are seeded permutations of the dataset; with ``weights``, each batch is
    drawn with replacement with those probabilities instead (seeded per iteration). The last ``mosaics``
    slots of every global batch are synthetic mosaics (index :data:`MOSAIC`).

    Args:
        n: dataset size.
        batch_size: global batch size (split over ``world`` ranks).
        iterations: total iterations of the run.
        seed: run seed.
        start: first iteration (resume).
        rank: this process's rank.
        world: number of processes.
        weights: optional sampling probability per image (e.g. :func:`balanced_weights`).
        mosaics: mosaic slots per global batch.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        iterations: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        weights: Optional[np.ndarray] = None,
        mosaics: int = 0,
    ) -> None:
        self.n, self.batch_size, self.iterations = n, batch_size, iterations
        self.seed, self.start, self.rank, self.world = seed, start, rank, world
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.real = batch_size - min(mosaics, batch_size - 1)  # every batch keeps at least one real image

    @lru_cache(maxsize=4)  # noqa: B019 (a handful of epochs is live at a time; the sampler is short-lived)
    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        if self.weights is not None:
            drawn = np.random.default_rng([self.seed, iteration, 1]).choice(self.n, self.real, p=self.weights)
        out = []
        for slot in range(self.rank, self.batch_size, self.world):
            if slot >= self.real:
                index = MOSAIC
            elif self.weights is not None:
                index = int(drawn[slot])
            else:
                pos = iteration * self.real + slot
                index = int(self._perm(pos // self.n)[pos % self.n])
            out.append((index, sample_seed(self.seed, iteration, slot)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.iterations):
            yield self.batch(it)

    def __len__(self) -> int:
        return max(0, self.iterations - self.start)
