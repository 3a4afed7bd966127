"""Inference-time levers on trained runs: settings of the ``infer`` section (scales, the label threshold of the
gate) scored on the *tune* part of WSSS4LUAD val for every run of an ablation folder (variants x seeds).
Nothing is trained; the runs come from ``benchmarks/ablation.py``.

    python benchmarks/inference_levers.py --data ../shared/data/wsss4luad --runs runs/ablation --variants a,f

Per setting and variant: the label-free decoder's mIoU, mean ± sd over seeds, and its change against the
preset's own setting run by run (paired: the same weights; a change is one only when its mean exceeds its sd),
with the encoder work of the setting (sum of scale² over the scales, x2 with flip; one 224 px pass = 1).
Also written: ``RUNS/inference_levers.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from _wsss import mean_sd, preset_infer, score_run, val_parts

from sia_core.io_utils import atomic_write_text
from sia_core.predictor import SIAPredictor

SETTINGS: dict[str, dict[str, Any]] = {
    "one scale": {"scales": (1.0,)},
    "scales 1+0.75": {"scales": (1.0, 0.75)},
    "scales 1+0.5": {"scales": (1.0, 0.5)},
    "scales 1+1.25": {"scales": (1.0, 1.25)},
    "scales 1+1.5": {"scales": (1.0, 1.5)},
    "scales 1+0.75+1.25": {"scales": (1.0, 0.75, 1.25)},
    "scales 0.5-1.5": {"scales": (1.0, 0.5, 0.75, 1.25, 1.5)},
    "label threshold 0.3": {"label_threshold": 0.3},
    "label threshold 0.4": {"label_threshold": 0.4},
    "label threshold 0.6": {"label_threshold": 0.6},
}


def shown(value: Any) -> Any:
    """A setting's value as YAML writes it (tuples as lists): what ``--set infer.KEY=VALUE`` takes."""
    return list(value) if isinstance(value, tuple) else value


def encoder_work(infer: dict[str, Any]) -> float:
    """Encoder passes a setting costs, in 224 px passes (tokens grow with scale²; flip doubles)."""
    return sum(s * s for s in infer["scales"]) * (2 if infer["flip"] else 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/wsss4luad")
    ap.add_argument("--runs", default="runs/ablation", help="an ablation folder holding <variant>_s<seed> runs")
    ap.add_argument("--preset", default="cpu", help="the preset whose inference each setting starts from")
    ap.add_argument("--variants", default="a,f")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names (see SETTINGS)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    runs_dir = Path(args.runs)
    variants = args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    base = preset_infer(args.preset)
    chosen = {n: SETTINGS[n] for n in args.settings.split(",") if n}
    # a setting the preset already has would only repeat its row
    settings = {"the preset's": {}, **{n: c for n, c in chosen.items() if {**base, **c} != base}}
    missing = [str(runs_dir / f"{v}_s{s}") for v in variants for s in seeds if not (runs_dir / f"{v}_s{s}").is_dir()]
    if missing:
        raise SystemExit(f"runs not found: {', '.join(missing)} (train them with benchmarks/ablation.py)")
    parts = {"tune": val_parts(args.data)["tune"]}

    scores: dict[str, dict[str, list[dict]]] = {name: {v: [] for v in variants} for name in settings}
    for v in variants:
        for s in seeds:
            pred = SIAPredictor.from_run(runs_dir / f"{v}_s{s}", device=args.device)  # once per run
            for name, change in settings.items():
                # every setting is the whole infer section, so none carries over to the next on this predictor
                r = score_run(pred, parts, **{**base, **change})["tune"]
                scores[name][v].append(r)
                print(
                    f"[{v} seed {s}] {name}: label-free decoder {r['label_free']['decoder']['mIoU']:.3f}, "
                    f"exact match {r['classifier']['exact_match']:.2f}",
                    flush=True,
                )

    def miou(name: str, v: str) -> list[float]:
        return [r["label_free"]["decoder"]["mIoU"] for r in scores[name][v]]

    preset_words = ", ".join(f"{k} {shown(val)}" for k, val in base.items())
    lines = [
        f"Inference levers on the tune part of {args.data} val ({len(parts['tune'])} patches), runs {runs_dir}, "
        f"seeds {','.join(map(str, seeds))}; label-free decoder mIoU mean ± sd, paired change against the "
        f"{args.preset} preset's inference ({preset_words}), min / max over runs",
        "",
        "| setting | overrides | encoder work | "
        + " | ".join(f"{v}: mIoU | {v}: change, mean ± sd (min / max)" for v in variants)
        + " | image labels exactly right |",
        "|---|---|---|" + "---|---|" * len(variants) + "---|",
    ]
    for name, change in settings.items():
        cells = [
            name,
            " ".join(f"`infer.{k}={shown(val)}`" for k, val in change.items()),
        ]
        cells.append(f"{encoder_work({**base, **change}):.2f}")
        for v in variants:
            deltas = [a - b for a, b in zip(miou(name, v), miou("the preset's", v))]
            cells += [
                mean_sd(miou(name, v)),
                f"{statistics.mean(deltas):+.3f} ± {statistics.stdev(deltas) if len(deltas) > 1 else 0:.3f} "
                f"({min(deltas):+.3f} / {max(deltas):+.3f})",
            ]
        exact = [r["classifier"]["exact_match"] for v in variants for r in scores[name][v]]
        cells.append(f"{statistics.mean(exact):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    atomic_write_text(runs_dir / "inference_levers.md", table + "\n")
    atomic_write_text(
        runs_dir / "inference_levers.json", json.dumps({"args": vars(args), "scores": scores}, indent=1, default=list)
    )


if __name__ == "__main__":
    main()
