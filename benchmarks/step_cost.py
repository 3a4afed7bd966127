"""What each SIA module costs: seconds per training step of variants a-f beside a plain timm ViT classifier
step, and predictor time per tile beside a plain forward, all measured in one run on one machine.

    python benchmarks/step_cost.py                      # ViT-Tiny, 224 px, batch 16 (the README table)
    python benchmarks/step_cost.py --backbone vit_base_patch16_224 --predictor-only   # the paper backbone

Each time is the fastest of --steps calls after --warmup calls (other processes only ever add time).

The ratio column is each row's time over the plain step (or plain forward) measured in the same run.
"""

from __future__ import annotations

import argparse

import numpy as np
import timm
import torch
import torch.nn.functional as F
from _bench import synthetic_batch, timed  # benchmarks/_bench.py: the script folder is on sys.path

from sia_core.build import build_model
from sia_core.config import apply_variant, get_preset
from sia_core.objective import sia_losses
from sia_core.predictor import SIAPredictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="vit_tiny_patch16_224")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", default="a,b,c,d,f")
    ap.add_argument("--no-multiscale", action="store_true", help="skip the multi-scale training-CAM rows")
    ap.add_argument("--predictor-only", action="store_true", help="only the predictor rows (e.g. a ViT-B on a CPU)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if dev.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    torch.manual_seed(0)
    b, s, c = args.batch, args.size, args.classes
    x = torch.randn(b, 3, s, s, device=dev)
    y = (torch.rand(b, c, device=dev) > 0.5).float()
    y[y.sum(1) == 0, 0] = 1

    # ---------------------------------------------------------------- plain timm classifier step
    plain = timm.create_model(args.backbone, pretrained=False, num_classes=c).to(dev).train()
    opt = torch.optim.Adam(plain.parameters(), lr=1e-4, weight_decay=5e-4)

    def plain_step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = F.multilabel_soft_margin_loss(plain(x).float(), y)
        loss.backward()
        opt.step()


    def sia_cfg(variant: str, scales: tuple[float, ...] = (1.0,), flip: bool = False):
        cfg = apply_variant(get_preset("paper"), variant)
        cfg.model.backbone = args.backbone
        cfg.data.classes = [f"c{i}" for i in range(c)]
        cfg.data.img_size = s
        cfg.train.cam_scales = scales
        cfg.train.cam_flip = flip
        return cfg

    def sia_step_time(cfg) -> float:
        model = build_model(cfg).to(dev).train()
        opt_s = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=5e-4
        )
        batch = synthetic_batch(x, y)

        def step() -> None:
            opt_s.zero_grad(set_to_none=True)
            with amp:
                out = sia_losses(model, batch, cfg, progress=0.6)  # after warm-up: every loss is on
            out.loss.backward()
            opt_s.step()

        return timed(step, args.steps, args.warmup, sync)

    if not args.predictor_only:
        # Discarded: whichever DAM variant ran first was ~12 % slower than the same variant run later (fresh
        # process memory being faulted in), which made the row order change the ratios.
        sia_step_time(sia_cfg("f"))
        t_plain = timed(plain_step, args.steps, args.warmup, sync)
        rows = [("plain ViT classifier", t_plain)]
        for v in args.variants.split(","):
            rows.append((v, sia_step_time(sia_cfg(v))))
        if not args.no_multiscale:
            rows.append(("f, train CAM 1.0+flip", sia_step_time(sia_cfg("f", (1.0,), True))))
            rows.append(("f, train CAM (1.0,0.75,1.5)+flip", sia_step_time(sia_cfg("f", (1.0, 0.75, 1.5), True))))
        print(
            f"\nTraining step, {args.backbone}, {s} px, batch {b}, {dev.type} ({torch.get_num_threads()} threads)"
        )
        print(f"{'row':<36} {'s/step':>8} {'ratio':>7}")
        for name, t in rows:
            print(f"{name:<36} {t:8.3f} {t / t_plain:6.2f}x")

    # ---------------------------------------------------------------- predictor per tile
    plain.eval()
    tile = torch.randn(1, 3, s, s, device=dev)

    def plain_fwd() -> None:
        with torch.no_grad(), amp:
            plain(tile)

    t_fwd = timed(plain_fwd, max(args.steps, 10), 2, sync)
    cfg = sia_cfg("f")
    pred = SIAPredictor(build_model(cfg), cfg, dev)
    img = (np.random.default_rng(0).random((s, s, 3)) * 255).astype(np.uint8)
    prow = [("plain forward", t_fwd)]
    prow.append(
        (
            "predictor 1 scale",
            timed(lambda: pred.predict(img, mask_background=False), max(args.steps, 10), 2, sync),
        )
    )
    prow.append(
        (
            "predictor 1 scale + flip",
            timed(lambda: pred.predict(img, flip=True, mask_background=False), max(args.steps, 10), 2, sync),
        )
    )
    prow.append(
        (
            "predictor (1,.75,1.25,1.5)+flip",
            timed(
                lambda: pred.predict(img, scales=(1.0, 0.75, 1.25, 1.5), flip=True, mask_background=False),
                args.steps,
                1,
                sync,
            ),
        )
    )
    print(f"\nPredictor per {s} px tile (batch 1), full model f")
    print(f"{'row':<36} {'s/tile':>8} {'ratio':>7}")
    for name, t in prow:
        print(f"{name:<36} {t:8.4f} {t / t_fwd:6.2f}x")


if __name__ == "__main__":
    main()
