"""The images the widget works on and their image-level labels (no Qt here, so it is easy to test).

Labels live in ``sia_labels.csv`` beside the images (``sia_core.data.labels``), the file ``sia-core train``
reads too: in folder mode in the chosen folder (paths relative to it), in layer mode in the folder of each
layer's file. Images labelled in their file names (``x-[1 0 1].png``) start from that label; changing it
writes a CSV row, which takes precedence over the name (as in ``find_train_items``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sia_core.data.labels import LABELS_CSV, parse_label_vector, read_label_csv, write_label_csv
from sia_core.errors import SIAError

__all__ = ["ImageEntry", "LabelStore", "LabelBook", "csv_header"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ImageEntry:
    """One image: a file (folder mode, or a layer opened from a file) and/or an open napari layer.

    Attributes:
        name: short display name (file stem or layer name); used in layer names.
        path: the image file, or None for an in-memory layer.
        layer: the napari Image layer showing it (layer mode), else None.
        csv_folder: folder whose sia_labels.csv holds its labels (None: kept in memory only).
    """

    name: str
    path: Optional[Path] = None
    layer: Any = None
    csv_folder: Optional[Path] = None

    @property
    def id(self) -> str:
        """What ties SIA's layers to this image (``metadata['sia']['image']``): the file path, else the layer name."""
        return str(self.path) if self.path is not None else f"layer:{self.name}"

    @property
    def key(self) -> str:
        """Row name in the CSV: the path relative to ``csv_folder`` ('/'-separated), else the name."""
        if self.path is not None and self.csv_folder is not None:
            return self.path.relative_to(self.csv_folder).as_posix()
        return self.name


def csv_header(path: Path) -> Optional[list[str]]:
    """Class names in the header of a labels CSV, or None when it has no valid header."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = [cell.strip() for cell in next(csv.reader(fh), [])]
    except OSError:
        return None
    return header[1:] if len(header) > 1 and header[0] == "image" else None


class LabelStore:
    """The labels CSV of one folder.

    Args:
        folder: where ``sia_labels.csv`` lives.
        classes: class names (the CSV header after ``image``).

    A CSV whose classes differ from ``classes`` is not touched: ``error`` says why and saving is refused
    until the classes match, so switching presets never rewrites a user's labels.
    """

    def __init__(self, folder: Path, classes: list[str]) -> None:
        self.folder = Path(folder)
        self.classes = list(classes)
        self.labels: dict[str, np.ndarray] = {}
        self.error: Optional[str] = None
        if self.path.is_file():
            try:
                self.labels = read_label_csv(self.path, self.classes)
            except SIAError as err:
                self.error = str(err)

    @property
    def path(self) -> Path:
        return self.folder / LABELS_CSV

    def get(self, key: str) -> Optional[np.ndarray]:
        return self.labels.get(key)

    def set(self, key: str, vector: Optional[np.ndarray]) -> Path:
        """Store (or, for None / all zeros, remove) an image's labels and rewrite the CSV atomically.

        Raises:
            SIAError: the CSV has other classes, or the folder cannot be written.
        """
        if self.error is not None:
            raise SIAError(
                f"labels not saved: {self.error}",
                fix="choose the classes of that CSV (or move it away) before labelling",
            )
        if vector is None or not np.any(vector):
            self.labels.pop(key, None)
        else:
            self.labels[key] = np.asarray(vector, dtype=np.int64)
        if not self.labels and not self.path.exists():
            return self.path
        try:
            return write_label_csv(self.path, self.labels, self.classes)
        except OSError as err:
            raise SIAError(
                f"cannot write {self.path}: {err}",
                fix="open a copy of the images in a folder you can write to",
            ) from err


class LabelBook:
    """Image-level labels of every image the widget knows, across folders and in-memory layers."""

    def __init__(self, classes: list[str]) -> None:
        self.classes = list(classes)
        self._stores: dict[Path, LabelStore] = {}
        self._memory: dict[str, np.ndarray] = {}

    def store(self, folder: Path) -> LabelStore:
        folder = Path(folder).resolve()
        if folder not in self._stores:
            self._stores[folder] = LabelStore(folder, self.classes)
        return self._stores[folder]

    def labels(self, entry: ImageEntry) -> tuple[Optional[np.ndarray], str]:
        """(vector or None, where it comes from: 'csv', 'file name', 'session' or '')."""
        if entry.csv_folder is not None:
            vec = self.store(entry.csv_folder).get(entry.key)
            if vec is not None:
                return vec, "csv"
        elif entry.name in self._memory:
            return self._memory[entry.name], "session"
        if entry.path is not None and "[" in entry.path.name:
            try:
                return parse_label_vector(entry.path, len(self.classes)), "file name"
            except SIAError:
                pass
        return None, ""

    def set(self, entry: ImageEntry, vector: Optional[np.ndarray]) -> Optional[Path]:
        """Save an image's labels; returns the CSV written (None: kept for this session only)."""
        if entry.csv_folder is None:
            if vector is None or not np.any(vector):
                self._memory.pop(entry.name, None)
            else:
                self._memory[entry.name] = np.asarray(vector, dtype=np.int64)
            return None
        return self.store(entry.csv_folder).set(entry.key, vector)

    def error(self, entry: ImageEntry) -> Optional[str]:
        return self.store(entry.csv_folder).error if entry.csv_folder is not None else None
