"""Evaluation (docs/method.md §6.6): one dataset-level confusion matrix per output and protocol, ignore index excluded.

Two protocols, because knowing which classes an image holds is worth a lot on its own (on WSSS4LUAD val,
every pixel set to one of the image's true classes already scores mIoU 0.50, the best label-free constant
0.21):

    * ``label_free``: what a user gets for a new image, no labels given. The decoder as the predictor returns
      it (``Prediction.label_map``: all classes, or the classifier's predicted classes with ``infer.gate``),
      and the CAM A, the inhibition map I and the RSM result restricted to the classes the classifier
      predicts (probability > ``infer.label_threshold``). The label-free decoder is the headline, the figure
      the paper's tables report.
    * ``labels_given``: the image's true classes (from its mask, TPRO convention) restrict every output:
      pseudo-mask quality, what training on correctly labelled images can reach.

Both protocols come from one forward pass per image. ``classifier`` scores the predicted image labels against
the true ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

import numpy as np

from .argmax import class_argmax
from .data.images import read_mask, read_rgb
from .data.layout import EvalItem
from .errors import SIAError
from .metrics import ConfusionMatrix
from .predictor import Prediction, SIAPredictor

__all__ = ["OUTPUTS", "PROTOCOLS", "evaluate_items", "present_classes", "headline", "summary", "format_table"]

OUTPUTS = ("decoder", "cam", "inhibition", "rsm")
PROTOCOLS = ("label_free", "labels_given")
HEADLINE_KEYS = ("mIoU", "mDice", "mPrecision", "mRecall")
PROTOCOL_NAMES = {"label_free": "label-free (no labels given)", "labels_given": "labels given (true classes)"}


def present_classes(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Image-level labels of a ground-truth mask: the class values it contains (ignore excluded)."""
    values = np.unique(mask)
    labels = np.zeros(num_classes, dtype=np.float32)
    labels[values[values < num_classes]] = 1
    return labels


def _score(cms: dict[str, ConfusionMatrix], seen: set[str], gt: np.ndarray, p: Prediction) -> None:
    cms["decoder"].update(gt, p.label_map)
    seen.add("decoder")
    for key, maps in (("cam", p.cam), ("inhibition", p.inhibition), ("rsm", p.rsm)):
        if maps is not None:
            cms[key].update(gt, class_argmax(maps, p.labels))
            seen.add(key)


def evaluate_items(
    predictor: SIAPredictor,
    items: Sequence[EvalItem],
    batch_size: int = 8,
    scales: Optional[Sequence[float]] = None,
    flip: Optional[bool] = None,
    on_image: Optional[Callable[[int, int], None]] = None,
) -> dict[str, Any]:
    """Score every output under both protocols over a split.

    Args:
        predictor: the model.
        items: image/mask pairs.
        batch_size: same-sized images predicted together.
        scales, flip: inference settings (default: the config's ``infer`` section).
        on_image: called as ``on_image(done, total)`` after each batch (progress).

    Returns:
        ``{"label_free": {output: metrics}, "labels_given": {output: metrics}, "classifier": {...},
        "num_images": n}``; ``inhibition``/``rsm`` exist for models with the RFM only.
    """
    cfg = predictor.cfg
    c, ignore = cfg.num_classes, cfg.data.ignore_index
    cms = {proto: {k: ConfusionMatrix(c, ignore) for k in OUTPUTS} for proto in PROTOCOLS}
    seen: set[str] = set()
    true_labels: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    if not items:
        raise SIAError("no images to evaluate", fix="check the split folder holds img/ and mask/ files")

    def flush(batch: list[tuple[np.ndarray, np.ndarray]]) -> None:
        labels = np.stack([present_classes(m, c) for _, m in batch])
        scored = labels.sum(1) > 0  # a mask with only ignore pixels scores nothing and has no true classes
        given = labels.copy()
        given[~scored, 0] = 1  # any valid label vector; these images add no pixel to any matrix
        net = predictor.forward_batch(np.stack([im for im, _ in batch]), scales, flip)
        free = predictor.finish(net, None, mask_background=False)
        with_labels = predictor.finish(net, given, mask_background=False)
        for (_, gt), lab, ok, pf, pg in zip(batch, labels, scored, free, with_labels):
            _score(cms["label_free"], seen, gt, pf)
            _score(cms["labels_given"], seen, gt, pg)
            if ok:
                true_labels.append(lab)
                predicted.append(pf.labels.astype(np.float32))

    batch: list[tuple[np.ndarray, np.ndarray]] = []
    for i, item in enumerate(items):
        rgb = read_rgb(item.image)
        gt = read_mask(item.mask, c, ignore, cfg.data.palette)
        if gt.shape != rgb.shape[:2]:
            raise SIAError(
                f"mask {item.mask} is {gt.shape[1]}x{gt.shape[0]} but image {item.image} is "
                f"{rgb.shape[1]}x{rgb.shape[0]}",
                fix="give each image the mask made for it (same size)",
            )
        if batch and (len(batch) >= batch_size or batch[0][0].shape != rgb.shape):
            flush(batch)
            batch = []
            if on_image:
                on_image(i, len(items))
        batch.append((rgb, gt))
    if batch:
        flush(batch)
    if on_image:
        on_image(len(items), len(items))
    out: dict[str, Any] = {proto: {k: cms[proto][k].compute() for k in OUTPUTS if k in seen} for proto in PROTOCOLS}
    out["classifier"] = classifier_scores(np.array(true_labels), np.array(predicted), cfg.infer.label_threshold)
    out["num_images"] = len(items)
    return out


def classifier_scores(true: np.ndarray, predicted: np.ndarray, threshold: float) -> dict[str, Any]:
    """How well the predicted image labels (N, C) match the true ones: exact-match rate, per-class precision
    and recall (NaN where undefined)."""
    if len(true) == 0:
        return {"threshold": threshold, "exact_match": float("nan"), "precision": [], "recall": []}
    tp = (true * predicted).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / predicted.sum(0)
        recall = tp / true.sum(0)
    return {
        "threshold": threshold,
        "exact_match": float((true == predicted).all(1).mean()),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
    }


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The headline metrics: the label-free decoder."""
    return results["label_free"]["decoder"]


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The JSON summary: the label-free decoder's metrics at the top level (``mIoU`` ...), every output of both
    protocols nested under ``label_free`` / ``labels_given``."""
    top = headline(results)
    out: dict[str, Any] = {"protocol": "label-free decoder", **{k: top[k] for k in HEADLINE_KEYS}}
    out["IoU"] = top["IoU"]
    for proto in PROTOCOLS:
        out[proto] = {key: {k: m[k] for k in HEADLINE_KEYS} for key, m in results[proto].items()}
    if "classifier" in results:
        out["classifier_exact_match"] = results["classifier"]["exact_match"]
    return out


def format_table(results: dict[str, Any], classes: Iterable[str]) -> str:
    """A plain-text table per protocol (label-free first): one row per output, headline metrics, per-class IoU."""
    classes = list(classes)
    head = (
        f"{'output':<12}" + "".join(f"{k:>11}" for k in HEADLINE_KEYS) + "".join(f"{'IoU ' + n:>14}" for n in classes)
    )
    lines: list[str] = []
    for proto in PROTOCOLS:
        lines += ["", PROTOCOL_NAMES[proto], head, "-" * len(head)]
        for key in OUTPUTS:
            if key not in results[proto]:
                continue
            r = results[proto][key]
            row = f"{key:<12}" + "".join(f"{r[k]:>11.3f}" for k in HEADLINE_KEYS)
            row += "".join(f"{v:>14.3f}" for v in r["IoU"])
            lines.append(row)
    clf = results.get("classifier")
    if clf and clf["precision"]:
        lines += [
            "",
            f"classifier (labels predicted at p > {clf['threshold']}): exact match {clf['exact_match']:.3f}; "
            + ", ".join(
                f"{n} precision {p:.2f} recall {r:.2f}" for n, p, r in zip(classes, clf["precision"], clf["recall"])
            ),
        ]
    return "\n".join(lines[1:])
