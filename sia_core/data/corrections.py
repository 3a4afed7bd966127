"""A pathologist's corrected mask of an image: checked against the image and the classes, then saved beside it.

The next training uses it as pixel supervision in place of the pseudo-label (``train_dataset``), so a mask
of another size or with values that are no class is refused here, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import SIAError
from .images import image_size, write_palette_png
from .sidecars import correction_path

__all__ = ["check_correction", "write_correction"]


def check_correction(image: Union[str, Path], mask: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """``mask`` as the uint8 correction of ``image``, or an SIAError that says what is wrong with it.

    Args:
        image: the image file the mask corrects.
        mask: (H, W) label values: class indices ``0..num_classes-1`` and ``ignore_index`` (unlabelled).
        num_classes: number of classes.
        ignore_index: the value of unlabelled pixels (not trained on).
    """
    image = Path(image)
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise SIAError(f"a correction must be one 2-D mask, got shape {arr.shape}", fix="save a (H, W) mask")
    height, width = image_size(image)
    if arr.shape != (height, width):
        raise SIAError(
            f"the mask is {arr.shape[1]}x{arr.shape[0]} but image {image.name} is {width}x{height}",
            fix="correct the mask made for this image (Inspect it, or open its own mask)",
        )
    allowed = {*range(num_classes), int(ignore_index)}
    bad = sorted(set(np.unique(arr).tolist()) - allowed)
    if bad:
        raise SIAError(
            f"the mask of {image.name} holds values {bad[:10]} that are no class "
            f"(classes are 0..{num_classes - 1}, unlabelled is {ignore_index})",
            fix="paint only with the classes; erase to mark pixels unlabelled",
        )
    return arr.astype(np.uint8)


def write_correction(
    image: Union[str, Path],
    mask: np.ndarray,
    num_classes: int,
    ignore_index: int,
    palette: Sequence[Sequence[int]],
    overwrite: bool = False,
) -> Path:
    """Check ``mask`` (see :func:`check_correction`) and save it as ``<image folder>/sia_masks/<stem>.png``.

    Args:
        image, mask, num_classes, ignore_index: as for :func:`check_correction`.
        palette: colours of the palette PNG (classes, then the unlabelled colour).
        overwrite: replace an existing correction; otherwise an existing one is an SIAError.

    Returns:
        The file written.
    """
    arr = check_correction(image, mask, num_classes, ignore_index)
    target = correction_path(image)
    if target.exists() and not overwrite:
        raise SIAError(f"{target} exists; refusing to replace it", fix="confirm replacing it")
    try:
        return write_palette_png(target, arr, palette)
    except OSError as err:
        raise SIAError(f"cannot write {target}: {err}", fix="save the images in a folder you can write to") from err
