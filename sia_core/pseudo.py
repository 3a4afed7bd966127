"""One-click pseudo-labels: a pseudo-mask per weakly labelled image, in the dataset's palette.

Shared by ``sia-core pseudo-label`` and the napari widget's button. Nothing is overwritten unless asked:
existing targets, and two images whose masks would be the same file, are found before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .data.images import read_rgb, write_palette_png
from .data.sidecars import pseudo_label_path
from .errors import SIAError
from .io_utils import check_distinct_targets, check_output_dir
from .predictor import SIAPredictor

__all__ = ["write_pseudo_labels"]


def write_pseudo_labels(
    predictor: SIAPredictor,
    items: Sequence[tuple[Path, Sequence[int]]],
    out_dir: Optional[Union[str, Path]] = None,
    overwrite: bool = False,
    on_image: Optional[Callable[[int, int], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> list[Path]:
    """Predict and write the pseudo-mask of every ``(image path, image-level labels)`` pair.

    Args:
        predictor: the trained model.
        items: images with their labels (the labels restrict the maps to the classes present).
        out_dir: output folder; None writes beside each image in ``sia_pseudo/``.
        overwrite: replace existing masks (otherwise an existing one is an error before anything is written).
            Two images whose masks would be the same file (``a/x.png`` and ``b/x.png`` into one ``out_dir``)
            are always an error.
        on_image: progress callback ``(done, total)``.
        should_stop: polled between images; True stops early (what is written stays).

    Returns:
        The files written.
    """
    if out_dir is not None:
        check_output_dir(out_dir, what="pseudo-label folder")
    check_distinct_targets([Path(p) for p, _ in items], lambda p: pseudo_label_path(p, out_dir))
    targets = [pseudo_label_path(p, out_dir) for p, _ in items]
    if not overwrite:
        existing = [t for t in targets if t.exists()]
        if existing:
            raise SIAError(
                f"{len(existing)} pseudo-masks already exist (e.g. {existing[0]})",
                fix="choose another output folder or allow overwriting (--overwrite)",
            )
    palette = predictor.cfg.data.palette
    written: list[Path] = []
    for i, ((path, labels), target) in enumerate(zip(items, targets)):
        if should_stop is not None and should_stop():
            break
        pred = predictor.predict_image(read_rgb(path), labels=np.asarray(labels))
        write_palette_png(target, pred.pseudo_label, palette)
        written.append(target)
        if on_image is not None:
            on_image(i + 1, len(items))
    return written
