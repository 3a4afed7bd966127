"""Class sets (names, colours, ignore index) and how they become napari layer colours and metadata.

Class index ``i`` is label value ``i`` everywhere (layers, exported files, corrections), exactly as in
``sia_core``; the ignore index (glass / unlabelled) is the Labels layer's background value, so napari's
eraser marks pixels unlabelled and they are drawn transparent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sia_core.data.layout import DATASET_PRESETS, DATASET_YAML, default_palette
from sia_core.errors import SIAError

__all__ = [
    "ClassSet",
    "class_set_for_folder",
    "label_colormap",
    "label_features",
    "display_colour",
    "UNLABELLED",
    "SIA_META",
]

SIA_META = "sia"
"""Key of SIA's entry in a layer's ``metadata``."""
UNLABELLED = "unlabelled (not trained on)"
"""What the ignore index (napari's eraser, white glass) means, in the words shown on screen."""


@dataclass
class ClassSet:
    """The tissue classes of a project.

    Attributes:
        names: class names in index order.
        palette: one RGB colour per class.
        ignore_index: label value of unlabelled pixels / glass (never a class index).
        white_background: mark white glass as ignored in pseudo-labels (LUAD); False for BCSS.
        preset: the dataset preset these come from, or None for classes typed by the user.
        ignore_colour: colour written for the ignore index in palette files (None: white).
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

    @classmethod
    def from_preset(cls, name: str) -> ClassSet:
        """One of ``sia_core.data.layout.DATASET_PRESETS``."""
        if name not in DATASET_PRESETS:
            raise SIAError(f"unknown class preset '{name}'", fix=f"use one of {', '.join(DATASET_PRESETS)}")
        return cls.from_description(DATASET_PRESETS[name], preset=name)

    @classmethod
    def from_description(cls, desc: dict[str, Any], preset: Optional[str] = None) -> ClassSet:
        """From a ``dataset_description`` dict (a preset, possibly overridden by a dataset.yaml)."""
        names = [str(n) for n in desc["classes"]]
        palette = [list(map(int, c)) for c in desc["palette"]]
        n = len(names)
        extra = palette[n] if len(palette) > n else None
        return cls(
            names=names,
            palette=palette[:n],
            ignore_index=int(desc.get("ignore_index", n)),
            white_background=bool(desc.get("white_background", True)),
            preset=preset,
            ignore_colour=extra,
        )

    @classmethod
    def custom(cls, names: list[str], palette: Optional[list[list[int]]] = None) -> ClassSet:
        """Classes typed by the user; colours default to distinct ones, ignore index = class count."""
        colours = [list(c) for c in (palette or [])][: len(names)]
        colours += default_palette(len(names))[len(colours) : len(names)]
        return cls(names=list(names), palette=colours, ignore_index=len(names), preset=None)

    def copy(self) -> ClassSet:
        return copy.deepcopy(self)

    def validate(self) -> None:
        """Raise SIAError for empty, blank or duplicate names."""
        if not self.names:
            raise SIAError("no classes", fix="add at least one class")
        if any(not n.strip() for n in self.names):
            raise SIAError("a class has an empty name", fix="type a name for every class")
        if len(set(self.names)) != len(self.names):
            raise SIAError(f"class names must be distinct, got {self.names}", fix="rename the duplicate")
        if self.ignore_index < self.num_classes or self.ignore_index > 255:
            raise SIAError(f"ignore index {self.ignore_index} is a class index", fix="use the class count")

    def description(self) -> dict[str, Any]:
        """The dataset description ``sia_core.data.layout.apply_to_data_config`` takes."""
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

    def full_palette(self) -> list[list[int]]:
        """Palette for palette-PNG files: class colours, then (up to the ignore index) the ignore colour."""
        pal = [list(c) for c in self.palette]
        ignore = list(self.ignore_colour) if self.ignore_colour is not None else [255, 255, 255]
        while len(pal) <= self.ignore_index:
            pal.append(ignore)
        return pal

    def metadata(self) -> dict[str, Any]:
        """What SIA stores in a layer's ``metadata['sia']`` (read back by the writer and the widget)."""
        return {
            "classes": list(self.names),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ClassSet:
        names = list(meta["classes"])
        return cls(
            names=names,
            palette=[list(c) for c in (meta.get("palette") or default_palette(len(names))[: len(names)])],
            ignore_index=int(meta.get("ignore_index", len(names))),
        )

    def same_classes(self, other: ClassSet) -> bool:
        return self.names == other.names

    def to_yaml_dict(self) -> dict[str, Any]:
        """Content of the dataset.yaml the widget writes for custom classes."""
        return {
            **self.description(),
            "source": "napari-sia",
            "description": "classes typed in the SIA napari widget",
        }


def preset_matching(names: list[str]) -> Optional[str]:
    """The dataset preset whose classes are exactly ``names`` (in order), if any."""
    for key, desc in DATASET_PRESETS.items():
        if list(desc["classes"]) == list(names):
            return key
    return None


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

    Returns None when nothing says what the classes are (the widget then keeps its current classes).
    """
    from sia_core.data.layout import dataset_description

    root = dataset_root(folder)
    for candidate in (Path(folder), root):
        if (candidate / DATASET_YAML).is_file():
            desc = dataset_description(candidate)
            return ClassSet.from_description(desc, preset=preset_matching(desc["classes"]))
    if root.name.lower() in DATASET_PRESETS:
        return ClassSet.from_preset(root.name.lower())
    return None


def display_colour(rgb: list[int], min_value: float = 0.9) -> list[int]:
    """A class colour as it is drawn over H&E: the same hue and saturation, brightened to HSV value >= ``min_value``.

    Dark palette colours (WSSS4LUAD's navy tumour, olive stroma) vanish over haematoxylin at any opacity; files
    keep the dataset's colours, only the screen brightens them.
    """
    import colorsys

    r, g, b = (v / 255 for v in rgb[:3])
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if v >= min_value:
        return [int(c) for c in rgb[:3]]
    return [int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, min_value)]


def label_features(classes: ClassSet) -> dict[str, list[Any]]:
    """A Labels layer's ``features``: napari then shows the class name of the label under the cursor."""
    return {
        "index": [*range(classes.num_classes), classes.ignore_index],
        "class": [*classes.names, UNLABELLED],
    }


def label_colormap(classes: ClassSet, transparent: tuple[int, ...] = ()) -> Any:
    """napari ``DirectLabelColormap``: class colours (:func:`display_colour`), the ignore index transparent.

    Args:
        classes: the class set.
        transparent: further label values to leave undrawn (e.g. a slide result's "no tile" fill).
    """
    from napari.utils.colormaps import DirectLabelColormap

    colours: dict[Optional[int], Any] = {
        i: [*(v / 255 for v in display_colour(c)), 1.0] for i, c in enumerate(classes.palette)
    }
    colours[classes.ignore_index] = [0.0, 0.0, 0.0, 0.0]
    if classes.ignore_index != 255:
        colours[255] = [0.0, 0.0, 0.0, 0.0]  # "unlabelled" in files written by other tools
    for value in transparent:
        colours[int(value)] = [0.0, 0.0, 0.0, 0.0]
    colours[None] = [0.0, 0.0, 0.0, 1.0]  # values without a class: black, so they are noticed
    return DirectLabelColormap(color_dict=colours, background_value=classes.ignore_index)
