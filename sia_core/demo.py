"""``sia-core demo``: the built-in default job on a fresh machine with no data and no downloads.

It makes a small synthetic H&E-like dataset with exact masks (:mod:`sia_core.data.synthetic`), trains the
``cpu`` preset for a few minutes, scores it on the synthetic val split, writes pseudo-labels for the training
patches and one overview figure a pathologist can read (:func:`overview_figure`). Every phase prints what it
does and how long it took.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import SIAError

__all__ = ["DEMO_ITERATIONS", "run_demo", "overview_figure", "figure_caption"]

DEMO_ITERATIONS = 100  # 3:53 of training, 4:10 for the whole demo on 2 idle cores (README, The demo)
DEMO_TRAIN, DEMO_VAL, DEMO_SIZE = 192, 24, 224
DEMO_PRESET = "cpu"
FIGURE_ROWS = 3


def _say(text: str) -> None:
    print(text, flush=True)


def run_demo(
    out: Union[str, Path],
    iterations: Optional[int] = None,
    force: bool = False,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Path]:
    """Run the demo into ``out``; returns the paths of what it wrote. ``seed`` seeds the training only: the
    synthetic data are the same for every seed, so runs with different seeds show the training's spread."""
    from tqdm import tqdm

    from .data.layout import find_split
    from .data.synthetic import make_synthetic_dataset
    from .evaluate import evaluate_items, format_table, summary
    from .io_utils import atomic_write_text
    from .predictor import SIAPredictor
    from .pseudo import write_pseudo_labels
    from .run_config import resolve_train_config, training_samples
    from .train import train_iter

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SIAError(f"{out} already exists and is not empty", fix="pass --force to replace it or choose --out")
        if not (out / "run").exists() and not (out / "data").exists():
            raise SIAError(f"{out} does not look like a demo folder; refusing to delete it", fix="choose another --out")
        shutil.rmtree(out)
    t_start = time.monotonic()
    data = out / "data"
    _say(f"[1/5] making a synthetic H&E-like dataset with exact masks in {data} ({DEMO_TRAIN} train, {DEMO_VAL} val)")
    t0 = time.monotonic()
    make_synthetic_dataset(data, n_train=DEMO_TRAIN, n_val=DEMO_VAL, size=DEMO_SIZE, seed=0)
    _say(f"      done in {time.monotonic() - t0:.0f} s")

    iterations = iterations or DEMO_ITERATIONS
    cfg = resolve_train_config(
        str(data),
        preset=DEMO_PRESET,
        overrides=[f"train.iterations={iterations}", "train.val_every=0", f"train.seed={seed}"],
    )
    cfg.train.device = device
    samples = training_samples(str(data), cfg)
    run = out / "run"
    batch = cfg.train.batch_size
    _say(
        f"[2/5] training the {DEMO_PRESET} preset ({_model_words(cfg)}, variant {cfg.variant}) for {iterations} "
        f"steps of {batch} patches; the bar appears after the first step"
    )
    t0 = time.monotonic()
    steps = train_iter(cfg, samples, run)
    # closing: a Ctrl-C between two steps saves the final checkpoint here, not in the generator's finalizer,
    # where a second Ctrl-C during that save could only be printed as 'Exception ignored ... Traceback'.
    with tqdm(total=iterations, desc="      train", dynamic_ncols=True) as bar, contextlib.closing(steps):
        for info in steps:
            bar.update(info.iteration - bar.n)
            bar.set_postfix(loss=round(info.logs.get("loss", float("nan")), 3), img_s=round(info.images_per_s, 1))
    train_s = time.monotonic() - t0
    _say(f"      done in {train_s:.0f} s; weights: {run / 'last.safetensors'}")

    pred = SIAPredictor.from_run(run, device=device)
    val = find_split(data, "val")
    _say(f"[3/5] scoring on the {len(val)} validation patches against their exact masks")
    t0 = time.monotonic()
    with tqdm(total=len(val), desc="      evaluate", unit="img", dynamic_ncols=True) as bar:
        results = evaluate_items(
            pred, val, batch_size=cfg.infer.batch_size, on_image=lambda done, total: bar.update(done - bar.n)
        )
    _say(format_table(results, cfg.data.classes))
    _say(f"      done in {time.monotonic() - t0:.0f} s")
    metrics = out / "metrics.json"
    atomic_write_text(metrics, json.dumps({"summary": summary(results), "full": results}, indent=1))

    pseudo = out / "pseudo"
    _say(f"[4/5] writing a pseudo-mask for each of the {len(samples)} training patches to {pseudo}")
    t0 = time.monotonic()
    with tqdm(total=len(samples), desc="      pseudo-labels", unit="img", dynamic_ncols=True) as bar:
        write_pseudo_labels(
            pred, [(s.path, s.labels) for s in samples], pseudo, on_image=lambda done, total: bar.update(done - bar.n)
        )
    _say(f"      done in {time.monotonic() - t0:.0f} s")

    figure = out / "overview.png"
    _say(f"[5/5] drawing {figure}")
    t0 = time.monotonic()
    caption = figure_caption(results, cfg, iterations, train_s, len(samples), len(val))
    overview_figure(pred, _varied(val, cfg.num_classes, cfg.data.ignore_index, FIGURE_ROWS), figure, caption)
    _say(f"      done in {time.monotonic() - t0:.0f} s")
    dec, _ = _scores(results)
    per_class = ", ".join(f"{n} {v:.2f}" for n, v in zip(cfg.data.classes, dec["IoU"]))
    _say(
        f"the demo's model, with no image labels given, on the {len(val)} validation patches: "
        f"mIoU {dec['mIoU']:.2f} ({per_class}); whole demo {time.monotonic() - t_start:.0f} s. Open {figure}"
    )
    return {"dataset": data, "run": run, "metrics": metrics, "pseudo-labels": pseudo, "figure": figure}


def _model_words(cfg: Any) -> str:
    depth = cfg.model.backbone_kwargs.get("depth")
    blocks = f", {depth} blocks" if depth else ""
    stem = ", conv stem" if cfg.model.conv_stem else ""
    return f"{cfg.model.backbone}{blocks}{stem}, random init" if not cfg.model.pretrained else cfg.model.backbone


def _varied(items: Sequence[Any], num_classes: int, ignore_index: int, n: int) -> list[Any]:
    """Up to ``n`` validation items, those holding the most classes first (the figure shows more per row)."""
    from .data.images import read_mask

    def n_classes(item: Any) -> int:
        values = np.unique(read_mask(item.mask, num_classes, ignore_index))
        return int((values < num_classes).sum())

    ranked = sorted(range(len(items)), key=lambda i: (-n_classes(items[i]), i))
    return [items[i] for i in sorted(ranked[:n])]


def _scores(results: dict[str, Any]) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """(label-free decoder, refined masks with the true labels given) from ``evaluate_items``' results.

    Reads both result layouts: flat (``results["decoder"]``) and by protocol (``results["label_free"]``).
    """
    if "label_free" in results:
        given = results["labels_given"]
        return results["label_free"]["decoder"], given.get("rsm") or given.get("cam")
    return results["decoder"], results.get("rsm") or results.get("cam")


def figure_caption(results: dict[str, Any], cfg: Any, iterations: int, train_s: float, n_train: int, n_val: int) -> str:
    """What the figure shows, the training budget and the scores, in words."""
    dec, refined = _scores(results)
    per_class = ", ".join(f"{n} {v:.2f}" for n, v in zip(cfg.data.classes, dec["IoU"]))
    refined_text = f"; refined masks (image labels given): mIoU {refined['mIoU']:.2f}" if refined else ""
    return (
        f"Synthetic H&E-like patches made by SIA with exact masks (not real tissue). Model: the {DEMO_PRESET} preset "
        f"({_model_words(cfg)}) trained for {iterations} steps of {cfg.train.batch_size} patches on "
        f"{n_train} patches with image-level labels only ({train_s / 60:.1f} min here).\n"
        f"Scores on {n_val} validation patches: prediction (no labels given) mIoU {dec['mIoU']:.2f} "
        f"({per_class}){refined_text}. A minutes-long CPU model: a draft to correct, not a diagnosis."
    )


def overview_figure(predictor: Any, items: Sequence[Any], path: Union[str, Path], caption: str = "") -> Path:
    """One row per validation patch: the H&E, its true mask, the model's prediction with no labels given, the
    refined mask with the true labels given, then the CAM of each class (how strongly the model ties each pixel
    to that class, 0..1, one shared colour bar). A legend names the class colours, white is glass / unlabelled.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .data.images import palette_to_rgb, read_mask, read_rgb
    from .evaluate import present_classes
    from .io_utils import atomic_write

    cfg = predictor.cfg
    names = list(cfg.data.classes)
    palette = cfg.data.palette
    mask_cols = ["H&E patch", "true mask", "prediction\n(no labels given)", "refined mask\n(labels given)"]
    cols = mask_cols + [f"{n} CAM" for n in names]
    plt.rcParams.update({"font.size": 12})
    fig, axes = plt.subplots(
        len(items), len(cols), figsize=(2.3 * len(cols) + 1.2, 2.5 * len(items) + 2.0), squeeze=False
    )
    image = None
    for r, item in enumerate(items):
        rgb = read_rgb(item.image)
        gt = read_mask(item.mask, cfg.num_classes, cfg.data.ignore_index, palette)
        labels = present_classes(gt, cfg.num_classes)
        p = predictor.predict_image(rgb, labels=labels if labels.any() else None)
        panels = [
            rgb,
            palette_to_rgb(gt, palette),
            palette_to_rgb(p.label_map, palette),
            palette_to_rgb(p.pseudo_label, palette),
        ]
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=12)
            if c < len(panels):
                ax.imshow(panels[c])
                continue
            k = c - len(panels)
            image = ax.imshow(p.cam[k], cmap="gray", vmin=0, vmax=1)
            if not labels[k]:
                ax.text(0.5, 0.5, "not in\nthis patch", ha="center", va="center", color="w", transform=ax.transAxes)
        axes[r][0].set_ylabel(Path(item.image).stem, fontsize=10)
    legend = [Patch(facecolor=np.array(palette[i]) / 255, edgecolor="k", label=n) for i, n in enumerate(names)]
    legend.append(Patch(facecolor="white", edgecolor="k", label="white = glass / unlabelled"))
    fig.legend(
        handles=legend, loc="upper left", ncol=len(legend), fontsize=12, frameon=False, bbox_to_anchor=(0.01, 1.0)
    )
    fig.tight_layout(rect=(0, 0.12 if caption else 0.02, 0.93, 0.95))
    if image is not None:
        bar_ax = fig.add_axes((0.94, 0.25, 0.012, 0.6))
        bar = fig.colorbar(image, cax=bar_ax)
        bar.set_label("CAM: 0 = no evidence, 1 = strongest", fontsize=11)
    if caption:
        width = int(fig.get_figwidth() * 11)  # characters of 11 pt text per line, about
        text = "\n".join(textwrap.fill(part, width) for part in caption.split("\n"))
        fig.text(0.01, 0.01, text, fontsize=11, va="bottom", ha="left")
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path
