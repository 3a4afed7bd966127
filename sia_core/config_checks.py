"""Range checks of a :class:`~sia_core.config.SIAConfig`: every value the code can train and predict with.

Kept apart from ``config.py`` (the typed object, its presets and its (de)serialisation): this is the one
place that says what each key accepts, in the words a ``--set`` error prints.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .errors import SIAError
from .lr_schedule import LR_SCHEDULES

if TYPE_CHECKING:
    from .config import SIAConfig

__all__ = ["validate_config"]


def validate_config(cfg: SIAConfig) -> SIAConfig:
    """Check that every value is in the range the code can train and predict with.

    Raises:
        SIAError: the first value out of range, named as the dotted key a ``--set`` would use.
    """
    t, m, a = cfg.train, cfg.model, cfg.train.augment
    patch = _patch(cfg)
    checks: list[tuple[str, Any, bool, str]] = [
        # key, value, ok, what it must be
        ("train.iterations", t.iterations, t.iterations >= 1, "an integer >= 1"),
        ("train.batch_size", t.batch_size, t.batch_size >= 1, "an integer >= 1"),
        ("train.optimizer", t.optimizer, t.optimizer in ("adam", "adamw"), "adam or adamw"),
        ("train.lr_schedule", t.lr_schedule, t.lr_schedule in LR_SCHEDULES, " or ".join(LR_SCHEDULES)),
        ("train.lr", t.lr, t.lr > 0, "a number > 0"),
        ("train.weight_decay", t.weight_decay, t.weight_decay >= 0, "a number >= 0"),
        ("train.cls_weight", t.cls_weight, t.cls_weight >= 0, "a number >= 0"),
        ("train.seg_weight", t.seg_weight, t.seg_weight >= 0, "a number >= 0"),
        ("train.warmup_frac", t.warmup_frac, 0 <= t.warmup_frac <= 1, "a number in 0..1"),
        ("train.cam_scales", list(t.cam_scales), bool(t.cam_scales) and min(t.cam_scales) > 0, "numbers > 0"),
        ("train.seed", t.seed, t.seed >= 0, "an integer >= 0"),
        ("train.device", t.device, _valid_device(t.device), "auto, cpu, cuda, cuda:N or mps"),
        ("train.amp", t.amp, t.amp in ("auto", "bf16", "off"), "auto, bf16 or off"),
        ("train.balance", t.balance, t.balance >= 0, "a number >= 0"),
        ("train.mosaic", t.mosaic, 0 <= t.mosaic < 1, "a fraction in 0..1 (not 1: a batch keeps real images)"),
        ("train.cls_balance", t.cls_balance, t.cls_balance >= 0, "a number >= 0"),
        ("train.seg_balance", t.seg_balance, t.seg_balance >= 0, "a number >= 0"),
        ("train.seg_confidence", t.seg_confidence, 0 <= t.seg_confidence <= 1, "a number in 0..1"),
        ("train.ema", t.ema, 0 <= t.ema < 1, "a decay in 0..1, below 1 (0 = off)"),
        ("infer.label_threshold", cfg.infer.label_threshold, 0 < cfg.infer.label_threshold < 1, "a number in (0, 1)"),
        ("train.num_workers", t.num_workers, t.num_workers >= 0, "an integer >= 0"),
        ("train.val_every", t.val_every, t.val_every >= 0, "an integer >= 0 (0: never)"),
        ("train.ckpt_every", t.ckpt_every, t.ckpt_every >= 0, "an integer >= 0 (0: only at the end)"),
        ("train.log_every", t.log_every, t.log_every >= 1, "an integer >= 1"),
        ("train.augment.jitter_p", a.jitter_p, 0 <= a.jitter_p <= 1, "a probability in 0..1"),
        ("train.augment.grayscale_p", a.grayscale_p, 0 <= a.grayscale_p <= 1, "a probability in 0..1"),
        ("train.augment.blur_p", a.blur_p, 0 <= a.blur_p <= 1, "a probability in 0..1"),
        ("train.augment.solarize_p", a.solarize_p, 0 <= a.solarize_p <= 1, "a probability in 0..1"),
        ("train.augment.stain", a.stain, 0 <= a.stain < 1, "a number in 0..1 (0 = off)"),
        ("train.augment.brightness", a.brightness, a.brightness >= 0, "a number >= 0"),
        ("train.augment.contrast", a.contrast, a.contrast >= 0, "a number >= 0"),
        ("train.augment.saturation", a.saturation, a.saturation >= 0, "a number >= 0"),
        ("train.augment.hue", a.hue, 0 <= a.hue <= 0.5, "a number in 0..0.5"),
        (
            "train.augment.global_crop_scale",
            list(a.global_crop_scale),
            0 < a.global_crop_scale[0] <= a.global_crop_scale[1] <= 1,
            "[min, max] with 0 < min <= max <= 1",
        ),
        (
            "train.augment.scale",
            list(a.scale),
            len(a.scale) == 2 and 0 < a.scale[0] <= a.scale[1] <= 4,
            "[min, max] with 0 < min <= max <= 4 ([1, 1] = off)",
        ),
        ("model.conv_stem_depth", m.conv_stem_depth, m.conv_stem_depth >= 1, "an integer >= 1"),
        ("model.num_registers", m.num_registers, m.num_registers >= 0, "an integer >= 0"),
        ("model.drop_path_rate", m.drop_path_rate, 0 <= m.drop_path_rate < 1, "a number in 0..1 (not 1)"),
        (
            "model.conv_stem",
            m.conv_stem,
            not (m.conv_stem and m.pretrained),
            "false when model.pretrained is set (a new stem would discard the weights' patch embedding)",
        ),
        (
            "model.conv_stem",
            m.conv_stem,
            not m.conv_stem or (patch >= 2 and patch & (patch - 1) == 0),
            f"false: the stem halves the image log2(patch) times and this backbone's patch is {patch}",
        ),
        (
            "model.freeze",
            m.freeze,
            not (m.conv_stem and m.freeze != "none"),
            "none with model.conv_stem (a frozen stem's batch norm would still follow every batch), or set "
            "model.conv_stem=false",
        ),
        ("model.pooling", m.pooling, m.pooling in ("gmp", "gap", "topk"), "gmp, gap or topk"),
        ("model.pool_topk", m.pool_topk, 0 < m.pool_topk <= 1, "a fraction in (0, 1]"),
        ("model.decoder_channels", m.decoder_channels, m.decoder_channels >= 1, "an integer >= 1"),
        ("model.decoder_dilation", m.decoder_dilation, m.decoder_dilation >= 1, "an integer >= 1"),
        ("rfm.topk_ratio", cfg.rfm.topk_ratio, 0 < cfg.rfm.topk_ratio <= 1, "a fraction in (0, 1]"),
        (
            "rfm.lambda_low",
            cfg.rfm.lambda_low,
            0 <= cfg.rfm.lambda_low <= cfg.rfm.lambda_high <= 1,
            "0 <= rfm.lambda_low <= rfm.lambda_high <= 1",
        ),
        ("rfm.prior_switch", cfg.rfm.prior_switch, 0 <= cfg.rfm.prior_switch <= 1, "a number in 0..1"),
        ("rfm.cre_tau", cfg.rfm.cre_tau, cfg.rfm.cre_tau > 0, "a number > 0"),
        ("rfm.mct_tau", cfg.rfm.mct_tau, cfg.rfm.mct_tau > 0, "a number > 0"),
        ("rfm.ure_kernel", cfg.rfm.ure_kernel, cfg.rfm.ure_kernel >= 1, "an integer >= 1"),
        ("rfm.lir_mode", cfg.rfm.lir_mode, cfg.rfm.lir_mode in ("more", "sia_literal"), "more or sia_literal"),
        ("dam.weight", cfg.dam.weight, cfg.dam.weight >= 0, "a number >= 0"),
        ("dam.head", cfg.dam.head, cfg.dam.head in ("linear", "toco"), "linear or toco"),
        ("dam.proj_dim", cfg.dam.proj_dim, cfg.dam.proj_dim >= 1, "an integer >= 1"),
        ("dam.momentum", cfg.dam.momentum, 0 <= cfg.dam.momentum <= 1, "a number in 0..1"),
        ("dam.tau", cfg.dam.tau, cfg.dam.tau > 0, "a number > 0"),
        ("dam.n_local", cfg.dam.n_local, cfg.dam.n_local >= 1, "an integer >= 1"),
        (
            "dam.local_size",
            cfg.dam.local_size,
            1 <= cfg.dam.local_size <= cfg.data.img_size,
            f"an integer in 1..data.img_size ({cfg.data.img_size})",
        ),
        ("dam.negatives", cfg.dam.negatives, cfg.dam.negatives in ("roi", "roi+batch"), "roi or roi+batch"),
        ("dam.neg_threshold", cfg.dam.neg_threshold, 0 <= cfg.dam.neg_threshold <= 1, "a number in 0..1"),
        (
            "dam.lambda_low",
            cfg.dam.lambda_low,
            0 <= cfg.dam.lambda_low <= cfg.dam.lambda_high <= 1,
            "0 <= dam.lambda_low <= dam.lambda_high <= 1",
        ),
        ("rsm.pool", cfg.rsm.pool, cfg.rsm.pool >= 1, "an integer >= 1"),
        ("rsm.obj_threshold", cfg.rsm.obj_threshold, 0 <= cfg.rsm.obj_threshold <= 1, "a number in 0..1"),
        ("rsm.erosion", cfg.rsm.erosion, cfg.rsm.erosion >= 0, "an integer >= 0"),
        ("data.img_size", cfg.data.img_size, _fits_patches(cfg), f"a multiple of the patch size ({patch})"),
        ("data.mean", list(cfg.data.mean), all(0 <= v <= 1 for v in cfg.data.mean), "3 numbers in 0..1"),
        ("data.std", list(cfg.data.std), all(v > 0 for v in cfg.data.std), "3 numbers > 0"),
        ("data.white_threshold", cfg.data.white_threshold, 0 <= cfg.data.white_threshold <= 255, "0..255"),
        ("data.white_min_size", cfg.data.white_min_size, cfg.data.white_min_size >= 0, "an integer >= 0"),
        (
            "data.ignore_index",
            cfg.data.ignore_index,
            cfg.num_classes <= cfg.data.ignore_index <= 255,
            f"an integer in {cfg.num_classes}..255 (not a class index)",
        ),
        (
            "data.palette",
            f"{len(cfg.data.palette)} colours",
            len(cfg.data.palette) >= cfg.num_classes,
            f"at least one colour per class ({cfg.num_classes})",
        ),
        ("infer.scales", list(cfg.infer.scales), bool(cfg.infer.scales) and min(cfg.infer.scales) > 0, "numbers > 0"),
        ("infer.tile_size", cfg.infer.tile_size, cfg.infer.tile_size >= 1, "an integer >= 1"),
        (
            "infer.tile_overlap",
            cfg.infer.tile_overlap,
            0 <= cfg.infer.tile_overlap < cfg.infer.tile_size,
            f"an integer in 0..infer.tile_size - 1 ({cfg.infer.tile_size - 1})",
        ),
        ("infer.batch_size", cfg.infer.batch_size, cfg.infer.batch_size >= 1, "an integer >= 1"),
    ]
    if not cfg.data.classes:
        raise SIAError("config: data.classes is empty", fix="give the class names, e.g. in dataset.yaml")
    for key, value, ok, must in checks:
        if not ok:
            what = "out of range" if isinstance(value, (int, float)) and not isinstance(value, bool) else "not valid"
            raise SIAError(f"config value {key} = {value!r} is {what}", fix=f"set {key} to {must}")
    return cfg


def _valid_device(device: str) -> bool:
    return re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(device)) is not None


def _patch(cfg: SIAConfig) -> int:
    if "patch_size" in cfg.model.backbone_kwargs:
        return int(cfg.model.backbone_kwargs["patch_size"])
    found = re.search(r"patch(\d+)", cfg.model.backbone)
    return int(found.group(1)) if found else 1


def _fits_patches(cfg: SIAConfig) -> bool:
    patch = _patch(cfg)
    return cfg.data.img_size >= patch and cfg.data.img_size % patch == 0
