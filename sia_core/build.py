"""Builder: config -> SIA model, and loading trained SIA weights (safetensors with the config inside).

A trained model is a ``.safetensors`` file whose metadata holds the full config as JSON, so a weights file
alone is enough to rebuild the network (segment-anything's builder + torchvision's checkpoint dict, without
pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import torch

from .config import SIAConfig
from .errors import SIAError
from .io_utils import atomic_write
from .models.conv_stem import ConvStem
from .models.encoder import MCTViT
from .models.sia import SIAModel
from .timm_backbone import create_backbone

__all__ = [
    "build_model",
    "save_weights",
    "read_weights",
    "load_model",
    "resolve_weights_path",
    "WEIGHTS_NAMES",
]

WEIGHTS_NAMES = ("best.safetensors", "last.safetensors")
"""Weights looked for, in this order, when a run directory is given."""


def build_model(cfg: SIAConfig, pretrained: bool = True) -> SIAModel:
    """Build the SIA network of a config, randomly initialised or from the backbone's starting weights.

    Args:
        cfg: the configuration (resolved by :func:`sia_core.pretrained.resolve_pretrained` when
            ``model.pretrained`` names hub or timm weights).
        pretrained: load ``cfg.model.pretrained``; False builds the architecture only (trained weights follow).
    """
    m = cfg.model
    vit = create_backbone(cfg, load_weights=pretrained)
    if m.conv_stem:
        vit.patch_embed.proj = ConvStem(vit.embed_dim, int(vit.patch_embed.patch_size[0]), depth=m.conv_stem_depth)
    encoder = MCTViT(vit, cfg.num_classes, m.num_registers, m.aux_layer)
    return SIAModel(
        encoder,
        cfg.num_classes,
        rfm=cfg.rfm.enabled,
        dam=cfg.dam.enabled,
        topk_ratio=cfg.rfm.topk_ratio,
        decoder_channels=m.decoder_channels,
        decoder_dilation=m.decoder_dilation,
        dam_head=cfg.dam.head,
        dam_dim=cfg.dam.proj_dim,
        dam_momentum=cfg.dam.momentum,
        pooling=m.pooling,
        pool_topk=m.pool_topk,
        decoder_detach=m.decoder_detach,
    )


def save_weights(path: Union[str, Path], model: torch.nn.Module, cfg: SIAConfig, **meta: Any) -> Path:
    """Write the model's weights and config to a safetensors file, atomically."""
    from safetensors.torch import save_file

    model = getattr(model, "module", model)  # unwrap DDP
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "sia-wsss", "config": json.dumps(cfg.to_dict())}
    metadata.update({k: json.dumps(v) for k, v in meta.items()})
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def read_weights(path: Union[str, Path]) -> tuple[dict[str, torch.Tensor], SIAConfig, dict[str, Any]]:
    """Read a SIA safetensors file: (state dict, config, other metadata)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except Exception as err:
        raise SIAError(
            f"cannot read weights file {path}: {str(err)[:200]}",
            fix="give a .safetensors file written by sia-core (a run's best.safetensors or last.safetensors)",
        ) from err
    if metadata.get("format") != "sia-wsss" or "config" not in metadata:
        raise SIAError(
            f"{path} is not a SIA model file (no SIA config in its metadata)",
            fix="give a run directory or a .safetensors written by sia-core; backbone-only weights go in "
            "model.pretrained",
        )
    cfg = SIAConfig.from_dict(json.loads(metadata["config"]), source=str(path))
    extra = {k: json.loads(v) for k, v in metadata.items() if k not in ("format", "config")}
    return tensors, cfg, extra


def resolve_weights_path(path: Union[str, Path]) -> Path:
    """A run directory (its best, else last, weights) or a weights file."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in WEIGHTS_NAMES:
            if (path / name).is_file():
                return path / name
        raise SIAError(
            f"run directory {path} holds no weights ({' or '.join(WEIGHTS_NAMES)})",
            fix="train first (sia-core train --out RUN) or give the path of a .safetensors file",
        )
    if not path.is_file():
        raise SIAError(f"model not found: {path}", fix="give a run directory or a .safetensors file")
    return path


def load_model(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> tuple[SIAModel, SIAConfig]:
    """Load a trained SIA model (eval mode) from a run directory or a weights file."""
    weights = resolve_weights_path(path)
    state, cfg, _ = read_weights(weights)
    model = build_model(cfg, pretrained=False)  # the file already holds the trained backbone
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise SIAError(
            f"weights in {weights} do not match the architecture in its own config ({str(err).splitlines()[0]})",
            fix="the file is damaged or was written by an incompatible version of sia-core",
        ) from err
    return model.to(device).eval(), cfg
