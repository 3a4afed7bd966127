"""What each SIA module costs, and what freezing a large backbone saves: seconds per training step of variants
a-f beside a plain timm ViT classifier step, predictor time per tile beside a plain forward, and (``--freeze``)
the full model on ViT-B and ViT-L with ``model.freeze`` none / all-but-2 / all, all in one run on one machine.

    python benchmarks/step_cost.py                      # ViT-Tiny, 224 px, batch 16 (the README table)
    python benchmarks/step_cost.py --backbone vit_base_patch16_224 --predictor-only   # the paper backbone
    python benchmarks/step_cost.py --freeze             # ViT-B and ViT-L, random init, freeze options

Rows are timed interleaved with their reference (plain, a, plain, b, plain, ...; for --freeze: none,
all-but-2, none, all, none): each row's ratio is its time over the mean of the reference calls just before
and after it, so load from other processes and drift cancel; the spread column is the range of that ratio
over the rounds. Models have random weights (``model.pretrained`` none), which do not change their speed.

Memory per freeze option: trainable parameters, their gradients + Adam state (12 bytes each), and the
tensors autograd keeps for the backward pass of one step (counted once per storage); on CUDA also the peak
allocated memory of a step.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import timm
import torch
import torch.nn.functional as F
from _bench import interleaved, print_rows, synthetic_batch  # benchmarks/_bench.py: the script folder is on sys.path

from sia_core.build import build_model
from sia_core.config import apply_variant, get_preset
from sia_core.models.freeze import trainable_parameters
from sia_core.objective import sia_losses
from sia_core.predictor import SIAPredictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="vit_tiny_patch16_224")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each row timed once per round)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", default="a,b,c,d,f")
    ap.add_argument("--no-multiscale", action="store_true", help="skip the multi-scale training-CAM rows")
    ap.add_argument("--predictor-only", action="store_true", help="only the predictor rows (e.g. a ViT-B on a CPU)")
    ap.add_argument("--freeze", action="store_true", help="only the freeze table (ViT-B, ViT-L)")
    ap.add_argument("--freeze-backbones", default="vit_base_patch16_224,vit_large_patch16_224")
    ap.add_argument("--freeze-options", default="all-but-2,all")
    ap.add_argument("--freeze-batch", type=int, default=2, help="batch of the freeze rows (ViT-L on a CPU)")
    ap.add_argument("--freeze-rounds", type=int, default=3)
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    torch.manual_seed(0)
    where = f"{dev.type} ({torch.get_num_threads()} threads)"

    def sia_cfg(backbone: str, variant: str, scales: tuple[float, ...] = (1.0,), flip: bool = False):
        cfg = apply_variant(get_preset("paper"), variant)
        cfg.model.backbone = backbone
        cfg.model.pretrained = None  # random init: the same speed, nothing to download
        cfg.data.classes = [f"c{i}" for i in range(args.classes)]
        cfg.data.img_size = args.size
        cfg.train.cam_scales = scales
        cfg.train.cam_flip = flip
        return cfg

    def batch_of(b: int):
        x = torch.randn(b, 3, args.size, args.size, device=dev)
        y = (torch.rand(b, args.classes, device=dev) > 0.5).float()
        y[y.sum(1) == 0, 0] = 1
        return x, y

    def sia_step(model: torch.nn.Module, cfg, batch, params: list[torch.nn.Parameter]) -> Callable[[], None]:
        opt = torch.optim.Adam(params, lr=1e-4, weight_decay=5e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with amp:
                out = sia_losses(model, batch, cfg, progress=0.6)  # after warm-up: every loss is on
            out.loss.backward()
            opt.step()

        return step

    if args.freeze:
        for backbone in args.freeze_backbones.split(","):
            freeze_table(backbone, args, dev, sia_cfg, batch_of, sia_step, sync, where, amp)
        return

    x, y = batch_of(args.batch)
    plain = timm.create_model(args.backbone, pretrained=False, num_classes=args.classes).to(dev).train()
    opt = torch.optim.Adam(plain.parameters(), lr=1e-4, weight_decay=5e-4)

    def plain_step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = F.multilabel_soft_margin_loss(plain(x).float(), y)
        loss.backward()
        opt.step()

    if not args.predictor_only:
        batch = synthetic_batch(x, y)
        configs = [(v, sia_cfg(args.backbone, v)) for v in args.variants.split(",")]
        if not args.no_multiscale:
            configs.append(("f, train CAM 1.0+flip", sia_cfg(args.backbone, "f", (1.0,), True)))
            configs.append(("f, train CAM (1.0,0.75,1.5)+flip", sia_cfg(args.backbone, "f", (1.0, 0.75, 1.5), True)))
        steps = []
        for name, cfg in configs:
            model = build_model(cfg).to(dev).train()
            steps.append((name, sia_step(model, cfg, batch, [p for p in model.parameters() if p.requires_grad])))
        rows = interleaved(("plain ViT classifier", plain_step), steps, args.rounds, args.warmup, sync)
        print_rows(f"Training step, {args.backbone}, {args.size} px, batch {args.batch}, {where}", rows)

    # ---------------------------------------------------------------- predictor per tile
    plain.eval()
    tile = torch.randn(1, 3, args.size, args.size, device=dev)

    def plain_fwd() -> None:
        with torch.no_grad(), amp:
            plain(tile)

    cfg = sia_cfg(args.backbone, "f")
    pred = SIAPredictor(build_model(cfg), cfg, dev)
    img = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
    prow = [
        ("predictor 1 scale", lambda: pred.predict(img, mask_background=False)),
        ("predictor 1 scale + flip", lambda: pred.predict(img, flip=True, mask_background=False)),
        (
            "predictor (1,.75,1.25,1.5)+flip",
            lambda: pred.predict(img, scales=(1.0, 0.75, 1.25, 1.5), flip=True, mask_background=False),
        ),
    ]
    rows = interleaved(("plain forward", plain_fwd), prow, max(args.rounds, 10), 2, sync)
    print_rows(f"Predictor per {args.size} px tile (batch 1), full model f, {where}", rows)


def freeze_table(backbone, args, dev, sia_cfg, batch_of, sia_step, sync, where, amp) -> None:
    """The full model f on ``backbone`` with each freeze option; one model, one optimiser per option."""
    cfg = sia_cfg(backbone, "f")
    model = build_model(cfg).to(dev).train()
    x, y = batch_of(args.freeze_batch)
    batch = synthetic_batch(x, y)
    options = ["none", *args.freeze_options.split(",")]
    masks: dict[str, dict[str, bool]] = {}
    params: dict[str, list[torch.nn.Parameter]] = {}
    initial = {n: p.requires_grad for n, p in model.named_parameters()}  # the EMA teacher never trains
    for opt_name in options:
        for n, p in model.named_parameters():
            p.requires_grad_(initial[n])
        params[opt_name] = trainable_parameters(model, opt_name)
        masks[opt_name] = {n: p.requires_grad for n, p in model.named_parameters()}

    def with_option(opt_name: str) -> Callable[[], None]:
        step = sia_step(model, cfg, batch, params[opt_name])

        def run() -> None:
            for n, p in model.named_parameters():
                p.requires_grad_(masks[opt_name][n])
            step()

        return run

    steps = {o: with_option(o) for o in options}
    memory = {}
    for o in options:
        steps[o]()  # the optimiser's state exists from here on, as in training
        n_train = sum(p.numel() for p in params[o])
        saved = _saved_bytes(lambda o=o: _loss(model, cfg, batch, masks[o], amp))
        text = f"{n_train / 1e6:8.1f}M {n_train * 12 / 2**20:9.0f} {saved / 2**20:9.0f}"
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            steps[o]()
            text += f" {torch.cuda.max_memory_allocated(dev) / 2**20:9.0f}"
        memory[o] = text
    rows = interleaved(
        ("none", steps["none"]), [(o, steps[o]) for o in options[1:]], args.freeze_rounds, args.warmup, sync
    )
    head = "trainable  grad+Adam MiB  saved-for-backward MiB" + ("  peak MiB" if dev.type == "cuda" else "")
    print_rows(
        f"Full model f on {backbone} (random init), model.freeze options, {args.size} px, batch "
        f"{args.freeze_batch}, {where}",
        rows,
        head,
        memory,
    )


def _loss(model, cfg, batch, mask, amp) -> torch.Tensor:
    for n, p in model.named_parameters():
        p.requires_grad_(mask[n])
    with amp:
        return sia_losses(model, batch, cfg, progress=0.6).loss


def _saved_bytes(forward: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward (each storage once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    del loss
    return sum(seen.values())


if __name__ == "__main__":
    main()
