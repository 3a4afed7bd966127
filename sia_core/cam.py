"""Multi-scale, flipped, normalised CAM / aux-CAM / inhibition map / segmentation (docs/method.md §1.3, §2.3).

One function serves training (no-grad pseudo-labels, priors, crop ROIs) and inference (the predictor).
For every scale the image and its horizontal flip run as one batch; each map is resized to the output size,
the flipped copy is un-flipped and merged by element-wise max, the scales are summed, and each channel is
min-max normalised. The same fused maps are also produced on the base token grid (what the RSM and the
RFM prior work on). At scale 1.0 without flip, a forward pass already computed (the training forward) is
reused instead of running the encoder again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .models.sia import SIAForward, SIAModel

__all__ = ["ClassMaps", "minmax_norm", "class_maps"]


@dataclass
class ClassMaps:
    """Fused maps. ``*_grid`` are on the base token grid, the others at the output size.

    All maps are min-max normalised per (image, class) into [0, 1]; ``seg`` holds decoder probabilities.
    """

    logits: torch.Tensor
    cam: torch.Tensor
    cam_grid: torch.Tensor
    cam_aux_grid: torch.Tensor
    cam_aux: Optional[torch.Tensor]
    inhibition: Optional[torch.Tensor]
    inhibition_grid: Optional[torch.Tensor]
    seg: Optional[torch.Tensor]


def minmax_norm(x: torch.Tensor) -> torch.Tensor:
    """Subtract each channel's spatial min, then divide by its new spatial max (+1e-5)."""
    flat = x.flatten(2)
    x = x - flat.amin(-1)[..., None, None]
    return x / (x.flatten(2).amax(-1)[..., None, None] + 1e-5)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _scaled_size(h: int, w: int, scale: float, patch: int) -> tuple[int, int]:
    # Round to the patch size so the encoder gets whole tokens.
    return max(patch, round(h * scale / patch) * patch), max(patch, round(w * scale / patch) * patch)


@torch.no_grad()
def class_maps(
    model: SIAModel,
    x: torch.Tensor,
    scales: tuple[float, ...] = (1.0,),
    flip: bool = False,
    out_size: Optional[tuple[int, int]] = None,
    base: Optional[SIAForward] = None,
    want_aux_full: bool = False,
    want_seg: bool = False,
) -> ClassMaps:
    """Fuse the maps of a batch of (normalised) images over scales and flips.

    Args:
        model: the SIA network (its mode is left as it is).
        x: images (B, 3, H, W), sides multiples of the patch size.
        scales: input scales; 1.0 should be among them (it gives the base grid and the logits).
        flip: also run horizontally flipped copies.
        out_size: output size (default: the input size).
        base: an existing forward of ``x`` at scale 1.0 (e.g. the training forward); reused, detached.
        want_aux_full: also return the aux-CAM at the output size.
        want_seg: also return the decoder's probabilities (softmax, averaged over scales and flips).
    """
    b, _, h, w = x.shape
    out_size = out_size or (h, w)
    patch = model.patch_size
    grid = (h // patch, w // patch)
    both_sizes = tuple(dict.fromkeys((tuple(out_size), grid)))
    targets = {"cam": both_sizes, "aux": both_sizes if want_aux_full else (grid,), "lam": both_sizes}
    if want_seg:
        targets["seg"] = (out_size,)
    acc: dict[tuple[str, tuple[int, int]], torch.Tensor] = {}
    logits = None
    n_views = 0

    def maps_of(fwd: SIAForward) -> dict[str, torch.Tensor]:
        found = {
            "cam": fwd.cam,
            "aux": fwd.cam_aux,
            "lam": fwd.inhibition,
            "seg": fwd.seg if want_seg else None,
        }
        return {k: v.detach().float() for k, v in found.items() if v is not None and k in targets}

    for scale in scales:
        if scale == 1.0 and base is not None:
            orig = maps_of(base)
            logits = base.logits.detach().float()
            flipped = (
                maps_of(model.forward_head(model.forward_features(x.flip(-1)), decoder=want_seg)) if flip else None
            )
        else:
            size = (h, w) if scale == 1.0 else _scaled_size(h, w, scale, patch)
            xs = _resize(x, size)
            fwd = model.forward_head(
                model.forward_features(torch.cat([xs, xs.flip(-1)]) if flip else xs), decoder=want_seg
            )
            both = maps_of(fwd)
            orig = {k: v[:b] for k, v in both.items()}
            flipped = {k: v[b:] for k, v in both.items()} if flip else None
            if scale == 1.0:
                logits = fwd.logits[:b].detach().float()
        n_views += 2 if flip else 1
        for key, m in orig.items():
            for size in targets[key]:
                # Decoder logits are upsampled before the softmax, which keeps boundaries sharp.
                post = (lambda t: t.softmax(1)) if key == "seg" else (lambda t: t)
                r = post(_resize(m, size))
                if flipped is not None:
                    rf = post(_resize(flipped[key], size)).flip(-1)
                    r = r + rf if key == "seg" else torch.maximum(r, rf)
                acc[key, size] = acc[key, size] + r if (key, size) in acc else r

    if logits is None:
        logits = model(x).logits.float()

    def norm(key: str, size: tuple[int, int]) -> Optional[torch.Tensor]:
        return minmax_norm(acc[key, size]) if (key, size) in acc else None

    return ClassMaps(
        logits=logits,
        cam=norm("cam", out_size),
        cam_grid=norm("cam", grid),
        cam_aux_grid=norm("aux", grid),
        cam_aux=norm("aux", out_size) if want_aux_full else None,
        inhibition=norm("lam", out_size),
        inhibition_grid=norm("lam", grid),
        seg=acc["seg", out_size] / n_views if want_seg else None,
    )
