"""The tissue classes of a project: names, colours, the ignore index, the dataset presets, the default palette.

Class index ``i`` is label value ``i`` everywhere (masks, exported files, napari layers, corrections). The
ignore index (glass / unlabelled, never a class) is the value no loss trains on and no metric scores.
:class:`ClassSet` is the one typed description of them; :class:`sia_core.config.DataConfig` holds the same
values as plain fields (it is saved with every run) and converts to and from a ClassSet
(:meth:`ClassSet.from_data_config`, :meth:`ClassSet.to_data_config`); ``dataset.yaml`` and the presets are
the dict form (:meth:`ClassSet.description`).
"""

from __future__ import annotations

import colorsys
import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .errors import SIAError

if TYPE_CHECKING:
    from .config import DataConfig

__all__ = [
    "CLASS_PRESETS",
    "DATASET_PRESETS",
    "IGNORE_COLOUR",
    "ClassSet",
    "class_set_for_folder",
    "dataset_root",
    "default_palette",
    "preset_matching",
]

IGNORE_COLOUR = (255, 255, 255)
"""Colour of the ignore index in palette files when a class set names none: white, the colour of glass."""

# Trubetskoy's 20 distinct colours, most distinct first; golden-ratio hue steps after them.
_DISTINCT = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240),
    (245, 130, 48), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
)  # fmt: skip


def default_palette(n: int) -> list[list[int]]:
    """``n`` distinct RGB colours (0-255): the 20 of Trubetskoy's list, then golden-ratio hue steps."""
    colours = [list(c) for c in _DISTINCT[:n]]
    for i in range(len(colours), n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.9)
        colours.append([round(r * 255), round(g * 255), round(b * 255)])
    return colours


@dataclass
class ClassSet:
    """The tissue classes of a project.

    Attributes:
        names: Class names in index order.
        palette: One RGB colour per class.
        ignore_index: Label value of unlabelled pixels / glass (never a class index).
        white_background: Mark white glass as ignored in pseudo-labels (LUAD); False for BCSS.
        preset: The dataset preset these come from, or None for classes typed by the user.
        ignore_colour: Colour written for the ignore index in palette files (None: :data:`IGNORE_COLOUR`).
    """

    names: list[str]
    palette: list[list[int]]
    ignore_index: int
    white_background: bool = True
    preset: Optional[str] = None
    ignore_colour: Optional[list[int]] = field(default=None)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    # ------------------------------------------------------------------------------------------ makers
    @classmethod
    def from_preset(cls, name: str) -> ClassSet:
        """One of :data:`CLASS_PRESETS` (a copy)."""
        if name not in CLASS_PRESETS:
            raise SIAError(f"unknown class preset '{name}'", fix=f"use one of {', '.join(CLASS_PRESETS)}")
        return CLASS_PRESETS[name].copy()

    @classmethod
    def from_description(cls, desc: dict[str, Any], preset: Optional[str] = None) -> ClassSet:
        """From a dataset description (a preset's dict, possibly overridden by a dataset.yaml)."""
        names = [str(n) for n in desc["classes"]]
        palette = [list(map(int, c)) for c in desc.get("palette") or default_palette(len(names))]
        n = len(names)
        palette += default_palette(n)[len(palette) : n]
        return cls(
            names=names,
            palette=palette[:n],
            ignore_index=int(desc.get("ignore_index", n)),
            white_background=bool(desc.get("white_background", True)),
            preset=preset,
            ignore_colour=palette[n] if len(palette) > n else None,
        )

    @classmethod
    def custom(cls, names: list[str], palette: Optional[list[list[int]]] = None) -> ClassSet:
        """Classes typed by the user; colours default to distinct ones, ignore index = class count."""
        colours = [list(c) for c in (palette or [])][: len(names)]
        colours += default_palette(len(names))[len(colours) : len(names)]
        return cls(names=list(names), palette=colours, ignore_index=len(names), preset=None)

    @classmethod
    def from_data_config(cls, data: DataConfig) -> ClassSet:
        """The classes of a run's :class:`~sia_core.config.DataConfig`."""
        desc = {f: getattr(data, f) for f in ("classes", "palette", "ignore_index", "white_background")}
        return cls.from_description(desc, preset=data.name if data.name in CLASS_PRESETS else None)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ClassSet:
        """From :meth:`metadata` (a napari layer's ``metadata['sia']``, a GeoJSON's ``sia`` member)."""
        names = [str(n) for n in meta["classes"]]
        palette = [list(map(int, c)) for c in (meta.get("palette") or []) if c is not None][: len(names)]
        palette += default_palette(len(names))[len(palette) :]
        return cls(names=names, palette=palette, ignore_index=int(meta.get("ignore_index", len(names))))

    def copy(self) -> ClassSet:
        return copy.deepcopy(self)

    # ------------------------------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise SIAError for empty, blank or duplicate names, or an ignore index that is a class index."""
        if not self.names:
            raise SIAError("no classes", fix="add at least one class")
        if any(not n.strip() for n in self.names):
            raise SIAError("a class has an empty name", fix="type a name for every class")
        if len(set(self.names)) != len(self.names):
            raise SIAError(f"class names must be distinct, got {self.names}", fix="rename the duplicate")
        if self.ignore_index < self.num_classes or self.ignore_index > 255:
            raise SIAError(f"ignore index {self.ignore_index} is a class index", fix="use the class count")

    def same_classes(self, other: ClassSet) -> bool:
        return self.names == other.names

    # ------------------------------------------------------------------------------------------ other forms
    def description(self) -> dict[str, Any]:
        """The dataset-description dict (``dataset.yaml`` keys; what the presets are written as)."""
        palette = [list(c) for c in self.palette]
        if self.ignore_colour is not None:
            palette.append(list(self.ignore_colour))
        return {
            "name": self.preset or "custom",
            "classes": list(self.names),
            "ignore_index": self.ignore_index,
            "palette": palette,
            "white_background": self.white_background,
        }

    def to_data_config(self, data: Optional[DataConfig] = None) -> DataConfig:
        """A copy of ``data`` (default: a fresh DataConfig) holding these classes."""
        from .config import DataConfig

        desc = self.description()
        return dataclasses.replace(data if data is not None else DataConfig(), **desc)

    def full_palette(self) -> list[list[int]]:
        """Palette for palette-PNG files: class colours, then (up to the ignore index) the ignore colour."""
        pal = [list(c) for c in self.palette]
        ignore = list(self.ignore_colour) if self.ignore_colour is not None else list(IGNORE_COLOUR)
        while len(pal) <= self.ignore_index:
            pal.append(ignore)
        return pal

    def metadata(self) -> dict[str, Any]:
        """Names, colours and ignore index as plain JSON (napari layer metadata, GeoJSON ``sia`` member)."""
        return {
            "classes": list(self.names),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
        }

    def to_yaml_dict(self, source: str = "napari-sia") -> dict[str, Any]:
        """Content of the dataset.yaml written for classes typed by the user."""
        return {**self.description(), "source": source, "description": "classes typed in the SIA napari widget"}


_WHITE = list(IGNORE_COLOUR)

CLASS_PRESETS: dict[str, ClassSet] = {
    "luad-histoseg": ClassSet(
        ["TE", "NEC", "LYM", "TAS"], [[205, 51, 51], [0, 255, 0], [65, 105, 225], [255, 165, 0]], 4,
        True, "luad-histoseg", _WHITE,
    ),
    "bcss-wsss": ClassSet(
        ["TUM", "STR", "LYM", "NEC"], [[255, 0, 0], [0, 255, 0], [0, 0, 255], [153, 0, 255]], 4,
        False, "bcss-wsss", _WHITE,
    ),
    "wsss4luad": ClassSet(
        ["tumor", "stroma", "normal"], [[0, 64, 128], [64, 128, 0], [243, 152, 0]], 3, True, "wsss4luad"
    ),
}  # fmt: skip
"""The classes of the public datasets (LUAD-HistoSeg, BCSS-WSSS, WSSS4LUAD; docs/method.md §6.2-6.4)."""

DATASET_PRESETS: dict[str, dict[str, Any]] = {k: v.description() for k, v in CLASS_PRESETS.items()}
""":data:`CLASS_PRESETS` as dataset descriptions; a dataset.yaml overrides any key."""


def preset_matching(names: list[str]) -> Optional[str]:
    """The dataset preset whose classes are exactly ``names`` (in order), if any."""
    return next((key for key, c in CLASS_PRESETS.items() if c.names == list(names)), None)


def dataset_root(folder: Path) -> Path:
    """Dataset root of an image folder: ``X`` for ``X/train`` or ``X/train/img``, else the folder itself."""
    folder = Path(folder)
    if folder.name == "img" and folder.parent.name == "train":
        return folder.parent.parent
    if folder.name == "train":
        return folder.parent
    return folder


def class_set_for_folder(folder: Path) -> Optional[ClassSet]:
    """Classes recorded for an image folder: its dataset.yaml (or a preset named like the dataset root).

    Returns None when nothing says what the classes are.
    """
    from .data.layout import DATASET_YAML, dataset_description

    root = dataset_root(folder)
    for candidate in (Path(folder), root):
        if (candidate / DATASET_YAML).is_file():
            desc = dataset_description(candidate)
            return ClassSet.from_description(desc, preset=preset_matching(desc["classes"]))
    if root.name.lower() in CLASS_PRESETS:
        return ClassSet.from_preset(root.name.lower())
    return None
