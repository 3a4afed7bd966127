"""Floors on WSSS4LUAD val: what a method must beat to have learned anything, for both protocols.

    python benchmarks/floors.py --data ../shared/data/wsss4luad [--run RUN]

Label-free (no labels given): every pixel one class (each class tried, the best reported), and a colour
threshold over the classes a trained classifier predicts (``--run``: that run's classifier and its
``infer.label_threshold``). Labels given (the image's true classes): every pixel one present class, and the
same colour threshold over the true classes. All on the tune part, the report part and the whole split.

The colour threshold: the hematoxylin channel (colour deconvolution, ``skimage.color.rgb2hed``), smoothed
(Gaussian, sigma 4 px), split by Otsu (two classes) or multi-Otsu (three) over the image's tissue pixels
(glass excluded), darkest part to the darkest class: tumour epithelium (dense nuclei), then normal lung
(alveolar walls with pneumocytes), then stroma (eosin-pink collagen).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _wsss import val_parts
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.filters import threshold_multiotsu, threshold_otsu

from sia_core.config import SIAConfig
from sia_core.data.background import white_background_mask
from sia_core.data.images import read_mask, read_rgb
from sia_core.data.layout import EvalItem
from sia_core.evaluate import present_classes
from sia_core.io_utils import atomic_write_text
from sia_core.metrics import ConfusionMatrix
from sia_core.run_config import resolve_train_config

DARKEST_FIRST = ("tumor", "normal", "stroma")


def colour_split(rgb: np.ndarray, present: np.ndarray, classes: list[str], glass: np.ndarray) -> np.ndarray:
    """The colour-threshold segmentation of one image over its ``present`` classes."""
    order = [classes.index(n) for n in DARKEST_FIRST if classes.index(n) < len(present) and present[classes.index(n)]]
    if len(order) == 1:
        return np.full(rgb.shape[:2], order[0], dtype=np.uint8)
    hema = ndimage.gaussian_filter(rgb2hed(rgb)[..., 0], 4)
    tissue = hema[~glass] if (~glass).sum() > 16 else hema.ravel()
    if len(order) == 2:
        cuts = [threshold_otsu(tissue)]
    else:
        cuts = list(threshold_multiotsu(tissue, classes=len(order)))
    rank = np.digitize(hema, cuts)  # 0 = lightest
    return np.array(order[::-1], dtype=np.uint8)[rank]


def floors(items: list[EvalItem], cfg: SIAConfig, predicted: dict[str, np.ndarray] | None) -> dict[str, float]:
    c, ignore, classes = cfg.num_classes, cfg.data.ignore_index, cfg.data.classes
    cms = {
        **{f"label-free: every pixel {n}": ConfusionMatrix(c, ignore) for n in classes},
        "labels given: every pixel the first present class": ConfusionMatrix(c, ignore),
        "labels given: every pixel the present class most common in training labels": ConfusionMatrix(c, ignore),
        "labels given: colour threshold over the true classes": ConfusionMatrix(c, ignore),
    }
    if predicted is not None:
        cms["label-free: colour threshold over the predicted classes"] = ConfusionMatrix(c, ignore)
    common = [classes.index(n) for n in ("stroma", "tumor", "normal")]  # WSSS4LUAD train: 270, 244, 19 images
    for item in items:
        rgb = read_rgb(item.image)
        gt = read_mask(item.mask, c, ignore, cfg.data.palette)
        true = present_classes(gt, c)
        if not true.any():
            continue
        glass = white_background_mask(rgb, cfg.data.white_threshold, cfg.data.white_min_size)
        for k, n in enumerate(classes):
            cms[f"label-free: every pixel {n}"].update(gt, np.full_like(gt, k))
        cms["labels given: every pixel the first present class"].update(gt, np.full_like(gt, int(true.argmax())))
        top = next(k for k in common if true[k])
        cms["labels given: every pixel the present class most common in training labels"].update(
            gt, np.full_like(gt, top)
        )
        cms["labels given: colour threshold over the true classes"].update(gt, colour_split(rgb, true, classes, glass))
        if predicted is not None:
            cms["label-free: colour threshold over the predicted classes"].update(
                gt, colour_split(rgb, predicted[str(item.image)], classes, glass)
            )
    return {name: cm.compute()["mIoU"] for name, cm in cms.items()}


def predicted_labels(run: str, items: list[EvalItem]) -> dict[str, np.ndarray]:
    from sia_core.predictor import SIAPredictor

    pred = SIAPredictor.from_run(run)
    out = {}
    for item in items:
        p = pred.predict(read_rgb(item.image), mask_background=False)
        out[str(item.image)] = p.labels.astype(bool)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/wsss4luad")
    ap.add_argument("--run", help="a trained run whose classifier predicts the labels of the label-free threshold")
    ap.add_argument("--out", help="write the floors as JSON here")
    args = ap.parse_args()
    cfg = resolve_train_config(args.data, preset="cpu")
    parts = val_parts(args.data)
    parts["all"] = parts["tune"] + parts["report"]
    predicted = predicted_labels(args.run, parts["all"]) if args.run else None
    results = {name: floors(items, cfg, predicted) for name, items in parts.items()}
    names = list(results["all"])
    print(f"Floors (mIoU) on {args.data} val: " + ", ".join(f"{p} {len(parts[p])} patches" for p in parts))
    print(f"| floor | {' | '.join(parts)} |\n|---|{'---|' * len(parts)}")
    for n in names:
        print(f"| {n} | " + " | ".join(f"{results[p][n]:.3f}" for p in parts) + " |")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
