"""The timm ViT of a resolved config (:func:`create_backbone`): built by ``timm.create_model``, with the weights
:mod:`sia_core.pretrained` fetched (hub, local-dir, timm tag) or a checkpoint file loaded strictly, so that
weights of another architecture fail with the keys that differ instead of leaving the encoder random.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from .errors import SIAError
from .pretrained import WeightsSource, hub_error, parse_pretrained, weights_config

__all__ = ["create_backbone", "patch_size_of", "timm_kwargs"]

_LAYER_KWARGS = ("mlp_layer", "act_layer", "norm_layer", "embed_norm_layer", "block_fn", "embed_layer", "attn_layer")
_KEY_DIFF = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: (.*)")


def timm_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Config kwargs -> ``timm.create_model`` kwargs: layer classes given by dotted name are imported
    (only from ``timm.layers`` and ``torch.nn``); timm resolves plain names such as ``silu`` itself."""
    import importlib

    out = dict(kwargs)
    for key in _LAYER_KWARGS:
        value = out.get(key)
        if isinstance(value, str) and value.startswith(("timm.layers.", "torch.nn.")):
            module, _, name = value.rpartition(".")
            try:
                out[key] = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as err:
                raise SIAError(
                    f"model.backbone_kwargs.{key}: no {value}", fix="name a class of timm.layers or torch.nn"
                ) from err
    return out


def create_backbone(cfg: Any, load_weights: bool = True) -> Any:
    """The timm ViT of a (resolved) config, without a classifier head.

    Args:
        cfg: the run's config: ``model.backbone``, ``backbone_kwargs``, ``pretrained`` (+ its recorded
            origin, whose commit is used), ``drop_path_rate``, ``data.img_size``.
        load_weights: False builds the architecture only (a trained SIA model's weights follow).

    Raises:
        SIAError: unknown architecture, weights that do not fit it (which keys differ), hub failures.
    """
    import timm

    m = cfg.model
    kwargs = timm_kwargs(m.backbone_kwargs)
    kwargs.setdefault("img_size", cfg.data.img_size)
    kwargs.pop("num_classes", None)
    if m.drop_path_rate:
        kwargs["drop_path_rate"] = m.drop_path_rate
    if not timm.is_model(m.backbone):
        raise SIAError(
            f"unknown backbone '{m.backbone}'",
            fix="use a timm ViT name such as vit_tiny_patch16_224, vit_small_patch16_224 or vit_base_patch16_224",
        )
    src = parse_pretrained(m.pretrained or m.backbone_weights) if load_weights else None
    if src is None or src.kind == "file":
        model = _create(timm, m.backbone, None, dict(kwargs, num_classes=0))
        if src is not None:
            _load_file_weights(model, Path(src.ident), m.backbone)
        return model
    revision = m.pretrained_origin.get("revision") if m.pretrained_origin.get("spec") == src.text else None
    arch, _, pc = weights_config(src, revision)
    if arch != m.backbone:
        raise SIAError(
            f"weights {src.text} are a {arch}, the config says model.backbone={m.backbone}",
            fix="resolve the config (sia_core.pretrained.resolve_pretrained) or set model.backbone to " + arch,
        )
    # Strict loading needs the checkpoint's own classifier: timm relaxes it when the class counts differ, and
    # a relaxed load of other weights would leave the encoder random without an error.
    kwargs["num_classes"] = int(pc.get("num_classes") or 0)
    if src.kind == "timm" and revision and pc.get("hf_hub_id"):
        kwargs["pretrained_cfg_overlay"] = {"hf_hub_id": f"{pc['hf_hub_id'].split('@')[0]}@{revision}"}
    model = _create(timm, src.timm_name(revision), src, kwargs)
    model.reset_classifier(0)
    return model


def _create(timm: Any, name: str, src: Optional[WeightsSource], kwargs: dict[str, Any]) -> Any:
    try:
        return timm.create_model(name, pretrained=src is not None, **kwargs)
    except RuntimeError as err:
        diff = _state_dict_error(err)
        if diff is None or src is None:
            raise
        raise SIAError(
            f"weights {src.text} do not fit the architecture built from them ({diff})",
            fix="remove the model.backbone_kwargs you set that change the architecture",
        ) from err
    except TypeError as err:
        raise SIAError(
            f"timm cannot build {name} with {kwargs}: {str(err)[:160]}",
            fix="remove or correct the model.backbone_kwargs you set",
        ) from err
    except Exception as err:
        mapped = hub_error(err, src, "weights") if src is not None else None
        if mapped is None:
            raise
        raise mapped from err


def _load_file_weights(model: Any, path: Path, name: str) -> None:
    """Load a timm/PyTorch/safetensors state dict strictly (except the classifier head, which SIA replaces).

    timm's own pretrained loader only warns about keys it cannot place, so a file of another architecture
    would silently leave the encoder random; here every encoder weight must come from the file.
    """
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), use_ema=True, device="cpu")
    except Exception as err:  # unreadable file, wrong format
        raise SIAError(
            f"cannot read weights file {path}: {type(err).__name__}: {str(err)[:200]}",
            fix="give a timm/PyTorch checkpoint (.pth/.bin) or a .safetensors file",
        ) from err
    module = __import__(type(model).__module__, fromlist=["checkpoint_filter_fn"])
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    try:
        if filter_fn is not None:
            # converts original JAX/other layouts and resamples position embeddings to the model's grid
            state = filter_fn(state, model)
    except Exception as err:
        raise SIAError(
            f"weights file {path} does not fit backbone '{name}' ({type(err).__name__}: {str(err)[:150]})",
            fix="pass weights made for this architecture, or set model.backbone to the architecture of the file",
        ) from err
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm.")) or k in model.state_dict()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        raise SIAError(
            f"weights file {path} does not fit backbone '{name}' ({_key_diff(missing, unexpected, mismatched)})",
            fix="pass weights made for this architecture, or set model.backbone to the architecture of the file",
        )
    model.load_state_dict(state, strict=True)


def patch_size_of(arch: str, kwargs: dict[str, Any]) -> int:
    """The patch size of an architecture, from a parameter-free (meta device) instance."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False, **timm_kwargs({**kwargs, "num_classes": 0}))
    except Exception as err:
        raise SIAError(
            f"timm cannot build {arch} with {kwargs}: {type(err).__name__}: {str(err)[:160]}",
            fix="remove or correct the model.backbone_kwargs you set",
        ) from err
    return int(model.patch_embed.patch_size[0])


def _key_diff(missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    return "; ".join(
        f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", mismatched))
        if keys
    )


def _state_dict_error(err: RuntimeError) -> Optional[str]:
    """Which keys differ, from torch's strict ``load_state_dict`` error, or None for another error."""
    text = str(err)
    if "Error(s) in loading state_dict" not in text:
        return None
    found: dict[str, list[str]] = {"Missing": [], "Unexpected": []}
    for kind, keys in _KEY_DIFF.findall(text):
        found[kind] += re.findall(r'"([^"]+)"', keys)
    mismatched = re.findall(r"size mismatch for ([^:]+):", text)
    return _key_diff(found["Missing"], found["Unexpected"], mismatched)
