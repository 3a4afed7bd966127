"""How SIA's class sets become napari layer colours and metadata.

The class set itself (names, colours, ignore index, presets) is :class:`sia_core.classes.ClassSet`; this module
adds only what napari needs. The ignore index (glass / unlabelled) is the Labels layer's background value, so
napari's eraser marks pixels unlabelled and they are drawn transparent.
"""

from __future__ import annotations

from typing import Any, Optional

from sia_core.classes import ClassSet, class_set_for_folder, dataset_root, preset_matching

__all__ = ["SIA_META", "ClassSet", "class_set_for_folder", "dataset_root", "label_colormap", "preset_matching"]

SIA_META = "sia"
"""Key of SIA's entry in a layer's ``metadata``."""


def label_colormap(classes: ClassSet, transparent: tuple[int, ...] = ()) -> Any:
    """napari ``DirectLabelColormap``: class colours, ignore index transparent and the eraser's value.

    Args:
        classes: the class set.
        transparent: further label values to leave undrawn (e.g. a slide result's "no tile" fill).
    """
    from napari.utils.colormaps import DirectLabelColormap

    colours: dict[Optional[int], Any] = {
        i: [c[0] / 255, c[1] / 255, c[2] / 255, 1.0] for i, c in enumerate(classes.palette)
    }
    colours[classes.ignore_index] = [0.0, 0.0, 0.0, 0.0]
    if classes.ignore_index != 255:
        colours[255] = [0.0, 0.0, 0.0, 0.0]  # "unlabelled" in files written by other tools
    for value in transparent:
        colours[int(value)] = [0.0, 0.0, 0.0, 0.0]
    colours[None] = [0.0, 0.0, 0.0, 1.0]  # values without a class: black, so they are noticed
    return DirectLabelColormap(color_dict=colours, background_value=classes.ignore_index)
