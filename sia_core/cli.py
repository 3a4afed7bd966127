"""The ``sia-core`` command line: train, evaluate, predict, pseudo-label, demo, predict-slide.

Every command is a thin caller of the library functions the napari widget uses too. A user error prints one
line ``error: <what> (fix: <how>)`` on stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

from .errors import SIAError
from .run_config import resolve_train_config, training_samples

__all__ = ["main", "build_parser"]


# ------------------------------------------------------------------------------------------ commands


class _Bar:
    """A tqdm progress bar on stderr that appears at the first update (an error raised before any progress
    prints only its own line) and always closes, so an error line never shares a line with the bar."""

    def __init__(self, total: int, desc: str, disable: bool = False) -> None:
        self.total, self.desc, self.disable = total, desc, disable
        self.bar = None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def to(self, done: int, **postfix: Any) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, file=sys.stderr, dynamic_ncols=True, disable=self.disable)
        self.bar.update(done - self.bar.n)
        if postfix:
            self.bar.set_postfix(postfix)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what a cluster scheduler sends before it kills a job), raised like Ctrl-C so training saves."""


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_train(args: argparse.Namespace) -> int:
    from .config import SIAConfig
    from .data.layout import find_split, has_split
    from .run_files import RunFiles
    from .train import dist_info, train_iter

    files = RunFiles(Path(args.out))
    if args.resume:
        cfg = SIAConfig.load(files.config) if files.config.is_file() else None
        if cfg is None:
            raise SIAError(f"nothing to resume in {args.out} (no config.yaml)", fix="start the run without --resume")
        data = args.data
    else:
        data = args.data
        cfg = resolve_train_config(data, args.preset, args.config, args.set or [], args.variant, args.dataset_preset)
        if args.device:
            cfg.train.device = args.device
    if data is None:
        raise SIAError("no dataset given", fix="pass --data DIR")
    samples = training_samples(data, cfg)
    val = find_split(data, "val") if has_split(data, "val") and cfg.train.val_every else None
    main_rank = dist_info().is_main
    last = None
    try:
        if main_rank:
            n_corr = sum(s.mask is not None for s in samples)
            print(
                f"training {cfg.preset} preset, variant {cfg.variant} ({cfg.model.backbone}) on {len(samples)} "
                f"images{f' ({n_corr} with corrected masks)' if n_corr else ''} of {data}, classes "
                f"{cfg.data.classes}{f', validating on {len(val)} val images' if val else ''} -> {files.root}",
                flush=True,
            )
            if args.resume and not files.holds_run():
                print(f"no checkpoint yet in {files.root}: starting the run from the beginning", flush=True)
        steps = train_iter(
            cfg, samples, files.root, val, resume=args.resume, force=args.force, init_from=args.init_from
        )
        # closing: a Ctrl-C that lands here between two steps closes the generator (its final checkpoint) inside
        # this try, not later in its finalizer, where an error of that save (a second Ctrl-C, a full disk) could
        # only be printed as a traceback.
        bar = _Bar(cfg.train.iterations, "train", disable=not main_rank)
        with _sigterm_stops(), bar, contextlib.closing(steps):
            for info in steps:
                post = {"loss": info.logs.get("loss", float("nan")), "img/s": round(info.images_per_s, 2)}
                if info.val:
                    free, given = info.val["label_free"], info.val["labels_given"]
                    post["val_mIoU"] = round(free["decoder"]["mIoU"], 3)
                    bar.write(
                        f"iteration {info.iteration}: val mIoU, label-free: "
                        + ", ".join(f"{k} {free[k]['mIoU']:.3f}" for k in free)
                        + "; labels given: "
                        + ", ".join(f"{k} {given[k]['mIoU']:.3f}" for k in given)
                    )
                bar.to(info.iteration, **post)
                last = info
    except KeyboardInterrupt as stop:
        if main_rank:
            print(_stopped_line(stop, last.iteration if last else 0, files.root, data), file=sys.stderr)
        return 143 if isinstance(stop, _Terminated) else 130
    if main_rank:
        best = files.best if files.best.is_file() else files.last
        print(f"done: weights {best}, log {files.log}")
    return 0


def _stopped_line(stop: KeyboardInterrupt, done: int, root: Path, data: str) -> str:
    """What a stopped training says: the checkpoint that is really on disk (read back, not assumed)."""
    from .checkpoint import checkpoint_iteration

    how = "stopped by SIGTERM" if isinstance(stop, _Terminated) else "interrupted"
    saved = checkpoint_iteration(root)
    done = max(done, saved or 0)  # a step finished but not yet shown when the stop came is in the checkpoint
    if saved is None:
        return (
            f"{how} at iteration {done}, before the first checkpoint: nothing to resume; start the run again with "
            "the same command"
        )
    return (
        f"{how} at iteration {done}: checkpoint of iteration {saved} saved in {root}; continue with "
        f"sia-core train --data {data} --out {root} --resume"
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.layout import find_split
    from .evaluate import evaluate_items, format_table, summary
    from .io_utils import atomic_write_text, check_output_file
    from .predictor import SIAPredictor

    if args.json:
        check_output_file(args.json, what="--json file")  # before the whole evaluation, not after it
    pred = SIAPredictor.from_run(args.run, device=args.device)
    items = find_split(args.data, args.split)
    scales = tuple(args.scales) if args.scales else None
    with _Bar(len(items), f"evaluate {args.split}") as bar:
        results = evaluate_items(
            pred,
            items,
            batch_size=args.batch_size,
            scales=scales,
            flip=args.flip or None,
            on_image=lambda d, t: bar.to(d),
        )
    print(
        f"{args.split}: {len(items)} images of {args.data}, classes {pred.cfg.data.classes}. Label-free: no labels "
        f"given (CAM, I, RSM over the classes the classifier predicts); labels given: the true classes of each "
        f"image (from its mask). The last line's mIoU is the label-free decoder."
    )
    print(format_table(results, pred.cfg.data.classes))
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    print(json.dumps(summary(results)))
    return 0


def _expand_inputs(inputs: Sequence[str]) -> list[Path]:
    from .data.images import list_images

    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images(p, recursive=False)
            if not found:
                raise SIAError(f"no images in folder {p}", fix="give image files or a folder of PNG/JPEG/TIFF images")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise SIAError(f"input not found: {p}", fix="give existing image files or folders")
    return list(dict.fromkeys(p.resolve() for p in paths))  # a file given twice (or via its folder) once


PREDICT_LOG = "sia_predict.jsonl"
"""Kept in ``predict``'s output folder (:class:`sia_core.job_log.JobLog`): a rerun of the same command skips
finished images, and another model's outputs are never overwritten without ``--overwrite``."""


def cmd_predict(args: argparse.Namespace) -> int:
    from .build import resolve_weights_path
    from .io_utils import WriteError, check_distinct_targets, check_output_dir, file_sha256
    from .job_log import JobLog
    from .predictor import SIAPredictor

    paths = _expand_inputs(args.inputs)
    out = check_output_dir(args.out)
    ext = ".tif" if args.format == "tif" else ".png"
    names = ("cam", "inhibition", "rsm", "labels", "pseudo")

    def target(path: Path, name: str) -> Path:
        return out / f"{path.stem}_{name}{ext if name in ('labels', 'pseudo') else '.tif'}"

    check_distinct_targets(paths, lambda p: target(p, "labels"))
    weights = resolve_weights_path(args.run)
    log = JobLog(
        out / PREDICT_LOG,
        {
            "model": str(weights.resolve()),
            "sha256": file_sha256(weights),
            "format": args.format,
            "labels_from_name": bool(args.labels_from_name),
        },
    )
    done: set[Path] = set()
    if not args.overwrite:
        # Check every output first, so a refused run writes nothing at all; outputs this same job wrote are its own.
        existing = [t for p in paths for n in names if (t := target(p, n)).exists() and log.state(str(p)) is None]
        if existing:
            other = f" (made by {log.previous.get('model')})" if log.previous and not log.same_job else ""
            raise SIAError(
                f"{existing[0]} already exists ({len(existing)} outputs in all){other}",
                fix="pass --overwrite or choose another --out",
            )
        done = {p for p in paths if log.state(str(p)) == "done"}
    pred = SIAPredictor.from_run(weights, device=args.device)
    todo = [p for p in paths if p not in done]
    if done:
        print(f"skipping {len(done)} images already predicted in {out} by the same model", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    if args.overwrite or not log.same_job:
        log.restart()
    failed: list[SIAError] = []
    with _Bar(len(todo), "predict") as bar:
        for i, path in enumerate(todo):
            log.mark(str(path), "started")
            try:
                _predict_one(pred, path, args.labels_from_name, target)
            except WriteError:
                raise  # a full or read-only disk stops everything
            except SIAError as err:  # a bad image: the others still get their predictions
                failed.append(err)
            else:
                log.mark(str(path), "done")
            bar.to(i + 1)
    for err in failed:
        print(f"error: {err}", file=sys.stderr)
    print(f"wrote predictions of {len(todo) - len(failed)} images to {out}")
    if failed:
        print(
            f"error: {len(failed)} of {len(paths)} images could not be predicted (listed above) (fix: replace or "
            "remove them and run the same command again: finished images are skipped)",
            file=sys.stderr,
        )
        return 2
    return 0


def _predict_one(pred, path: Path, labels_from_name: bool, target) -> None:
    """Predict one image file and write its float maps, then its label maps."""
    import numpy as np

    from .data.images import read_rgb
    from .data.labels import parse_label_vector
    from .export import write_float_tiff, write_labels

    cfg = pred.cfg
    labels = parse_label_vector(path, cfg.num_classes) if labels_from_name and "[" in path.name else None
    p = pred.predict_image(read_rgb(path), labels=labels)
    for name, maps in (("cam", p.cam), ("inhibition", p.inhibition), ("rsm", p.rsm)):
        if maps is not None:
            write_float_tiff(target(path, name), maps.astype(np.float32), cfg.data.classes, overwrite=True)
    for name, label_map in (("labels", p.label_map), ("pseudo", p.pseudo_label)):
        write_labels(target(path, name), label_map, cfg.data.classes, cfg.data.palette, overwrite=True)


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    from .config import SIAConfig  # noqa: F401 (documents the type of pred.cfg)
    from .io_utils import check_output_dir
    from .predictor import SIAPredictor
    from .pseudo import write_pseudo_labels

    check_output_dir(args.out)
    pred = SIAPredictor.from_run(args.run, device=args.device)
    samples = training_samples(args.data, pred.cfg)
    with _Bar(len(samples), "pseudo-label") as bar:
        written = write_pseudo_labels(
            pred,
            [(s.path, s.labels) for s in samples],
            args.out,
            overwrite=args.overwrite,
            on_image=lambda d, t: bar.to(d),
        )
    print(f"wrote {len(written)} pseudo-masks (palette PNG, classes {pred.cfg.data.classes}) to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    t0 = time.time()
    result = run_demo(args.out, iterations=args.iterations, force=args.force, device=args.device, seed=args.seed)
    print(f"demo finished in {time.time() - t0:.0f} s")
    for name, path in result.items():
        print(f"  {name:<12} {path}")
    return 0


# ------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .classes import CLASS_PRESETS
    from .config import PRESETS, VARIANTS

    ap = argparse.ArgumentParser(
        prog="sia-core",
        description="SIA-WSSS: tissue segmentation of H&E images from image-level labels.",
    )
    ap.add_argument("--version", action="version", version=f"sia-core {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model on a folder of weakly labelled patches",
        description="Train SIA-WSSS. Labels come from the file names (name-[1 0 1].png) or "
        "train/sia_labels.csv; corrected masks in train/sia_masks/ are used as pixel supervision.",
    )
    p.add_argument("--data", help="dataset folder (train/ or train/img/, optional val/ with img/ and mask/)")
    p.add_argument("--out", required=True, help="run directory (config, weights, optimiser state, log)")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="base settings (default: paper with a GPU, else cpu)",
    )
    p.add_argument("--config", help="YAML/JSON config file laid over the preset (the file a run saves works)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.iterations=500",
    )
    p.add_argument("--variant", choices=list(VARIANTS), help="ablation variant (Table 2); default f")
    p.add_argument(
        "--dataset-preset",
        choices=list(CLASS_PRESETS),
        help="class names/palette when the folder has no dataset.yaml",
    )
    p.add_argument("--init-from", help="start from a trained run directory or .safetensors (fine-tuning)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--force", action="store_true", help="overwrite a run already in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="score a model on a split with masks",
        description="Dataset-level confusion matrix; prints a table and, last, a JSON line.",
    )
    p.add_argument("run", help="run directory or .safetensors")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split", default="val", help="val (or valid) or test")
    p.add_argument("--scales", type=float, nargs="+", help="inference scales (default: the run's infer.scales)")
    p.add_argument("--flip", action="store_true", help="add horizontal flips")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", help="also write all metrics (per class, confusion matrices) to this file")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="segment image files or folders",
        description="Writes <name>_labels and <name>_pseudo label maps (palette PNG or TIFF) and the "
        "float maps <name>_cam.tif, _inhibition.tif, _rsm.tif. Large images go tile by tile.",
    )
    p.add_argument("run", help="run directory or .safetensors")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=["png", "tif"], default="png", help="label map format")
    p.add_argument(
        "--labels-from-name",
        action="store_true",
        help="use labels in file names (x-[1 0 1].png) for the maps",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "pseudo-label",
        help="write pseudo-masks for every training patch (its labels given)",
        description="The one-click pseudo-label action, headless: one palette PNG per training image.",
    )
    p.add_argument("run", help="run directory or .safetensors")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing masks")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_pseudo_label)

    p = sub.add_parser(
        "demo",
        help="the built-in default job on synthetic H&E-like data (no downloads)",
        description="Makes a small synthetic dataset with exact masks, trains the cpu preset, "
        "evaluates, writes pseudo-labels and an overview figure.",
    )
    p.add_argument("--out", default="sia-demo", help="output folder (default ./sia-demo)")
    p.add_argument("--iterations", type=int, help="training iterations (default: the demo's setting)")
    p.add_argument("--seed", type=int, default=0, help="training seed (the data stay the same); default 0")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="replace a previous demo in --out")
    p.set_defaults(func=cmd_demo)

    add_predict_slide_parser(sub)
    return ap


# ------------------------------------------------------------------------------------------ predict-slide


def add_predict_slide_parser(sub: Any) -> None:
    """``predict-slide``: its flags are :class:`sia_core.slide.SlideOptions`' fields, with their defaults."""
    from .slide.options import add_option_arguments

    p = sub.add_parser(
        "predict-slide",
        help="segment whole-slide images (TIFF/BigTIFF/OME-TIFF/SVS) into OME-Zarr + QuPath GeoJSON",
        description="Tile-by-tile inference on a slide pyramid with overlap blending and glass skipping, in "
        "bounded memory. Writes OUT.zarr (an OME-Zarr image of the slide's overview, labels/sia label pyramid, "
        "maps/<name> class maps) and OUT.geojson. Running the same command on an unfinished OUT resumes it. "
        "Under torchrun each rank takes its share of the slides (or of the tiles, for fewer slides than ranks).",
    )
    p.add_argument("run", help="run directory or .safetensors")
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files")
    p.add_argument("--out", required=True, help="OUT.zarr for one slide; a folder for several (one .ome.zarr each)")
    add_option_arguments(p)
    p.add_argument("--shard", choices=["auto", "slides", "tiles"], default="auto", help="torchrun split (auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (torchrun: cuda:LOCAL_RANK)")
    p.set_defaults(func=cmd_predict_slide)


def cmd_predict_slide(args: argparse.Namespace) -> int:
    """Handler of ``sia-core predict-slide``."""
    from .predictor import SIAPredictor
    from .runtime import dist_info
    from .slide import predict_slides
    from .slide.options import options_from_args

    options = options_from_args(args)
    info = dist_info()
    device = args.device
    if info.world > 1 and device == "auto":
        import torch

        device = f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"
    predictor = SIAPredictor.from_run(args.run, device=device)
    bar = _Bar(0, "predict-slide", disable=not info.is_main)

    def progress(done: int, total: int) -> None:
        bar.total = total
        if bar.bar is not None and bar.bar.total != total:
            bar.bar.reset(total=total)
        bar.to(done)

    try:
        with bar:
            results = predict_slides(predictor, args.slides, args.out, args.shard, options, progress=progress)
    except KeyboardInterrupt:
        print(
            f"interrupted: finished blocks are kept in {args.out}; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    for r in results:
        where = f"{r.out}" + (f" + {r.geojson}" if r.geojson else "")
        mpp = f"{r.mpp:.3g} µm/px" if r.mpp else "unknown µm/px"
        print(
            f"{r.slide.name}: {r.shape[1]}x{r.shape[0]} px at {mpp} ({r.note}); {r.tiles_done} tiles predicted"
            f"{' (resumed)' if r.resumed else ''}, {r.tiles_skipped} glass tiles skipped, "
            f"{r.tiles_per_s:.1f} tiles/s -> {where}"
        )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SIAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
