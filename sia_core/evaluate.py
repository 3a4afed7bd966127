"""Evaluation (METHOD §6.6): one dataset-level confusion matrix per output, ignore index excluded.

Scored outputs:
    * ``decoder``: the decoder's argmax with no image-level labels given (the headline);
    * ``cam``, ``inhibition``, ``rsm``: pseudo-mask quality, the argmax over the image's true classes (taken
      from its mask, TPRO convention) of the CAM A, the inhibition map I and the RSM result.
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

__all__ = ["OUTPUTS", "evaluate_items", "present_classes", "format_table"]

OUTPUTS = ("decoder", "cam", "inhibition", "rsm")
HEADLINE_KEYS = ("mIoU", "mDice", "mPrecision", "mRecall")


def present_classes(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Image-level labels of a ground-truth mask: the class values it contains (ignore excluded)."""
    values = np.unique(mask)
    labels = np.zeros(num_classes, dtype=np.float32)
    labels[values[values < num_classes]] = 1
    return labels


def evaluate_items(
    predictor: SIAPredictor,
    items: Sequence[EvalItem],
    batch_size: int = 8,
    scales: Optional[Sequence[float]] = None,
    flip: Optional[bool] = None,
    on_image: Optional[Callable[[int, int], None]] = None,
) -> dict[str, Any]:
    """Score every output over a split.

    Args:
        predictor: the model.
        items: image/mask pairs.
        batch_size: same-sized images predicted together.
        scales, flip: inference settings (default: the config's ``infer`` section).
        on_image: called as ``on_image(done, total)`` after each batch (progress).

    Returns:
        ``{output: metrics}`` for the outputs the model has (``inhibition``/``rsm`` need the RFM), plus
        ``num_images``.
    """
    cfg = predictor.cfg
    c, ignore = cfg.num_classes, cfg.data.ignore_index
    cms = {k: ConfusionMatrix(c, ignore) for k in OUTPUTS}
    seen: set[str] = set()
    if not items:
        raise SIAError("no images to evaluate", fix="check the split folder holds img/ and mask/ files")

    def flush(batch: list[tuple[np.ndarray, np.ndarray]]) -> None:
        images = np.stack([im for im, _ in batch])
        labels = np.stack([present_classes(m, c) for _, m in batch])
        # A mask with only ignore pixels scores nothing; give it any label so the call is valid.
        labels[labels.sum(1) == 0, 0] = 1
        preds: list[Prediction] = predictor.predict_batch(images, labels, scales, flip, mask_background=False)
        for (_, gt), lab, p in zip(batch, labels, preds):
            cms["decoder"].update(gt, p.label_map)
            seen.add("decoder")
            for key, maps in (("cam", p.cam), ("inhibition", p.inhibition), ("rsm", p.rsm)):
                if maps is not None:
                    cms[key].update(gt, class_argmax(maps, lab))
                    seen.add(key)

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
    out: dict[str, Any] = {k: cms[k].compute() for k in OUTPUTS if k in seen}
    out["num_images"] = len(items)
    return out


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The JSON summary: decoder headline keys at the top level, the others under their output names."""
    out: dict[str, Any] = {k: results["decoder"][k] for k in HEADLINE_KEYS}
    for key in OUTPUTS[1:]:
        if key in results:
            out[key] = {k: results[key][k] for k in HEADLINE_KEYS}
    return out


def format_table(results: dict[str, Any], classes: Iterable[str]) -> str:
    """A plain-text table: one row per output with the headline metrics and per-class IoU."""
    classes = list(classes)
    head = (
        f"{'output':<12}"
        + "".join(f"{k:>11}" for k in HEADLINE_KEYS)
        + "".join(f"{'IoU ' + n:>14}" for n in classes)
    )
    lines = [head, "-" * len(head)]
    for key in OUTPUTS:
        if key not in results:
            continue
        r = results[key]
        row = f"{key:<12}" + "".join(f"{r[k]:>11.3f}" for k in HEADLINE_KEYS)
        row += "".join(f"{v:>14.3f}" for v in r["IoU"])
        lines.append(row)
    return "\n".join(lines)
