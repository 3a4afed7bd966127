"""Which parameters a run trains (``model.freeze``): large pretrained backbones on small hardware.

``none`` trains everything; ``all`` freezes the pretrained backbone (patch embedding, blocks, norms, its own
register tokens, the patch position embedding) and trains the class tokens, the registers added by SIA, the
classifiers, the RFM and DAM heads and the decoder; ``all-but-N`` also trains the last N blocks and the final
norm. Frozen weights get no gradient (``requires_grad=False``), so the backward pass skips their weight
gradients and the optimiser holds no state for them. The class tokens sit in front of every block, so their
gradient still flows back through all of them: freezing saves the weight gradients and the optimiser state,
not the backward pass itself (``benchmarks/step_cost.py`` measures what that is worth).
"""

from __future__ import annotations

import re
from typing import Optional

import torch.nn as nn

from ..errors import SIAError

__all__ = ["parse_freeze", "trainable_parameters"]

_ALL_BUT = re.compile(r"all-but-(\d+)")


def parse_freeze(spec: str, depth: Optional[int] = None) -> Optional[int]:
    """The number of trailing blocks that train: None for ``none`` (everything trains), 0 for ``all``, N for
    ``all-but-N``.

    Raises:
        SIAError: another value, or N larger than the backbone's ``depth``.
    """
    text = str(spec).strip().lower()
    if text in ("none", ""):
        return None
    if text == "all":
        return 0
    match = _ALL_BUT.fullmatch(text)
    if match is None:
        raise SIAError(
            f"unknown model.freeze '{spec}'",
            fix="use none, all (train class tokens, heads and decoder only) or all-but-N (also the last N blocks)",
        )
    n = int(match.group(1))
    if depth is not None and n > depth:
        raise SIAError(f"model.freeze={spec}: the backbone has only {depth} blocks", fix=f"use all-but-{depth} or less")
    return n


def trainable_parameters(model: nn.Module, freeze: str = "none") -> list[nn.Parameter]:
    """Freeze the backbone of a SIA model as ``freeze`` says and return the parameters to optimise.

    Args:
        model: a :class:`~sia_core.models.sia.SIAModel` (or a DDP wrapper of one).
        freeze: ``none``, ``all`` or ``all-but-N``.
    """
    model = getattr(model, "module", model)
    encoder = model.encoder
    keep = parse_freeze(freeze, len(encoder.vit.blocks))
    if keep is not None:
        for p in encoder.backbone_parameters():
            p.requires_grad_(False)
        if keep:
            for module in (*encoder.vit.blocks[-keep:], encoder.final_norm):
                for p in module.parameters():
                    p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]
