"""The work the widget runs in thread workers: thin calls of ``sia_core``, free of Qt so they run anywhere.

The core (and with it torch) is imported after the Triton guard: importing Triton after Mesa's LLVM is loaded
would crash napari (see ``_triton_guard``). The package's ``__init__`` runs the guard too; it is repeated here
because this is where torch comes in.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ._triton_guard import block_triton_if_unsafe

block_triton_if_unsafe()

from sia_core.build import resolve_weights_path  # noqa: E402
from sia_core.data.images import read_rgb  # noqa: E402
from sia_core.data.layout import apply_to_data_config  # noqa: E402
from sia_core.data.train_dataset import samples_with_corrections  # noqa: E402
from sia_core.errors import SIAError  # noqa: E402
from sia_core.predictor import Prediction, SIAPredictor  # noqa: E402
from sia_core.pseudo import write_pseudo_labels  # noqa: E402
from sia_core.run_config import resolve_train_config  # noqa: E402
from sia_core.slide import SlideOptions, open_slide_prediction, predict_slide  # noqa: E402
from sia_core.train import train_iter  # noqa: E402

from ._classes import ClassSet, preset_matching  # noqa: E402
from ._slide_layers import slide_layer_data  # noqa: E402

__all__ = [
    "TrainRequest",
    "training_config",
    "cli_command",
    "train_steps",
    "train_job",
    "training_samples",
    "PredictorCache",
    "InspectResult",
    "inspect_image",
    "pseudo_label_images",
    "predict_slide_job",
    "SlideJobResult",
    "slide_output_path",
    "slide_result_complete",
]

GUI_OVERRIDES = ("train.num_workers=0",)
"""Settings the GUI always applies: DataLoader worker processes would be forked from the napari process
(Qt and OpenGL threads), which can deadlock; the batch schedule does not depend on it, so results do not."""


@dataclass
class TrainRequest:
    """Everything a GUI training run is made of (also what its CLI command says)."""

    preset: str
    classes: ClassSet
    iterations: int
    device: str
    out_dir: Path
    data_root: Optional[Path] = None
    """Dataset folder the CLI's ``--data`` names (None when the images are open layers only)."""
    init_from: Optional[Path] = None
    force: bool = False
    extra_overrides: tuple[str, ...] = ()
    """More ``--set`` overrides (the backbone chooser's ``model.pretrained`` / ``model.freeze``)."""

    def overrides(self) -> list[str]:
        return [f"train.iterations={int(self.iterations)}", *GUI_OVERRIDES, *self.extra_overrides]


def training_config(req: TrainRequest) -> Any:
    """The run's ``SIAConfig``, built the way ``sia-core train`` builds it (preset, dataset classes, variant,
    ``--set`` overrides, ``--device``), so the GUI and its CLI command train identically."""
    # The overrides go in before the starting weights are resolved (and fetched), as with the CLI's --set; the
    # dataset description sets only data.* keys, which no override of the GUI touches.
    cfg = resolve_train_config(None, req.preset, overrides=req.overrides())
    cfg.data = apply_to_data_config(req.classes.description(), cfg.data)
    cfg.train.device = req.device
    return cfg


def cli_command(req: TrainRequest) -> str:
    """The ``sia-core train`` command line equivalent to the GUI's training."""
    data = str(req.data_root) if req.data_root is not None else "<dataset folder>"
    parts = ["sia-core", "train", "--data", data, "--out", str(req.out_dir), "--preset", req.preset]
    if req.classes.preset is not None:
        parts += ["--dataset-preset", req.classes.preset]
    for item in req.overrides():
        parts += ["--set", item]
    parts += ["--device", req.device]
    if req.init_from is not None:
        parts += ["--init-from", str(req.init_from)]
    if req.force:
        parts.append("--force")
    return shlex.join(parts)


def train_steps(
    cfg: Any, samples: list[Any], out_dir: Path, init_from: Optional[Path] = None, force: bool = False
) -> Generator[Any, None, Path]:
    """Run ``sia_core.train.train_iter`` and pass on its ``StepInfo`` after every step.

    However this generator ends (finished, Stop = the worker's ``quit()`` followed by ``close()``, or an
    error), ``train_iter`` is closed here, in the worker thread, so it writes its checkpoint first.
    """
    steps = train_iter(cfg, samples, out_dir, init_from=init_from, force=force)
    try:
        yield from steps
    finally:
        steps.close()
    return Path(out_dir)


def train_job(req: TrainRequest, items: Sequence[tuple[Path, np.ndarray]]) -> Generator[Any, None, Path]:
    """The whole GUI training in the worker: config, samples (with corrections), then the steps."""
    cfg = training_config(req)
    samples = training_samples(items)
    return (yield from train_steps(cfg, samples, req.out_dir, req.init_from, req.force))


class PredictorCache:
    """Keeps the last loaded predictor; reloads when the weights file, its mtime or the device change.

    Loading happens in a worker; the lock makes two workers never load or run at once.
    """

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._predictor: Any = None
        self.lock = threading.Lock()

    def get(self, model: Union[str, Path], device: str) -> SIAPredictor:
        weights = resolve_weights_path(model)
        key = (str(Path(weights).resolve()), Path(weights).stat().st_mtime_ns, device)
        if key != self._key:
            self._predictor = SIAPredictor.from_run(weights, device=device)
            self._key = key
        return self._predictor

    def clear(self) -> None:
        self._key, self._predictor = None, None


@dataclass
class InspectResult:
    """What Inspect shows for one image."""

    maps: dict[str, np.ndarray]
    """'cam', 'inhibition', 'activation', 'rsm' -> (C, H, W) float32 (those the model has)."""
    present: np.ndarray
    """(C,) 0/1: the classes the maps were computed for."""
    scores: np.ndarray
    refined: np.ndarray
    """(H, W) uint8: the refined mask (pseudo-label) for the classes present, glass = ignore index."""
    label_map: np.ndarray
    """(H, W) uint8: the model's segmentation with no image-level labels given (``Prediction.label_map``)."""
    classes: ClassSet
    """The model's classes."""


def model_classes(predictor: SIAPredictor) -> ClassSet:
    """The classes a model was trained on."""
    d = predictor.cfg.data
    desc = {
        "classes": d.classes,
        "palette": d.palette,
        "ignore_index": d.ignore_index,
        "white_background": d.white_background,
    }
    return ClassSet.from_description(desc, preset=preset_matching(list(d.classes)))


def inspect_image(
    cache: PredictorCache,
    model: Union[str, Path],
    device: str,
    image: Union[np.ndarray, Path],
    labels: Optional[np.ndarray],
    progress: Optional[Callable[[int, int], None]] = None,
) -> InspectResult:
    """Predict the maps and refined mask of one image (tile by tile when larger than the model's tile)."""
    with cache.lock:
        predictor = cache.get(model, device)
        rgb = read_rgb(image) if isinstance(image, Path) else image
        pred: Prediction = predictor.predict_image(rgb, labels=labels, progress=progress)
    maps = {
        "cam": pred.cam,
        "inhibition": pred.inhibition,
        "activation": pred.activation,
        "rsm": pred.rsm,
    }
    return InspectResult(
        maps={k: v for k, v in maps.items() if v is not None},
        present=np.asarray(pred.labels),
        scores=np.asarray(pred.scores),
        refined=np.asarray(pred.pseudo_label),
        label_map=np.asarray(pred.label_map),
        classes=model_classes(predictor),
    )


def pseudo_label_images(
    cache: PredictorCache,
    model: Union[str, Path],
    device: str,
    items: Sequence[tuple[Path, np.ndarray]],
    out_dir: Optional[Path],
    overwrite: bool,
    on_image: Callable[[int, int], None],
    should_stop: Callable[[], bool],
) -> list[Path]:
    """``sia_core.pseudo.write_pseudo_labels`` over the labelled images, stoppable between images."""
    with cache.lock:
        predictor = cache.get(model, device)
        return write_pseudo_labels(
            predictor, list(items), out_dir, overwrite=overwrite, on_image=on_image, should_stop=should_stop
        )


def training_samples(entries: Sequence[tuple[Path, np.ndarray]]) -> list[Any]:
    """``TrainSample``s with the corrected mask of each image when the user saved one (sia_masks/)."""
    return samples_with_corrections(entries)


def slide_output_path(slide: Path) -> Path:
    """Default result of a slide: ``<slide folder>/<name>.ome.zarr`` (the rule of ``sia-core predict-slide``)."""
    name = slide.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs", ".btf", ".ndpi", ".scn"):
        if name.lower().endswith(suffix):
            return slide.parent / (name[: -len(suffix)] + ".ome.zarr")
    return slide.parent / (slide.stem + ".ome.zarr")


def slide_result_complete(out: Path) -> bool:
    """Does ``out`` hold a finished slide result? True for anything else there too: never replaced unasked."""
    try:
        return bool(open_slide_prediction(out)["complete"])
    except (SIAError, OSError, KeyError, ValueError):
        return True


@dataclass
class SlideJobResult:
    """A finished (or stopped) slide prediction and what napari needs to show it."""

    result: Any
    """``sia_core.slide.SlideResult``."""
    layers: list[tuple[Any, dict, str]]
    """``napari_sia._slide_layers.slide_layer_data``: the slide's multiscale image, then the label pyramid."""
    classes: Optional[ClassSet]
    transparent: tuple[int, ...] = ()
    """Label values that are no class: pixels no tile covered, white glass."""


def predict_slide_job(
    cache: PredictorCache,
    model: Union[str, Path],
    device: str,
    slide: Path,
    out: Path,
    overwrite: bool,
    progress: Callable[[int, int], None],
    should_stop: Callable[[], bool],
) -> SlideJobResult:
    """``sia_core.slide.predict_slide`` into an OME-Zarr (resumes an unfinished one), then its layer data."""
    with cache.lock:
        predictor = cache.get(model, device)
        result = predict_slide(
            predictor, slide, out, SlideOptions(overwrite=overwrite), progress=progress, should_stop=should_stop
        )
        classes = model_classes(predictor)
    stored = open_slide_prediction(result.out)
    transparent = tuple(int(stored[k]) for k in ("fill", "background") if stored.get(k) is not None)
    return SlideJobResult(result, slide_layer_data(result.out, slide), classes, transparent)
