"""How SIA's class sets become napari layer colours, features and metadata.

The class set itself (names, colours, ignore index, presets) is :class:`sia_core.classes.ClassSet`; this module
adds only what napari needs. The ignore index (glass / unlabelled) is the Labels layer's background value, so
napari's eraser marks pixels unlabelled and they are drawn transparent.
"""

from __future__ import annotations

from typing import Any, Optional

from sia_core.classes import ClassSet, class_set_for_folder, dataset_root, preset_matching

__all__ = [
    "SIA_META",
    "UNLABELLED",
    "ClassSet",
    "class_set_for_folder",
    "dataset_root",
    "display_colour",
    "label_colormap",
    "label_features",
    "preset_matching",
]

SIA_META = "sia"
"""Key of SIA's entry in a layer's ``metadata``."""
UNLABELLED = "unlabelled (not trained on)"
"""What the ignore index (napari's eraser, white glass) means, in the words shown on screen."""


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
