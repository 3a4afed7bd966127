"""Image-level labels: parsed from training file names, or kept in a labels CSV.

File names follow the WSSS-Tissue conventions (docs/method.md §6.2): the label vector is the text between the
last ``[`` and the following ``]``, one 0/1 digit per class in class order, separated by spaces
(LUAD-HistoSeg ``name-[1 0 0 1].png``), commas (WSSS4LUAD ``name-[1, 0, 1].png``) or nothing
(BCSS-WSSS ``name[1101].png``).

The labels CSV (``sia_labels.csv``) is shared by the napari widget and the CLI, so images with any file
name can be labelled by hand::

    image,tumor,stroma,normal
    slide1/patch_0001.png,1,1,0
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Optional, Union

import numpy as np

from ..errors import SIAError
from ..io_utils import atomic_write_text

__all__ = [
    "LABELS_CSV",
    "parse_label_vector",
    "read_label_csv",
    "write_label_csv",
    "format_label_vector",
    "is_inside_name",
]

LABELS_CSV = "sia_labels.csv"
"""Default file name of the labels CSV, looked up in a dataset's train folder."""

_SEPARATORS = re.compile(r"[\s,]+")


def parse_label_vector(name: Union[str, os.PathLike], num_classes: Optional[int] = None) -> np.ndarray:
    """Read the image-level label vector encoded in a file name.

    Args:
        name: File name or path; only the last path component is looked at.
        num_classes: Expected vector length; None accepts any length.

    Returns:
        int64 array of 0/1, one entry per class.

    Raises:
        SIAError: No ``[...]`` in the name, characters other than 0/1 and separators, wrong length, or
            no class present. The message names the file.
    """
    shown = os.fspath(name)  # named with its folder in errors: the same name can sit in several folders
    fname = Path(shown).name
    start = fname.rfind("[")
    end = fname.find("]", start + 1) if start >= 0 else -1
    if start < 0 or end < 0:
        raise SIAError(
            f"no image-level label in file name '{shown}'",
            fix="rename it like 'name-[1 0 1].png' (one 0/1 per class) or list it in a " + LABELS_CSV,
        )
    text = _SEPARATORS.sub("", fname[start + 1 : end])
    if not text or any(ch not in "01" for ch in text):
        raise SIAError(
            f"label '{fname[start : end + 1]}' in file name '{shown}' must hold only 0/1 digits",
            fix="write one 0 or 1 per class, separated by spaces, commas or nothing",
        )
    labels = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")
    _check_vector(labels, num_classes, f"file name '{shown}'")
    return labels


def is_inside_name(name: str) -> bool:
    """Whether a '/'-separated relative name stays inside the folder it is relative to: not absolute, no
    drive, no '..' step. (A labels CSV may only name images in its own folder tree.)"""
    posix = PurePosixPath(name)
    windows = PureWindowsPath(name)
    return not (posix.is_absolute() or windows.drive or windows.root or ".." in posix.parts)


def format_label_vector(labels: Sequence[int]) -> str:
    """The LUAD-HistoSeg form of a label vector, ``[1 0 1]``, for building file names."""
    return "[" + " ".join(str(int(v)) for v in labels) + "]"


def read_label_csv(path: Union[str, os.PathLike], classes: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """Read a labels CSV.

    Args:
        path: The CSV file.
        classes: Expected class names. The header must hold exactly these names (in any order; the
            vectors are returned in the order of ``classes``). None accepts the header's classes.

    Returns:
        Map from image path (relative to the CSV's folder, '/'-separated, as written in the file) to an
        int64 0/1 vector.

    Raises:
        SIAError: Missing or unreadable file, wrong header, a value that is not 0/1, a row with no class,
            or an image listed twice. The message names the CSV (and the row).
    """
    path = Path(path)
    if not path.is_file():
        raise SIAError(f"labels CSV not found: {path}", fix="give the path of an existing " + LABELS_CSV)
    try:
        text = path.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheets often prepend a BOM
    except (OSError, UnicodeDecodeError) as err:
        raise SIAError(f"cannot read labels CSV {path}: {err}", fix="save it as UTF-8 text") from err
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise SIAError(f"labels CSV {path} is empty", fix="write a header 'image,<class>,...' and one row per image")
    header = [cell.strip() for cell in rows[0]]
    if not header or header[0] != "image" or len(header) < 2:
        raise SIAError(
            f"labels CSV {path} has header {','.join(header)!r}; the first column must be 'image'",
            fix="make the header 'image,' followed by the class names",
        )
    found = header[1:]
    wanted = list(classes) if classes is not None else found
    if sorted(found) != sorted(wanted) or len(set(found)) != len(found):
        raise SIAError(
            f"labels CSV {path} has classes {found}, expected {wanted}",
            fix="make the header 'image," + ",".join(wanted) + "' or use the matching dataset",
        )
    order = [found.index(name) for name in wanted]
    labels: dict[str, np.ndarray] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        where = f"labels CSV {path}, row {lineno}"
        if len(row) != len(header):
            raise SIAError(f"{where} has {len(row)} columns, expected {len(header)}", fix="fix that row")
        image = row[0].strip().replace("\\", "/")
        if not image:
            raise SIAError(f"{where} has no image name", fix="fill in the 'image' column or delete the row")
        if not is_inside_name(image):
            raise SIAError(
                f"{where} names '{image}', which is outside the folder {path.parent}",
                fix=f"list images by their path inside {path.parent} (e.g. 'sub/x.png'), or move them into it",
            )
        if image in labels:
            raise SIAError(f"{where} lists '{image}' a second time", fix="keep one row per image")
        cells = [row[1 + i].strip() for i in order]
        if any(cell not in ("0", "1") for cell in cells):
            raise SIAError(f"{where} ('{image}') has values {cells}; each must be 0 or 1", fix="fix that row")
        vector = np.array([int(cell) for cell in cells], dtype=np.int64)
        _check_vector(vector, len(wanted), f"{where} ('{image}')")
        labels[image] = vector
    return labels


def write_label_csv(path: Union[str, os.PathLike], labels: Mapping[str, Sequence[int]], classes: Sequence[str]) -> Path:
    """Write a labels CSV atomically (rows sorted by image name).

    Args:
        path: Target file, usually ``<train folder>/sia_labels.csv``.
        labels: Image path relative to the CSV's folder -> 0/1 vector in the order of ``classes``.
        classes: Class names, written as the header after ``image``.

    Raises:
        SIAError: A vector of the wrong length, a value other than 0/1, or no class present.
    """
    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", *classes])
    for image in sorted(labels):
        vector = np.asarray(labels[image]).reshape(-1)
        where = f"labels for '{image}' (writing {path})"
        if vector.size and not np.isin(vector, (0, 1)).all():
            raise SIAError(f"{where} hold values other than 0/1: {vector.tolist()}", fix="use 0 or 1 per class")
        _check_vector(vector.astype(np.int64), len(classes), where)
        writer.writerow([str(image).replace("\\", "/"), *(int(v) for v in vector)])
    atomic_write_text(path, buf.getvalue())
    return path


def _check_vector(labels: np.ndarray, num_classes: Optional[int], where: str) -> None:
    if num_classes is not None and labels.size != num_classes:
        raise SIAError(
            f"{where} has {labels.size} labels, expected {num_classes} (one per class)",
            fix="write one 0/1 per class, or use the dataset.yaml/preset whose classes match",
        )
    if not labels.any():
        raise SIAError(
            f"{where} has no class present (all zeros)",
            fix="mark at least one class present, or leave the image out of training",
        )
