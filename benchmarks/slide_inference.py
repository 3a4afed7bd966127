"""Slide inference end to end: tiles/s and peak memory at several slide sizes, and the overhead of reading,
blending and writing over pure model time on the same tiles.

    python benchmarks/slide_inference.py                                  # 4k, 8k, 16k px; cpu preset model
    python benchmarks/slide_inference.py --sizes 16384 --run RUN          # a trained model
    python benchmarks/slide_inference.py --preset test --sizes 2048 4096  # tiny model, quick look

Each size runs in its own process (a fresh interpreter: peak RSS is that process's ``ru_maxrss``) on a
synthetic H&E OME-TIFF pyramid (:mod:`sia_core.slide.synthetic`, cached in ``--workdir``; about half of
each slide is glass, which is skipped). The child loads the model, runs one warm-up batch, records its RSS
("base": interpreter + torch + model), runs ``predict_slide`` end to end (tissue mask, prefetching reader,
model, blending writer, OME-Zarr pyramid, GeoJSON) and records the peak RSS. It then times
``predict_batch`` alone on an even sample of the same tissue tiles (read beforehand, batch by batch, not
timed): the pure model time. I/O overhead = end-to-end time / (pure time per tile x tiles) - 1.
Without ``--run`` the model is the preset's architecture with random weights: throughput does not depend
on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _child(args: argparse.Namespace) -> None:
    import resource

    import numpy as np
    import psutil
    import torch

    from sia_core.build import build_model
    from sia_core.config import get_preset
    from sia_core.predictor import SIAPredictor
    from sia_core.slide import SlideOptions, choose_resolution, open_slide, predict_slide, read_region, tissue_mask
    from sia_core.slide.plan import Grid, plan_steps

    torch.manual_seed(0)
    if args.run:
        pred = SIAPredictor.from_run(args.run, device=args.device)
    else:
        cfg = get_preset(args.preset)
        pred = SIAPredictor(build_model(cfg, pretrained=False), cfg, args.device)  # random weights, no download
    cfg = pred.cfg
    tile = cfg.infer.tile_size
    batch = args.batch or cfg.infer.batch_size
    warm = np.full((batch, tile, tile, 3), 200, np.uint8)
    pred.predict_batch(warm, mask_background=False)
    base = psutil.Process().memory_info().rss
    warm_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the model's own batch peak
    t0 = time.perf_counter()
    result = predict_slide(pred, args.slide, args.out, batch_size=batch, overwrite=True, chunk=args.chunk)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB

    # pure model time on an even sample of the same tissue tiles
    slide = open_slide(args.slide)
    res = choose_resolution(slide)
    mask = tissue_mask(slide, res, tile, cfg.data.white_threshold)
    opts = SlideOptions(chunk=args.chunk).resolved(cfg)
    grid = Grid.make(res.shape, tile, opts.overlap, opts.chunk)
    steps, _ = plan_steps(grid, mask, opts.min_tissue, (0, grid.n_rows))
    coords = [c for s in steps for c in s.tiles]
    n = len(coords) if args.pure_tiles <= 0 else min(len(coords), args.pure_tiles)
    sample = [coords[int(i * len(coords) / n)] for i in range(n)]
    model_s = 0.0
    for i in range(0, n, batch):
        crops = np.stack([read_region(slide, res, y, y + tile, x, x + tile) for y, x in sample[i : i + batch]])
        t1 = time.perf_counter()
        pred.predict_batch(crops, mask_background=False)
        model_s += time.perf_counter() - t1
    per_tile = model_s / max(n, 1)
    print(
        json.dumps(
            {
                "size": list(result.shape),
                "tiles": result.tiles_done,
                "skipped": result.tiles_skipped,
                "seconds": wall,
                "timings": result.timings,
                "base_rss": base,
                "warm_peak_rss": warm_peak,
                "peak_rss": peak,
                "pure_per_tile": per_tile,
                "pure_sample": n,
                "threads": torch.get_num_threads(),
                "model": cfg.model.backbone + (f" {cfg.model.backbone_kwargs}" if cfg.model.backbone_kwargs else ""),
                "tile": tile,
                "batch": batch,
                "flip": cfg.infer.flip,
                "scales": list(cfg.infer.scales),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384], help="slide sides (px)")
    ap.add_argument("--run", help="trained run directory or .safetensors (default: --preset, random weights)")
    ap.add_argument("--preset", default="cpu", help="architecture without --run: cpu, paper or test")
    ap.add_argument("--batch", type=int, help="tiles per model call (default: the model's infer.batch_size)")
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pure-tiles", type=int, default=512, help="tiles in the pure-model sample (0: all)")
    ap.add_argument("--workdir", default="/tmp/sia-bench-slides", help="synthetic slides and outputs")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--slide", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--table", help="only print the table of a --json file written before")
    args = ap.parse_args()
    if args.table:
        print_table(json.loads(Path(args.table).read_text()), args.device, args.chunk)
        return
    if args.child:
        _child(args)
        return

    from sia_core.slide import write_synthetic_slide

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        slide = work / f"synthetic_{size}.ome.tif"
        if not slide.is_file():
            t0 = time.perf_counter()
            write_synthetic_slide(slide, size, seed=size)
            print(
                f"wrote {slide} ({slide.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        cmd = [sys.executable, __file__, "--child", "--slide", str(slide), "--out", str(work / f"out_{size}.ome.zarr")]
        cmd += ["--preset", args.preset, "--chunk", str(args.chunk), "--device", args.device]
        cmd += ["--pure-tiles", str(args.pure_tiles)]
        cmd += ["--run", args.run] if args.run else []
        cmd += ["--batch", str(args.batch)] if args.batch else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        if proc.returncode != 0:
            sys.exit(f"size {size} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{size}: {json.dumps(row)}", flush=True)

    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print_table(rows, args.device, args.chunk)


def print_table(rows: list[dict], device: str, chunk: int) -> None:
    """The README table: throughput, overheads and memory per slide size."""
    first = rows[0]
    print(
        f"\nSlide inference, {first['model']}, tile {first['tile']}, batch {first['batch']}, scales "
        f"{first['scales']}, flip {first['flip']}, {device}, {first['threads']} torch thread(s), chunk {chunk}"
    )
    print(
        f"{'slide':>13} {'tiles':>6} {'glass':>6} {'e2e s':>6} {'tiles/s':>8} {'model s':>8} {'overhead':>9} "
        f"{'pure tiles/s':>13} {'vs pure':>8} {'model peak':>11} {'peak RSS':>9} {'pipeline':>9} {'vs first':>9}"
    )
    mib = 2**20
    for r in rows:
        e2e = r["tiles"] / r["seconds"]
        model = r["timings"]["model"]
        vs_pure = r["seconds"] / (r["pure_per_tile"] * r["tiles"]) - 1
        print(
            f"{r['size'][0]:>6}x{r['size'][1]:<6} {r['tiles']:>6} {r['skipped']:>6} {r['seconds']:>6.0f} {e2e:>8.2f} "
            f"{model:>8.0f} {100 * (r['seconds'] / model - 1):>8.1f}% {1 / r['pure_per_tile']:>13.2f} "
            f"{100 * vs_pure:>+7.0f}% {r['warm_peak_rss'] / mib:>10.0f}M {r['peak_rss'] / mib:>8.0f}M "
            f"{(r['peak_rss'] - r['warm_peak_rss']) / mib:>+8.0f}M "
            f"{100 * (r['peak_rss'] / first['peak_rss'] - 1):>+8.1f}%"
        )
    print(
        "overhead: end-to-end time over the time spent in predict_batch in the same run (reading, blending, "
        "writing, pyramids, GeoJSON that did not overlap the model); vs pure: over predict_batch alone on a sample "
        "of the same tiles after the run (also counts the model slowing down while reader/writer threads share "
        "the CPU; noisy on a shared machine); model peak: ru_maxrss after model load and one batch; pipeline: "
        "peak RSS above it."
    )


if __name__ == "__main__":
    main()
