"""npe2 sample data: synthetic H&E-like tiles from ``sia_core`` and their true masks (no download)."""

from __future__ import annotations

from typing import Any

from ._classes import SIA_META, ClassSet, label_colormap

__all__ = ["synthetic_tiles"]

N_TILES = 4
TILE_SIZE = 512
GAP = 16


def synthetic_tiles() -> list[tuple[Any, dict[str, Any], str]]:
    """Four 512 px synthetic H&E tiles laid out 2 x 2, each with its true mask as a hidden Labels layer.

    Classes are the WSSS4LUAD ones (tumor, stroma, normal; 3 = glass), so the tiles can be labelled with the
    ``wsss4luad`` class preset in the SIA widget.
    """
    from sia_core.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, sample_tiles

    classes = ClassSet.custom(list(SYNTHETIC_CLASSES[:3]), [list(c) for c in SYNTHETIC_PALETTE[:3]])
    colormap = label_colormap(classes)
    layers: list[tuple[Any, dict[str, Any], str]] = []
    truths = []
    for i, (rgb, mask) in enumerate(sample_tiles(N_TILES, TILE_SIZE)):
        offset = ((i // 2) * (TILE_SIZE + GAP), (i % 2) * (TILE_SIZE + GAP))
        name = f"synthetic H&E {i + 1}"
        layers.append((rgb, {"name": name, "rgb": True, "translate": offset}, "image"))
        truths.append(
            (
                mask,
                {
                    "name": f"true mask ({name})",
                    "translate": offset,
                    "colormap": colormap,
                    "opacity": 0.5,
                    "visible": False,
                    "metadata": {SIA_META: classes.metadata()},
                },
                "labels",
            )
        )
    return layers + truths
