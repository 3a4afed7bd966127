"""Dataset folders in the WSSS-Tissue layout (docs/method.md §6.1) and their description (``dataset.yaml``).

::

    <root>/dataset.yaml                  name, classes, ignore_index, palette, white_background
    <root>/train/*.png  or  train/img/   weakly labelled patches, label vector in the file name,
                                         and/or train/sia_labels.csv (takes precedence for its files)
    <root>/val/ or valid/ {img,mask}/    pixel masks, matched to images by file stem
    <root>/test/{img,mask}/

Every problem is a one-line :class:`SIAError` naming the path and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import yaml

from ..classes import DATASET_PRESETS, IGNORE_COLOUR, default_palette
from ..config import DataConfig, parse_fields
from ..errors import SIAError, yaml_problem
from .images import IMAGE_EXTENSIONS, image_size, list_images, read_mask, read_rgb
from .labels import LABELS_CSV, parse_label_vector, read_label_csv

__all__ = [
    "DATASET_YAML",
    "DATASET_PRESETS",
    "SPLIT_FOLDERS",
    "TrainItem",
    "EvalItem",
    "dataset_description",
    "write_dataset_yaml",
    "apply_to_data_config",
    "default_palette",
    "train_folder",
    "find_train_items",
    "find_split",
    "has_split",
    "check_eval_pair",
]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

DATASET_YAML = "dataset.yaml"

SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "val": ("val", "valid"),
    "valid": ("val", "valid"),
    "test": ("test",),
}
"""Folder names searched for each split, in order (TPRO calls val 'valid')."""

_DESCRIPTION_KEYS = {"name", "classes", "ignore_index", "palette", "white_background"}
_EXTRA_DATA_KEYS = {f.name for f in dataclasses.fields(DataConfig)} - _DESCRIPTION_KEYS
_INFO_KEYS = {"description", "source", "license", "url", "citation", "notes", "preset"}


@dataclass
class TrainItem:
    """A weakly labelled training image."""

    path: Path
    labels: np.ndarray
    """int64 0/1 vector, one entry per class."""


@dataclass
class EvalItem:
    """An image with its pixel mask (val/test)."""

    image: Path
    mask: Path


# --------------------------------------------------------------------------------- description


def dataset_description(root: PathLike, preset: Optional[str] = None) -> dict[str, Any]:
    """What the classes of a dataset are: preset, overridden by ``<root>/dataset.yaml``.

    Without either, a folder named like a preset (``LUAD-HistoSeg``, ``BCSS-WSSS``, ``wsss4luad``) uses
    that preset; otherwise the class count is read from the labels CSV header or the first training file
    name, classes are named ``class0, class1, ...``, the ignore index is the class count and the palette
    is generated.

    Returns:
        dict with ``name``, ``classes``, ``ignore_index``, ``palette`` (one colour per class, optionally
        followed by the ignore colour), ``white_background``, optional further :class:`DataConfig` keys,
        and ``source`` (where it came from, for messages).

    Raises:
        SIAError: Unknown preset, unreadable or invalid dataset.yaml, or nothing to infer the classes from.
    """
    root = Path(root)
    if preset is not None and preset not in DATASET_PRESETS:
        raise SIAError(f"unknown dataset preset '{preset}'", fix=f"use one of {', '.join(DATASET_PRESETS)}")
    yaml_path = root / DATASET_YAML
    from_yaml = _read_dataset_yaml(yaml_path) if yaml_path.is_file() else None
    if preset is None and from_yaml is None:
        preset = root.name.lower() if root.name.lower() in DATASET_PRESETS else None
    desc: dict[str, Any] = {}
    sources = []
    if preset is not None:
        desc.update(_deepcopy(DATASET_PRESETS[preset]))
        sources.append(f"preset '{preset}'")
    if from_yaml is not None:
        desc.update(from_yaml)
        sources.append(str(yaml_path))
    if "classes" not in desc:
        desc["classes"] = _infer_classes(root)
        sources.append(f"training labels in {root}")
    num_classes = len(desc["classes"])
    desc.setdefault("name", root.name or "dataset")
    desc.setdefault("ignore_index", num_classes)
    desc.setdefault("palette", default_palette(num_classes) + [list(IGNORE_COLOUR)])
    desc.setdefault("white_background", True)  # H&E slides usually show glass; BCSS-like data says False
    desc["source"] = " + ".join(sources)
    _validate_description(desc, desc["source"])
    return desc


def write_dataset_yaml(root: PathLike, desc: dict[str, Any], source: str = "napari-sia") -> Optional[Path]:
    """Record classes typed by a user in ``<root>/dataset.yaml``, so the CLI and a reopened folder use them.

    A ``dataset.yaml`` written by anything but ``source`` (i.e. by the user) is never rewritten; nor is one that
    already lists these classes.

    Args:
        root: dataset root (the folder ``sia-core train --data`` names).
        desc: a dataset description (``classes``, ``ignore_index``, ``palette``, ``white_background``).
        source: who writes it, stored in the file.

    Returns:
        The file written, or None when an existing one was kept.

    Raises:
        SIAError: the folder cannot be written.
    """
    from ..io_utils import atomic_write_text

    target = Path(root) / DATASET_YAML
    if target.exists():
        try:
            existing = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        if not isinstance(existing, dict) or existing.get("source") != source:
            return None
        if existing.get("classes") == list(desc["classes"]) and existing.get("palette") == desc.get("palette"):
            return None
    content = {
        **{k: desc[k] for k in ("name", "classes", "ignore_index", "palette", "white_background") if k in desc},
        "source": source,
        "description": f"classes recorded by {source}",
    }
    try:
        return atomic_write_text(target, yaml.safe_dump(content, sort_keys=False))
    except OSError as err:
        raise SIAError(f"cannot write {target}: {err}", fix="use a folder you can write to") from err


def apply_to_data_config(desc: dict[str, Any], data: Optional[DataConfig] = None) -> DataConfig:
    """A copy of ``data`` (default: a fresh :class:`DataConfig`) with the description's values set."""
    data = data if data is not None else DataConfig()
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    updates = {k: _deepcopy(v) for k, v in desc.items() if k in fields}
    # Type-check here, naming the dataset.yaml: a bad value must not surface later as an error of --set.
    updates = parse_fields(DataConfig, updates, where=f"{desc.get('source', 'dataset description')}: data")
    return dataclasses.replace(data, **updates)


def _read_dataset_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SIAError(f"cannot parse {path}: {yaml_problem(err)}", fix="check the YAML syntax") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SIAError(f"cannot read {path}: {err}", fix="save it as UTF-8 YAML text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SIAError(f"{path} is not a mapping", fix="write 'classes: [...]', 'ignore_index: N' etc.")
    unknown = set(data) - _DESCRIPTION_KEYS - _EXTRA_DATA_KEYS - _INFO_KEYS
    if unknown:
        valid = sorted(_DESCRIPTION_KEYS | _EXTRA_DATA_KEYS)
        raise SIAError(
            f"{path} has unknown key(s) {', '.join(sorted(unknown))}",
            fix=f"valid keys are {', '.join(valid)}",
        )
    if "preset" in data:
        name = data.pop("preset")
        if name not in DATASET_PRESETS:
            raise SIAError(f"{path}: unknown preset '{name}'", fix=f"use one of {', '.join(DATASET_PRESETS)}")
        data = {**_deepcopy(DATASET_PRESETS[name]), **data}
    for key in _INFO_KEYS - {"preset"}:
        data.pop(key, None)
    return data


def _validate_description(desc: dict[str, Any], where: str) -> None:
    classes = desc["classes"]
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) and c.strip() for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise SIAError(
            f"{where}: 'classes' must be a list of distinct names, got {classes!r}",
            fix="write e.g. 'classes: [tumor, stroma, normal]'",
        )
    num_classes = len(classes)
    ignore = desc["ignore_index"]
    if isinstance(ignore, bool) or not isinstance(ignore, int) or not num_classes <= ignore <= 255:
        raise SIAError(
            f"{where}: 'ignore_index' must be an integer in {num_classes}..255 (not a class index), got {ignore!r}",
            fix=f"use ignore_index: {num_classes} or the mask value of background in your masks",
        )
    palette = desc["palette"]
    valid_colours = isinstance(palette, list) and all(
        isinstance(c, (list, tuple))
        and len(c) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
        for c in palette
    )
    if not valid_colours or len(palette) < num_classes:
        raise SIAError(
            f"{where}: 'palette' must list at least {num_classes} colours [r, g, b] (0..255), got {palette!r}",
            fix="give one [r, g, b] per class, optionally followed by the background colour",
        )
    desc["palette"] = [list(c) for c in palette]
    if not isinstance(desc["white_background"], bool):
        raise SIAError(f"{where}: 'white_background' must be true or false", fix="write true or false")


def _infer_classes(root: Path) -> list[str]:
    if not root.is_dir():
        raise SIAError(f"dataset folder not found: {root}", fix="give the folder that holds train/ (and val/)")
    folder = train_folder(root)
    for csv_path in _label_csvs(root):
        with open(csv_path, encoding="utf-8-sig", newline="") as fh:
            header = [cell.strip() for cell in next(csv.reader(fh), [])]
        if len(header) > 1 and header[0] == "image":
            return header[1:]
    images = list_images(folder) if folder is not None else []
    if not images:
        raise SIAError(
            f"cannot tell the classes of dataset {root}: no {DATASET_YAML}, no preset and no training images",
            fix=f"add {root / DATASET_YAML} with 'classes: [...]' and 'ignore_index: N', or choose a preset "
            f"({', '.join(DATASET_PRESETS)})",
        )
    num_classes = parse_label_vector(images[0]).size
    return [f"class{i}" for i in range(num_classes)]


def _deepcopy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_deepcopy(v) for v in value]
    return value


# --------------------------------------------------------------------------------- training items


def train_folder(root: PathLike) -> Optional[Path]:
    """``<root>/train/img`` when it exists (TPRO), else ``<root>/train``; else ``root`` itself when it holds a
    labels CSV (a plain image folder labelled in the napari widget); None otherwise."""
    root = Path(root)
    for folder in (root / "train" / "img", root / "train"):
        if folder.is_dir():
            return folder
    if (root / LABELS_CSV).is_file():
        return root
    return None


def _label_csvs(root: Path) -> list[Path]:
    found = []
    folders = [root / "train", root / "train" / "img"]
    if not (root / "train").is_dir():
        folders.append(root)  # plain image folder (see train_folder)
    for folder in folders:
        if (folder / LABELS_CSV).is_file():
            found.append(folder / LABELS_CSV)
    return found


def find_train_items(root: PathLike, num_classes: int, classes: Optional[Sequence[str]] = None) -> list[TrainItem]:
    """The weakly labelled training images of a dataset, sorted by path.

    Labels come from ``train/sia_labels.csv`` (or ``train/img/sia_labels.csv``) for the images it lists,
    and from the file name for the others. When a CSV exists, images it does not list and whose names
    carry no label are skipped (with a log warning): they are simply not labelled yet. Without a CSV every
    image must carry a label in its name.

    Args:
        root: Dataset folder.
        num_classes: Length every label vector must have.
        classes: Class names the CSV header must match; None checks only the count.

    Raises:
        SIAError: Root or train folder missing or without labelled images, a label of the wrong length or
            all zeros, an unlabelled file name (without CSV), or a CSV row naming a missing image.
    """
    root = Path(root)
    if not root.is_dir():
        raise SIAError(f"dataset folder not found: {root}", fix="give the folder that holds train/ (and val/)")
    folder = train_folder(root)
    if folder is None:
        raise SIAError(
            f"no training folder in {root}: expected {root / 'train'} or {root / 'train' / 'img'}",
            fix="put the weakly labelled patches in train/ (labels in the file names, e.g. 'x-[1 0 1].png')",
        )
    csv_paths = _label_csvs(root)
    from_csv: dict[Path, np.ndarray] = {}
    for csv_path in csv_paths:
        for rel, labels in read_label_csv(csv_path, classes).items():
            if labels.size != num_classes:
                raise SIAError(
                    f"labels CSV {csv_path} has {labels.size} classes, expected {num_classes}",
                    fix="write one column per class of the dataset",
                )
            image = csv_path.parent / rel
            if not image.is_file():
                raise SIAError(
                    f"labels CSV {csv_path} lists '{rel}', but {image} does not exist",
                    fix="restore the image or delete its row from the CSV",
                )
            from_csv[_key(image)] = labels
    items: dict[Path, TrainItem] = {}
    skipped = 0
    for path in list_images(folder, recursive=True):
        key = _key(path)
        if key in from_csv:
            items[key] = TrainItem(path, from_csv.pop(key))
        elif csv_paths and "[" not in path.name:
            skipped += 1
        else:
            items[key] = TrainItem(path, parse_label_vector(path, num_classes))
    for key, labels in from_csv.items():  # CSV rows pointing outside the walked folder
        items[key] = TrainItem(key, labels)
    if skipped:
        log.warning(
            "%d training images in %s have no label (not in %s, none in the name); skipped",
            skipped,
            folder,
            LABELS_CSV,
        )
    if not items:
        raise SIAError(
            f"no labelled training images in {folder} (extensions {', '.join(IMAGE_EXTENSIONS)})",
            fix="add patches named like 'x-[1 0 1].png' or label them in " + LABELS_CSV,
        )
    return sorted(items.values(), key=lambda item: item.path.as_posix())


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


# --------------------------------------------------------------------------------- val / test


def _split_dir(root: Path, split: str) -> Optional[Path]:
    if split not in SPLIT_FOLDERS:
        raise SIAError(f"unknown split '{split}'", fix="use 'val' or 'test'")
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    return None


def has_split(root: PathLike, split: str) -> bool:
    """Whether ``root`` has the split ('val' also finds 'valid'; 'test') with img/ and mask/ folders and
    at least one image."""
    folder = _split_dir(Path(root), split)
    if folder is None or not (folder / "mask").is_dir():
        return False
    return bool(list_images(folder / "img"))


def find_split(root: PathLike, split: str, check_sizes: bool = True) -> list[EvalItem]:
    """Image/mask pairs of a split, sorted by image path.

    Masks are matched to images by relative folder and file stem (``img/a/x.jpg`` <-> ``mask/a/x.png``;
    a PNG mask is preferred when several extensions exist).

    Args:
        root: Dataset folder.
        split: 'val' (also finds 'valid/') or 'test'.
        check_sizes: Compare image and mask sizes from the file headers (cheap, no decoding).

    Raises:
        SIAError: Split or its img/ / mask/ folder missing or empty, a mask missing for an image, or an
            image/mask size mismatch (naming both files).
    """
    root = Path(root)
    if not root.is_dir():
        raise SIAError(f"dataset folder not found: {root}", fix="give the folder that holds train/ and val/")
    folder = _split_dir(root, split)
    if folder is None:
        names = " or ".join(str(root / n) for n in SPLIT_FOLDERS[split])
        raise SIAError(
            f"no '{split}' split in {root}: expected {names}",
            fix=f"add {root / SPLIT_FOLDERS[split][0]}/img and .../mask with matching file names",
        )
    img_dir, mask_dir = folder / "img", folder / "mask"
    for sub in (img_dir, mask_dir):
        if not sub.is_dir():
            raise SIAError(f"missing folder {sub}", fix=f"put images in {img_dir} and their masks in {mask_dir}")
    images = list_images(img_dir)
    if not images:
        raise SIAError(
            f"no images in {img_dir} (extensions {', '.join(IMAGE_EXTENSIONS)})",
            fix="add the images, or leave out this split",
        )
    masks: dict[tuple[str, str], Path] = {}
    for mask in list_images(mask_dir):
        key = (mask.parent.relative_to(mask_dir).as_posix(), mask.stem)
        # list_images sorts by path, so prefer .png explicitly rather than by alphabetical accident.
        if key not in masks or mask.suffix.lower() == ".png":
            masks[key] = mask
    pairs = []
    for image in images:
        key = (image.parent.relative_to(img_dir).as_posix(), image.stem)
        mask = masks.get(key)
        if mask is None:
            expected = mask_dir / key[0] / (key[1] + ".png")
            raise SIAError(
                f"no mask for image {image} (expected {expected})",
                fix="add the mask with the same file name, or remove the image from the split",
            )
        if check_sizes:
            isize, msize = image_size(image), image_size(mask)
            if isize != msize:
                raise SIAError(
                    f"image {image} is {isize[1]}x{isize[0]} but its mask {mask} is {msize[1]}x{msize[0]}",
                    fix="re-export the mask at the image's size",
                )
        pairs.append(EvalItem(image, mask))
    return pairs


def check_eval_pair(
    image_path: PathLike,
    mask_path: PathLike,
    num_classes: int,
    ignore_index: int,
    palette: Optional[Sequence[Sequence[int]]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask, checking that they match.

    Returns:
        (rgb (H, W, 3) uint8, mask (H, W) uint8), so callers need not read the files twice.

    Raises:
        SIAError: Either file unreadable, mask values outside the classes and ignore index, or a size
            mismatch (naming both files).
    """
    rgb = read_rgb(image_path)
    mask = read_mask(mask_path, num_classes, ignore_index, palette)
    if rgb.shape[:2] != mask.shape:
        raise SIAError(
            f"image {image_path} is {rgb.shape[1]}x{rgb.shape[0]} but its mask {mask_path} is "
            f"{mask.shape[1]}x{mask.shape[0]}",
            fix="re-export the mask at the image's size",
        )
    return rgb, mask
