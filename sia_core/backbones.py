"""The backbones SIA offers by name: ImageNet ViTs and pathology foundation models published as timm models.

Every entry is a ``model.pretrained`` value plus the extra ``timm.create_model`` keyword arguments its model
card prescribes (classes by dotted name, so that the config stays YAML). Any other timm name with a
pretrained tag, ``hf-hub:`` id, ``local-dir:`` folder or checkpoint file works as well; the entries here are
the widget's choices and the README's table. Licences and access are as the model pages stated them when
this list was written; the model page is the authority.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["KnownBackbone", "KNOWN_BACKBONES", "known_backbone", "extra_kwargs"]

_SWIGLU = {"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "silu"}


@dataclass(frozen=True)
class KnownBackbone:
    """A backbone offered by name.

    Attributes:
        label: what the widget shows.
        pretrained: the ``model.pretrained`` value (None = random init).
        kwargs: ``timm.create_model`` keyword arguments the model card prescribes beyond its ``config.json``.
        architecture: the timm ViT family, for the cost column (width, patch size).
        params_m: encoder parameters in millions.
        licence: the licence the model page states.
        gated: True when the hub only serves the weights to accounts that accepted the terms.
    """

    label: str
    pretrained: Optional[str]
    kwargs: dict[str, Any] = field(default_factory=dict)
    architecture: str = ""
    params_m: float = 0.0
    licence: str = ""
    gated: bool = False

    @property
    def repo(self) -> Optional[str]:
        """The Hugging Face repository of an ``hf-hub:`` entry."""
        if self.pretrained and self.pretrained.startswith("hf-hub:"):
            return self.pretrained.split(":", 1)[1].split("@", 1)[0]
        return None

    def licence_note(self) -> str:
        """One sentence on what using these weights asks of the user."""
        if self.pretrained is None:
            return "Random initialisation: nothing to download (masks from few images are drafts)."
        where = f"https://huggingface.co/{self.repo}" if self.repo else "the timm model page on the Hugging Face hub"
        if self.gated:
            return (
                f"Gated model, licence {self.licence}: request access at {where} with your Hugging Face account "
                "(accept the terms), then log in with `hf auth login` or set HF_TOKEN before downloading."
            )
        return f"Licence {self.licence}; downloaded from {where} into the Hugging Face cache."


KNOWN_BACKBONES: tuple[KnownBackbone, ...] = (
    KnownBackbone("Random init", None),
    KnownBackbone(
        "ImageNet ViT-B/16 (the paper's)",
        "vit_base_patch16_224.orig_in21k_ft_in1k",
        architecture="ViT-B/16",
        params_m=86,
        licence="Apache-2.0",
    ),
    KnownBackbone(
        "ImageNet ViT-S/16",
        "vit_small_patch16_224.augreg_in21k_ft_in1k",
        architecture="ViT-S/16",
        params_m=22,
        licence="Apache-2.0",
    ),
    KnownBackbone(
        "UNI (MahmoodLab)",
        "hf-hub:MahmoodLab/UNI",
        {"init_values": 1e-5, "dynamic_img_size": True},
        architecture="ViT-L/16",
        params_m=303,
        licence="CC-BY-NC-ND-4.0",
        gated=True,
    ),
    KnownBackbone(
        "UNI2-h (MahmoodLab)",
        "hf-hub:MahmoodLab/UNI2-h",
        {
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            **_SWIGLU,
        },
        architecture="ViT-H/14, 8 registers, SwiGLU",
        params_m=681,
        licence="CC-BY-NC-ND-4.0",
        gated=True,
    ),
    KnownBackbone(
        "Virchow2 (Paige)",
        "hf-hub:paige-ai/Virchow2",
        dict(_SWIGLU),
        architecture="ViT-H/14, 4 registers, SwiGLU",
        params_m=632,
        licence="CC-BY-NC-ND-4.0",
        gated=True,
    ),
    KnownBackbone(
        "H-optimus-0 (Bioptimus)",
        "hf-hub:bioptimus/H-optimus-0",
        {"init_values": 1e-5, "dynamic_img_size": False},
        architecture="ViT-g/14, 4 registers",
        params_m=1134,
        licence="Apache-2.0",
        gated=True,
    ),
    KnownBackbone(
        "Prov-GigaPath tile encoder",
        "hf-hub:prov-gigapath/prov-gigapath",
        architecture="ViT-g/14",
        params_m=1134,
        licence="Apache-2.0",
        gated=True,
    ),
)
"""The named choices, random init first."""


def known_backbone(pretrained: Optional[str]) -> Optional[KnownBackbone]:
    """The catalogue entry of a ``model.pretrained`` value (an ``@revision`` and the case of a repo id are
    ignored), or None."""
    if not pretrained:
        return KNOWN_BACKBONES[0]
    key = pretrained.replace("hf_hub:", "hf-hub:", 1).split("@", 1)[0].lower()
    for entry in KNOWN_BACKBONES:
        if entry.pretrained and entry.pretrained.lower() == key:
            return entry
    return None


def extra_kwargs(pretrained: Optional[str]) -> dict[str, Any]:
    """The ``timm.create_model`` arguments a named model's card prescribes beyond its own config."""
    entry = known_backbone(pretrained)
    return dict(entry.kwargs) if entry is not None else {}
