"""The predictor: numpy in, numpy out. The only inference entry point the CLI and the napari plugin call.

Given an RGB tile (H, W, 3) uint8 and optionally its image-level labels, it returns the class scores, the
CAM (A), the inhibition map (I), the region-consistent activation map (A'), the RSM result, the pseudo-label
map and the decoder's label map, each at the tile's full resolution. Tiles whose sides are not multiples of
the patch size are padded (reflect) and cropped back. Larger images go tile by tile with overlap and
blending (:meth:`SIAPredictor.predict_tiled`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .argmax import channel_argmax, class_argmax
from .cam import ClassMaps, class_maps
from .config import SIAConfig
from .errors import SIAError
from .models.par import pixel_adaptive_refine
from .models.rsm import masked_argmax, rsm_fuse
from .models.sia import SIAModel
from .runtime import resolve_device

__all__ = ["Prediction", "NetworkMaps", "SIAPredictor", "resolve_device"]


@dataclass
class Prediction:
    """What the predictor returns for one image; maps are float32 (C, H, W) in [0, 1], label maps uint8 (H, W).

    ``inhibition``, ``activation`` and ``rsm`` are None for a model trained without the RFM (variants a, c).
    """

    scores: np.ndarray
    """Classifier probabilities (C,) (sigmoid of the image logits)."""
    labels: np.ndarray
    """The image-level labels used for the maps (C,) 0/1: given, or predicted (scores > infer.label_threshold)."""
    cam: np.ndarray
    inhibition: Optional[np.ndarray]
    activation: Optional[np.ndarray]
    rsm: Optional[np.ndarray]
    pseudo_label: np.ndarray
    """Argmax over the present classes of the RSM result (of the CAM when RSM is off or unavailable)."""
    label_map: np.ndarray
    """The decoder's segmentation (the headline output): its argmax over all classes, or, with image labels
    given, over those classes; label-free with ``infer.gate``, over the classes the classifier predicts."""
    probabilities: np.ndarray
    """Decoder probabilities (C, H, W), zero for the classes ``label_map`` leaves out."""

    def maps(self) -> dict[str, np.ndarray]:
        """The float maps that exist, by name."""
        names = ("cam", "inhibition", "activation", "rsm", "probabilities")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclass
class NetworkMaps:
    """One forward pass of a batch, before image labels are applied (:meth:`SIAPredictor.forward_batch`)."""

    images: np.ndarray
    """The RGB tiles (B, H, W, 3) uint8."""
    size: tuple[int, int]
    """(H, W) before padding to the patch size."""
    maps: ClassMaps
    scores: torch.Tensor
    """Classifier probabilities (B, C)."""


class SIAPredictor:
    """Stateless inference wrapper around a trained :class:`SIAModel`.

    Args:
        model: the network (moved to ``device`` and put in eval mode).
        cfg: its configuration (classes, normalisation, RSM constants, inference defaults).
        device: 'auto', 'cpu', 'cuda' or a torch device.
    """

    def __init__(self, model: SIAModel, cfg: SIAConfig, device: Union[str, torch.device] = "auto") -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self._mean = torch.tensor(cfg.data.mean, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(cfg.data.std, device=self.device).view(1, 3, 1, 1) * 255

    @classmethod
    def from_run(cls, path: Union[str, Path], device: Union[str, torch.device] = "auto") -> SIAPredictor:
        """Load from a run directory or a SIA ``.safetensors`` file."""
        from .build import load_model

        dev = resolve_device(device)
        model, cfg = load_model(path, device=dev)
        return cls(model, cfg, dev)

    # ------------------------------------------------------------------------------------------ helpers
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise SIAError(
                f"expected an RGB image (H, W, 3), got shape {image.shape}",
                fix="convert the image to RGB (grayscale and RGBA are converted by sia_core.data.images.read_rgb)",
            )
        if image.dtype != np.uint8:
            raise SIAError(f"expected a uint8 image, got {image.dtype}", fix="scale the image to 0..255 uint8")
        return image[..., :3]

    def _check_labels(self, labels: Optional[Sequence[int]], n: int) -> Optional[np.ndarray]:
        if labels is None:
            return None
        arr = np.asarray(labels, dtype=np.float32)
        if arr.ndim == 1:
            arr = np.tile(arr, (n, 1))
        if arr.shape != (n, self.num_classes) or not np.isin(arr, (0, 1)).all() or (arr.sum(1) == 0).any():
            raise SIAError(
                f"image-level labels {np.asarray(labels).tolist()} do not fit {self.num_classes} classes "
                f"{self.cfg.data.classes}",
                fix=f"give {self.num_classes} values of 0/1 with at least one 1",
            )
        return arr

    def _to_tensor(self, images: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, H, W, 3) uint8 -> normalised (B, 3, H', W') with sides padded up to the patch size."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()
        x = (x - self._mean) / self._std
        h, w = x.shape[-2:]
        p = self.model.patch_size
        ph, pw = (-h) % p, (-w) % p
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return x, (h, w)

    # ------------------------------------------------------------------------------------------ predict
    @torch.no_grad()
    def forward_batch(
        self,
        images: np.ndarray,
        scales: Optional[Sequence[float]] = None,
        flip: Optional[bool] = None,
    ) -> NetworkMaps:
        """Run the network on a batch of same-sized tiles (B, H, W, 3) uint8: every map, before any image label
        is applied. :meth:`finish` turns them into predictions, for given or predicted labels; evaluation
        finishes one forward pass both ways."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        images = np.stack([self._check_image(im) for im in images])
        scales = tuple(scales) if scales is not None else tuple(self.cfg.infer.scales)
        flip = self.cfg.infer.flip if flip is None else flip
        x, size = self._to_tensor(images)
        with self._autocast():
            maps = class_maps(self.model, x, scales, flip, want_seg=True)
        return NetworkMaps(images=images, size=size, maps=maps, scores=torch.sigmoid(maps.logits))

    def predicted_labels(self, scores: torch.Tensor) -> torch.Tensor:
        """Image-level labels (B, C) from classifier probabilities: above ``infer.label_threshold``, else the
        most likely class (every tile holds some tissue)."""
        present = (scores > self.cfg.infer.label_threshold).float()
        none = present.sum(1) == 0
        present[none, scores[none].argmax(1)] = 1.0
        return present

    @torch.no_grad()
    def finish(
        self, net: NetworkMaps, labels: Optional[Sequence] = None, mask_background: Optional[bool] = None
    ) -> list[Prediction]:
        """Predictions from the network's maps: with the given image labels (C,) or (B, C), or label-free
        (``labels=None``: the classes the classifier predicts)."""
        b = len(net.images)
        h, w = net.size
        maps, scores = net.maps, net.scores
        given = self._check_labels(labels, b)
        present = self.predicted_labels(scores) if given is None else torch.from_numpy(given).to(self.device)
        crop = (slice(None), slice(None), slice(0, h), slice(0, w))
        cam = maps.cam * present[:, :, None, None]
        inhibition = activation = result = None
        if maps.inhibition_grid is not None:
            r = self.cfg.rsm
            rsm = rsm_fuse(maps.cam, maps.inhibition_grid, present, r.pool, r.obj_threshold, r.erosion, maps.cam_grid)
            inhibition, activation, result = maps.inhibition * present[:, :, None, None], rsm.activation, rsm.result
        probs = maps.seg
        if given is not None or self.cfg.infer.gate:
            probs = probs * present[:, :, None, None]
        if self.cfg.infer.refine:
            # Every map a label map is read from is refined, so the maps returned (and scored) and the label
            # maps agree, and tiles blend refined maps.
            image = torch.from_numpy(net.images).to(self.device).permute(0, 3, 1, 2).float()
            pad = (0, maps.seg.shape[-1] - w, 0, maps.seg.shape[-2] - h)
            image = F.pad(image, pad, mode="replicate") if any(pad) else image
            cam, probs = pixel_adaptive_refine(image, cam), pixel_adaptive_refine(image, probs)
            if result is not None:
                inhibition, result = pixel_adaptive_refine(image, inhibition), pixel_adaptive_refine(image, result)
        fused = result if result is not None and self.cfg.rsm.enabled else cam
        pseudo = masked_argmax(fused, present)[:, :h, :w]
        label_map = channel_argmax(probs)[:, :h, :w]
        mask_background = self.cfg.data.white_background if mask_background is None else mask_background
        if mask_background:
            from .data.background import white_background_mask

            bg = np.stack(
                [
                    white_background_mask(im, self.cfg.data.white_threshold, self.cfg.data.white_min_size)
                    for im in net.images
                ]
            )
            bg_t = torch.from_numpy(bg).to(self.device)
            pseudo = pseudo.masked_fill(bg_t, self.cfg.data.ignore_index)
            label_map = label_map.masked_fill(bg_t, self.cfg.data.ignore_index)

        def np_maps(t: Optional[torch.Tensor]) -> Optional[list[np.ndarray]]:
            return None if t is None else list(t[crop].float().cpu().numpy().astype(np.float32))

        per = {
            "scores": list(scores.cpu().numpy().astype(np.float32)),
            "labels": list(present.cpu().numpy().astype(np.uint8)),
            "cam": np_maps(cam),
            "inhibition": np_maps(inhibition),
            "activation": np_maps(activation),
            "rsm": np_maps(result),
            "pseudo_label": list(pseudo.cpu().numpy().astype(np.uint8)),
            "label_map": list(label_map.cpu().numpy().astype(np.uint8)),
            "probabilities": np_maps(probs),
        }
        return [
            Prediction(**{f.name: (per[f.name][i] if per[f.name] is not None else None) for f in fields(Prediction)})
            for i in range(b)
        ]

    def predict_batch(
        self,
        images: np.ndarray,
        labels: Optional[Sequence] = None,
        scales: Optional[Sequence[float]] = None,
        flip: Optional[bool] = None,
        mask_background: Optional[bool] = None,
    ) -> list[Prediction]:
        """Predict a batch of same-sized tiles (B, H, W, 3) uint8.

        Args:
            images: the tiles.
            labels: image-level labels, (C,) for all tiles or (B, C); None = use the classifier's prediction.
            scales: inference scales (default ``cfg.infer.scales``).
            flip: add horizontal flips (default ``cfg.infer.flip``).
            mask_background: give white glass the ignore index in the label maps (default
                ``cfg.data.white_background``).
        """
        return self.finish(self.forward_batch(images, scales, flip), labels, mask_background)

    def predict(
        self,
        image: np.ndarray,
        labels: Optional[Sequence[int]] = None,
        scales: Optional[Sequence[float]] = None,
        flip: Optional[bool] = None,
        mask_background: Optional[bool] = None,
    ) -> Prediction:
        """Predict one RGB tile (H, W, 3) uint8; see :meth:`predict_batch`."""
        return self.predict_batch(image[None], labels, scales, flip, mask_background)[0]

    # ------------------------------------------------------------------------------------------ large images
    def predict_image(
        self,
        image: np.ndarray,
        labels: Optional[Sequence[int]] = None,
        scales: Optional[Sequence[float]] = None,
        flip: Optional[bool] = None,
        mask_background: Optional[bool] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> Prediction:
        """Predict an image of any size: one pass when it fits in ``infer.tile_size``, else tile by tile."""
        tile = self.cfg.infer.tile_size
        image = self._check_image(image)
        if image.shape[0] <= tile and image.shape[1] <= tile:
            return self.predict(image, labels, scales, flip, mask_background)
        return self.predict_tiled(
            image, labels, scales=scales, flip=flip, mask_background=mask_background, progress=progress
        )

    def predict_tiled(
        self,
        image: np.ndarray,
        labels: Optional[Sequence[int]] = None,
        tile: Optional[int] = None,
        overlap: Optional[int] = None,
        batch_size: Optional[int] = None,
        scales: Optional[Sequence[float]] = None,
        flip: Optional[bool] = None,
        mask_background: Optional[bool] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> Prediction:
        """Predict a large image tile by tile with overlap, cross-fading the maps of neighbouring tiles.

        Memory grows with the output maps only. Without ``labels`` each tile keeps the classes its own
        classifier finds (a large region rarely holds every class everywhere); the image-level scores are the
        maximum over tiles (the classifier's own global max pooling, taken over the whole image).
        """
        from .tiling import tiled_map

        image = self._check_image(image)
        given = self._check_labels(labels, 1)
        tile = tile or self.cfg.infer.tile_size
        overlap = self.cfg.infer.tile_overlap if overlap is None else overlap
        batch_size = batch_size or self.cfg.infer.batch_size
        tile_scores: list[np.ndarray] = []
        tile_present: list[np.ndarray] = []

        def run(batch: np.ndarray) -> dict[str, np.ndarray]:
            preds = self.predict_batch(batch, None if given is None else given[0], scales, flip, mask_background=False)
            tile_scores.extend(p.scores for p in preds)
            tile_present.extend(p.labels for p in preds)
            return {k: np.stack([p.maps()[k] for p in preds]) for k in preds[0].maps()}

        maps = tiled_map(run, image, tile, overlap, batch_size, progress=progress)
        scores = np.max(tile_scores, axis=0).astype(np.float32)
        present = given[0].astype(np.uint8) if given is not None else np.max(tile_present, axis=0).astype(np.uint8)
        rsm = maps.get("rsm")
        use_rsm = rsm is not None and self.cfg.rsm.enabled
        source = rsm if use_rsm else maps["cam"]
        pseudo = class_argmax(source, present)
        label_map = class_argmax(maps["probabilities"])
        mask_background = self.cfg.data.white_background if mask_background is None else mask_background
        if mask_background:
            from .data.background import white_background_mask

            bg = white_background_mask(image, self.cfg.data.white_threshold, self.cfg.data.white_min_size)
            pseudo[bg] = self.cfg.data.ignore_index
            label_map[bg] = self.cfg.data.ignore_index
        return Prediction(
            scores=scores,
            labels=present,
            cam=maps["cam"],
            inhibition=maps.get("inhibition"),
            activation=maps.get("activation"),
            rsm=rsm,
            pseudo_label=pseudo,
            label_map=label_map,
            probabilities=maps["probabilities"],
        )
