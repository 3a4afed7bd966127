"""The paper's Table 2 on real tissue: variants a, b, c, d, f, each trained with the same budget and several
seeds on WSSS4LUAD train patches (image-level labels only), scored on the *report* part of its val split
(regions never used to choose anything; see ``_wsss.py``), label-free first.

    python benchmarks/ablation.py --data ../shared/data/wsss4luad --out runs/ablation [--seeds 0,1,2] [--jobs 2]

Each (variant, seed) trains in ``OUT/<variant>_s<seed>``; a finished run is reused, an interrupted one resumed.
The table gives mean ± sd over seeds of: the label-free decoder (mDice, mIoU, mPrecision, mRecall, per-class
IoU), the label-free RSM / CAM (over the classes the classifier predicts), and, labelled as such, the
labels-given pseudo-labels (CAM for a-d, RSM for f). Differences smaller than the seeds' spread are not
differences. Also written: ``OUT/ablation.json``, ``OUT/ablation.md`` (``ablation_tune.*`` for ``--part tune``;
``..._trained.*`` with ``--weights trained``: the trained weights of runs with ``train.ema``, not their average).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from _wsss import PARTS, mean_sd, preset_infer, score_run, train_run, train_side_by_side, trained_weights, val_parts

from sia_core.config import VARIANTS, SIAConfig
from sia_core.io_utils import atomic_write_text

KEYS = ("mDice", "mIoU", "mPrecision", "mRecall")
NAMES = {"a": "a (baseline)", "b": "b (+RFM)", "c": "c (+DAM)", "d": "d (+RFM+DAM)", "f": "f (full, +RSM)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/wsss4luad")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="a,b,c,d,f")
    ap.add_argument("--part", default="report", choices=PARTS, help="the val part the table reports")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained side by side, one thread each")
    ap.add_argument(
        "--weights",
        default="served",
        choices=("served", "trained"),
        help="score the weights a run serves (last.safetensors) or, under train.ema, the trained ones it averages",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for every run")
    ap.add_argument("--only-train", metavar="VARIANT:SEED", help=argparse.SUPPRESS)  # a worker of --jobs
    args = ap.parse_args()
    out = Path(args.out)
    variants = args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(v, s) for v in variants for s in seeds]

    def train(v: str, s: int) -> tuple[Path, float]:
        return train_run(out / f"{v}_s{s}", args.data, args.preset, v, s, args.set, log=f"{v} seed {s}")

    if args.only_train:
        v, _, s = args.only_train.partition(":")
        train(v, int(s))
        return
    if args.jobs > 1:
        base = [sys.executable, __file__, "--data", args.data, "--out", args.out, "--preset", args.preset]
        base += [f"--set={s}" for s in args.set]
        # longest first (the DAM variants), so the two workers finish close together
        order = sorted(jobs, key=lambda j: -VARIANTS[j[0]][1])
        train_side_by_side(base, [f"{v}:{s}" for v, s in order], args.jobs)

    parts = val_parts(args.data)
    # Inference as the preset does it today (a run keeps the infer section it was trained with); the decoder
    # without the gate is scored too, as the paper's tables score it.
    infer = preset_infer(args.preset, args.set)
    gate = infer["gate"]
    scores: dict[str, list[dict]] = {v: [] for v in variants}
    ungated: dict[str, list[dict]] = {v: [] for v in variants}
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    modules: dict[str, tuple[bool, bool, bool]] = dict(VARIANTS)
    for v, s in jobs:
        run, sec = train(v, s)
        cfg = SIAConfig.load(run / "config.yaml")  # the modules as trained (a --set may switch one off)
        modules[v] = (cfg.rfm.enabled, cfg.dam.enabled, cfg.rsm.enabled)
        part = {args.part: parts[args.part]}
        source = run if args.weights == "served" else trained_weights(run, args.device)
        r = score_run(source, part, device=args.device, **infer)[args.part]
        free = r if not gate else score_run(source, part, device=args.device, **{**infer, "gate": False})[args.part]
        scores[v].append(r)
        ungated[v].append(free["label_free"]["decoder"])
        seconds[v].append(sec)
        src = pseudo_source(modules[v])
        print(
            f"[{v} seed {s}] {args.part}: label-free decoder mIoU {r['label_free']['decoder']['mIoU']:.3f}, "
            f"labels-given pseudo-labels ({src}) {r['labels_given'][src]['mIoU']:.3f}",
            flush=True,
        )

    table = render(args, parts[args.part], scores, ungated, gate, seconds, variants, seeds, modules)
    print("\n" + table)
    name = (
        "ablation"
        + ("" if args.part == "report" else f"_{args.part}")
        + ("_trained" if args.weights == "trained" else "")
    )
    atomic_write_text(out / f"{name}.md", table + "\n")
    atomic_write_text(
        out / f"{name}.json",
        json.dumps(
            {"args": vars(args), "scores": scores, "ungated_decoder": ungated, "train_seconds": seconds}, indent=1
        ),
    )


def pseudo_source(modules: tuple[bool, bool, bool]) -> str:
    """The output a variant with these (RFM, DAM, RSM) switches trains its decoder on: RSM with RSM, else CAM."""
    return "rsm" if modules[2] else "cam"


def render(args, items, scores, ungated, gate, seconds, variants, seeds, modules) -> str:
    def col(v: str, proto: str, output: str, key: str) -> str:
        return mean_sd([r[proto][output][key] for r in scores[v]])

    def per_class(v: str, proto: str, output: str) -> str:
        ious = [r[proto][output]["IoU"] for r in scores[v]]
        return " / ".join(f"{statistics.mean(c):.2f}" for c in zip(*ious))

    lines = [
        f"Ablation on {args.data}, val {args.part} part ({len(items)} patches), preset {args.preset}"
        f"{' ' + ' '.join(args.set) if args.set else ''}, seeds {','.join(map(str, seeds))} (mean ± sd), random init",
        "",
        "Label-free (no labels given; what a user gets"
        + (": the decoder restricted to the classes the classifier predicts, infer.gate" if gate else "")
        + "):",
        "",
        "| Variant | RFM | DAM | RSM | decoder mDice | mIoU | mPrecision | mRecall | IoU tumor / stroma / normal "
        "| decoder mIoU without the gate | RSM or CAM mIoU (predicted classes) | image labels exactly right |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        maps = pseudo_source(modules[v])
        cells = [NAMES.get(v, v)] + ["✓" if on else "" for on in modules[v]]
        cells += [col(v, "label_free", "decoder", k) for k in KEYS]
        cells += [
            per_class(v, "label_free", "decoder"),
            mean_sd([m["mIoU"] for m in ungated[v]]),
            f"{col(v, 'label_free', maps, 'mIoU')} ({maps.upper()})",
            mean_sd([r["classifier"]["exact_match"] for r in scores[v]]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Labels given (the true classes of each image; pseudo-mask quality, not comparable with the paper's table):",
        "",
        "| Variant | pseudo-labels | mDice | mIoU | mPrecision | mRecall | CAM mIoU | I mIoU | RSM mIoU "
        "| decoder mIoU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        src = pseudo_source(modules[v])
        given = scores[v][0]["labels_given"]
        cells = [NAMES.get(v, v), src.upper()] + [col(v, "labels_given", src, k) for k in KEYS]
        cells += [col(v, "labels_given", o, "mIoU") if o in given else "n/a" for o in ("cam", "inhibition", "rsm")]
        cells.append(col(v, "labels_given", "decoder", "mIoU"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Training time per run as this command measured it (s, mean; runs trained side by side with --jobs "
        "share the cores, resumed runs have no time): "
        + ", ".join(f"{v} {statistics.mean(seconds[v]):.0f}" for v in variants if all(s == s for s in seconds[v]))
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
