"""The composed SIA-WSSS network: MCT-ViT encoder, classifiers (CAM), RFM, DAM heads and LargeFOV decoder.

Modules that a variant disables are not built at all (``rfm`` / ``dam`` are None), so a checkpoint of a
variant holds exactly the parameters it trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from .dam import DAMHeads
from .encoder import EncoderOutput, MCTViT
from .heads import CAMClassifier, LargeFOV
from .rfm import GraphClassTokens, inhibition_map

__all__ = ["SIAForward", "SIAModel"]


@dataclass
class SIAForward:
    """Everything one encoder pass gives, on the token grid.

    Attributes:
        enc: the encoder tokens.
        logits: classifier logits (B, C), from the final patch tokens.
        logits_aux: auxiliary classifier logits (B, C), from block ``aux_layer``.
        cam: ReLU CAM (B, C, h, w), not normalised.
        cam_aux: ReLU aux-CAM (B, C, h, w).
        seg: decoder logits (B, C, h, w).
        q: graph class tokens Q (B, C, D), None without RFM.
        inhibition: raw inhibition map <P, Q> (B, C, h, w), None without RFM.
    """

    enc: EncoderOutput
    logits: torch.Tensor
    logits_aux: torch.Tensor
    cam: torch.Tensor
    cam_aux: torch.Tensor
    seg: torch.Tensor
    q: Optional[torch.Tensor]
    inhibition: Optional[torch.Tensor]


class SIAModel(nn.Module):
    """SIA-WSSS network.

    Args:
        encoder: the multi-class-token ViT.
        num_classes: C.
        rfm: build the graph class tokens (RFM) when True.
        dam: build the DAM projection heads when True.
        topk_ratio: GCR neighbours K = topk_ratio * N.
        decoder_channels: LargeFOV width.
        decoder_dilation: LargeFOV dilation.
        dam_head: 'linear' or 'toco'.
        dam_dim: projection dimension.
        dam_momentum: EMA momentum of the teacher head.
        pooling: image-logit pooling of the classifiers ('gmp', 'gap', 'topk').
        pool_topk: token fraction for 'topk' pooling.
        decoder_detach: the decoder reads detached tokens (L_seg does not reach the encoder).
    """

    def __init__(
        self,
        encoder: MCTViT,
        num_classes: int,
        rfm: bool = True,
        dam: bool = True,
        topk_ratio: float = 0.5,
        decoder_channels: int = 512,
        decoder_dilation: int = 5,
        dam_head: str = "linear",
        dam_dim: int = 256,
        dam_momentum: float = 0.9,
        pooling: str = "gmp",
        pool_topk: float = 0.25,
        decoder_detach: bool = False,
    ) -> None:
        super().__init__()
        dim = encoder.embed_dim
        self.num_classes = num_classes
        self.encoder = encoder
        self.classifier = CAMClassifier(dim, num_classes, pooling, pool_topk)
        self.classifier_aux = CAMClassifier(dim, num_classes, pooling, pool_topk)
        self.decoder = LargeFOV(dim, num_classes, decoder_channels, decoder_dilation)
        self.decoder_detach = decoder_detach
        self.rfm = GraphClassTokens(dim, topk_ratio) if rfm else None
        self.dam = DAMHeads(dim, dam_dim, dam_head, dam_momentum) if dam else None

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    def forward_features(self, x: torch.Tensor) -> EncoderOutput:
        """Encoder tokens of images (B, 3, H, W)."""
        return self.encoder(x)

    def forward_head(self, enc: EncoderOutput, rows: Optional[slice] = None, decoder: bool = True) -> SIAForward:
        """Classifiers, decoder and RFM on (a slice of the batch of) encoder tokens."""
        if rows is not None:
            enc = EncoderOutput(enc.tokens[rows], enc.patches[rows], enc.patches_aux[rows], enc.grid)
        p2d = enc.patches_2d()
        p2d_aux = enc.patches_2d(aux=True)
        q = inhibition = None
        if self.rfm is not None:
            q = self.rfm(enc.tokens, enc.patches)
            inhibition = inhibition_map(p2d, q)
        return SIAForward(
            enc=enc,
            logits=self.classifier(p2d),
            logits_aux=self.classifier_aux(p2d_aux),
            cam=self.classifier.cam(p2d),
            cam_aux=self.classifier_aux.cam(p2d_aux),
            seg=self.decoder(p2d.detach() if self.decoder_detach else p2d) if decoder else p2d.new_zeros(0),
            q=q,
            inhibition=inhibition,
        )

    def forward(self, x: torch.Tensor) -> SIAForward:
        return self.forward_head(self.forward_features(x))

    @staticmethod
    def view_descriptor(enc: EncoderOutput) -> torch.Tensor:
        """The DAM descriptor of a view: the mean of its C class-token outputs (docs/method.md §3.3)."""
        return enc.tokens.mean(1)
