"""What every label format shares: validating a label map, class names and palettes; refusing to overwrite;
replacing a directory atomically.

Label maps are ``(H, W)`` uint8 or uint16 arrays of class indices; 255 (uint8) or 65535 (uint16) is the
conventional "unlabelled / ignore" value.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..classes import default_palette
from ..errors import SIAError

__all__ = [
    "FORMAT_VERSION",
    "Palette",
    "PathLike",
    "as_labels",
    "atomic_dir",
    "check_overwrite",
    "ignore_fill",
    "norm_classes",
    "norm_palette",
]

PathLike = Union[str, os.PathLike]
Palette = Sequence[Sequence[int]]

FORMAT_VERSION = 1
"""Version of the ``sia`` metadata every format stores beside the pixels."""


def check_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SIAError(
            f"{path} already exists; refusing to overwrite it",
            fix="pass overwrite=True (CLI: --overwrite) or choose another file name",
        )


def as_labels(labels: Any, what: str = "labels") -> np.ndarray:
    """Validate a label map and return it as uint8 or uint16 (H, W) without copying when already so."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise SIAError(f"{what} must be a 2-D (H, W) array of class indices, got shape {arr.shape}")
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise SIAError(
            f"{what} must hold integer class indices, got dtype {arr.dtype}",
            fix="take the argmax over classes (or round) before exporting",
        )
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 65535:
        raise SIAError(f"{what} values must lie in 0..65535, found {lo}..{hi}")
    return arr.astype(np.uint8 if hi <= 255 else np.uint16)


def norm_classes(classes: Optional[Iterable[str]]) -> Optional[list[str]]:
    if classes is None:
        return None
    out = [str(c) for c in classes]
    if len(set(out)) != len(out):
        raise SIAError(f"class names must be unique, got {out}")
    return out


def norm_palette(palette: Optional[Palette], n: Optional[int]) -> Optional[list[list[int]]]:
    """RGB triples as plain ints; RGBA input loses its alpha (label formats here store opaque colours)."""
    if palette is None:
        return default_palette(n) if n else None
    out = []
    for i, col in enumerate(np.asarray(palette).reshape(len(palette), -1).tolist()):
        if len(col) not in (3, 4) or any(not 0 <= v <= 255 for v in col):
            raise SIAError(f"palette entry {i} must be RGB (or RGBA) values in 0..255, got {col}")
        out.append([int(v) for v in col[:3]])
    if n is not None and len(out) < n:
        out += default_palette(n)[len(out) :]
    return out


def ignore_fill(dtype: np.dtype) -> int:
    return 255 if np.dtype(dtype) == np.uint8 else 65535


def atomic_dir(path: Path, build: Callable[[Path], None], overwrite: bool) -> Path:
    """Build a directory at a temporary name beside ``path``, then rename it into place.

    A directory cannot be renamed over a non-empty one, so an existing target is first moved aside and only
    deleted once the new one is in place.
    """
    check_overwrite(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not mkdtemp: its 0700 mode would survive the rename and hide the store from other users
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        build(tmp)
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
