"""Dataset-level confusion-matrix metrics against hand-computed values (docs/method.md §6.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sia_core.metrics import ConfusionMatrix

# rows = gt, cols = pred
HAND = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])


def _pixels(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """gt and pred pixel arrays whose confusion matrix is ``matrix`` (shuffled, as a 2-D image)."""
    gt, pred = [], []
    for i, j in np.ndindex(*matrix.shape):
        gt += [i] * int(matrix[i, j])
        pred += [j] * int(matrix[i, j])
    order = np.random.default_rng(0).permutation(len(gt))
    return np.array(gt)[order].reshape(4, -1), np.array(pred)[order].reshape(4, -1)


def test_hand_computed_3x3() -> None:
    gt, pred = _pixels(HAND)
    cm = ConfusionMatrix(3, ignore_index=3).update(gt, pred)
    r = cm.compute()
    assert r["matrix"] == HAND.tolist()
    # row sums (gt) 6, 6, 4; column sums (pred) 7, 4, 5; diagonal 5, 3, 4; 16 pixels
    iou = [5 / (6 + 7 - 5), 3 / (6 + 4 - 3), 4 / (4 + 5 - 4)]
    dice = [2 * 5 / (6 + 7), 2 * 3 / (6 + 4), 2 * 4 / (4 + 5)]
    precision = [5 / 7, 3 / 4, 4 / 5]
    recall = [5 / 6, 3 / 6, 4 / 4]
    np.testing.assert_allclose(r["IoU"], iou)
    np.testing.assert_allclose(r["Dice"], dice)
    np.testing.assert_allclose(r["Precision"], precision)
    np.testing.assert_allclose(r["Recall"], recall)
    assert r["mIoU"] == pytest.approx(np.mean(iou))
    assert r["mDice"] == pytest.approx(np.mean(dice))
    assert r["mPrecision"] == pytest.approx(np.mean(precision))
    assert r["mRecall"] == pytest.approx(np.mean(recall))
    assert r["pixel_accuracy"] == pytest.approx(12 / 16)
    assert r["FwIoU"] == pytest.approx(6 / 16 * iou[0] + 6 / 16 * iou[1] + 4 / 16 * iou[2])
    assert r["num_pixels"] == 16
    # Jensen: mean Dice <= 2 mIoU / (1 + mIoU) (docs/method.md §6.6 consistency check)
    assert r["mDice"] <= 2 * r["mIoU"] / (1 + r["mIoU"]) + 1e-12


def test_ignore_pixels_excluded() -> None:
    gt, pred = _pixels(HAND)
    base = ConfusionMatrix(3, ignore_index=3).update(gt, pred).compute()
    gt_more = np.concatenate([gt.ravel(), [3] * 50, [7] * 5, [-1] * 5])  # ignore, >= C and negative gt
    pred_more = np.concatenate([pred.ravel(), np.random.default_rng(1).integers(0, 3, 60)])
    r = ConfusionMatrix(3, ignore_index=3).update(gt_more, pred_more).compute()
    assert r["matrix"] == base["matrix"]
    assert r["mIoU"] == base["mIoU"] and r["num_pixels"] == 16
    # An ignore index inside 0..C-1 (e.g. 255-free datasets using 0) is honoured too.
    r0 = ConfusionMatrix(3, ignore_index=0).update(gt, pred).compute()
    assert r0["matrix"][0] == [0, 0, 0]


def test_perfect_prediction() -> None:
    gt = np.random.default_rng(0).integers(0, 4, (2, 16, 16))
    r = ConfusionMatrix(3, ignore_index=3).update(gt, np.where(gt == 3, 0, gt)).compute()
    for key in ("mIoU", "mDice", "mPrecision", "mRecall", "FwIoU", "pixel_accuracy"):
        assert r[key] == pytest.approx(1.0), key


def test_absent_class_is_nan_and_skipped_in_means() -> None:
    cm = ConfusionMatrix.from_matrix([[4, 0, 0], [1, 3, 0], [0, 0, 0]])
    r = cm.compute()
    assert math.isnan(r["IoU"][2]) and math.isnan(r["Dice"][2])
    assert math.isnan(r["Precision"][2]) and math.isnan(r["Recall"][2])
    assert r["mIoU"] == pytest.approx((4 / 5 + 3 / 4) / 2)
    empty = ConfusionMatrix(3).compute()
    assert math.isnan(empty["mIoU"]) and math.isnan(empty["pixel_accuracy"]) and empty["num_pixels"] == 0


def test_class_predicted_but_absent_scores_zero() -> None:
    r = ConfusionMatrix.from_matrix([[3, 1], [0, 0]]).compute()
    assert r["IoU"] == [0.75, 0.0]  # class 1 has false positives only: IoU 0, not NaN
    assert r["Precision"][1] == 0.0 and math.isnan(r["Recall"][1])


def test_class_present_but_never_predicted_has_precision_zero() -> None:
    # 3 classes, class 2 never predicted: IoU (1, 0.5, 0) -> 0.5; precision (1, 0.5, 0) -> 0.5, not 0.75
    r = ConfusionMatrix.from_matrix([[4, 0, 0], [0, 4, 0], [0, 4, 0]]).compute()
    np.testing.assert_allclose(r["IoU"], [1.0, 0.5, 0.0])
    assert r["Precision"] == [1.0, 0.5, 0.0]
    assert r["mIoU"] == pytest.approx(0.5)
    assert r["mPrecision"] == pytest.approx(0.5)
    assert r["Recall"] == [1.0, 1.0, 0.0]


def test_prediction_outside_classes_is_a_miss() -> None:
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 3, 1, 1])  # e.g. a pseudo-label that left a tissue pixel as ignore
    cm = ConfusionMatrix(3, ignore_index=3).update(gt, pred)
    r = cm.compute()
    assert r["matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert r["unassigned"] == [1, 0, 0]
    assert r["Recall"][0] == 0.5 and r["Precision"][0] == 1.0 and r["IoU"][0] == 0.5
    assert r["pixel_accuracy"] == 0.75


def test_torch_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    gt, pred = rng.integers(0, 5, (3, 20, 20)), rng.integers(0, 4, (3, 20, 20))
    a = ConfusionMatrix(4, ignore_index=4).update(gt, pred)
    b = ConfusionMatrix(4, ignore_index=4).update(torch.from_numpy(gt), torch.from_numpy(pred).to(torch.uint8))
    c = ConfusionMatrix(4, ignore_index=4).update(torch.from_numpy(gt), pred)  # mixed inputs
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.matrix, c.matrix)


def test_merge_add_reset_from_matrix() -> None:
    rng = np.random.default_rng(3)
    parts = [(rng.integers(0, 4, 100), rng.integers(0, 3, 100)) for _ in range(3)]
    whole = ConfusionMatrix(3, 3)
    for gt, pred in parts:
        whole.update(gt, pred)
    shards = [ConfusionMatrix(3, 3).update(gt, pred) for gt, pred in parts]
    summed = shards[0] + shards[1] + shards[2]
    np.testing.assert_array_equal(summed.matrix, whole.matrix)
    np.testing.assert_array_equal(shards[0].matrix, ConfusionMatrix(3, 3).update(*parts[0]).matrix)  # unchanged
    merged = ConfusionMatrix(3, 3).merge(shards[0]).merge(shards[1]).merge(shards[2])
    np.testing.assert_array_equal(merged.matrix, whole.matrix)
    rebuilt = ConfusionMatrix.from_matrix(whole.matrix)
    assert rebuilt.compute()["mIoU"] == pytest.approx(whole.compute()["mIoU"])
    whole.reset()
    assert whole.matrix.sum() == 0
    with pytest.raises(ValueError):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))
    with pytest.raises(ValueError):
        ConfusionMatrix(3).update(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError):
        ConfusionMatrix.from_matrix(np.zeros((3, 5)))


@pytest.mark.parametrize("seed", range(5))
def test_jensen_bound_random(seed: int) -> None:
    matrix = np.random.default_rng(seed).integers(0, 50, (4, 4))
    r = ConfusionMatrix.from_matrix(matrix).compute()
    assert r["mDice"] <= 2 * r["mIoU"] / (1 + r["mIoU"]) + 1e-12
