"""What raises the label-free decoder: each lever trained on the same budget (cpu preset, full model f, one
seed) and scored on the *tune* part of WSSS4LUAD val only (the report part is never looked at here).

    python benchmarks/levers.py --data ../shared/data/wsss4luad --out runs/levers [--levers a,b] [--jobs 2]

Every lever is a list of ``--set`` overrides of the cpu preset; ``gate`` is an inference-time lever and is
scored on every run (decoder restricted to the classes the classifier predicts), and so is ``refined`` (pixel-adaptive
refinement of the maps along colour edges). A finished run is reused.
With ``--jobs 2`` two runs train side by side, one thread each (on 2 cores this finishes a list sooner
than one two-thread run after another). Results: ``OUT/levers.json`` and ``OUT/levers.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _wsss import preset_infer, score_run, train_run, train_side_by_side, val_parts

from sia_core.io_utils import atomic_write_text

LEVERS: dict[str, list[str]] = {
    "baseline": [],
    "mosaic 0.25": ["train.mosaic=0.25"],
    "glass": ["train.seg_on_glass=true"],
    "seg balance 0.5": ["train.seg_balance=0.5"],
    "confidence 0.3": ["train.seg_confidence=0.3"],
    "warm-up 0.3": ["train.warmup_frac=0.3"],
    "detached decoder": ["model.decoder_detach=true"],
}


INFERENCE = {  # inference-time levers, scored on every run
    "plain": {"gate": False, "refine": False},
    "gated": {"gate": True, "refine": False},
    "refined": {"gate": False, "refine": True},
    "gated+refined": {"gate": True, "refine": True},
}


def slug(name: str) -> str:
    return name.replace(" ", "_").replace("+", "plus").replace(".", "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/wsss4luad")
    ap.add_argument("--out", default="runs/levers")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--variant", default="f")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levers", default=",".join(LEVERS), help="comma-separated names (see LEVERS)")
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE[;KEY=VALUE]",
        help="an extra lever, e.g. 'mosaic+glass=train.mosaic=0.25;train.seg_on_glass=true'",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for every run")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument(
        "--modes", default=",".join(INFERENCE), help="inference modes scored (PAR refinement is slow on a CPU)"
    )
    ap.add_argument("--only-train", metavar="NAME", help=argparse.SUPPRESS)  # a worker of --jobs
    args = ap.parse_args()
    levers = {n: LEVERS[n] for n in args.levers.split(",") if n}
    for item in args.extra:
        name, _, sets = item.partition("=")
        levers[name] = [s for s in sets.split(";") if s]
    levers = {name: [*args.set, *sets] for name, sets in levers.items()}
    out = Path(args.out)

    if args.only_train:
        train_run(
            out / slug(args.only_train),
            args.data,
            args.preset,
            args.variant,
            args.seed,
            levers[args.only_train],
            log=args.only_train,
        )
        return
    if args.jobs > 1:
        base = [sys.executable, __file__, "--data", args.data, "--out", args.out, "--preset", args.preset]
        base += ["--variant", args.variant, "--seed", str(args.seed), "--levers", args.levers]
        base += [f"--extra={e}" for e in args.extra] + [f"--set={s}" for s in args.set]
        train_side_by_side(base, list(levers), args.jobs)

    parts = {"tune": val_parts(args.data)["tune"]}
    modes = {m: INFERENCE[m] for m in args.modes.split(",")}
    base_infer = preset_infer(args.preset, args.set)  # each mode on top of the preset's inference
    ref = "plain" if "plain" in modes else next(iter(modes))  # the run's maps and classifier are read from it
    results = {}
    for name, sets in levers.items():
        run, seconds = train_run(out / slug(name), args.data, args.preset, args.variant, args.seed, sets, log=name)
        results[name] = {"sets": sets, "train_seconds": seconds}
        for mode, infer in modes.items():
            results[name][mode] = score_run(run, parts, **{**base_infer, **infer})["tune"]
        plain = results[name][ref]
        done = ", ".join(f"{m} {results[name][m]['label_free']['decoder']['mIoU']:.3f}" for m in modes)
        given = plain["labels_given"][pseudo_key(plain)]["mIoU"]
        print(f"[{name}] tune: label-free decoder {done}; labels-given pseudo-labels {given:.3f}", flush=True)

    lines = [
        f"Levers on the tune part of {args.data} val ({len(parts['tune'])} patches), preset {args.preset}, variant "
        f"{args.variant}{' ' + ' '.join(args.set) if args.set else ''}, seed {args.seed}; mIoU (per-class IoU "
        "tumor / stroma / normal)",
        "",
        "| lever | overrides | "
        + " | ".join(f"label-free decoder, {m}" for m in modes)
        + " | label-free RSM/CAM | labels-given pseudo-labels | image labels exactly right | train s |",
        "|---|---|" + "---|" * (len(modes) + 4),
    ]
    for name, r in results.items():
        p = r[ref]
        key = pseudo_key(p)
        cells = [name, " ".join(f"`{s}`" for s in r["sets"]) or "(cpu preset)"]
        cells += [cell(r[mode]["label_free"]["decoder"]) for mode in modes]
        given = cell(p["labels_given"][key])
        if "refined" in r:
            given += f" (refined {r['refined']['labels_given'][key]['mIoU']:.3f})"
        cells += [cell(p["label_free"][key]), given, f"{p['classifier']['exact_match']:.2f}"]
        cells.append(f"{r['train_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    atomic_write_text(out / "levers.md", table + "\n")
    atomic_write_text(out / "levers.json", json.dumps({"args": vars(args), "results": results}, indent=1))


def pseudo_key(result: dict) -> str:
    return "rsm" if "rsm" in result["labels_given"] else "cam"


def cell(m: dict) -> str:
    return f"{m['mIoU']:.3f} ({' / '.join(f'{v:.2f}' for v in m['IoU'])})"


if __name__ == "__main__":
    main()
