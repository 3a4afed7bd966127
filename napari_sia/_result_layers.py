"""The layers SIA adds for an image, tied to it in their metadata: names, looks and how to find them again.

Every layer SIA makes for an image (maps, masks, pseudo-masks, masks opened for it) carries
``metadata['sia']['image']``, the image's id (``ImageEntry.id``). Mask actions (Save correction, Export,
painting) look masks up by that link, never by selection or name alone, so an image's mask is never written
under another image's name.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._classes import SIA_META, ClassSet, label_colormap, label_features

__all__ = [
    "MAP_TITLES",
    "MAP_COLORMAP",
    "image_of",
    "link",
    "map_layer_name",
    "mask_layer_name",
    "layers_of",
    "masks_of",
    "style_mask",
    "MAP_LAYER_ATTRS",
    "layer_shape",
    "full_resolution",
]

MAP_TITLES = {
    "cam": "CAM",
    "inhibition": "inhibition",
    "activation": "activation",
    "rsm": "RSM",
}
"""Map key of ``sia_core.predictor.Prediction`` -> the word used in layer names."""

MAP_COLORMAP = "gray"
"""Maps are grey: no class colour of any preset is grey, so a map is never mistaken for a mask."""


def image_of(layer: Any) -> Optional[str]:
    """The id of the image a layer belongs to, or None for layers tied to no image."""
    meta = getattr(layer, "metadata", {}).get(SIA_META)
    return meta.get("image") if isinstance(meta, dict) else None


def link(layer: Any, image_id: str, **meta: Any) -> None:
    """Tie ``layer`` to the image ``image_id`` (and store ``meta`` beside the link)."""
    entry = layer.metadata.get(SIA_META)
    if not isinstance(entry, dict):
        entry = {}
    entry.update(meta, image=image_id)
    layer.metadata[SIA_META] = entry


def map_layer_name(kind: str, class_name: str, image_name: str) -> str:
    """``tumor CAM (img)``: the class first, so a name cut short in the layer list still says what it is."""
    return f"{class_name} {MAP_TITLES[kind]} ({image_name})"


def mask_layer_name(image_name: str) -> str:
    return f"mask ({image_name})"


def layers_of(viewer: Any, image_id: str) -> list[Any]:
    """Every layer tied to an image."""
    return [layer for layer in viewer.layers if image_of(layer) == image_id]


def masks_of(viewer: Any, image_id: str) -> list[Any]:
    """The Labels layers tied to an image, top of the layer list first."""
    from napari.layers import Labels

    return [
        layer for layer in reversed(list(viewer.layers)) if isinstance(layer, Labels) and image_of(layer) == image_id
    ]


def layer_shape(layer: Any) -> tuple[int, ...]:
    """(H, W[, C]) of a layer's full-resolution data."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return tuple(int(n) for n in np.shape(data))


def full_resolution(layer: Any) -> np.ndarray:
    """A layer's data as one array (the first level of a multiscale layer)."""
    return np.asarray(layer.data[0] if getattr(layer, "multiscale", False) else layer.data)


def style_mask(layer: Any, classes: ClassSet) -> None:
    """Class colours, class names on hover (``features``) and the eraser writing "unlabelled"."""
    layer.colormap = label_colormap(classes)
    layer.features = label_features(classes)


MAP_LAYER_ATTRS: dict[str, Any] = {
    "colormap": MAP_COLORMAP,
    "contrast_limits": (0.0, 1.0),
    "opacity": 1.0,
    "blending": "translucent",
    "visible": False,
}
"""How a map is added: hidden (the mask alone is the default view), grey, values 0..1 (a colour bar is shown)."""
