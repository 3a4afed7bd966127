"""The SIA napari widget end to end, under Xvfb: dock from the manifest, labels CSV, training in a worker
(to completion and stopped), Inspect layers, pseudo-labels, every export format read back, and corrections
becoming the next training's targets. Tiny synthetic images and the ``test`` preset keep it to seconds."""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_sia._job_slot import JobState
from sia_core.config import SIAConfig, get_preset
from sia_core.data.labels import LABELS_CSV, read_label_csv
from sia_core.data.layout import dataset_description, find_train_items
from sia_core.data.synthetic import SYNTHETIC_PALETTE, make_synthetic_dataset, make_synthetic_region

PLUGIN = "napari-sia"
WIDGET = "SIA weak-label segmentation"
CLASSES = ["tumor", "stroma", "normal"]  # the synthetic classes = the wsss4luad preset's
TIMEOUT_MS = 120_000


# --------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained for a few steps on synthetic 64 px patches (test preset): seconds on a CPU."""
    from sia_core.data.layout import apply_to_data_config
    from sia_core.data.train_dataset import TrainSample
    from sia_core.train import train_iter

    root = make_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_train=8, n_val=0, size=64)
    cfg = get_preset("test")
    cfg.data = apply_to_data_config(dataset_description(root), cfg.data)
    cfg.train.device = "cpu"
    items = find_train_items(root, cfg.num_classes, cfg.data.classes)
    run = tmp_path_factory.mktemp("run") / "tiny"
    for _ in train_iter(cfg, [TrainSample(i.path, i.labels) for i in items], run):
        pass
    assert (run / "last.safetensors").is_file()
    return run


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """dataset/train with six plain-named 64 px synthetic images, one labelled in its name, one larger."""
    folder = tmp_path / "dataset" / "train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(5):
        rgb, _ = make_synthetic_region(64, rng, 3)
        Image.fromarray(rgb).save(folder / f"patch_{i}.png")
    rgb, _ = make_synthetic_region(64, rng, 3)
    Image.fromarray(rgb).save(folder / "named-[1 0 1].png")
    return folder


@pytest.fixture
def widget(make_napari_viewer):
    """The widget as napari docks it from the manifest (Plugins menu)."""
    from napari_sia._widget import SIAWidget

    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert isinstance(w, SIAWidget)
    yield w
    w.close_workers()


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Error notifications: the widget's own, and any exception napari turned into a notification."""
    from napari.utils.notifications import notification_manager

    shown: list[str] = []
    for module in ("_widget", "_label_actions", "_mask_actions", "_job_actions", "_job_slot"):
        monkeypatch.setattr(f"napari_sia.{module}.show_error", shown.append)
    monkeypatch.setattr(
        notification_manager,
        "receive_error",
        lambda exc_type, exc, tb: shown.append(f"{exc_type.__name__}: {exc}"),
    )
    return shown


def _wait_idle(qtbot, slot) -> None:
    qtbot.waitUntil(lambda: not slot.busy, timeout=TIMEOUT_MS)


def _label(w, names: list[str]) -> None:
    w.set_labels(names)


# --------------------------------------------------------------------------------------------------------
# tests


def test_widget_docks_from_manifest_with_every_section(widget):
    titles = [section.header.text() for section in widget.sections.values()]
    assert titles == [
        "1  Images",
        "2  Classes and image labels",
        "3  Model: train one, or choose one",
        "4  Inspect and correct",
        "5  Pseudo-labels for every labelled image",
        "6  Export and open masks",
        "Whole slide",
    ]
    # the steps in use are open, the rest folded
    assert [s.expanded for s in widget.sections.values()] == [True, True, True, True, False, False, False]
    assert widget.classes.names == CLASSES
    assert [c.text() for c in widget.label_checks] == CLASSES
    assert widget.cli_edit.text().startswith("sia-core train")


def test_labels_round_trip_through_the_csv(make_napari_viewer, image_folder, errors):
    from napari_sia._widget import SIAWidget

    viewer = make_napari_viewer()
    w = SIAWidget(viewer)
    w.open_folder(image_folder)
    names = [e.key for e in w.entries]
    assert names == ["named-[1 0 1].png", *(f"patch_{i}.png" for i in range(5))]
    assert list(w.label_vector()) == [1, 0, 1]  # pre-filled from the file name, not written yet
    assert not (image_folder / LABELS_CSV).exists()

    w.step_image(1)
    _label(w, ["tumor", "stroma"])
    w.step_image(1)
    _label(w, ["normal"])
    w.step_image(1)
    _label(w, ["stroma"])
    _label(w, [])  # unticking every class removes the row again

    saved = read_label_csv(image_folder / LABELS_CSV, CLASSES)
    assert {k: v.tolist() for k, v in saved.items()} == {"patch_0.png": [1, 1, 0], "patch_1.png": [0, 0, 1]}
    # the CLI reads the same file: sia-core train --data <dataset> finds these labels
    items = {i.path.name: i.labels.tolist() for i in find_train_items(image_folder.parent, 3, CLASSES)}
    assert items == {"named-[1 0 1].png": [1, 0, 1], "patch_0.png": [1, 1, 0], "patch_1.png": [0, 0, 1]}
    assert "--data " + str(image_folder.parent) in w.cli_edit.text()

    # reopen: a fresh widget restores the checkboxes from the CSV
    w2 = SIAWidget(viewer)
    w2.open_folder(image_folder)
    w2.image_combo.setCurrentIndex(1)
    assert list(w2.label_vector()) == [1, 1, 0]
    assert "[labelled]" in w2.image_combo.itemText(1)
    w2.image_combo.setCurrentIndex(3)
    assert list(w2.label_vector()) == [0, 0, 0]
    assert errors == []


def test_cli_command_trains_from_the_widget_labels_with_the_same_config(make_napari_viewer, tmp_path):
    import shlex

    from napari_sia._jobs import training_config
    from napari_sia._widget import SIAWidget
    from sia_core.cli import main as cli_main

    folder = tmp_path / "my patches"  # a plain folder, not a train/ layout; a space to test quoting
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(make_synthetic_region(64, rng, 3)[0]).save(folder / f"p{i}.png")
    w = SIAWidget(make_napari_viewer())
    w.open_folder(folder)
    for i, names in enumerate([["tumor"], ["stroma", "normal"], ["tumor", "stroma"]]):
        w.image_combo.setCurrentIndex(i)
        _label(w, names)
    w.train_form.preset.value = "test"
    w.train_form.iterations.value = 2
    w.device_combo.setCurrentText("cpu")
    run = tmp_path / "cli run"
    w.train_form.run_folder.value = run
    argv = shlex.split(w.cli_edit.text())
    assert argv[:2] == ["sia-core", "train"] and argv[argv.index("--data") + 1] == str(folder)
    assert cli_main(argv[1:]) == 0
    assert (run / "last.safetensors").is_file()
    # the GUI would have trained with exactly this config
    assert SIAConfig.load(run / "config.yaml").to_dict() == training_config(w._train_request(run)).to_dict()


def test_custom_classes_and_csv_classes_are_restored(make_napari_viewer, image_folder):
    from napari_sia._widget import SIAWidget

    viewer = make_napari_viewer()
    w = SIAWidget(viewer)
    w.set_custom_classes(["tumour", "stroma", "necrosis", "lymphocytes"], [[200, 0, 0], [0, 160, 0]])
    assert w.class_preset.currentText() == "custom"
    w.open_folder(image_folder)
    w.image_combo.setCurrentIndex(1)
    _label(w, ["necrosis"])
    assert (image_folder.parent / "dataset.yaml").is_file()  # custom classes recorded for the CLI
    desc = dataset_description(image_folder.parent)
    assert desc["classes"] == ["tumour", "stroma", "necrosis", "lymphocytes"]
    assert desc["palette"][:2] == [[200, 0, 0], [0, 160, 0]]

    w2 = SIAWidget(viewer)
    assert w2.classes.names == CLASSES
    w2.open_folder(image_folder)
    assert w2.classes.names == ["tumour", "stroma", "necrosis", "lymphocytes"]
    assert w2.classes.palette[0] == [200, 0, 0]
    w2.image_combo.setCurrentIndex(1)
    assert list(w2.label_vector()) == [0, 0, 1, 0]


def test_fine_tune_runs_in_the_worker_and_stops_on_stop(widget, qtbot, image_folder, tiny_run, errors):
    from qtpy.QtCore import QTimer

    w = widget
    w.open_folder(image_folder)
    for i, names in enumerate([["tumor"], ["tumor", "stroma"], ["normal"], ["stroma", "normal"]]):
        w.image_combo.setCurrentIndex(i + 1)
        _label(w, names)
    w.train_form.preset.value = "test"
    w.device_combo.setCurrentText("cpu")
    w.train_form.iterations.value = 3
    run = image_folder.parent / "runs" / "a"
    w.train_form.run_folder.value = run

    # the event loop keeps running while the worker trains (pan/zoom/paint stay live)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(20)
    steps: list[int] = []
    bar_texts: list[str] = []
    w.train_job.progressed.connect(lambda done, total: bar_texts.append(w.train_job.bar.format()))
    w.start_training()
    assert w.train_job.busy
    # before step 1 (reading images, building the model: a minute on a laptop) the bar counts the time
    bar = w.train_job.bar
    assert not bar.isHidden() and bar.format().startswith("reading images, building the model... 0:0")
    w.train_job.worker.yielded.connect(lambda info: steps.append(info.iteration))
    w.viewer.reset_view()  # GUI-thread work while training
    _wait_idle(qtbot, w.train_job)
    timer.stop()
    assert errors == []
    assert steps[-1] == 3
    # the widget's own bar shows steps and the time left (not only napari's activity panel)
    assert bar_texts[0] == "1/3 steps" and re.fullmatch(r"2/3 steps, about \d+:\d\d left", bar_texts[1])
    assert (run / "last.safetensors").is_file() and (run / "config.yaml").is_file()
    assert w.train_job.status.text().startswith("finished at step 3/3")
    assert w.train_job.state == JobState.DONE
    assert w.model_edit.text() == str(run)
    assert len(ticks) > 5
    gaps = np.diff(ticks)
    assert gaps.max() < 3.0, f"GUI thread blocked for {gaps.max():.2f} s"
    cmd = w.cli_edit.text()
    assert f"--out {run}" in cmd and "--preset test" in cmd and "train.iterations=3" in cmd
    assert "--dataset-preset wsss4luad" in cmd
    saved = SIAConfig.load(run / "config.yaml")
    assert saved.train.iterations == 3 and saved.data.classes == CLASSES

    # a long fine-tune from that model, stopped after its first step: the checkpoint is written
    w.train_form.iterations.value = 500
    w.train_form.start_from.value = "model above"
    stopped = image_folder.parent / "runs" / "b"
    w.train_form.run_folder.value = stopped
    w.start_training()
    assert "--init-from" in w.cli_edit.text()
    w.train_job.worker.yielded.connect(lambda info: w.stop_training())
    _wait_idle(qtbot, w.train_job)
    assert errors == []
    assert (stopped / "last.safetensors").is_file() and (stopped / "state.pt").is_file()
    assert w.train_job.state == JobState.STOPPED
    assert w.train_job.status.text().startswith("stopped at step"), w.train_job.status.text()
    step = int(w.train_job.status.text().split("step ")[1].split("/")[0])
    assert 1 <= step < 500

    # a run folder that already holds a run is never replaced without asking
    asked: list[str] = []
    w.train_form.start_from.value = "scratch"
    w._ask_yes_no = lambda title, text: asked.append(text) or False
    w.start_training()
    assert asked and not w.train_job.busy


def test_worker_errors_become_notifications(widget, qtbot, image_folder, tmp_path, errors):
    w = widget
    w.open_folder(image_folder)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model")
    w.model_edit.setText(str(bad))
    w.inspect()
    _wait_idle(qtbot, w.inspect_job)
    assert len(errors) == 1  # shown once, as a napari notification, not as a crash
    assert errors[0].startswith("SIA: cannot read weights file") and "broken.safetensors" in errors[0]
    assert w.inspect_job.start_button.isEnabled()
    # the failure is state, not words in a label
    assert w.inspect_job.state == JobState.FAILED and "broken.safetensors" in w.inspect_job.error


def test_inspect_adds_map_and_mask_layers_and_replaces_them(widget, qtbot, tmp_path, tiny_run, errors):
    from napari.layers import Image as ImageLayer
    from napari.layers import Labels

    w = widget
    rng = np.random.default_rng(3)
    rgb, _ = make_synthetic_region((100, 150), rng, 3)  # larger than the 64 px tile: tiled and blended
    w.viewer.add_image(rgb, name="region", rgb=True)
    assert [e.name for e in w.entries] == ["region"]
    w.model_edit.setText(str(tiny_run))
    w.device_combo.setCurrentText("cpu")
    _label(w, ["tumor", "stroma"])
    tiles: list[tuple[int, int]] = []
    w.inspect_job.progressed.connect(lambda done, total: tiles.append((done, total)))
    w.inspect()
    _wait_idle(qtbot, w.inspect_job)
    assert errors == []
    assert tiles and tiles[-1][0] == tiles[-1][1] > 1  # tile by tile, with progress
    names = [layer.name for layer in w.viewer.layers]
    # short names, the class first (a name cut short in the layer list still says what it is)
    expected = {
        f"{c} {title} (region)" for title in ("CAM", "inhibition", "activation", "RSM") for c in ("tumor", "stroma")
    }
    assert expected <= set(names)
    for name in expected:
        layer = w.viewer.layers[name]
        assert isinstance(layer, ImageLayer) and layer.data.shape == (100, 150)
        assert layer.data.dtype == np.float32
        # the default view is the mask alone: maps are hidden, grey (no class colour) with a colour bar
        assert not layer.visible and layer.colormap.name == "gray" and layer.colorbar.visible
    mask = w.viewer.layers["mask (region)"]
    assert isinstance(mask, Labels) and mask.data.shape == (100, 150) and mask.visible
    assert set(np.unique(mask.data)) <= {0, 1, 3}  # present classes and glass only
    assert mask.colormap.background_value == 3  # napari's eraser marks pixels unlabelled
    # tumour's navy is brightened on screen (same hue), the file palette stays the dataset's
    shown = mask.colormap.map(0)[:3]
    assert shown.max() >= 0.89 and np.argmax(shown) == np.argmax(SYNTHETIC_PALETTE[0])
    # hovering a pixel names its class (features), the eraser's value says "unlabelled"
    table = dict(zip(mask.features["index"], mask.features["class"]))
    assert table == {0: "tumor", 1: "stroma", 2: "normal", 3: "unlabelled (not trained on)"}
    value = int(mask.data[20, 20])
    assert mask.get_status((20, 20), world=True)["value"] == f"{value}; class: {table[value]}"
    assert w.viewer.layers.selection.active == mask  # ready to paint on
    assert "refined mask (labels given)" in w.inspect_job.status.text()
    n_layers = len(w.viewer.layers)

    w.inspect()  # recomputing replaces, it does not pile up
    _wait_idle(qtbot, w.inspect_job)
    assert len(w.viewer.layers) == n_layers

    # one class only: the maps of the other class go away
    w.inspect_class.setCurrentText("stroma")
    w.inspect()
    _wait_idle(qtbot, w.inspect_job)
    maps = [layer.name for layer in w.viewer.layers if layer.metadata.get("sia", {}).get("kind") == "map"]
    assert len(maps) == 4 and all(n.startswith("stroma ") for n in maps)

    # a mask the user painted on is not replaced without asking
    mask.paint((50, 50), 2)
    asked: list[str] = []
    w._ask_yes_no = lambda title, text: asked.append(text) or False
    w.inspect()
    _wait_idle(qtbot, w.inspect_job)
    assert asked and mask.data[50, 50] == 2

    # no class ticked: the mask is the model's own segmentation (no labels given)
    w._ask_yes_no = lambda title, text: True
    _label(w, [])
    w.inspect()
    _wait_idle(qtbot, w.inspect_job)
    assert "prediction (no labels given)" in w.inspect_job.status.text()


def test_pseudo_labels_are_written_with_progress_and_stop(widget, qtbot, image_folder, tiny_run, errors):
    w = widget
    w.open_folder(image_folder)
    for i in range(1, 5):
        w.image_combo.setCurrentIndex(i)
        _label(w, ["tumor", "normal"])
    w.model_edit.setText(str(tiny_run))
    w.device_combo.setCurrentText("cpu")
    progress: list[int] = []
    w.pseudo_job.progressed.connect(lambda done, total: progress.append(done))
    w.start_pseudo()
    _wait_idle(qtbot, w.pseudo_job)
    assert errors == []
    written = sorted(p.name for p in (image_folder / "sia_pseudo").iterdir())
    assert written == ["named-[1 0 1].png", *(f"patch_{i}.png" for i in range(4))]
    assert progress == [1, 2, 3, 4, 5]
    mask = np.array(Image.open(image_folder / "sia_pseudo" / "patch_0.png"))
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 2, 3}

    # what was written can be looked at from the widget: the current image's pseudo-mask, as its editable mask
    w.image_combo.setCurrentIndex(1)  # patch_0
    shown = w.show_pseudo_mask()
    assert shown.name == "pseudo-mask (patch_0)" and shown.metadata["sia"]["image"] == str(image_folder / "patch_0.png")
    assert (np.asarray(shown.data) == mask).all() and w.viewer.layers.selection.active == shown
    assert shown.colormap.background_value == 3 and shown.features["class"][0] == "tumor"
    assert w.mask_for_current("export") == shown  # the mask actions act on it
    w.step_image(1)  # patch_1's own pseudo-mask replaces the view; patch_0's layer is put away
    assert w.show_pseudo_mask().name == "pseudo-mask (patch_1)" and "pseudo-mask (patch_0)" not in w.viewer.layers
    w.image_combo.setCurrentIndex(5)  # patch_4 is not labelled: no pseudo-mask, said so
    assert w.show_pseudo_mask() is None and "no pseudo-mask for patch_4" in errors[-1]
    errors.clear()

    # existing masks: nothing is overwritten without asking
    before = (image_folder / "sia_pseudo" / "patch_0.png").stat().st_mtime_ns
    w._ask_choice = lambda title, text, choices: None
    w.start_pseudo()
    assert not w.pseudo_job.busy
    assert (image_folder / "sia_pseudo" / "patch_0.png").stat().st_mtime_ns == before

    # Stop ends it after the current image: the worker waits after its first image until Stop was pressed
    w.pseudo_form.write_to.value = "chosen folder..."
    out = image_folder.parent / "pseudo_elsewhere"
    w._ask_directory = lambda *a: str(out)
    pressed = threading.Event()
    report = w._pseudo_image_done

    def report_then_wait(done: int, total: int) -> None:
        report(done, total)
        pressed.wait(30)

    w._pseudo_image_done = report_then_wait
    w.pseudo_job.progressed.connect(lambda done, total: (w.stop_pseudo(), pressed.set()))
    w.start_pseudo()
    _wait_idle(qtbot, w.pseudo_job)
    assert len(list(out.iterdir())) == 1
    assert w.pseudo_job.state == JobState.STOPPED
    assert w.pseudo_job.status.text() == f"stopped: 1/5 pseudo-masks written to {out}"


@pytest.mark.parametrize(
    "fmt", ["TIFF (.tif)", "PNG, palette (.png)", "OME-Zarr (.ome.zarr)", "QuPath GeoJSON (.geojson)"]
)
def test_export_formats_read_back_equal(widget, tmp_path, fmt, errors):
    from napari.layers import Labels

    from napari_sia._classes import SIA_META, ClassSet, label_colormap
    from napari_sia._reader import napari_get_reader, read_mask_layer
    from napari_sia._tooltips import EXPORT_FORMATS

    w = widget
    classes = w.classes
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (40, 56)).astype(np.uint8)
    labels[:10, :10] = 3  # glass / unlabelled
    labels[20:30, 20:30] = 0
    labels[23:27, 23:27] = 2  # a hole with an island
    layer = w.viewer.add_labels(
        labels, name="mask", colormap=label_colormap(classes), metadata={SIA_META: classes.metadata()}
    )
    w.viewer.layers.selection.active = layer
    w.export_format.setCurrentText(fmt)
    target = tmp_path / f"out{EXPORT_FORMATS[fmt]}"
    w._ask_save_path = lambda *a: str(target)
    assert w.export_mask() == target
    assert errors == []

    data, attrs, kind = read_mask_layer(target)
    data = np.asarray(data[0] if isinstance(data, list) else data)
    assert kind == "labels"
    np.testing.assert_array_equal(data, labels)
    reopened = ClassSet.from_metadata(attrs["metadata"][SIA_META])
    assert reopened.names == classes.names and reopened.palette == classes.palette
    if fmt.startswith("QuPath"):
        import json

        collection = json.loads(target.read_text())
        feature = collection["features"][0]
        assert feature["geometry"]["type"] == "Polygon"
        assert set(feature["properties"]["classification"]) == {"name", "color"}
        from skimage.measure import label as cc_label

        n_regions = sum(int(cc_label(labels == c, connectivity=1).max()) for c in range(3))
        assert len(collection["features"]) == n_regions  # one polygon per connected region
        for c in range(3):  # rasterised back: IoU 1 per class
            a, b = labels == c, data == c
            assert (a & b).sum() / (a | b).sum() == 1.0
    if fmt.startswith(("OME", "QuPath")):  # the npe2 reader opens them in napari as Labels
        assert napari_get_reader(str(target)) is not None
        (opened,) = w.viewer.open(target, plugin=PLUGIN)
        assert isinstance(opened, Labels)
        np.testing.assert_array_equal(np.asarray(opened.data[0] if opened.multiscale else opened.data), labels)

    # nothing is overwritten without asking
    w._ask_yes_no = lambda *a: False
    assert w.export_mask() is None
    # the npe2 writer (File > Save Selected Layer) writes the same file
    w.viewer.layers.selection.active = layer
    again = tmp_path / f"again{EXPORT_FORMATS[fmt]}"
    written = w.viewer.layers.save(str(again), selected=True, plugin=PLUGIN)
    assert written == [str(again)]
    data2 = read_mask_layer(again)[0]
    np.testing.assert_array_equal(np.asarray(data2[0] if isinstance(data2, list) else data2), labels)


def test_corrected_mask_becomes_the_next_training_target(widget, qtbot, image_folder, tiny_run, errors):
    from napari_sia._jobs import train_job, training_samples
    from sia_core.data.train_dataset import WeakLabelDataset
    from sia_core.objective import IGNORE

    w = widget
    w.open_folder(image_folder)
    w.image_combo.setCurrentIndex(1)  # patch_0.png
    _label(w, ["tumor", "stroma"])
    w.model_edit.setText(str(tiny_run))
    w.device_combo.setCurrentText("cpu")
    w.inspect()
    _wait_idle(qtbot, w.inspect_job)
    mask = w.viewer.layers["mask (patch_0)"]
    # the pathologist repaints the whole image as stroma and erases one corner (unlabelled)
    mask.data = np.ones((64, 64), np.uint8)
    mask.data[:8, :8] = 3
    target = w.save_correction()
    assert target == image_folder / "sia_masks" / "patch_0.png"
    saved = np.array(Image.open(target))
    assert saved[0, 0] == 3 and saved[40, 40] == 1
    assert "[corrected]" in w.image_combo.itemText(1)

    # nothing is overwritten without asking
    mask.data = np.zeros((64, 64), np.uint8)
    w._ask_yes_no = lambda *a: False
    assert w.save_correction() is None
    assert np.array_equal(np.array(Image.open(target)), saved)

    # the next fine-tune's samples carry it, and its L_seg target is the correction, not a pseudo-label
    samples = training_samples(w._labelled())
    by_name = {s.path.name: s for s in samples}
    assert by_name["patch_0.png"].mask == target
    from napari_sia._jobs import training_config

    cfg = training_config(w._train_request(image_folder.parent / "runs" / "c"))
    cfg.train.augment.global_crop_scale = (1.0, 1.0)
    cfg.data.white_background = False
    ds = WeakLabelDataset(samples, cfg, dam=False)
    with_mask = ds[(samples.index(by_name["patch_0.png"]), 0)]
    assert bool(with_mask["has_mask"])
    values = set(np.unique(with_mask["mask"].numpy()).tolist())
    assert values == {1, IGNORE}
    other = ds[(samples.index(by_name["named-[1 0 1].png"]), 0)]
    assert not bool(other["has_mask"]) and set(np.unique(other["mask"].numpy()).tolist()) == {IGNORE}

    # and the GUI's training request feeds exactly these samples to train_iter
    import napari_sia._jobs as jobs

    seen: dict = {}

    def fake_steps(cfg, samples, out_dir, init_from=None, force=False):
        seen["samples"] = samples
        yield from ()
        return out_dir

    original = jobs.train_steps
    jobs.train_steps = fake_steps
    try:
        request = w._train_request(image_folder.parent / "runs" / "c")
        list(train_job(request, w._labelled()))
    finally:
        jobs.train_steps = original
    assert {s.path.name: s.mask for s in seen["samples"]}["patch_0.png"] == target


def test_save_correction_rejects_values_that_are_no_class(widget, image_folder, errors):
    w = widget
    w.open_folder(image_folder)
    layer = w.viewer.add_labels(np.full((64, 64), 7, np.uint8), name="painted")
    w.viewer.layers.selection.active = layer
    asked: list[str] = []
    w._ask_yes_no = lambda title, text: asked.append(text) or True  # "use this untied mask for this image?"
    assert w.save_correction() is None
    assert asked and "tied to no image" in asked[0]
    assert errors and "7" in errors[-1]
    assert not (image_folder / "sia_masks").exists()


def test_sample_data_gives_synthetic_tiles(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic")
    images = [layer for layer in viewer.layers if type(layer).__name__ == "Image"]
    masks = [layer for layer in viewer.layers if type(layer).__name__ == "Labels"]
    assert len(images) == 4 and len(masks) == 4
    assert images[0].data.shape == (512, 512, 3) and images[0].data.dtype == np.uint8
    assert masks[0].data.shape == (512, 512)


def test_folder_with_tiff_images(make_napari_viewer, tmp_path):
    import tifffile

    from napari_sia._widget import SIAWidget

    rgb, _ = make_synthetic_region(80, np.random.default_rng(0), 3)
    tifffile.imwrite(tmp_path / "slide.ome.tif", rgb, photometric="rgb", ome=True)
    shutil.copy(tmp_path / "slide.ome.tif", tmp_path / "copy.tiff")
    viewer = make_napari_viewer()
    w = SIAWidget(viewer)
    w.open_folder(tmp_path)
    assert [e.path.name for e in w.entries] == ["copy.tiff", "slide.ome.tif"]
    shown = [layer for layer in viewer.layers if type(layer).__name__ == "Image"]
    assert len(shown) == 1 and shown[0].data.shape == (80, 80, 3)
    w.step_image(1)
    assert shown[0].name == "slide.ome" and np.array_equal(shown[0].data, rgb)


def test_predict_slide_shows_multiscale_labels_over_the_slide(widget, qtbot, tmp_path, tiny_run, errors):
    from napari.layers import Labels

    from sia_core.slide import write_synthetic_slide

    w = widget
    slide = write_synthetic_slide(tmp_path / "slide.ome.tif", (320, 288), tile=64, mpp=0.5, min_side=128)
    w.slide_form.slide.value = slide
    w.model_edit.setText(str(tiny_run))
    w.device_combo.setCurrentText("cpu")
    w.predict_slide()
    _wait_idle(qtbot, w.slide_job)
    assert errors == []
    assert (tmp_path / "slide.ome.zarr").is_dir()
    image = w.viewer.layers["slide.ome.tif"]
    labels = w.viewer.layers["slide labels (slide.ome.tif)"]
    assert image.multiscale and len(image.data) == 3  # the slide's own pyramid, read lazily
    assert isinstance(labels, Labels)
    assert (labels.data[0] if labels.multiscale else labels.data).shape == (320, 288)
    np.testing.assert_allclose(image.extent.world, labels.extent.world)
    assert "complete" in w.slide_job.status.text()

    # a finished result is not replaced without asking
    asked: list[str] = []
    w._ask_yes_no = lambda title, text: asked.append(text) or False
    w.predict_slide()
    assert asked and not w.slide_job.busy


# --------------------------------------------------------------------------------------------------------
# a mask belongs to its image (issue 9): never saved or exported under another image's name


def _inspect(w, qtbot, run: Path) -> None:
    w.model_edit.setText(str(run))
    w.device_combo.setCurrentText("cpu")
    w.inspect()
    _wait_idle(qtbot, w.inspect_job)


@pytest.mark.parametrize("image_left", ["remove", "hide", "keep"])
def test_save_and_export_after_stepping_never_use_the_previous_images_mask(
    widget, qtbot, image_folder, tiny_run, tmp_path, errors, image_left
):
    """Inspect and paint A, press the next arrow to B, Save correction / Export mask: A's mask must not be
    written as B's (all patches have one size, so a shape check alone does not catch it), whatever happens to
    A's layers when it is left, and even when A's mask is still the selected layer (the original bug)."""
    from napari.layers import Labels

    w = widget
    w.other_layers.setCurrentText(image_left)
    w.open_folder(image_folder)
    w.image_combo.setCurrentIndex(1)  # A = patch_0
    _label(w, ["tumor", "stroma"])
    _inspect(w, qtbot, tiny_run)
    (a_mask,) = [layer for layer in w.viewer.layers if isinstance(layer, Labels)]
    a_mask.data = np.zeros((64, 64), np.uint8)  # A painted all tumour
    w.next_button.click()  # B = patch_1, never inspected
    assert w.current.path.name == "patch_1.png"
    assert w.viewer.layers.selection.active == w._folder_layer  # the selection moved to B
    assert (a_mask in w.viewer.layers) == (image_left != "remove")

    exported = tmp_path / "b_mask.tif"
    w._ask_save_path = lambda *a: str(exported)
    w._ask_yes_no = lambda *a: True  # whatever is asked, nothing of A may be written for B
    assert w.save_correction() is None
    assert w.export_mask() is None
    assert not (image_folder / "sia_masks").exists() and not exported.exists()
    assert "[corrected]" not in w.image_combo.itemText(2)
    assert len(errors) == 2 and all("patch_1 has no mask" in e for e in errors)
    if image_left != "remove":
        # A's mask left selected while B is current (as napari did before): refused, named as A's
        w._syncing = True  # select it without the selection switching the current image back to A
        w.viewer.layers.selection.active = a_mask
        w._syncing = False
        assert w.current.path.name == "patch_1.png"
        assert w.save_correction() is None and w.export_mask() is None
        assert not (image_folder / "sia_masks").exists() and not exported.exists()
        assert len(errors) == 4 and all("mask of another image (patch_0.png)" in e for e in errors[2:])
        w.viewer.layers.selection.active = w._folder_layer
        errors.clear()

    # B's own mask is what B saves and exports
    _label(w, ["normal"])
    _inspect(w, qtbot, tiny_run)
    b_mask = w.viewer.layers["mask (patch_1)"]
    b_mask.data = np.full((64, 64), 2, np.uint8)
    assert w.save_correction() == image_folder / "sia_masks" / "patch_1.png"
    assert w.export_mask() == exported
    assert (np.array(Image.open(image_folder / "sia_masks" / "patch_1.png")) == 2).all()
    from napari_sia._reader import read_mask_layer

    assert (np.asarray(read_mask_layer(exported)[0]) == 2).all()


def test_a_mask_of_another_image_or_of_no_image_is_not_saved_for_this_one(
    widget, qtbot, image_folder, tiny_run, errors
):
    from napari.layers import Labels

    w = widget
    w.other_layers.setCurrentText("hide")
    w.open_folder(image_folder)
    w.image_combo.setCurrentIndex(1)  # A = patch_0
    _label(w, ["tumor", "stroma"])
    _inspect(w, qtbot, tiny_run)
    a_mask = w.viewer.layers["mask (patch_0)"]
    a_mask.data = np.zeros((64, 64), np.uint8)
    w.step_image(1)  # B
    assert not a_mask.visible  # A's layers are put away, B's image is selected
    assert w.viewer.layers.selection.active == w._folder_layer

    # selecting A's (hidden) mask in the layer list takes you back to A: the save is then A's own
    w.viewer.layers.selection.active = a_mask
    assert w.current.path.name == "patch_0.png" and a_mask.visible
    assert w.save_correction() == image_folder / "sia_masks" / "patch_0.png"

    # a Labels layer tied to no image: used for B only when the user says so, and only at B's size
    w.step_image(1)
    drawn = w.viewer.add_labels(np.ones((64, 64), np.uint8), name="drawn by hand")
    w.viewer.layers.selection.active = drawn
    asked: list[str] = []
    w._ask_yes_no = lambda title, text: asked.append(text) or False
    assert w.save_correction() is None and "tied to no image" in asked[-1]
    assert not (image_folder / "sia_masks" / "patch_1.png").exists()
    wrong = w.viewer.add_labels(np.ones((32, 32), np.uint8), name="wrong size")
    w.viewer.layers.selection.active = wrong
    assert w.save_correction() is None and "(32, 32)" in errors[-1]
    w._ask_yes_no = lambda title, text: True
    w.viewer.layers.selection.active = drawn
    assert w.save_correction() == image_folder / "sia_masks" / "patch_1.png"
    assert drawn.metadata["sia"]["image"] == str(image_folder / "patch_1.png")  # now tied to B
    assert isinstance(drawn, Labels)


def test_paint_by_class_name_with_one_numbering(widget, qtbot, image_folder, tiny_run, errors):
    from qtpy.QtWidgets import QLabel

    w = widget
    w.open_folder(image_folder)
    w.image_combo.setCurrentIndex(1)
    _label(w, ["tumor", "stroma"])
    assert not w.paint_class.isEnabled()  # nothing to paint before Inspect
    _inspect(w, qtbot, tiny_run)
    mask = w.viewer.layers["mask (patch_0)"]
    assert w.paint_class.isEnabled()
    items = [w.paint_class.itemText(i) for i in range(w.paint_class.count())]
    assert items == ["tumor  (label 0)", "stroma  (label 1)", "normal  (label 2)", "erase: unlabelled (not trained on)"]
    # the class table is numbered like napari's label box: by label value
    assert [w.class_table.verticalHeaderItem(i).text() for i in range(3)] == ["0", "1", "2"]
    shown = " ".join(label.text() for label in w.findChildren(QLabel))
    assert "erase = unlabelled (not trained on)" in shown

    w.paint_class.activated.emit(1)  # the pathologist picks "stroma" by name
    assert mask.selected_label == 1 and str(mask.mode) == "paint"
    assert w.viewer.layers.selection.active == mask
    mask.brush_size = 5
    mask.paint((10, 10), mask.selected_label)
    w.set_paint_class("erase")
    assert str(mask.mode) == "erase" and w.paint_class.currentIndex() == 3
    mask.paint((40, 40), mask.colormap.background_value)  # what napari's eraser writes
    mask.mode = "paint"
    mask.selected_label = 2  # napari's own label box: the chooser follows
    assert w.paint_class.currentText() == "normal  (label 2)"
    saved = np.array(Image.open(w.save_correction()))
    assert saved[10, 10] == 1 and saved[40, 40] == 3  # stroma, and unlabelled (the ignore index)


def test_exported_masks_are_not_listed_as_images(widget, qtbot, image_folder, tiny_run, errors):
    w = widget
    w.open_folder(image_folder)
    w.image_combo.setCurrentIndex(1)
    _label(w, ["tumor"])
    _inspect(w, qtbot, tiny_run)
    w._ask_save_path = lambda title, suggested, filters: suggested  # accept the suggested file
    assert w.export_mask() == image_folder / "sia_exports" / "patch_0_mask.tif"
    # saved next to the images on purpose: asked, and put in sia_exports/ instead
    w.export_format.setCurrentText("PNG, palette (.png)")
    w._ask_save_path = lambda *a: str(image_folder / "patch_0_mask.png")
    asked: list[str] = []
    w._ask_yes_no = lambda title, text: asked.append(text) or True
    assert w.export_mask() == image_folder / "sia_exports" / "patch_0_mask.png"
    assert "listed" in asked[0] and not (image_folder / "patch_0_mask.png").exists()
    w.open_folder(image_folder)
    assert [e.path.name for e in w.entries] == ["named-[1 0 1].png", *(f"patch_{i}.png" for i in range(5))]
    assert {i.path.name for i in find_train_items(image_folder.parent, 3, CLASSES)} == {
        "named-[1 0 1].png",
        "patch_0.png",
    }


def test_layers_view_and_selection_follow_the_current_image(widget, qtbot, tiny_run, errors):
    w = widget
    rng = np.random.default_rng(4)
    a = w.viewer.add_image(make_synthetic_region(80, rng, 3)[0], name="A", rgb=True)
    b = w.viewer.add_image(make_synthetic_region(80, rng, 3)[0], name="B", rgb=True, translate=(0, 400))
    assert [e.name for e in w.entries] == ["A", "B"]
    w.image_combo.setCurrentIndex(0)
    _label(w, ["tumor"])
    _inspect(w, qtbot, tiny_run)
    assert {layer.name for layer in w.viewer.layers} >= {"mask (A)", "tumor CAM (A)"}
    assert w.viewer.layers.selection.active == w.viewer.layers["mask (A)"]

    w.step_image(1)  # default: the layers of the image left are removed
    assert not [layer for layer in w.viewer.layers if "(A)" in layer.name]
    assert w.viewer.layers.selection.active == b
    assert 400 <= w.viewer.scene.camera.center[-1] <= 480  # the view is on B
    assert w.inspect_job.status.text() == "B: not inspected yet"

    w.other_layers.setCurrentText("hide")
    _label(w, ["stroma"])
    _inspect(w, qtbot, tiny_run)
    note = w.inspect_job.status.text()
    assert note.startswith("B: refined mask")
    w.step_image(-1)
    assert not any(layer.visible for layer in w.viewer.layers if "(B)" in layer.name)
    assert w.viewer.layers.selection.active == a and w.viewer.scene.camera.center[-1] <= 80
    w.step_image(1)
    mask = w.viewer.layers["mask (B)"]
    assert mask.visible and w.viewer.layers.selection.active == mask
    assert not w.viewer.layers["stroma CAM (B)"].visible  # the default view: the mask alone
    assert w.inspect_job.status.text() == note


def test_job_slot_lifecycle_is_data_with_time_left(qtbot, monkeypatch):
    from napari_sia._job_slot import JobSlot
    from sia_core.errors import SIAError

    shown: list[str] = []
    monkeypatch.setattr("napari_sia._job_slot.show_error", shown.append)
    slot = JobSlot("Go", lambda: None, stop_tip="Stop", unit="step", preparing="warming up")
    qtbot.addWidget(slot)
    gate = threading.Event()
    texts: list[str] = []
    slot.progressed.connect(lambda done, total: texts.append(slot.bar.format()))

    def job(report, should_stop):
        gate.wait(30)
        for i in range(1, 5):
            time.sleep(0.05)
            report(i, 10)
        return "ok"

    returned: list[str] = []
    slot.run(job, slot.report, slot.should_stop, on_return=returned.append, status="working")
    assert slot.busy and slot.state == JobState.PREPARING
    assert slot.bar.format().startswith("warming up... 0:0")  # time elapsed before the first step
    gate.set()
    qtbot.waitUntil(lambda: not slot.busy, timeout=TIMEOUT_MS)
    assert returned == ["ok"] and slot.state == JobState.DONE and slot.error is None
    assert texts[0] == "1/10 steps" and texts[-1].startswith("4/10 steps, about 0:0") and texts[-1].endswith("left")

    def failing(report, should_stop):
        raise SIAError("no such file: x.png", fix="choose another")

    slot.run(failing, slot.report, slot.should_stop, status="working")
    qtbot.waitUntil(lambda: not slot.busy, timeout=TIMEOUT_MS)
    assert slot.state == JobState.FAILED and slot.error.startswith("no such file: x.png")
    assert shown == [f"SIA: {slot.error}"] and slot.status.text() == f"error: {slot.error}"

    def endless(report, should_stop):
        while not should_stop():
            time.sleep(0.01)

    slot.run(endless, slot.report, slot.should_stop)
    slot.stop_button.click()
    assert slot.state == JobState.STOPPING
    qtbot.waitUntil(lambda: not slot.busy, timeout=TIMEOUT_MS)
    assert slot.state == JobState.STOPPED and slot.start_button.isEnabled()
