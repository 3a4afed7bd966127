"""Multi-class-token ViT encoder (METHOD §1.1-1.2): a timm ViT with R register tokens and C class tokens.

Our own forward reuses timm's modules (patch embedding, position embedding, blocks, final norm) because we
prepend several prefix tokens and need the patch tokens of an intermediate block for the auxiliary
classifier. Any input whose sides are multiples of the patch size works: the patch position embedding is
resampled bicubically (cached per grid size while the weights do not change).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import timm
import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed, trunc_normal_

from ..errors import SIAError

__all__ = ["EncoderOutput", "MCTViT", "create_vit"]


@dataclass
class EncoderOutput:
    """Token outputs of one encoder pass.

    Attributes:
        tokens: class-token outputs T after the final norm, (B, C, D).
        patches: final patch tokens P after the final norm, (B, N, D).
        patches_aux: patch tokens of the auxiliary block (no norm), (B, N, D).
        grid: the patch grid (h, w), N = h * w.
    """

    tokens: torch.Tensor
    patches: torch.Tensor
    patches_aux: torch.Tensor
    grid: tuple[int, int]

    def patches_2d(self, aux: bool = False) -> torch.Tensor:
        """Patch tokens as a (B, D, h, w) feature map."""
        p = self.patches_aux if aux else self.patches
        b, _, d = p.shape
        return p.transpose(1, 2).reshape(b, d, *self.grid)


def create_vit(name: str, weights: Optional[str] = None, **kwargs) -> nn.Module:
    """Create a timm ViT without a classifier head, randomly initialised or from a local weights file.

    Args:
        name: timm model name, e.g. ``vit_small_patch16_224``.
        weights: optional local file (timm .pth/.bin checkpoint or .safetensors). Never downloaded.
        **kwargs: passed to ``timm.create_model`` (``depth``, ``embed_dim``, ``drop_path_rate``, ...).

    Raises:
        SIAError: unknown model name, missing weights file, or a file of another architecture.
    """
    if name not in timm.list_models():
        raise SIAError(
            f"unknown backbone '{name}'",
            fix="use a timm ViT name such as vit_tiny_patch16_224, vit_small_patch16_224 or vit_base_patch16_224",
        )
    kwargs = {"num_classes": 0, **kwargs}
    model = timm.create_model(name, pretrained=False, **kwargs)
    if weights is None:
        return model
    path = Path(weights).expanduser()
    if not path.is_file():
        raise SIAError(
            f"backbone weights file not found: {path}",
            fix="give the path of a local timm checkpoint (.pth/.bin) or .safetensors file, or no file for "
            "random initialisation",
        )
    _load_backbone_weights(model, path, name)
    return model


def _load_backbone_weights(model: nn.Module, path: Path, name: str) -> None:
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
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", mismatched))
            if keys
        )
        raise SIAError(
            f"weights file {path} does not fit backbone '{name}' ({detail})",
            fix="pass weights made for this architecture, or set model.backbone to the architecture of the file",
        )
    model.load_state_dict(state, strict=True)


class MCTViT(nn.Module):
    """ViT encoder with ``num_registers`` register tokens and ``num_classes`` class tokens.

    Token layout: ``[registers (R), class tokens (C), patches (N)]``. Each prefix token and its position
    embedding start as copies of the (pretrained) CLS token and CLS position embedding; registers are then
    re-drawn from trunc-normal(0.02) (MoRe ``reload``), and each class token gets its own trunc-normal(0.02)
    offset so that the C tokens are distinct from the first step (MCTformer's draw for class tokens).

    Args:
        vit: a timm ``VisionTransformer`` with a class token and absolute position embeddings.
        num_classes: number of tissue classes C (one class token each).
        num_registers: number of register tokens R (their outputs are discarded).
        aux_layer: block index whose patch tokens feed the auxiliary classifier (negative = from the end).
    """

    def __init__(self, vit: nn.Module, num_classes: int, num_registers: int = 4, aux_layer: int = -3) -> None:
        super().__init__()
        if getattr(vit, "cls_token", None) is None or getattr(vit, "pos_embed", None) is None:
            raise SIAError(
                f"backbone {type(vit).__name__} has no class token or absolute position embedding",
                fix="use a plain timm ViT (vit_*_patch16_224)",
            )
        self.vit = vit
        self.num_classes = num_classes
        self.num_registers = num_registers
        self.embed_dim = vit.embed_dim
        self.patch_size = vit.patch_embed.patch_size[0]
        depth = len(vit.blocks)
        self.aux_index = aux_layer % depth
        self.num_prefix = num_registers + num_classes

        cls_tok = vit.cls_token.detach()
        n_vit_prefix = vit.num_prefix_tokens if not getattr(vit, "no_embed_class", False) else 0
        pos = vit.pos_embed.detach()
        cls_pos = pos[:, :1] if n_vit_prefix else torch.zeros_like(cls_tok)
        self.prefix_tokens = nn.Parameter(cls_tok.repeat(1, self.num_prefix, 1).clone())
        self.prefix_pos = nn.Parameter(cls_pos.repeat(1, self.num_prefix, 1).clone())
        self.patch_pos = nn.Parameter(pos[:, n_vit_prefix:].clone())
        grid = vit.patch_embed.grid_size
        self.base_grid = (int(grid[0]), int(grid[1]))
        with torch.no_grad():
            trunc_normal_(self.prefix_tokens[:, :num_registers], std=0.02)
            # Identical class tokens at identical positions stay identical: attention treats them alike, so
            # their gradients are equal and only a loss that tells them apart (L_cre, L_mct) could separate
            # them; without the RFM (variants a, c) the C tokens would be one token forever. Each class token
            # therefore gets its own trunc-normal(0.02) offset, the draw MCTformer gives its class tokens when
            # it trains from scratch, on top of MoRe's copy of the (pretrained) CLS token.
            offsets = torch.empty_like(self.prefix_tokens[:, num_registers:])
            trunc_normal_(offsets, std=0.02)
            self.prefix_tokens[:, num_registers:] += offsets
        # The prefix/position parameters now live here; drop timm's copies so they are not trained twice.
        vit.cls_token = None
        vit.pos_embed = None
        self._pos_cache: dict[tuple[int, int], tuple[int, torch.Tensor]] = {}

    def _patch_pos(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.base_grid:
            return self.patch_pos
        if self.training or torch.is_grad_enabled():
            return resample_abs_pos_embed(
                self.patch_pos, list(grid), list(self.base_grid), num_prefix_tokens=0
            )
        # Inference at other scales: cache the resampled table until the weights change.
        version = self.patch_pos._version
        cached = self._pos_cache.get(grid)
        if cached is None or cached[0] != version or cached[1].device != self.patch_pos.device:
            pos = resample_abs_pos_embed(
                self.patch_pos, list(grid), list(self.base_grid), num_prefix_tokens=0
            )
            self._pos_cache[grid] = (version, pos)
            return pos
        return cached[1]

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        """Encode images (B, 3, H, W) with H, W multiples of the patch size."""
        b, _, h_img, w_img = x.shape
        if h_img % self.patch_size or w_img % self.patch_size:
            raise ValueError(
                f"input size {h_img}x{w_img} is not a multiple of the patch size {self.patch_size}"
            )
        vit = self.vit
        x = vit.patch_embed.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        x = vit.patch_embed.norm(x)
        x = x + self._patch_pos(grid).to(x.dtype)
        prefix = (self.prefix_tokens + self.prefix_pos).to(x.dtype).expand(b, -1, -1)
        x = torch.cat([prefix, x], dim=1)
        x = vit.pos_drop(x)
        x = vit.norm_pre(x)
        aux = None
        for i, blk in enumerate(vit.blocks):
            x = blk(x)
            if i == self.aux_index:
                aux = x
        x = vit.norm(x)
        r, c = self.num_registers, self.num_classes
        return EncoderOutput(
            tokens=x[:, r : r + c], patches=x[:, r + c :], patches_aux=aux[:, r + c :], grid=grid
        )
