"""Synthetic H&E-like patches with exact masks, for tests, demos and quick experiments.

Made by project code only (no downloads), seeded and vectorised (about 300 patches of 224 px in a few
seconds on one core). Tissue is rendered with the Beer-Lambert colour model of H&E: each pixel holds a
hematoxylin and an eosin concentration, and RGB = 255 * 10^-(c_H * h + c_E * e) with per-patch jittered
stain vectors h, e (Ruifrok & Johnston). The classes differ the way they do under a microscope
at low power, in both colour and texture:

* 0 tumor: solid sheets and nests of large, crowded, pleomorphic hyperchromatic nuclei in purplish
  (basophilic) cytoplasm;
* 1 stroma: deep pink wavy collagen fibres with sparse elongated nuclei along them;
* 2 normal: lung alveoli, thin pale septa with small round dark nuclei around white air spaces (marked as
  glass in the mask, as WSSS4LUAD marks alveolar space background);
* 3 necrosis (only with ``classes=4``): pale, smeared eosin with granular nuclear debris;
* the ignore index (= number of classes): white glass.

Per-patch stain and density jitter makes the class colour ranges overlap at their tails, so colour alone
separates most but not all pixels; texture does the rest. Regions are smooth random fields (argmax of
upsampled noise), so most patches hold two or three classes, as in real data. The classes are told apart
more easily than real tissue's: the ``sia-core demo`` model, a ViT trained from scratch for minutes, has
to learn them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import yaml
from PIL import Image
from scipy import ndimage

from ..errors import SIAError
from ..io_utils import atomic_write, atomic_write_text
from .images import write_palette_png
from .labels import format_label_vector

__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PALETTE",
    "make_synthetic_region",
    "make_synthetic_dataset",
    "sample_tiles",
    "image_labels",
]

SYNTHETIC_CLASSES = ["tumor", "stroma", "normal", "necrosis"]
"""Class names in index order; ``classes=3`` uses the first three (the WSSS4LUAD classes)."""

SYNTHETIC_PALETTE = [[0, 64, 128], [64, 128, 0], [243, 152, 0], [180, 60, 180]]
"""Class colours (the first three are WSSS4LUAD's); white is added for the ignore index."""

# Ruifrok & Johnston optical densities (log10) per unit stain concentration.
_H_VEC = np.array([0.650, 0.704, 0.286], dtype=np.float32)
_E_VEC = np.array([0.072, 0.990, 0.105], dtype=np.float32)

# Per class: (cytoplasm/ECM eosin range, background hematoxylin range, nuclei per px^2 range,
#             nucleus semi-axis a range, b/a ratio range, nuclear hematoxylin range).
# Tumour is basophilic (hematoxylin-rich background), stroma eosinophilic, normal septa pale; per-patch stain
# gains (0.7-1.3) make neighbouring ranges overlap at their tails. Shape, size and density differ too.
_TISSUE = {
    0: ((0.14, 0.32), (0.14, 0.28), (1 / 90, 1 / 55), (3.5, 6.5), (0.6, 0.95), (0.75, 1.15)),
    1: ((0.42, 0.70), (0.01, 0.06), (1 / 1100, 1 / 600), (5.0, 8.5), (0.22, 0.38), (0.60, 0.95)),
    2: ((0.22, 0.40), (0.05, 0.11), (1 / 160, 1 / 60), (1.8, 3.0), (0.85, 1.0), (0.85, 1.25)),
    3: ((0.20, 0.40), (0.06, 0.14), (1 / 90, 1 / 50), (0.8, 1.8), (0.5, 1.0), (0.35, 0.70)),
}
_REGION_CELL = 48.0
"""Pixels per cell of the region noise: sets the typical size of a tissue region."""
_MIN_PRESENT = 0.02
"""A class is in the image-level label when it covers at least this fraction of the patch."""


def make_synthetic_region(
    size: Union[int, tuple[int, int]], rng: np.random.Generator, classes: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic H&E region.

    Args:
        size: Side length, or (height, width), in pixels.
        rng: Source of all randomness (same state -> same output).
        classes: Number of tissue classes, 1..4 (see the module docstring); the mask marks glass with
            this value (the ignore index).

    Returns:
        (rgb (H, W, 3) uint8, mask (H, W) uint8 with values 0..classes-1 and ``classes`` for glass).
    """
    if not 1 <= classes <= len(_TISSUE):
        raise ValueError(f"classes must be in 1..{len(_TISSUE)}, got {classes}")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mask = _layout(h, w, rng, classes)
    if classes > 2:
        _alveoli(mask, rng, glass=classes)

    # Per-patch stain variation: vectors and overall amounts differ between slides and scanners.
    h_vec = _H_VEC * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    e_vec = _E_VEC * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    h_gain, e_gain = rng.uniform(0.7, 1.3, 2)

    nuclei = np.zeros((h, w), np.float32)
    mottle = _smooth_noise(rng, h, w, cell=6.0)
    present = np.bincount(mask.reshape(-1), minlength=classes + 1) > 0
    # Collagen fibres only where there is stroma: the field costs as much as the rest of the texture.
    fibres, fibre_angle = _fibres(rng, h, w) if classes > 1 and present[1] else (mottle, 0.0)
    # Per-class stain amounts, looked up through the mask; glass (index ``classes``) gets none.
    e_base = np.zeros(classes + 1, np.float32)
    h_base = np.zeros(classes + 1, np.float32)
    for c in range(classes):
        e_rng, hb_rng, dens_rng, a_rng, ratio_rng, hn_rng = _TISSUE[c]
        e_base[c], h_base[c] = rng.uniform(*e_rng), rng.uniform(*hb_rng)
        if present[c]:
            _draw_nuclei(nuclei, mask, c, rng, dens_rng, a_rng, ratio_rng, hn_rng, fibre_angle)
    texture = np.where(mask == 1, 0.7 + 0.6 * fibres, 0.85 + 0.2 * mottle)  # collagen vs mottled cytoplasm
    if classes > 3:
        texture = np.where(mask == 3, 0.8 + 0.35 * mottle, texture)  # smeared, structureless eosin
    texture = np.maximum(texture, 0.0)
    # Chromatin is granular: modulate the nuclear stain with fine noise; nuclei push the cytoplasm aside.
    grain = 0.75 + 0.25 * rng.random((h, w), dtype=np.float32)
    hema = h_base[mask] + nuclei * grain
    eosin = e_base[mask] * texture * (1.0 - 0.6 * np.minimum(nuclei, 1.0))
    # Optics: a slight blur so edges are not pixel-sharp.
    hema = ndimage.gaussian_filter(hema * np.float32(h_gain), 0.6)
    eosin = ndimage.gaussian_filter(eosin * np.float32(e_gain), 0.6)
    od = hema[..., None] * h_vec + eosin[..., None] * e_vec + np.float32(rng.uniform(0.01, 0.035))
    od *= np.float32(-np.log(10.0))
    rgb = np.exp(od, out=od)
    rgb *= 255.0
    # Sensor noise, shared by the three channels (luminance noise): a third of the random numbers.
    rgb += (2.0 * rng.standard_normal((h, w), dtype=np.float32) + 0.5)[..., None]  # +0.5: round on cast
    return np.clip(rgb, 0, 255, out=rgb).astype(np.uint8), mask


def image_labels(mask: np.ndarray, classes: int, min_fraction: float = _MIN_PRESENT) -> np.ndarray:
    """Image-level labels of a mask: classes covering at least ``min_fraction`` of all its pixels."""
    counts = np.bincount(mask.reshape(-1), minlength=classes + 1)[:classes]
    return (counts >= min_fraction * mask.size).astype(np.int64)


def make_synthetic_dataset(
    root: Union[str, os.PathLike],
    n_train: int = 240,
    n_val: int = 60,
    size: int = 224,
    seed: int = 0,
    n_test: int = 0,
    classes: int = 3,
) -> Path:
    """Write a synthetic dataset in the WSSS-Tissue layout.

    ::

        root/dataset.yaml                 classes, ignore_index (= classes), palette, white_background
        root/train/synth_0000-[1 1 0].png labels = classes covering >= 2% of the patch
        root/val/img/synth_val_0000.png   root/val/mask/synth_val_0000.png (palette PNG)
        root/test/...                     only when n_test > 0

    Args:
        root: Output folder; created if needed. It must not already hold train/, val/ or test/ images.
        n_train: Number of weakly labelled training patches.
        n_val: Number of validation patches with masks.
        size: Patch side in pixels.
        seed: Same seed -> byte-identical files.
        n_test: Number of test patches with masks.
        classes: Number of tissue classes (1..4).

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    for split in ("train", "val", "test"):
        if (root / split).is_dir() and any((root / split).iterdir()):
            raise SIAError(
                f"{root / split} already exists and is not empty",
                fix="give an empty or new folder for the synthetic dataset",
            )
    names = SYNTHETIC_CLASSES[:classes]
    palette = SYNTHETIC_PALETTE[:classes] + [[255, 255, 255]]
    for i in range(n_train):
        rng = np.random.default_rng([seed, 0, i])
        rgb, mask = _labelled_region(size, rng, classes)
        labels = image_labels(mask, classes)
        _save_rgb(root / "train" / f"synth_{i:04d}-{format_label_vector(labels)}.png", rgb)
    for split, count, split_id in (("val", n_val, 1), ("test", n_test, 2)):
        for i in range(count):
            rng = np.random.default_rng([seed, split_id, i])
            rgb, mask = _labelled_region(size, rng, classes)
            name = f"synth_{split}_{i:04d}.png"
            _save_rgb(root / split / "img" / name, rgb)
            write_palette_png(root / split / "mask" / name, mask, palette)
    desc = {
        "name": "synthetic",
        "classes": names,
        "ignore_index": classes,
        "palette": palette,
        "white_background": True,
    }
    header = f"# Synthetic H&E-like dataset made by sia_core.data.synthetic (seed {seed}).\n"
    body = yaml.safe_dump(desc, sort_keys=False, default_flow_style=None)  # flow style: [r, g, b] per line
    atomic_write_text(root / "dataset.yaml", header + body)
    return root


def sample_tiles(n: int = 4, size: int = 512, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` synthetic 3-class regions with masks (glass = 3), for napari sample data and demos.

    Each tile holds at least two tissue classes, so every tile has something to segment.
    """
    return [_labelled_region(size, np.random.default_rng([seed, 3, i]), 3, min_classes=2) for i in range(n)]


# ------------------------------------------------------------------------------------------- helpers


def _labelled_region(
    size: int, rng: np.random.Generator, classes: int, min_classes: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    # A patch of glass only has no image-level label; draw again (deterministically, same rng).
    for _ in range(50):
        rgb, mask = make_synthetic_region(size, rng, classes)
        if image_labels(mask, classes).sum() >= min(min_classes, classes):
            break
    return rgb, mask


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    img = Image.fromarray(rgb)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG", compress_level=1))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float, channels: int = 0) -> np.ndarray:
    """Smooth noise of roughly unit std and feature size ``cell`` px: coarse noise, B-spline upsampled.

    Returns (h, w) when ``channels`` is 0, else (channels, h, w).
    """
    iy, by = _bspline_taps(h, cell)
    ix, bx = _bspline_taps(w, cell)
    coarse = rng.standard_normal((max(channels, 1), int(iy.max()) + 4, int(ix.max()) + 4)).astype(np.float32)
    # Each fine pixel mixes 4x4 knots; gathering the 4 taps per axis avoids BLAS, whose threads thrash on
    # small matrices when cores are shared.
    rows = sum(by[:, k, None] * coarse[:, iy + k, :] for k in range(4))  # (c, h, m)
    # Gather whole rows (fast) rather than columns (slow fancy indexing): work on the transpose.
    rows_t = np.ascontiguousarray(rows.transpose(0, 2, 1))  # (c, m, h)
    fine_t = sum(bx[:, k, None] * rows_t[:, ix + k, :] for k in range(4))  # (c, w, h)
    fine = np.ascontiguousarray(fine_t.transpose(0, 2, 1))
    return fine if channels else fine[0]


def _bspline_taps(n: int, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """First knot index (n,) and the 4 cubic B-spline weights (n, 4) of each of n fine positions."""
    t = np.arange(n, dtype=np.float32) / cell
    i0 = np.floor(t).astype(np.intp)
    f = (t - i0)[:, None]
    weights = np.concatenate(
        [(1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6],
        axis=1,
    )
    # Unit-norm taps give every pixel unit variance (i.i.d. knots), with no costly std over the image.
    weights /= np.sqrt((weights**2).sum(axis=1, keepdims=True))
    return i0, weights.astype(np.float32)


def _layout(h: int, w: int, rng: np.random.Generator, classes: int) -> np.ndarray:
    """Smooth random regions: argmax over one noise field per present class (and glass, if any)."""
    # How many tissue classes this patch holds: one alone is rarer than a mix, as in real data.
    weights = np.array([0.3, 0.45, 0.25, 0.15][: min(classes, 4)])
    n_present = rng.choice(np.arange(1, len(weights) + 1), p=weights / weights.sum())
    channels = sorted(rng.choice(classes, size=n_present, replace=False).tolist())
    bias = rng.normal(0.0, 0.4, size=n_present).tolist()
    if rng.random() < 0.35:
        channels.append(classes)
        bias.append(rng.uniform(-1.6, -0.6))  # glass usually covers a minority of the patch
    if len(channels) == 1:
        return np.full((h, w), channels[0], np.uint8)
    # Regions are tens of pixels wide: computing them at half resolution costs a quarter and looks the same.
    hh, ww = (h + 1) // 2, (w + 1) // 2
    fields = _smooth_noise(rng, hh, ww, cell=_REGION_CELL / 2, channels=len(channels))
    # Medium-scale wiggle so region borders are irregular rather than perfectly smooth.
    fields += 0.25 * _smooth_noise(rng, hh, ww, cell=4.0, channels=len(channels))
    # argmax over the few channels as a running maximum: much faster than np.argmax(axis=0) here.
    best = fields[0] + np.float32(bias[0])
    index = np.zeros((hh, ww), np.uint8)
    for i in range(1, len(channels)):
        score = fields[i] + np.float32(bias[i])
        index[score > best] = i
        np.maximum(best, score, out=best)
    labels = np.asarray(channels, np.uint8)[index]
    return labels.repeat(2, axis=0).repeat(2, axis=1)[:h, :w]


def _alveoli(mask: np.ndarray, rng: np.random.Generator, glass: int) -> None:
    """Open air spaces in the normal (index 2) regions of ``mask``, in place: thin septa remain as a network.

    The septa are where a smooth noise field is near zero (its zero set is a maze of closed curves); the rest
    of the normal region becomes glass, as WSSS4LUAD's masks mark alveolar space.
    """
    normal = mask == 2
    if not normal.any():
        return
    h, w = mask.shape
    field = _smooth_noise(rng, h, w, cell=rng.uniform(10.0, 16.0))
    mask[normal & (np.abs(field) > rng.uniform(0.4, 0.6))] = glass


def _fibres(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    """Wavy parallel collagen streaks in 0..1, and the angle (radians) the streaks run along."""
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(5.0, 9.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = 6.0 * _smooth_noise(rng, h, w, cell=24.0)  # bends the fibres over tens of pixels
    phase = (2 * np.pi / period) * (xx * np.cos(theta) + yy * np.sin(theta)) + warp
    streaks = (0.5 + 0.5 * np.sin(phase)) ** 2
    streaks *= 0.7 + 0.3 * _smooth_noise(rng, h, w, cell=4.0)  # fibres break up along their length
    return np.clip(streaks, 0, 1.5), float(theta + np.pi / 2)


def _draw_nuclei(
    out: np.ndarray,
    mask: np.ndarray,
    cls: int,
    rng: np.random.Generator,
    density: tuple[float, float],
    semi_a: tuple[float, float],
    ratio: tuple[float, float],
    stain: tuple[float, float],
    fibre_angle: float,
) -> None:
    """Stamp soft-edged ellipses for the nuclei of class ``cls`` into ``out`` (max-combined)."""
    h, w = mask.shape
    lam = rng.uniform(*density) * h * w
    if cls == 0:
        lam *= 1.6  # tumour nuclei crowd in nests; the nest mask below thins them out again
    count = rng.poisson(lam)
    if count == 0:
        return
    cy = rng.uniform(0, h, count).astype(np.float32)
    cx = rng.uniform(0, w, count).astype(np.float32)
    keep = mask[cy.astype(np.intp), cx.astype(np.intp)] == cls
    if cls == 0:
        nests = _smooth_noise(rng, h, w, cell=20.0)
        # How much of the tumour is nests varies from patch to patch (solid sheets vs. sparse nests).
        keep &= nests[cy.astype(np.intp), cx.astype(np.intp)] > rng.uniform(-1.2, 0.1)
    cy, cx = cy[keep], cx[keep]
    k = cy.size
    if k == 0:
        return
    a = rng.uniform(*semi_a, k).astype(np.float32)
    b = a * rng.uniform(*ratio, k).astype(np.float32)
    if cls == 1:
        theta = fibre_angle + rng.normal(0.0, 0.15, k)  # stromal nuclei lie along the fibres
    else:
        theta = rng.uniform(0, np.pi, k)
    theta = theta.astype(np.float32)
    value = rng.uniform(*stain, k).astype(np.float32)

    r = int(np.ceil(semi_a[1])) + 1
    offs = np.arange(-r, r + 1, dtype=np.float32)
    py = np.floor(cy)[:, None, None] + offs[None, :, None]  # (k, 2r+1, 1)
    px = np.floor(cx)[:, None, None] + offs[None, None, :]  # (k, 1, 2r+1)
    ly, lx = py - cy[:, None, None], px - cx[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = lx * cos + ly * sin
    v = ly * cos - lx * sin
    rho = np.sqrt((u / a[:, None, None]) ** 2 + (v / b[:, None, None]) ** 2)
    # A one-pixel soft edge: 1 inside, 0 outside, linear across the border.
    edge = np.clip((1.0 - rho) * b[:, None, None] + 0.5, 0.0, 1.0) * value[:, None, None]
    py, px = np.broadcast_arrays(py, px)
    inside = (py >= 0) & (py < h) & (px >= 0) & (px < w) & (edge > 0)
    flat = py[inside].astype(np.intp) * w + px[inside].astype(np.intp)
    np.maximum.at(out.reshape(-1), flat, edge[inside])
