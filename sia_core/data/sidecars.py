"""Where SIA keeps its files beside the user's images: corrected masks, pseudo-masks and exported masks.

Plain path rules (no torch), shared by the training data loader, the CLI and the napari widget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

__all__ = [
    "CORRECTIONS_DIR",
    "PSEUDO_DIR",
    "EXPORTS_DIR",
    "OUTPUT_DIRS",
    "correction_path",
    "find_correction",
    "pseudo_label_path",
    "export_path",
]

CORRECTIONS_DIR = "sia_masks"
"""Folder beside the images where the user's corrected masks are saved (palette PNG, same stem)."""
PSEUDO_DIR = "sia_pseudo"
"""Folder beside the images where pseudo-masks are written by default."""
EXPORTS_DIR = "sia_exports"
"""Folder beside the images where the widget suggests exporting masks (TIFF, PNG, OME-Zarr, GeoJSON)."""
OUTPUT_DIRS = (CORRECTIONS_DIR, PSEUDO_DIR, EXPORTS_DIR)
"""SIA's output folders: image listings skip them, so a mask is never taken for an image."""


def correction_path(image: Union[str, Path]) -> Path:
    """Where the corrected mask of ``image`` is saved: ``<image folder>/sia_masks/<stem>.png``."""
    image = Path(image)
    return image.parent / CORRECTIONS_DIR / f"{image.stem}.png"


def find_correction(image: Union[str, Path]) -> Optional[Path]:
    """The corrected mask of ``image`` if the user saved one."""
    p = correction_path(image)
    return p if p.is_file() else None


def pseudo_label_path(image: Union[str, Path], out_dir: Optional[Union[str, Path]] = None) -> Path:
    """Where the pseudo-mask of ``image`` goes: ``out_dir/<stem>.png`` or ``<image folder>/sia_pseudo/<stem>.png``."""
    image = Path(image)
    folder = Path(out_dir) if out_dir is not None else image.parent / PSEUDO_DIR
    return folder / f"{image.stem}.png"


def export_path(image: Union[str, Path], suffix: str) -> Path:
    """Where the widget suggests exporting the mask of ``image``: ``<image folder>/sia_exports/<stem>_mask<suffix>``."""
    image = Path(image)
    return image.parent / EXPORTS_DIR / f"{image.stem}_mask{suffix}"
