"""Dataset-level segmentation metrics from one confusion matrix (docs/method.md §6.6).

One matrix is accumulated over all pixels of all images (not averaged per image), as WSSS-Tissue's
``iouutils.scores`` and TPRO do. Rows are ground truth, columns prediction. Pixels whose ground truth is
the ignore index (or any value outside 0..C-1) are left out.

A prediction outside 0..C-1 on a scored pixel (e.g. a pseudo-label that marked glass as ignored where the
mask says tissue) is counted in an extra "no class" column: it is a miss for the true class (its row sum,
hence recall and IoU) but a false positive for no class.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

__all__ = ["ConfusionMatrix"]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class ConfusionMatrix:
    """Accumulate a (C, C) confusion matrix and derive IoU, Dice, precision and recall.

    Args:
        num_classes: C, the scored classes 0..C-1.
        ignore_index: Ground-truth value never scored (values >= C or < 0 are never scored either).

    Example:
        >>> cm = ConfusionMatrix(3, ignore_index=3)
        >>> cm.update(mask, prediction)        # numpy or torch, any shape, same shape
        >>> cm.compute()["mIoU"]
    """

    def __init__(self, num_classes: int, ignore_index: Optional[int] = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        # Last column: scored pixels whose prediction is no class at all.
        self._mat = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    # ------------------------------------------------------------------ accumulation
    def update(self, gt: Any, pred: Any) -> ConfusionMatrix:
        """Add the pixels of one image or a batch (numpy arrays or torch tensors of equal shape)."""
        if hasattr(gt, "detach") and hasattr(pred, "detach"):
            self._mat += self._torch_counts(gt, pred)
            return self
        gt, pred = _to_numpy(gt), _to_numpy(pred)
        if gt.shape != pred.shape:
            raise ValueError(f"gt shape {gt.shape} and prediction shape {pred.shape} differ")
        n = self.num_classes
        gt = gt.reshape(-1).astype(np.int64, copy=False)
        pred = pred.reshape(-1).astype(np.int64, copy=False)
        valid = (gt >= 0) & (gt < n)
        if self.ignore_index is not None:
            valid &= gt != self.ignore_index
        gt, pred = gt[valid], pred[valid]
        pred = np.where((pred >= 0) & (pred < n), pred, n)
        self._mat += np.bincount(gt * (n + 1) + pred, minlength=n * (n + 1)).reshape(n, n + 1)
        return self

    def _torch_counts(self, gt: Any, pred: Any) -> np.ndarray:
        # Count on the tensors' device so a GPU evaluation moves C*(C+1) numbers, not the masks.
        import torch

        if gt.shape != pred.shape:
            raise ValueError(f"gt shape {tuple(gt.shape)} and prediction shape {tuple(pred.shape)} differ")
        n = self.num_classes
        gt = gt.reshape(-1).long()
        pred = pred.reshape(-1).to(gt.device).long()
        valid = (gt >= 0) & (gt < n)
        if self.ignore_index is not None:
            valid &= gt != self.ignore_index
        gt, pred = gt[valid], pred[valid]
        pred = torch.where((pred >= 0) & (pred < n), pred, torch.full_like(pred, n))
        counts = torch.bincount(gt * (n + 1) + pred, minlength=n * (n + 1))
        return counts.cpu().numpy().astype(np.int64).reshape(n, n + 1)

    def reset(self) -> None:
        """Forget all pixels seen so far."""
        self._mat[:] = 0

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (e.g. after gathering from other processes)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self._mat += other._mat
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        return out.merge(self).merge(other)

    @classmethod
    def from_matrix(cls, matrix: Any, ignore_index: Optional[int] = None) -> ConfusionMatrix:
        """Build from counts: (C, C) rows = gt, cols = pred, or (C, C+1) with the "no class" column."""
        mat = _to_numpy(matrix).astype(np.int64)
        if mat.ndim != 2 or mat.shape[1] not in (mat.shape[0], mat.shape[0] + 1):
            raise ValueError(f"expected a (C, C) or (C, C+1) matrix, got shape {mat.shape}")
        out = cls(mat.shape[0], ignore_index)
        out._mat[:, : mat.shape[1]] = mat
        return out

    # ------------------------------------------------------------------ results
    @property
    def matrix(self) -> np.ndarray:
        """(C, C) counts, rows = ground truth, columns = prediction (a copy)."""
        return self._mat[:, : self.num_classes].copy()

    @property
    def unassigned(self) -> np.ndarray:
        """(C,) scored pixels of each true class that were predicted as no class."""
        return self._mat[:, self.num_classes].copy()

    def compute(self) -> dict[str, Any]:
        """All metrics as plain Python floats/lists (NaN where a ratio is 0/0).

        Returns:
            ``mIoU, mDice, mPrecision, mRecall`` (NaN-ignoring means over classes; a class in the ground
            truth that is never predicted has precision 0, not NaN), ``FwIoU``,
            ``pixel_accuracy``, per-class lists ``IoU, Dice, Precision, Recall``, ``matrix`` (C x C list
            of lists), ``unassigned`` and ``num_pixels``.
        """
        h = self._mat[:, : self.num_classes].astype(np.float64)
        tp = np.diag(h)
        row = self._mat.sum(axis=1).astype(np.float64)  # every scored pixel of the class, hit or missed
        col = h.sum(axis=0)
        total = row.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (row + col - tp)
            dice = 2 * tp / (row + col)
            # A class that is in the ground truth but never predicted has no precision ratio (0/0); skipping it
            # would let a model that never predicts a hard class score a higher mPrecision. It scored 0 of
            # its pixels, so it counts as 0. Only a class absent from both stays NaN.
            precision = np.where(col > 0, tp / col, np.where(row > 0, 0.0, np.nan))
            recall = tp / row
            freq = row / total if total else np.zeros_like(row)
        present = freq > 0
        return {
            "mIoU": _nanmean(iou),
            "mDice": _nanmean(dice),
            "mPrecision": _nanmean(precision),
            "mRecall": _nanmean(recall),
            "FwIoU": float((freq[present] * iou[present]).sum()) if total else float("nan"),
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "IoU": iou.tolist(),
            "Dice": dice.tolist(),
            "Precision": precision.tolist(),
            "Recall": recall.tolist(),
            "matrix": self.matrix.tolist(),
            "unassigned": self.unassigned.tolist(),
            "num_pixels": int(total),
        }

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self._mat.sum())})"


def _nanmean(values: np.ndarray) -> float:
    if np.all(np.isnan(values)):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))
