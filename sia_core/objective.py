"""The training objective of one step (docs/method.md §5.1, §5.5):

    L = L_cls(main + aux) + alpha1 L_dam + alpha2 L_seg + w_cre L_cre + w_ure L_ure + w_mct L_mct

Cost-saving choices (each measured in benchmarks/step_cost.py):
    * The classification input and the second global view go through the encoder as one batch; the first
      global view of the DAM *is* the classification input, so its tokens are shared, not recomputed.
    * The teacher head reads the detached tokens of the two global views from that same pass instead of a
      second no-grad encoder pass (the encoder is shared and has no dropout, so the values are the same).
    * All local crops of a step go through the encoder in one call.
    * The no-grad CAM / aux-CAM / inhibition maps at scale 1.0 reuse the training forward; only extra scales
      or flips (``train.cam_scales``, ``train.cam_flip``) cost extra passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .cam import ClassMaps, class_maps
from .config import SIAConfig
from .models.dam import ctc_loss, roi_map, sample_local_crops
from .models.par import pixel_adaptive_refine
from .models.rfm import (
    cre_loss,
    mct_loss,
    prior_map,
    uncertain_suppression_loss,
    ure_loss,
    ure_select,
)
from .models.rsm import masked_argmax, rsm_fuse
from .models.sia import SIAModel

__all__ = [
    "TrainBatch",
    "StepOutput",
    "pseudo_labels",
    "pseudo_scores",
    "rare_class_weights",
    "cls_loss",
    "seg_loss",
    "sia_losses",
    "IGNORE",
]

IGNORE = 255
"""Target value that L_seg never trains on."""


def refine_at_half_resolution(x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """PAR of the training pseudo-label scores on the image downsampled x2, upsampled back (docs/method.md §4,
    ToCo's ``refine_cams_with_bkg_v2``): a quarter of the full-size cost (at full size it made a `cpu` preset
    step of f 2.7x slower), the dilations reaching twice as far in the image."""
    size = x.shape[-2:]
    half = F.interpolate(x.float(), size=(size[0] // 2, size[1] // 2), mode="bilinear", align_corners=False)
    refined = pixel_adaptive_refine(half, scores)
    return F.interpolate(refined, size=size, mode="bilinear", align_corners=False)


@dataclass
class TrainBatch:
    """One training batch, already normalised, on the device.

    Attributes:
        image: the classification input = global view 1, (B, 3, S, S).
        labels: image-level labels (B, C) float 0/1.
        global2: the second global view (B, 3, S, S); needed when the DAM is on.
        local: local-crop source, same geometry as ``image`` (B, 3, S, S); needed when the DAM is on.
        ignore: pixels never trained on (LUAD white glass, padding) (B, S, S) bool.
        mask: pixel supervision from corrected masks (B, S, S) long, IGNORE where there is none.
        has_mask: (B,) bool, which images carry a corrected mask.
    """

    image: torch.Tensor
    labels: torch.Tensor
    global2: Optional[torch.Tensor] = None
    local: Optional[torch.Tensor] = None
    ignore: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None
    has_mask: Optional[torch.Tensor] = None


@dataclass
class StepOutput:
    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    """Detached scalars; converted to floats only when logged (no device sync every step)."""


def pseudo_labels(maps: ClassMaps, labels: torch.Tensor, cfg: SIAConfig, use_rsm: bool) -> torch.Tensor:
    """Pseudo-label map (B, H, W) over the present classes, from the RSM result or from the CAM alone."""
    return masked_argmax(pseudo_scores(maps, labels, cfg, use_rsm), labels)


def pseudo_scores(maps: ClassMaps, labels: torch.Tensor, cfg: SIAConfig, use_rsm: bool) -> torch.Tensor:
    """The fused maps (B, C, H, W) the pseudo-labels are the argmax of (absent classes zero)."""
    if use_rsm and maps.inhibition_grid is not None:
        fused = rsm_fuse(
            maps.cam,
            maps.inhibition_grid,
            labels,
            cfg.rsm.pool,
            cfg.rsm.obj_threshold,
            cfg.rsm.erosion,
            maps.cam_grid,
        ).result
    else:
        fused = maps.cam * labels[:, :, None, None]
    return fused


def rare_class_weights(labels: Sequence[np.ndarray], draw_weights: Optional[np.ndarray], power: float) -> np.ndarray:
    """Positive-label weights of L_cls (``train.cls_balance``), one per class.

    p_c is the fraction of drawn training images that hold class c (each image counted by its sampling weight,
    so after ``train.balance``); a class with p_c < 0.5 gets ((1 - p_c) / p_c)^power, the others 1. A rare
    class's few positives otherwise teach the classifier mostly to call it absent (WSSS4LUAD: normal lung in 19
    of 295 training patches), and the gate then drops it from the mask.

    Args:
        labels: image-level labels, N vectors of C values 0/1.
        draw_weights: per-image sampling weights (N,), or None for plain epochs.
        power: the exponent; 0 gives all ones.
    """
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones(len(y)) if draw_weights is None else np.asarray(draw_weights, dtype=np.float64)
    p = (w @ y) / w.sum()
    odds = (1 - p) / np.clip(p, 1e-6, None)
    return np.where(p < 0.5, odds, 1.0) ** power


def cls_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: Optional[torch.Tensor]) -> torch.Tensor:
    """Multi-label soft-margin loss (the paper's L_cls), with rare classes' positives weighted when given."""
    if pos_weight is None:
        return F.multilabel_soft_margin_loss(logits.float(), labels)
    return F.binary_cross_entropy_with_logits(logits.float(), labels, pos_weight=pos_weight)


def seg_loss(logits: torch.Tensor, target: torch.Tensor, num_classes: int, balance: float) -> torch.Tensor:
    """Cross-entropy over the non-ignored pixels, optionally class-balanced within the batch.

    With ``balance`` p > 0 each pixel of class c weighs (n / (C' n_c))^p, n the counted pixels, n_c those of
    class c, C' the classes present: a class a tenth as frequent weighs 10^p times as much per pixel. Sum /
    weight instead of mean: no NaN (and no device sync to check) when every pixel is ignored.
    """
    valid = target != IGNORE
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    if balance <= 0:
        return per_pixel.sum() / valid.sum().clamp(min=1)
    counts = torch.bincount(target[valid], minlength=num_classes).float()
    present = (counts > 0).sum().clamp(min=1)
    weights = (counts.sum() / (present * counts.clamp(min=1))) ** balance
    w = torch.where(valid, weights[target.clamp(max=num_classes - 1)], torch.zeros_like(per_pixel))
    return (per_pixel * w).sum() / w.sum().clamp(min=1e-6)


def sia_losses(
    model: SIAModel,
    batch: TrainBatch,
    cfg: SIAConfig,
    progress: float,
    cls_pos_weight: Optional[torch.Tensor] = None,
) -> StepOutput:
    """Compute the total loss of one step.

    Args:
        model: the network in training mode (unwrapped, not DDP).
        batch: the batch.
        cfg: configuration (weights, thresholds, scales).
        progress: fraction of training done, in [0, 1) (warm-up and the prior switch depend on it).
        cls_pos_weight: (C,) weights of positive labels in L_cls (:func:`rare_class_weights`), None for none.
    """
    x, y = batch.image, batch.labels
    b = x.shape[0]
    use_dam = model.dam is not None
    logs: dict[str, torch.Tensor] = {}

    enc = model.forward_features(torch.cat([x, batch.global2]) if use_dam else x)
    fwd = model.forward_head(enc, rows=slice(0, b))
    l_cls = cls_loss(fwd.logits, y, cls_pos_weight) + cls_loss(fwd.logits_aux, y, cls_pos_weight)
    total = cfg.train.cls_weight * l_cls
    logs["cls"] = l_cls.detach()

    maps = class_maps(model, x, cfg.train.cam_scales, cfg.train.cam_flip, base=fwd, want_aux_full=use_dam)

    if model.rfm is not None:
        r = cfg.rfm
        prior_src = maps.cam_aux_grid if progress < r.prior_switch else maps.cam_grid
        prior = prior_map(prior_src, y, r.lambda_low, r.lambda_high)
        patches = fwd.enc.patches
        l_cre = cre_loss(fwd.q, patches, prior, y, r.cre_tau)
        idx, valid = ure_select(prior, fwd.enc.grid, r.ure_kernel, r.ure_phi, r.ure_max_tokens)
        l_ure = ure_loss(fwd.q, patches, idx, valid, y)
        l_mct = mct_loss(fwd.q, r.mct_tau)
        total = total + r.cre_weight * l_cre + r.ure_weight * l_ure + r.mct_weight * l_mct
        if r.lir_mode == "sia_literal":
            argmax = masked_argmax(prior_src, y).flatten(1)
            total = total + r.ure_weight * uncertain_suppression_loss(fwd.q, patches, prior, argmax)
        logs.update(cre=l_cre.detach(), ure=l_ure.detach(), mct=l_mct.detach())
        logs["prior_confident"] = (prior < 254).float().mean()

    if use_dam:
        d = cfg.dam
        roi = roi_map(maps.cam_aux, y, d.lambda_low, d.lambda_high)
        crops, flags = sample_local_crops(batch.local, roi, d.n_local, d.local_size, d.neg_threshold)
        enc_local = model.forward_features(crops)
        desc_global = model.view_descriptor(enc)  # rows: [x (B), global2 (B)]
        desc_local = model.view_descriptor(enc_local).view(b, d.n_local, -1)
        views = torch.cat([desc_global[:b, None], desc_global[b:, None], desc_local], 1)  # (B, V, D)
        n_views = views.shape[1]
        model.dam.update_teacher()
        with torch.no_grad():
            teacher = model.dam.teacher(desc_global.detach()).view(2, b, -1).transpose(0, 1)
        student = model.dam.student(views.flatten(0, 1))  # (B*V, E)
        view_flags = torch.cat([flags.new_ones(b, 2), flags], 1)  # global views are always positive
        own = torch.eye(b, device=x.device).repeat_interleave(n_views, dim=1)  # (B, B*V)
        pos_mask = own * view_flags.flatten()[None]
        neg_mask = own * (1 - view_flags.flatten())[None]
        if d.negatives == "roi+batch":
            disjoint = ((y @ y.T) == 0).float()  # images that share no class
            is_local = torch.cat([flags.new_zeros(2), flags.new_ones(d.n_local)]).repeat(b)
            neg_mask = torch.clamp(neg_mask + disjoint.repeat_interleave(n_views, 1) * is_local[None], max=1)
        l_dam = ctc_loss(teacher, student, pos_mask, neg_mask, d.tau)
        total = total + d.weight * l_dam
        logs["dam"] = l_dam.detach()
        logs["neg_crops"] = 1 - flags.mean()

    t = cfg.train
    seg_logits = F.interpolate(fwd.seg.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    target = torch.full((b, *x.shape[-2:]), IGNORE, dtype=torch.long, device=x.device)
    if progress >= t.warmup_frac:
        scores = pseudo_scores(maps, y, cfg, use_rsm=cfg.rsm.enabled)
        if t.refine_pseudo:
            scores = refine_at_half_resolution(x, scores)
        target = masked_argmax(scores, y)
        if t.seg_confidence > 0:
            # An uncertain pixel of a multi-class image is a guess; single-class images are certain throughout.
            unsure = (scores.amax(1) < t.seg_confidence) & (y.sum(1) > 1)[:, None, None]
            target = target.masked_fill(unsure, IGNORE)
        if batch.ignore is not None and not t.seg_on_glass:
            target = target.masked_fill(batch.ignore, IGNORE)
    if batch.has_mask is not None:
        # Corrected masks (and mosaics) are real supervision: they replace the pseudo-label, even in warm-up.
        target = torch.where(batch.has_mask[:, None, None], batch.mask, target)
    supervised = progress >= t.warmup_frac or batch.has_mask is not None
    if supervised:
        l_seg = seg_loss(seg_logits, target, cfg.num_classes, t.seg_balance)
        total = total + t.seg_weight * l_seg
        logs["seg"] = l_seg.detach()
    logs["loss"] = total.detach()
    return StepOutput(loss=total, logs=logs)
