"""``sia-core demo``: the built-in default job on a fresh machine with no data and no downloads.

It makes a small synthetic H&E-like dataset with exact masks (:mod:`sia_core.data.synthetic`), trains the
``cpu`` preset for a few minutes, evaluates on the synthetic val split, writes pseudo-labels for the training
patches and one overview figure (image | CAM | inhibition | activation | RSM | prediction | truth).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .errors import SIAError

__all__ = ["DEMO_ITERATIONS", "run_demo", "overview_figure"]

DEMO_ITERATIONS = 100  # 4:47 of training for 120 on 2 cores; 100 keeps the whole demo under 5 minutes
DEMO_TRAIN, DEMO_VAL, DEMO_SIZE = 192, 24, 224
DEMO_PRESET = "cpu"


def run_demo(
    out: Union[str, Path], iterations: Optional[int] = None, force: bool = False, device: str = "auto"
) -> dict[str, Path]:
    """Run the demo into ``out``; returns the paths of what it wrote."""
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
            raise SIAError(
                f"{out} already exists and is not empty", fix="pass --force to replace it or choose --out"
            )
        if not (out / "run").exists() and not (out / "data").exists():
            raise SIAError(
                f"{out} does not look like a demo folder; refusing to delete it", fix="choose another --out"
            )
        shutil.rmtree(out)
    data = out / "data"
    print(
        f"making a synthetic H&E-like dataset in {data} ({DEMO_TRAIN} train, {DEMO_VAL} val patches)",
        flush=True,
    )
    make_synthetic_dataset(data, n_train=DEMO_TRAIN, n_val=DEMO_VAL, size=DEMO_SIZE, seed=0)
    iterations = iterations or DEMO_ITERATIONS
    cfg = resolve_train_config(
        str(data), preset=DEMO_PRESET, overrides=[f"train.iterations={iterations}", "train.val_every=0"]
    )
    cfg.train.device = device
    samples = training_samples(str(data), cfg)
    run = out / "run"
    print(
        f"training the cpu preset ({cfg.model.backbone}, variant {cfg.variant}) for {iterations} iterations",
        flush=True,
    )
    with tqdm(total=iterations, desc="train", dynamic_ncols=True) as bar:
        for info in train_iter(cfg, samples, run):
            bar.update(1)
            bar.set_postfix(loss=info.logs.get("loss"), img_s=round(info.images_per_s, 1))

    pred = SIAPredictor.from_run(run, device=device)
    val = find_split(data, "val")
    results = evaluate_items(pred, val, batch_size=cfg.infer.batch_size)
    print(format_table(results, cfg.data.classes))
    metrics = out / "metrics.json"
    atomic_write_text(metrics, json.dumps({"summary": summary(results), "full": results}, indent=1))
    pseudo = out / "pseudo"
    write_pseudo_labels(pred, [(s.path, s.labels) for s in samples], pseudo)
    figure = overview_figure(pred, val[:4], out / "overview.png")
    return {"dataset": data, "run": run, "metrics": metrics, "pseudo-labels": pseudo, "figure": figure}


def overview_figure(predictor, items, path: Union[str, Path]) -> Path:
    """One row per image: image | CAM | inhibition | activation | RSM | prediction | truth.

    Heat maps show, per pixel, the largest value over the image's present classes (absent classes are zero
    in every map), jet with alpha 0.5 over the image; label maps use the dataset palette.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data.images import palette_to_rgb, read_mask, read_rgb
    from .evaluate import present_classes
    from .io_utils import atomic_write

    cfg = predictor.cfg
    cols = ["image", "CAM (A)", "inhibition (I)", "activation (A')", "RSM", "prediction", "truth"]
    fig, axes = plt.subplots(
        len(items), len(cols), figsize=(2.2 * len(cols), 2.3 * len(items)), squeeze=False
    )
    for r, item in enumerate(items):
        rgb = read_rgb(item.image)
        gt = read_mask(item.mask, cfg.num_classes, cfg.data.ignore_index, cfg.data.palette)
        p = predictor.predict_image(
            rgb, labels=present_classes(gt, cfg.num_classes) if (gt < cfg.num_classes).any() else None
        )

        def heat(maps: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if maps is None else maps.max(0)

        panels = [
            rgb,
            heat(p.cam),
            heat(p.inhibition),
            heat(p.activation),
            heat(p.rsm),
            palette_to_rgb(p.label_map, cfg.data.palette),
            palette_to_rgb(gt, cfg.data.palette),
        ]
        for c, (ax, panel) in enumerate(zip(axes[r], panels)):
            ax.axis("off")
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
            if panel is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            elif panel.ndim == 2:
                ax.imshow(rgb)
                ax.imshow(panel, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            else:
                ax.imshow(panel)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)
    return path
