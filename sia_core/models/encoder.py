"""Multi-class-token ViT encoder (docs/method.md §1.1-1.2): a timm ViT with R register tokens and C class tokens.

Our own forward reuses timm's modules (patch embedding, position embedding, blocks, final norm) because we
prepend several prefix tokens and need the patch tokens of an intermediate block for the auxiliary
classifier. Any input whose sides are multiples of the patch size works: the patch position embedding is
resampled bicubically (cached per grid size while the weights do not change).

The ViTs that pathology foundation models are published as differ in ways this forward has to follow:
register tokens of their own (kept, pretrained, in front), position embeddings with or without rows for the
prefix tokens (``no_embed_class``), no class token at all (``class_token=False``, average pooling), the final
norm moved after the pooling (``fc_norm``), a norm before the blocks (``pre_norm``), patch size 14, SwiGLU
MLPs and LayerScale (inside timm's blocks, used as they are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed, trunc_normal_

from ..errors import SIAError

__all__ = ["EncoderOutput", "MCTViT"]


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


class MCTViT(nn.Module):
    """ViT encoder with ``num_registers`` register tokens and ``num_classes`` class tokens.

    Token layout: ``[backbone registers (Rb), registers (R), class tokens (C), patches (N)]``. The backbone's
    own register tokens (``reg_tokens`` of timm's ViT, e.g. 4 in Virchow2, 8 in UNI2-h) keep their pretrained
    values and position embeddings; the backbone's CLS token is replaced by the R + C prefix tokens. Each of
    these and its position embedding start as copies of the (pretrained) CLS token and CLS position embedding
    (zero where the backbone has none); registers are then re-drawn from trunc-normal(0.02) (MoRe ``reload``),
    and each class token gets its own trunc-normal(0.02) offset so that the C tokens are distinct from the
    first step (MCTformer's draw for class tokens).

    Args:
        vit: a timm ``VisionTransformer`` with absolute position embeddings (class token optional).
        num_classes: number of tissue classes C (one class token each).
        num_registers: number of register tokens R added here (their outputs are discarded).
        aux_layer: block index whose patch tokens feed the auxiliary classifier (negative = from the end).
    """

    def __init__(self, vit: nn.Module, num_classes: int, num_registers: int = 4, aux_layer: int = -3) -> None:
        super().__init__()
        if getattr(vit, "pos_embed", None) is None or not hasattr(getattr(vit, "patch_embed", None), "proj"):
            raise SIAError(
                f"backbone {type(vit).__name__} has no absolute position embedding or no patch projection",
                fix="use a timm VisionTransformer (vit_*), e.g. vit_base_patch16_224",
            )
        self.vit = vit
        self.num_classes = num_classes
        self.num_registers = num_registers
        self.embed_dim = vit.embed_dim
        self.patch_size = int(vit.patch_embed.patch_size[0])
        depth = len(vit.blocks)
        self.aux_index = aux_layer % depth

        cls_tok = getattr(vit, "cls_token", None)
        reg_tok = getattr(vit, "reg_token", None)
        has_cls = cls_tok is not None
        n_reg = 0 if reg_tok is None else int(reg_tok.shape[1])
        pos = vit.pos_embed.detach()
        # Rows of pos_embed for the prefix tokens: [CLS?, registers...] unless no_embed_class (patches only).
        n_pos_prefix = 0 if getattr(vit, "no_embed_class", False) else int(has_cls) + n_reg
        zero = pos.new_zeros(1, 1, self.embed_dim)
        cls = cls_tok.detach() if has_cls else zero
        cls_pos = pos[:, :1] if has_cls and n_pos_prefix else zero
        self.num_backbone_registers = n_reg
        self.num_prefix = n_reg + num_registers + num_classes

        self.backbone_registers: Optional[nn.Parameter] = None
        self.backbone_register_pos: Optional[nn.Parameter] = None
        if n_reg:
            self.backbone_registers = nn.Parameter(reg_tok.detach().clone())
            if n_pos_prefix:
                self.backbone_register_pos = nn.Parameter(pos[:, int(has_cls) : n_pos_prefix].clone())
        n_own = num_registers + num_classes
        self.prefix_tokens = nn.Parameter(cls.repeat(1, n_own, 1).clone())
        self.prefix_pos = nn.Parameter(cls_pos.repeat(1, n_own, 1).clone())
        self.patch_pos = nn.Parameter(pos[:, n_pos_prefix:].clone())
        grid = vit.patch_embed.grid_size
        self.base_grid = (int(grid[0]), int(grid[1]))
        if self.patch_pos.shape[1] != self.base_grid[0] * self.base_grid[1]:
            raise SIAError(
                f"backbone {type(vit).__name__}: position embedding of {self.patch_pos.shape[1]} patch rows for a "
                f"{self.base_grid[0]}x{self.base_grid[1]} grid",
                fix="use a timm VisionTransformer with a learned absolute position embedding",
            )
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
        vit.reg_token = None
        vit.pos_embed = None
        # Models pooled by averaging keep their final norm in fc_norm (applied after pooling in timm); it is a
        # per-token norm, so it is the final norm of every token here.
        self._final_norm_name = "norm" if not isinstance(vit.norm, nn.Identity) else "fc_norm"
        self._pos_cache: dict[tuple[int, int], tuple[int, torch.Tensor]] = {}

    @property
    def final_norm(self) -> nn.Module:
        """The norm after the last block (timm's ``norm``, or ``fc_norm`` where it moved after pooling)."""
        return getattr(self.vit, self._final_norm_name)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The pretrained part: the ViT's own weights, its register tokens and the patch position embedding
        (not the class tokens and the registers added here)."""
        own = [self.patch_pos, self.backbone_registers, self.backbone_register_pos]
        return [*self.vit.parameters(), *(p for p in own if p is not None)]

    def _patch_pos(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.base_grid:
            return self.patch_pos
        if self.training or torch.is_grad_enabled():
            return resample_abs_pos_embed(self.patch_pos, list(grid), list(self.base_grid), num_prefix_tokens=0)
        # Inference at other scales: cache the resampled table until the weights change.
        version = self.patch_pos._version
        cached = self._pos_cache.get(grid)
        if cached is None or cached[0] != version or cached[1].device != self.patch_pos.device:
            pos = resample_abs_pos_embed(self.patch_pos, list(grid), list(self.base_grid), num_prefix_tokens=0)
            self._pos_cache[grid] = (version, pos)
            return pos
        return cached[1]

    def _prefix(self) -> torch.Tensor:
        prefix = self.prefix_tokens + self.prefix_pos
        if self.backbone_registers is None:
            return prefix
        regs = self.backbone_registers
        if self.backbone_register_pos is not None:
            regs = regs + self.backbone_register_pos
        return torch.cat([regs, prefix], dim=1)

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        """Encode images (B, 3, H, W) with H, W multiples of the patch size."""
        b, _, h_img, w_img = x.shape
        if h_img % self.patch_size or w_img % self.patch_size:
            raise ValueError(f"input size {h_img}x{w_img} is not a multiple of the patch size {self.patch_size}")
        vit = self.vit
        x = vit.patch_embed.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        x = vit.patch_embed.norm(x)
        x = x + self._patch_pos(grid).to(x.dtype)
        prefix = self._prefix().to(x.dtype).expand(b, -1, -1)
        x = torch.cat([prefix, x], dim=1)
        x = vit.pos_drop(x)
        x = vit.norm_pre(x)
        aux = None
        for i, blk in enumerate(vit.blocks):
            x = blk(x)
            if i == self.aux_index:
                aux = x
        x = self.final_norm(x)
        r = self.num_backbone_registers + self.num_registers
        c = self.num_classes
        return EncoderOutput(tokens=x[:, r : r + c], patches=x[:, r + c :], patches_aux=aux[:, r + c :], grid=grid)
