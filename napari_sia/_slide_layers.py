"""A slide prediction as napari layer data: the slide's multiscale image with the label pyramid over it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

from sia_core.slide import open_slide_levels, open_slide_prediction

__all__ = ["slide_layer_data"]


def slide_layer_data(
    result_path: Union[str, os.PathLike], slide_path: Optional[Union[str, os.PathLike]] = None
) -> list[tuple[Any, dict, str]]:
    """napari layer-data tuples (no napari import): the slide's multiscale image, then the label pyramid
    on top of it, scaled to the slide's level-0 pixels.

    Use as ``for data, kwargs, kind in slide_layer_data(out): getattr(viewer, f"add_{kind}")(data, **kwargs)``.

    Args:
        result_path: The ``.zarr`` written by :func:`sia_core.slide.predict_slide`.
        slide_path: The slide (default: the path recorded in the result).
    """
    pred = open_slide_prediction(result_path)
    slide = Path(slide_path) if slide_path is not None else Path(pred["slide"])
    layers: list[tuple[Any, dict, str]] = []
    if slide.is_file():
        layers.append((open_slide_levels(slide), {"name": slide.name, "multiscale": True, "rgb": True}, "image"))
    colors: dict[Any, Any] = {None: (0.0, 0.0, 0.0, 0.0)}
    for i, rgb in enumerate(pred["palette"] or []):
        if rgb is not None:
            colors[i] = tuple(v / 255 for v in rgb) + (1.0,)
    for value in (pred["fill"], pred["background"]):
        if value is not None:
            colors[int(value)] = (0.0, 0.0, 0.0, 0.0)
    s = pred["scale"]
    kwargs = {
        "name": f"{Path(result_path).name} labels",
        "multiscale": True,
        "scale": (s, s),
        "opacity": 0.5,
        "colormap": colors,
        "metadata": {"classes": pred["classes"], "sia_slide": pred["info"]},
    }
    layers.append((pred["labels"], kwargs, "labels"))
    return layers
