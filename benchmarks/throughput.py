"""Throughput of the full SIA model beside a plain timm ViT classifier of the same backbone, batch and
resolution, measured in one run on one machine: training images/s, and predictor tiles/s and latency per
tile beside a plain forward.

    python benchmarks/throughput.py                          # cpu preset (ViT-Tiny, 6 blocks), 224 px
    python benchmarks/throughput.py --preset paper --device cuda --amp bf16 --compile   # on a GPU

Training rows are optimiser steps on synthetic tensors already on the device (data loading excluded):
the plain classifier's step is forward + multilabel soft-margin loss + backward + Adam; SIA's is
``sia_losses`` at 60 % of training (every loss on: classification, aux, RFM, DAM with its local views,
decoder on pseudo-labels) with the preset's training-CAM scales. Inference rows: ``plain forward`` is the
classifier's forward (logits only); ``SIA forward`` one pass of the network; ``predictor`` is
``SIAPredictor.predict_batch`` with the preset's inference scales/flip (maps at tile resolution, RSM,
pseudo-labels, numpy out), i.e. what slide inference runs per tile.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

import numpy as np
import timm
import torch
import torch.nn.functional as F
from _bench import synthetic_batch, timed  # benchmarks/_bench.py: the script folder is on sys.path

from sia_core.build import build_model
from sia_core.config import get_preset
from sia_core.objective import sia_losses
from sia_core.predictor import SIAPredictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", help="model settings (backbone, decoder, scales): cpu or paper")
    ap.add_argument("--backbone", help="override the preset's timm backbone")
    ap.add_argument("--batch", type=int, default=16, help="training batch")
    ap.add_argument("--infer-batch", type=int, default=8, help="inference batch for tiles/s")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["off", "bf16"], default="off", help="bf16 autocast (CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the plain model and SIA's encoder")
    args = ap.parse_args()

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def amp() -> contextlib.AbstractContextManager:
        if args.amp == "bf16":
            return torch.autocast(dev.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    torch.manual_seed(0)
    cfg = get_preset(args.preset)
    if args.backbone:
        cfg.model.backbone = args.backbone
    cfg.data.classes = [f"c{i}" for i in range(args.classes)]
    cfg.data.palette = [[i * 40 % 256, 80, 160] for i in range(args.classes)]
    cfg.data.ignore_index = args.classes
    cfg.data.img_size = args.size
    cfg.infer.tile_size = args.size
    b, s, c = args.batch, args.size, args.classes
    kwargs = {k: v for k, v in cfg.model.backbone_kwargs.items() if k != "img_size"}
    x = torch.randn(b, 3, s, s, device=dev)
    y = (torch.rand(b, c, device=dev) > 0.5).float()
    y[y.sum(1) == 0, 0] = 1

    # ---------------------------------------------------------------- training
    plain = timm.create_model(cfg.model.backbone, pretrained=False, num_classes=c, img_size=s, **kwargs).to(dev)
    plain.train()
    opt = torch.optim.Adam(plain.parameters(), lr=1e-4, weight_decay=5e-4)
    plain_run = torch.compile(plain) if args.compile else plain

    def plain_step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = F.multilabel_soft_margin_loss(plain_run(x).float(), y)
        loss.backward()
        opt.step()

    model = build_model(cfg, pretrained=False).to(dev).train()  # random weights: the same speed, no download
    if args.compile:
        model.encoder = torch.compile(model.encoder)
    opt_s = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=5e-4)
    batch = synthetic_batch(x, y)

    def sia_step() -> None:
        opt_s.zero_grad(set_to_none=True)
        with amp():
            out = sia_losses(model, batch, cfg, progress=0.6)
        out.loss.backward()
        opt_s.step()

    t_plain = timed(plain_step, args.steps, args.warmup, sync)
    t_sia = timed(sia_step, args.steps, args.warmup, sync)
    where = f"{dev.type}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
    mode = f"amp {args.amp}" + (", torch.compile" if args.compile else "")
    print(
        f"\n{args.preset} preset, {cfg.model.backbone} {kwargs or ''}, {s} px, {c} classes, {where}, {mode}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(f"\nTraining, batch {b}")
    print(f"{'row':<34} {'s/step':>8} {'images/s':>9} {'vs plain':>9}")
    for name, t in (("plain ViT classifier", t_plain), ("SIA full model (variant f)", t_sia)):
        print(f"{name:<34} {t:8.3f} {b / t:9.1f} {t / t_plain:8.2f}x")

    # ---------------------------------------------------------------- inference
    plain.eval()
    model.eval()
    nb = args.infer_batch
    tiles = torch.randn(nb, 3, s, s, device=dev)
    one = tiles[:1]

    def plain_fwd(t: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), amp():
                plain_run(t)

        return run

    def sia_fwd(t: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), amp():
                model(t)

        return run

    pred = SIAPredictor(model, cfg, dev)
    rng = np.random.default_rng(0)
    imgs = (rng.random((nb, s, s, 3)) * 255).astype(np.uint8)
    n = max(args.steps, 5)
    rows = [
        ("plain forward", timed(plain_fwd(tiles), n, 2, sync), timed(plain_fwd(one), n, 2, sync)),
        ("SIA forward", timed(sia_fwd(tiles), n, 2, sync), timed(sia_fwd(one), n, 2, sync)),
        (
            f"predictor (scales {tuple(cfg.infer.scales)}, flip {cfg.infer.flip})",
            timed(lambda: pred.predict_batch(imgs, mask_background=False), n, 2, sync),
            timed(lambda: pred.predict_batch(imgs[:1], mask_background=False), n, 2, sync),
        ),
    ]
    print(f"\nInference per {s} px tile: tiles/s at batch {nb}, latency at batch 1")
    print(f"{'row':<40} {'tiles/s':>8} {'vs plain':>9} {'ms/tile b1':>11} {'vs plain':>9}")
    for name, tb, t1 in rows:
        print(f"{name:<40} {nb / tb:8.1f} {tb / rows[0][1]:8.2f}x {1000 * t1:11.1f} {t1 / rows[0][2]:8.2f}x")


if __name__ == "__main__":
    main()
