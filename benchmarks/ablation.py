"""The paper's Table 2 on real tissue: variants a, b, c, d, f trained with the same budget and seed on
WSSS4LUAD train patches (image-level labels only), scored on its val patches (pixel masks).

    python benchmarks/ablation.py --data ../shared/data/wsss4luad --out runs/ablation

Each variant trains in ``OUT/<variant>`` (a finished variant is reused, so an interrupted benchmark
continues where it stopped), then the table is printed in the paper's layout (mDice, mIoU, mPrecision,
mRecall) for the decoder (no labels given: the headline) and for the pseudo-labels the variant trains on
(CAM for a-d, RSM for f; true image labels given), beside the floors of ../shared/data/README.md.
Results are also written to ``OUT/ablation.json`` and ``OUT/ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sia_core.config import VARIANTS
from sia_core.data.layout import find_split
from sia_core.evaluate import evaluate_items
from sia_core.io_utils import atomic_write_text
from sia_core.predictor import SIAPredictor
from sia_core.run_config import resolve_train_config, training_samples
from sia_core.run_files import RunFiles
from sia_core.train import train_iter

KEYS = ("mDice", "mIoU", "mPrecision", "mRecall")
FLOORS = {
    "one present class everywhere": 0.502,
    "hematoxylin-darkness split (colour threshold)": 0.634,
}
NAMES = {"a": "a (baseline)", "b": "b (+RFM)", "c": "c (+DAM)", "d": "d (+RFM+DAM)", "f": "f (full, +RSM)"}


def train_variant(variant: str, args: argparse.Namespace) -> Path:
    run = Path(args.out) / variant
    files = RunFiles(run)
    sets = [f"train.iterations={args.iterations}", f"train.seed={args.seed}", "train.val_every=0"] + (args.set or [])
    cfg = resolve_train_config(args.data, preset=args.preset, overrides=sets, variant=variant)
    if files.last.is_file():
        from sia_core.build import read_weights

        _, done_cfg, meta = read_weights(files.last)
        if meta.get("iteration") == args.iterations and done_cfg.to_dict() == cfg.to_dict():
            print(f"[{variant}] already trained: {files.last}", flush=True)
            return run
    resume = files.state.is_file() and files.config.is_file()
    samples = training_samples(args.data, cfg)
    t0 = time.time()
    print(f"[{variant}] training {args.iterations} iterations ({'resuming' if resume else 'from scratch'})", flush=True)
    for info in train_iter(cfg, samples, run, resume=resume, force=not resume):
        if info.iteration % 25 == 0 or info.iteration == info.total:
            print(f"[{variant}] {info.iteration}/{info.total} loss {info.logs.get('loss', float('nan')):.3f} "
                  f"{info.images_per_s:.2f} img/s", flush=True)
    print(f"[{variant}] trained in {time.time() - t0:.0f} s", flush=True)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/wsss4luad")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--iterations", type=int, default=None, help="default: the preset's train.iterations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="a,b,c,d,f")
    ap.add_argument("--split", default="val")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra config overrides for every variant")
    args = ap.parse_args()
    if args.iterations is None:
        args.iterations = resolve_train_config(args.data, preset=args.preset).train.iterations
    items = find_split(args.data, args.split)
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    for v in args.variants.split(","):
        t0 = time.time()
        run = train_variant(v, args)
        timings[v] = time.time() - t0
        pred = SIAPredictor.from_run(run, device=args.device)
        res = evaluate_items(pred, items, batch_size=pred.cfg.infer.batch_size)
        pseudo_key = "rsm" if pred.cfg.rsm.enabled and "rsm" in res else "cam"
        results[v] = {"decoder": res["decoder"], "pseudo": res[pseudo_key], "pseudo_source": pseudo_key,
                      **{k: res[k] for k in ("cam", "inhibition", "rsm") if k in res}}
        print(f"[{v}] decoder mIoU {res['decoder']['mIoU']:.3f}, pseudo-labels ({pseudo_key}) "
              f"mIoU {res[pseudo_key]['mIoU']:.3f}", flush=True)

    cfg = SIAPredictor.from_run(Path(args.out) / args.variants.split(",")[0], device="cpu").cfg
    lines = [
        f"Ablation on {args.data} ({args.split}: {len(items)} patches), preset {args.preset} "
        f"({cfg.model.backbone} {cfg.model.backbone_kwargs}), {args.iterations} iterations x batch "
        f"{cfg.train.batch_size}, seed {args.seed}, random init",
        "",
        "| Variant | RFM | DAM | RSM | decoder mDice | mIoU | mPrecision | mRecall | pseudo-labels | mDice | mIoU "
        "| mPrecision | mRecall | CAM mIoU | I mIoU | RSM mIoU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v, r in results.items():
        cells = [NAMES.get(v, v)] + ["✓" if on else "" for on in VARIANTS[v]]
        cells += [f"{r['decoder'][k]:.3f}" for k in KEYS]
        cells += [r["pseudo_source"].upper()] + [f"{r['pseudo'][k]:.3f}" for k in KEYS]
        cells += [f"{r[k]['mIoU']:.3f}" if k in r else "n/a" for k in ("cam", "inhibition", "rsm")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"Floor (pseudo-label protocol, mIoU): {name} {value:.3f}" for name, value in FLOORS.items()]
    lines.append("Training time per variant (s): " + ", ".join(f"{v} {t:.0f}" for v, t in timings.items()))
    table = "\n".join(lines)
    print("\n" + table)
    out = Path(args.out)
    atomic_write_text(out / "ablation.md", table + "\n")
    atomic_write_text(out / "ablation.json", json.dumps({"args": vars(args), "results": results,
                                                         "train_seconds": timings}, indent=1))


if __name__ == "__main__":
    main()
