"""The SIA dock widget: image-level labels in, editable tissue masks out, without writing code.

Everything heavy (loading a model, training, prediction, pseudo-labels) runs in napari thread workers that
call ``sia_core``; this module only builds the UI, keeps the labels CSV in step with the checkboxes and
turns results into layers in signal handlers on the GUI thread. No model code lives here.

Sections, top to bottom: Images, Classes, Image labels, Model, Fine-tune, Inspect, Pseudo-labels, Mask.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtGui import QColor, QGuiApplication
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sia_core.config import get_preset
from sia_core.data.images import IMAGE_EXTENSIONS, list_images, read_rgb
from sia_core.data.layout import DATASET_PRESETS, DATASET_YAML
from sia_core.data.sidecars import correction_path, pseudo_label_path
from sia_core.errors import SIAError
from sia_core.run_files import RunFiles

from ._backbone_chooser import BackboneChooser
from ._classes import SIA_META, ClassSet, class_set_for_folder, dataset_root, label_colormap, preset_matching
from ._images import ImageEntry, LabelBook, csv_header
from ._jobs import (
    InspectResult,
    PredictorCache,
    SlideJobResult,
    TrainRequest,
    cli_command,
    inspect_image,
    predict_slide_job,
    pseudo_label_images,
    slide_output_path,
    train_job,
)
from ._reader import read_mask_layer
from ._tooltips import CUSTOM, EXPORT_FORMATS, PRESENT_CLASSES, PSEUDO_BESIDE, PSEUDO_FOLDER, TOOLTIPS
from ._triton_guard import block_triton_if_unsafe
from ._writer import classes_of_layer, write_mask

if TYPE_CHECKING:
    import napari

__all__ = ["SIAWidget", "MAP_TITLES"]

MAP_TITLES = {
    "cam": "CAM",
    "inhibition": "inhibition",
    "activation": "region-consistent activation",
    "rsm": "RSM",
}
"""Map key of ``sia_core.predictor.Prediction`` -> the words used in layer names."""

TRAIN_PRESETS = ("cpu", "paper", "test")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_CLASSES = "wsss4luad"


class _ClosingGeneratorWorker(GeneratorWorker):
    """A GeneratorWorker that closes its generator, in the worker thread, when ``quit()`` aborts it.

    napari/superqt's GeneratorWorker only stops pulling from the generator on ``quit()`` and leaves it
    suspended; its ``finally`` blocks (``train_iter``'s checkpoint) would then run whenever it is garbage
    collected, in any thread, or never. Closing it here writes the checkpoint before ``finished`` is emitted.
    """

    def work(self) -> Any:
        try:
            return super().work()
        finally:
            if self.abort_requested:
                gen = getattr(self, "_gen", None)
                if gen is not None:
                    gen.close()


class _Relay(QObject):
    """Carries progress callbacks from a worker thread to the GUI thread (queued signal connection)."""

    progressed = Signal(int, int)


def _to_rgb_uint8(data: Any, contrast: Optional[tuple[float, float]] = None) -> np.ndarray:
    """An image layer's data (RGB(A) or grayscale, any dtype, multiscale) as (H, W, 3) uint8."""
    arr = np.asarray(data[0] if isinstance(data, list) else data)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3]
    elif arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    else:
        raise SIAError(
            f"image layer has shape {arr.shape}; SIA needs a 2-D RGB or grayscale image",
            fix="open a single RGB plane (e.g. an H&E region or patch)",
        )
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    lo, hi = contrast if contrast is not None else (float(arr.min()), float(arr.max()))
    scaled = (arr.astype(np.float32) - lo) / max(hi - lo, 1e-6)
    return np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)


class SIAWidget(QWidget):
    """SIA annotation assistant: image-level labels -> CAMs, inhibition maps and editable tissue masks.

    Args:
        viewer: the napari viewer this widget docks into.
        parent: Qt parent.
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None) -> None:
        # napari hands plugins a PublicOnlyProxy of the viewer: layers obtained through it are fresh proxies,
        # so layers are compared with == (which reaches the wrapped objects), never with `is`.
        super().__init__(parent)
        block_triton_if_unsafe()  # before any path to torch exists (see _triton_guard)
        self.viewer = viewer
        self.classes = ClassSet.from_preset(DEFAULT_CLASSES)
        self.book = LabelBook(self.classes.names)
        self.entries: list[ImageEntry] = []
        self.current: Optional[ImageEntry] = None
        self.folder: Optional[Path] = None
        self._folder_layer: Any = None
        self.cache = PredictorCache()
        self.train_worker: Any = None
        self.inspect_worker: Any = None
        self.pseudo_worker: Any = None
        self.slide_worker: Any = None
        self._slide_pbar: Any = None
        self.last_run: Optional[Path] = None
        self._train_pbar: Any = None
        self._inspect_pbar: Any = None
        self._pseudo_pbar: Any = None
        self._train_last: Any = None
        self._pseudo_done = 0
        self._pseudo_total = 0
        self._pending_run: Optional[Path] = None
        self._syncing = False
        self._relay_inspect = _Relay(self)
        self._relay_pseudo = _Relay(self)
        self._relay_inspect.progressed.connect(self._on_inspect_progress)
        self._relay_pseudo.progressed.connect(self._on_pseudo_progress)
        self._relay_slide = _Relay(self)
        self._relay_slide.progressed.connect(self._on_slide_progress)

        self._build_ui()
        self._set_classes(self.classes, reload_labels=False)
        self._on_train_preset(self.train_preset.currentText())

        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._refresh_entries()

    # ------------------------------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        outer.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        layout = QVBoxLayout(body)
        for build in (
            self._build_images,
            self._build_classes,
            self._build_labels,
            self._build_model,
            self._build_train,
            self._build_inspect,
            self._build_pseudo,
            self._build_masks,
            self._build_slide,
        ):
            layout.addWidget(build())
        layout.addStretch(1)
        self.setMinimumWidth(340)

    def _tip(self, widget: QWidget, key: str) -> QWidget:
        widget.setToolTip(TOOLTIPS[key])
        return widget

    def _button(self, text: str, key: str, slot: Any) -> QPushButton:
        button = QPushButton(text)
        self._tip(button, key)
        button.clicked.connect(slot)
        return button

    def _build_images(self) -> QGroupBox:
        box = QGroupBox("Images")
        grid = QGridLayout(box)
        self.source_layers = self._tip(QRadioButton("Open layers"), "source_layers")
        self.source_folder = self._tip(QRadioButton("Folder"), "source_folder")
        self.source_layers.setChecked(True)
        group = QButtonGroup(box)
        group.addButton(self.source_layers)
        group.addButton(self.source_folder)
        self.source_layers.toggled.connect(self._on_source_changed)
        row = QHBoxLayout()
        row.addWidget(self.source_layers)
        row.addWidget(self.source_folder)
        row.addStretch(1)
        grid.addLayout(row, 0, 0, 1, 3)
        self.folder_edit = self._tip(QLineEdit(), "folder")
        self.folder_edit.setPlaceholderText("folder of PNG / JPEG / TIFF images")
        self.folder_edit.returnPressed.connect(lambda: self.open_folder(self.folder_edit.text()))
        grid.addWidget(self.folder_edit, 1, 0, 1, 2)
        grid.addWidget(self._button("Browse...", "browse_folder", self._browse_folder), 1, 2)
        self.image_combo = self._tip(QComboBox(), "image")
        self.image_combo.currentIndexChanged.connect(self._on_image_index)
        self.prev_button = self._tip(QToolButton(), "prev")
        self.prev_button.setArrowType(Qt.ArrowType.LeftArrow)
        self.prev_button.clicked.connect(lambda: self.step_image(-1))
        self.next_button = self._tip(QToolButton(), "next")
        self.next_button.setArrowType(Qt.ArrowType.RightArrow)
        self.next_button.clicked.connect(lambda: self.step_image(1))
        row = QHBoxLayout()
        row.addWidget(self.prev_button)
        row.addWidget(self.image_combo, 1)
        row.addWidget(self.next_button)
        grid.addLayout(row, 2, 0, 1, 3)
        self.images_status = QLabel()
        self.images_status.setWordWrap(True)
        grid.addWidget(self.images_status, 3, 0, 1, 3)
        return box

    def _build_classes(self) -> QGroupBox:
        box = QGroupBox("Classes")
        layout = QVBoxLayout(box)
        self.class_preset = self._tip(QComboBox(), "class_preset")
        self.class_preset.addItems([*DATASET_PRESETS, CUSTOM])
        self.class_preset.currentTextChanged.connect(self._on_class_preset)
        layout.addWidget(self.class_preset)
        self.class_table = self._tip(QTableWidget(0, 2), "class_table")
        self.class_table.setHorizontalHeaderLabels(["class", "colour"])
        self.class_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.class_table.verticalHeader().setVisible(True)
        self.class_table.itemChanged.connect(self._on_class_name_edited)
        self.class_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout.addWidget(self.class_table)
        row = QHBoxLayout()
        row.addWidget(self._button("+ class", "add_class", self._add_class))
        row.addWidget(self._button("- class", "remove_class", self._remove_class))
        row.addStretch(1)
        layout.addLayout(row)
        return box

    def _build_labels(self) -> QGroupBox:
        box = QGroupBox("Image labels (classes present in this image)")
        layout = QVBoxLayout(box)
        self.checkbox_row = QHBoxLayout()
        layout.addLayout(self.checkbox_row)
        self.label_checks: list[QCheckBox] = []
        self.labels_status = QLabel()
        self.labels_status.setWordWrap(True)
        layout.addWidget(self.labels_status)
        return box

    def _build_model(self) -> QGroupBox:
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_edit = self._tip(QLineEdit(), "model")
        self.model_edit.setPlaceholderText("run folder or .safetensors")
        self.model_edit.textChanged.connect(self._update_cli)
        row = QHBoxLayout()
        row.addWidget(self.model_edit, 1)
        row.addWidget(self._button("Run...", "browse_run", self._browse_run))
        row.addWidget(self._button("Weights...", "browse_weights", self._browse_weights))
        form.addRow("weights", row)
        self.device_combo = self._tip(QComboBox(), "device")
        self.device_combo.addItems(list(DEVICES))
        self.device_combo.currentTextChanged.connect(self._update_cli)
        form.addRow("device", self.device_combo)
        return box

    def _build_train(self) -> QGroupBox:
        box = QGroupBox("Fine-tune")
        form = QFormLayout(box)
        self.train_preset = self._tip(QComboBox(), "train_preset")
        self.train_preset.addItems(list(TRAIN_PRESETS))
        self.train_preset.currentTextChanged.connect(self._on_train_preset)
        form.addRow("preset", self.train_preset)
        self.backbone = BackboneChooser()
        self.backbone.changed.connect(self._update_cli)
        form.addRow(self.backbone)
        self.iterations = self._tip(QSpinBox(), "iterations")
        self.iterations.setRange(1, 1_000_000)
        self.iterations.valueChanged.connect(self._update_cli)
        form.addRow("iterations", self.iterations)
        self.start_from = self._tip(QComboBox(), "start_from")
        self.start_from.addItems(["scratch", "model above"])
        self.start_from.currentTextChanged.connect(self._update_cli)
        form.addRow("start from", self.start_from)
        self.run_dir_edit = self._tip(QLineEdit(), "run_dir")
        self.run_dir_edit.setPlaceholderText("sia_runs/run-<time> beside the images")
        self.run_dir_edit.textChanged.connect(self._update_cli)
        row = QHBoxLayout()
        row.addWidget(self.run_dir_edit, 1)
        row.addWidget(self._button("...", "browse_run_dir", self._browse_run_dir))
        form.addRow("run folder", row)
        self.train_button = self._button("Train", "train", self.start_training)
        self.stop_train_button = self._button("Stop", "stop_train", self.stop_training)
        self.stop_train_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.train_button, 1)
        row.addWidget(self.stop_train_button)
        form.addRow(row)
        self.train_status = QLabel("idle")
        self.train_status.setWordWrap(True)
        form.addRow(self.train_status)
        self.cli_edit = self._tip(QLineEdit(), "cli")
        self.cli_edit.setReadOnly(True)
        row = QHBoxLayout()
        row.addWidget(self.cli_edit, 1)
        row.addWidget(self._button("Copy", "copy_cli", self._copy_cli))
        form.addRow("CLI", row)
        return box

    def _build_inspect(self) -> QGroupBox:
        box = QGroupBox("Inspect")
        form = QFormLayout(box)
        self.inspect_class = self._tip(QComboBox(), "inspect_class")
        form.addRow("maps for", self.inspect_class)
        self.inspect_button = self._button("Inspect current image", "inspect", self.inspect)
        form.addRow(self.inspect_button)
        self.inspect_status = QLabel()
        self.inspect_status.setWordWrap(True)
        form.addRow(self.inspect_status)
        return box

    def _build_pseudo(self) -> QGroupBox:
        box = QGroupBox("Pseudo-labels")
        form = QFormLayout(box)
        self.pseudo_out = self._tip(QComboBox(), "pseudo_out")
        self.pseudo_out.addItems([PSEUDO_BESIDE, PSEUDO_FOLDER])
        form.addRow("write to", self.pseudo_out)
        self.pseudo_button = self._button("Pseudo-label all labelled images", "pseudo", self.start_pseudo)
        self.stop_pseudo_button = self._button("Stop", "stop_pseudo", self.stop_pseudo)
        self.stop_pseudo_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.pseudo_button, 1)
        row.addWidget(self.stop_pseudo_button)
        form.addRow(row)
        self.pseudo_status = QLabel()
        self.pseudo_status.setWordWrap(True)
        form.addRow(self.pseudo_status)
        return box

    def _build_masks(self) -> QGroupBox:
        box = QGroupBox("Mask: export and correction")
        form = QFormLayout(box)
        self.export_format = self._tip(QComboBox(), "export_format")
        self.export_format.addItems(list(EXPORT_FORMATS))
        form.addRow("format", self.export_format)
        row = QHBoxLayout()
        row.addWidget(self._button("Export mask...", "export", self.export_mask))
        row.addWidget(self._button("Open mask...", "open_mask", self.open_mask))
        form.addRow(row)
        self.correction_button = self._button("Save correction", "save_correction", self.save_correction)
        form.addRow(self.correction_button)
        self.mask_status = QLabel()
        self.mask_status.setWordWrap(True)
        form.addRow(self.mask_status)
        return box

    def _build_slide(self) -> QGroupBox:
        box = QGroupBox("Whole slide")
        form = QFormLayout(box)
        self.slide_edit = self._tip(QLineEdit(), "slide")
        self.slide_edit.setPlaceholderText("TIFF / OME-TIFF / SVS slide")
        row = QHBoxLayout()
        row.addWidget(self.slide_edit, 1)
        row.addWidget(self._button("...", "browse_slide", self._browse_slide))
        form.addRow("slide", row)
        self.slide_out_edit = self._tip(QLineEdit(), "slide_out")
        self.slide_out_edit.setPlaceholderText("<slide name>.ome.zarr beside the slide")
        form.addRow("result", self.slide_out_edit)
        self.slide_button = self._button("Predict slide", "predict_slide", self.predict_slide)
        self.stop_slide_button = self._button("Stop", "stop_slide", self.stop_slide)
        self.stop_slide_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.slide_button, 1)
        row.addWidget(self.stop_slide_button)
        form.addRow(row)
        self.slide_status = QLabel()
        self.slide_status.setWordWrap(True)
        form.addRow(self.slide_status)
        return box

    # ------------------------------------------------------------------------------------------ dialogs
    # Every question goes through these methods, so tests can answer them without a modal dialog.
    def _ask_directory(self, title: str, start: str = "") -> str:
        return QFileDialog.getExistingDirectory(self, title, start)

    def _ask_open_file(self, title: str, start: str, filters: str) -> str:
        return QFileDialog.getOpenFileName(self, title, start, filters)[0]

    def _ask_save_path(self, title: str, suggested: str, filters: str) -> str:
        # Overwriting is confirmed by _ask_yes_no for files and OME-Zarr folders alike.
        options = QFileDialog.Option.DontConfirmOverwrite
        return QFileDialog.getSaveFileName(self, title, suggested, filters, options=options)[0]

    def _ask_yes_no(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text)
        return answer == QMessageBox.StandardButton.Yes

    def _ask_choice(self, title: str, text: str, choices: list[str]) -> Optional[str]:
        box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=self)
        buttons = {box.addButton(c, QMessageBox.ButtonRole.AcceptRole): c for c in choices}
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return buttons.get(box.clickedButton())

    def _ask_colour(self, initial: list[int]) -> Optional[list[int]]:
        colour = QColorDialog.getColor(QColor(*initial), self, "Class colour")
        return [colour.red(), colour.green(), colour.blue()] if colour.isValid() else None

    # ------------------------------------------------------------------------------------------ images
    @property
    def mode(self) -> str:
        return "layers" if self.source_layers.isChecked() else "folder"

    def _on_source_changed(self, *_: Any) -> None:
        if self.mode == "folder" and self.folder is None and self.folder_edit.text().strip():
            self.open_folder(self.folder_edit.text())
            return
        self._refresh_entries()

    def _browse_folder(self) -> None:
        folder = self._ask_directory("Image folder", self.folder_edit.text())
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: Any) -> None:
        """Switch to folder mode on ``folder``: its classes (dataset.yaml / labels CSV) and images."""
        folder = Path(str(folder)).expanduser()
        if not folder.is_dir():
            show_error(f"SIA: folder not found: {folder}")
            return
        self.folder = folder.resolve()
        self.folder_edit.setText(str(self.folder))
        adopted = self._classes_for_folder(self.folder)
        if adopted is not None and not adopted.same_classes(self.classes):
            self._set_classes(adopted, reload_labels=False)
            show_info(f"SIA: classes {', '.join(adopted.names)} from {self.folder}")
        self.book = LabelBook(self.classes.names)
        if not self.source_folder.isChecked():
            self.source_folder.setChecked(True)  # triggers _refresh_entries
        else:
            self._refresh_entries()

    def _classes_for_folder(self, folder: Path) -> Optional[ClassSet]:
        """The classes a folder says it has: its labels CSV header, else its dataset.yaml / preset name."""
        try:
            from_yaml = class_set_for_folder(folder)
        except SIAError as err:
            show_warning(f"SIA: {err}")
            from_yaml = None
        header = csv_header(folder / "sia_labels.csv")
        if header and (from_yaml is None or sorted(header) != sorted(from_yaml.names)):
            preset = preset_matching(header)
            return ClassSet.from_preset(preset) if preset else ClassSet.custom(header)
        return from_yaml

    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        out = []
        for layer in self.viewer.layers:
            if not isinstance(layer, Image) or SIA_META in layer.metadata:
                continue
            shape = layer.data[0].shape if layer.multiscale else layer.data.shape
            if (layer.rgb and len(shape) == 3) or (not layer.rgb and len(shape) == 2):
                out.append(layer)
        return out

    @staticmethod
    def _layer_path(layer: Any) -> Optional[Path]:
        path = getattr(layer.source, "path", None)
        if path and Path(path).is_file() and Path(path).suffix.lower() in IMAGE_EXTENSIONS:
            return Path(path).resolve()
        return None

    def _refresh_entries(self, *_: Any) -> None:
        """Rebuild the image list from the open layers or the folder, keeping the current image."""
        previous = self.current
        if self.mode == "folder" and self.folder is not None:
            paths = list_images(self.folder)
            self.entries = [ImageEntry(p.stem, p, None, self.folder) for p in paths]
        elif self.mode == "folder":
            self.entries = []
        else:
            self.entries = []
            for layer in self._image_layers():
                path = self._layer_path(layer)
                self.entries.append(ImageEntry(layer.name, path, layer, path.parent if path else None))
        index = 0
        if previous is not None:
            for i, entry in enumerate(self.entries):
                same = (entry.layer is not None and entry.layer == previous.layer) or (
                    entry.layer is None and entry.path == previous.path
                )
                if same:
                    index = i
                    break
        self._fill_image_combo(index)

    def _fill_image_combo(self, index: int) -> None:
        self._syncing = True
        try:
            self.image_combo.clear()
            for entry in self.entries:
                self.image_combo.addItem(self._entry_text(entry))
            if self.entries:
                self.image_combo.setCurrentIndex(index)
        finally:
            self._syncing = False
        self._select(index if self.entries else None)

    def _entry_text(self, entry: ImageEntry) -> str:
        marks = []
        if self.book.labels(entry)[0] is not None:
            marks.append("[labelled]")
        if entry.path is not None and correction_path(entry.path).is_file():
            marks.append("[corrected]")
        return " ".join([entry.key, *marks])

    def _update_entry_text(self, entry: ImageEntry) -> None:
        if entry in self.entries:
            self.image_combo.setItemText(self.entries.index(entry), self._entry_text(entry))
        self._update_images_status()

    def _update_images_status(self) -> None:
        n = len(self.entries)
        labelled = sum(self.book.labels(e)[0] is not None for e in self.entries)
        corrected = sum(e.path is not None and correction_path(e.path).is_file() for e in self.entries)
        if n == 0:
            text = "no images: open an H&E image in napari, or choose a folder"
        else:
            text = f"{n} images, {labelled} labelled, {corrected} corrected"
        self.images_status.setText(text)

    def _on_image_index(self, index: int) -> None:
        if not self._syncing:
            self._select(index if 0 <= index < len(self.entries) else None)

    def step_image(self, step: int) -> None:
        """Go to the previous (-1) or next (+1) image."""
        if self.entries:
            index = (self.image_combo.currentIndex() + step) % len(self.entries)
            self.image_combo.setCurrentIndex(index)

    def _select(self, index: Optional[int]) -> None:
        self.current = self.entries[index] if index is not None else None
        entry = self.current
        if entry is not None and entry.layer is None and entry.path is not None:
            self._show_folder_image(entry)
        active = self.viewer.layers.selection.active
        if entry is not None and entry.layer is not None and active != entry.layer:
            self._syncing = True
            try:
                self.viewer.layers.selection.active = entry.layer
            finally:
                self._syncing = False
        self._show_only_current_results()
        self._sync_checkboxes()
        self._update_images_status()
        self._update_cli()

    def _show_folder_image(self, entry: ImageEntry) -> None:
        try:
            rgb = read_rgb(entry.path)
        except SIAError as err:
            show_error(f"SIA: {err}")
            return
        layer = self._folder_layer
        if layer is None or layer not in self.viewer.layers:
            layer = self.viewer.add_image(
                rgb, name=entry.name, rgb=True, metadata={SIA_META: {"kind": "folder-image"}}
            )
            self._folder_layer = layer
            self.viewer.reset_view()
        else:
            reset = layer.data.shape != rgb.shape
            layer.data = rgb
            layer.name = entry.name
            if reset:
                self.viewer.reset_view()
        layer.metadata[SIA_META]["image"] = self._entry_id(entry)

    def _on_layers_changed(self, event: Any = None) -> None:
        if self.mode == "layers":
            layer = getattr(event, "value", None)
            if layer is None or SIA_META not in getattr(layer, "metadata", {}):
                self._refresh_entries()

    def _on_active_layer(self, event: Any = None) -> None:
        if self._syncing or self.mode != "layers":
            return
        active = self.viewer.layers.selection.active
        for i, entry in enumerate(self.entries):
            if entry.layer == active and self.image_combo.currentIndex() != i:
                self.image_combo.setCurrentIndex(i)
                return

    def _entry_id(self, entry: ImageEntry) -> str:
        return str(entry.path) if entry.path is not None else f"layer:{entry.name}"

    def _entry_image(self, entry: ImageEntry) -> Any:
        """What the predictor gets: the layer's pixels (layer mode) or the file (read in the worker)."""
        if entry.layer is not None:
            return _to_rgb_uint8(entry.layer.data, tuple(entry.layer.contrast_limits))
        return entry.path

    def _entry_shape(self, entry: ImageEntry) -> Optional[tuple[int, int]]:
        layer = entry.layer if entry.layer is not None else self._folder_layer
        if layer is None:
            return None
        shape = layer.data[0].shape if layer.multiscale else layer.data.shape
        return int(shape[0]), int(shape[1])

    # ------------------------------------------------------------------------------------------ classes
    def _on_class_preset(self, name: str) -> None:
        if self._syncing:
            return
        if name == CUSTOM:
            classes = ClassSet.custom(list(self.classes.names), list(self.classes.palette))
        else:
            classes = ClassSet.from_preset(name)
        self._set_classes(classes)

    def _set_classes(self, classes: ClassSet, reload_labels: bool = True) -> None:
        """Use ``classes`` everywhere: table, checkboxes, inspect selector, labels CSV."""
        self.classes = classes
        self._syncing = True
        try:
            self.class_preset.setCurrentText(classes.preset or CUSTOM)
            self.class_table.setRowCount(len(classes.names))
            for i, (name, colour) in enumerate(zip(classes.names, classes.palette)):
                self.class_table.setItem(i, 0, QTableWidgetItem(name))
                button = QPushButton()
                button.setStyleSheet(f"background-color: rgb({colour[0]}, {colour[1]}, {colour[2]});")
                button.clicked.connect(lambda _=False, row=i: self._pick_colour(row))
                self.class_table.setCellWidget(i, 1, button)
            self.class_table.resizeRowsToContents()
            self.class_table.setFixedHeight(
                self.class_table.horizontalHeader().sizeHint().height()
                + self.class_table.verticalHeader().length()
                + 2 * self.class_table.frameWidth()
                + 2
            )
            self.inspect_class.clear()
            self.inspect_class.addItems([PRESENT_CLASSES, *classes.names])
        finally:
            self._syncing = False
        self._rebuild_checkboxes()
        if reload_labels:
            self.book = LabelBook(classes.names)
            self._fill_image_combo(max(self.image_combo.currentIndex(), 0))
        self._update_cli()

    def _on_class_name_edited(self, item: QTableWidgetItem) -> None:
        if self._syncing or item.column() != 0:
            return
        names = [self.class_table.item(r, 0).text().strip() for r in range(self.class_table.rowCount())]
        self._set_classes(ClassSet.custom(names, self.classes.palette))

    def _pick_colour(self, row: int) -> None:
        colour = self._ask_colour(self.classes.palette[row])
        if colour is None:
            return
        classes = self.classes.copy()
        classes.palette[row] = colour
        if classes.preset is not None:
            classes = ClassSet.custom(classes.names, classes.palette)
        self._set_classes(classes, reload_labels=False)

    def _add_class(self) -> None:
        names = [*self.classes.names, f"class{len(self.classes.names)}"]
        self._set_classes(ClassSet.custom(names, self.classes.palette))

    def _remove_class(self) -> None:
        if len(self.classes.names) > 1:
            self._set_classes(ClassSet.custom(self.classes.names[:-1], self.classes.palette))

    def set_class_preset(self, name: str) -> None:
        """Choose a class preset (``luad-histoseg``, ``bcss-wsss``, ``wsss4luad``) or ``custom``."""
        self.class_preset.setCurrentText(name)

    def set_custom_classes(self, names: list[str], palette: Optional[list[list[int]]] = None) -> None:
        """Type classes by hand: names (and RGB colours)."""
        self._set_classes(ClassSet.custom(list(names), palette))

    def _write_dataset_yaml(self, folder: Path) -> None:
        """Record custom classes beside the images (dataset.yaml), for the CLI and for reopening."""
        if self.classes.preset is not None:
            return
        import yaml

        from sia_core.io_utils import atomic_write_text

        target = dataset_root(folder) / DATASET_YAML
        if target.exists():
            try:
                existing = yaml.safe_load(target.read_text()) or {}
            except (OSError, yaml.YAMLError):
                return
            if existing.get("source") != "napari-sia" or existing.get("classes") == self.classes.names:
                return  # never rewrite a dataset.yaml the user wrote
        try:
            atomic_write_text(target, yaml.safe_dump(self.classes.to_yaml_dict(), sort_keys=False))
        except OSError as err:
            show_warning(f"SIA: cannot write {target}: {err}")

    # ------------------------------------------------------------------------------------------ labels
    def _rebuild_checkboxes(self) -> None:
        for check in self.label_checks:
            self.checkbox_row.removeWidget(check)
            check.deleteLater()
        self.label_checks = []
        for i, name in enumerate(self.classes.names):
            check = QCheckBox(name)
            check.setToolTip(TOOLTIPS["labels"])
            colour = self.classes.palette[i]
            check.setStyleSheet(f"QCheckBox::indicator:checked {{ background-color: rgb{tuple(colour)}; }}")
            check.toggled.connect(self._on_label_toggled)
            self.checkbox_row.addWidget(check)
            self.label_checks.append(check)
        self._sync_checkboxes()

    def _sync_checkboxes(self) -> None:
        entry = self.current
        vector, source = self.book.labels(entry) if entry is not None else (None, "")
        self._syncing = True
        try:
            for i, check in enumerate(self.label_checks):
                check.setEnabled(entry is not None)
                check.setChecked(bool(vector is not None and i < len(vector) and vector[i]))
        finally:
            self._syncing = False
        self._labels_message(entry, source)

    def _labels_message(self, entry: Optional[ImageEntry], source: str) -> None:
        if entry is None:
            self.labels_status.setText("")
            return
        error = self.book.error(entry)
        if error:
            self.labels_status.setText(f"<b>not saved</b>: {error}")
        elif entry.csv_folder is None:
            self.labels_status.setText("this layer has no file: labels kept for this session only")
        elif source == "file name":
            self.labels_status.setText("from the file name; a change is saved to sia_labels.csv")
        else:
            self.labels_status.setText(f"saved in {entry.csv_folder / 'sia_labels.csv'}")

    def label_vector(self) -> np.ndarray:
        """The checkboxes as a 0/1 vector."""
        return np.array([int(c.isChecked()) for c in self.label_checks], dtype=np.int64)

    def set_labels(self, names: list[str]) -> None:
        """Tick exactly the classes in ``names`` for the current image (saved like a click)."""
        for check, name in zip(self.label_checks, self.classes.names):
            check.setChecked(name in names)

    def _on_label_toggled(self, *_: Any) -> None:
        if self._syncing or self.current is None:
            return
        entry = self.current
        vector = self.label_vector()
        try:
            self.classes.validate()
            written = self.book.set(entry, vector if vector.any() else None)
        except SIAError as err:
            show_error(f"SIA: {err}")
            self._sync_checkboxes()
            return
        if written is not None and entry.csv_folder is not None:
            self._write_dataset_yaml(entry.csv_folder)
        self._labels_message(entry, "csv" if written is not None else "")
        self._update_entry_text(entry)

    def _labelled(self) -> list[tuple[Path, np.ndarray]]:
        """(image file, labels) of every labelled image that has a file."""
        out = []
        for entry in self.entries:
            vector, _ = self.book.labels(entry)
            if vector is not None and entry.path is not None:
                out.append((entry.path, vector))
        return out

    # ------------------------------------------------------------------------------------------ model
    def _browse_run(self) -> None:
        folder = self._ask_directory("SIA run folder", self.model_edit.text())
        if folder:
            self.model_edit.setText(folder)

    def _browse_weights(self) -> None:
        path = self._ask_open_file("SIA weights", self.model_edit.text(), "SIA weights (*.safetensors)")
        if path:
            self.model_edit.setText(path)

    def _model_path(self) -> Optional[Path]:
        text = self.model_edit.text().strip()
        if not text:
            show_error("SIA: no model chosen (fix: train one, or choose a run folder or .safetensors file)")
            return None
        path = Path(text).expanduser()
        if not path.exists():
            show_error(f"SIA: model not found: {path} (fix: choose a run folder or .safetensors file)")
            return None
        return path

    @property
    def device(self) -> str:
        return self.device_combo.currentText()

    # ------------------------------------------------------------------------------------------ training
    def _on_train_preset(self, name: str) -> None:
        self.iterations.setValue(get_preset(name).train.iterations)
        self.backbone.set_preset(name)
        self._update_cli()

    def _data_root(self) -> Optional[Path]:
        if self.mode == "folder" and self.folder is not None:
            return dataset_root(self.folder)
        folders = {e.csv_folder for e in self.entries if e.csv_folder is not None}
        return dataset_root(folders.pop()) if len(folders) == 1 else None

    def _default_run_dir(self) -> Path:
        root = self._data_root() or Path.home()
        return root / "sia_runs" / time.strftime("run-%Y%m%d-%H%M%S")

    def _train_request(self, out_dir: Optional[Path] = None, force: bool = False) -> TrainRequest:
        text = self.run_dir_edit.text().strip()
        init = None
        if self.start_from.currentText() != "scratch" and self.model_edit.text().strip():
            init = Path(self.model_edit.text().strip()).expanduser()
        return TrainRequest(
            preset=self.train_preset.currentText(),
            classes=self.classes,
            iterations=self.iterations.value(),
            device=self.device,
            out_dir=out_dir or (Path(text).expanduser() if text else Path("<run folder>")),
            data_root=self._data_root(),
            init_from=init,
            force=force,
            extra_overrides=tuple(self.backbone.overrides()),
        )

    def _update_cli(self, *_: Any) -> None:
        if not hasattr(self, "cli_edit") or self.train_worker is not None:
            return
        self.cli_edit.setText(cli_command(self._train_request()))
        self.cli_edit.setCursorPosition(0)

    def _copy_cli(self) -> None:
        QGuiApplication.clipboard().setText(self.cli_edit.text())

    def _browse_run_dir(self) -> None:
        folder = self._ask_directory("Folder for the new run", self.run_dir_edit.text())
        if folder:
            self.run_dir_edit.setText(folder)

    def start_training(self) -> None:
        """Train (or fine-tune) on every labelled image in a thread worker."""
        if self.train_worker is not None:
            return
        try:
            self.classes.validate()
        except SIAError as err:
            show_error(f"SIA: {err}")
            return
        items = self._labelled()
        if not items:
            show_error(
                "SIA: no labelled images with a file to train on (fix: tick the classes present in some "
                "images; in-memory layers need to be saved as files first)"
            )
            return
        text = self.run_dir_edit.text().strip()
        out_dir = Path(text).expanduser() if text else self._default_run_dir()
        force = False
        if RunFiles(out_dir).holds_run():
            if not self._ask_yes_no("Replace run?", f"{out_dir} already holds a run. Replace it?"):
                return
            force = True
        request = self._train_request(out_dir, force)
        if request.init_from is not None and not request.init_from.exists():
            show_error(f"SIA: model to fine-tune not found: {request.init_from}")
            return
        self.cli_edit.setText(cli_command(request))
        n_corr = sum(correction_path(p).is_file() for p, _ in items)
        self._train_last = None
        self.train_status.setText(
            f"starting: {len(items)} images ({n_corr} with corrected masks) -> {out_dir}"
        )
        self._train_pbar = progress(total=request.iterations, desc="SIA training")
        worker = create_worker(
            train_job,
            request,
            items,
            _worker_class=_ClosingGeneratorWorker,
            _connect={
                "yielded": self._on_train_step,
                "errored": self._on_worker_error,
                "finished": self._on_train_finished,
            },
            _start_thread=False,
        )
        self.train_worker = worker
        self.train_button.setEnabled(False)
        self.stop_train_button.setEnabled(True)
        self._pending_run = out_dir
        worker.start()

    def stop_training(self) -> None:
        """Stop at the next step; the worker closes the training generator, which saves a checkpoint."""
        if self.train_worker is not None:
            self.train_worker.quit()
            self.stop_train_button.setEnabled(False)
            self.train_status.setText("stopping after this step...")

    def _on_train_step(self, info: Any) -> None:
        if self.train_worker is None:
            return  # arrived after the end
        self._train_last = info
        loss = info.logs.get("loss", float("nan"))
        self.train_status.setText(
            f"step {info.iteration}/{info.total}, loss {loss:.3f}, {info.images_per_s:.1f} img/s"
        )
        # Last: napari's progress bar calls processEvents(), so `finished` may run inside these calls.
        pbar = self._train_pbar
        if pbar is not None:
            pbar.set_description(f"SIA training: loss {loss:.3f}, {info.images_per_s:.1f} img/s")
            pbar.update(info.iteration - pbar.n)

    def _on_train_finished(self) -> None:
        worker, self.train_worker = self.train_worker, None
        pbar, self._train_pbar = self._train_pbar, None
        if pbar is not None:
            pbar.close()
        self.train_button.setEnabled(True)
        self.stop_train_button.setEnabled(False)
        out_dir = self._pending_run
        info = self._train_last
        weights = out_dir / "last.safetensors"
        if weights.is_file():
            self.last_run = out_dir
            self.cache.clear()
            self.model_edit.setText(str(out_dir))
            done = info.iteration if info is not None else 0
            total = info.total if info is not None else self.iterations.value()
            verb = "stopped" if worker is not None and worker.abort_requested else "finished"
            if done < total and verb == "finished":
                verb = "ended"
            self.train_status.setText(f"{verb} at step {done}/{total}; weights: {weights}")
        elif not self.train_status.text().startswith("error"):
            self.train_status.setText("ended before the first step; nothing saved")
        self._update_cli()

    def _on_worker_error(self, exc: Exception) -> None:
        message = str(exc) if isinstance(exc, SIAError) else f"{type(exc).__name__}: {exc}"
        show_error(f"SIA: {message}")
        for status in (self.train_status, self.inspect_status, self.pseudo_status, self.slide_status):
            if status.text().startswith(("starting", "step", "computing", "writing", "stopping")):
                status.setText(f"error: {message}")

    # ------------------------------------------------------------------------------------------ inspect
    def inspect(self) -> None:
        """Compute CAM, inhibition map, region-consistent activation, RSM and refined mask of this image."""
        if self.inspect_worker is not None:
            return
        entry = self.current
        if entry is None:
            show_error("SIA: no current image (fix: open an image or choose a folder)")
            return
        model = self._model_path()
        if model is None:
            return
        vector = self.label_vector()
        labels = vector if vector.any() else None
        try:
            image = self._entry_image(entry)
        except SIAError as err:
            show_error(f"SIA: {err}")
            return
        self.inspect_status.setText(f"computing {entry.name}...")
        self._inspect_pbar = progress(total=0, desc=f"SIA inspect {entry.name}")
        worker = create_worker(
            inspect_image,
            self.cache,
            model,
            self.device,
            image,
            labels,
            progress=self._relay_inspect.progressed.emit,
            _connect={
                "returned": lambda result: self._on_inspect_done(entry, result),
                "errored": self._on_worker_error,
                "finished": self._on_inspect_finished,
            },
            _start_thread=False,
        )
        self.inspect_worker = worker
        self.inspect_button.setEnabled(False)
        worker.start()

    def _on_inspect_progress(self, done: int, total: int) -> None:
        if self.inspect_worker is None:
            return  # arrived after the end
        self.inspect_status.setText(f"computing: tile {done}/{total}")
        pbar = self._inspect_pbar  # last: it may process events (see _on_train_step)
        if pbar is not None:
            if pbar.total != total:
                pbar.total = total
            pbar.update(done - pbar.n)

    def _on_inspect_finished(self) -> None:
        self.inspect_worker = None
        self.inspect_button.setEnabled(True)
        pbar, self._inspect_pbar = self._inspect_pbar, None
        if pbar is not None:
            pbar.close()

    def _layer_named(self, name: str) -> Any:
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401

    def _placement(self, entry: ImageEntry) -> dict[str, Any]:
        layer = entry.layer if entry.layer is not None else self._folder_layer
        if layer is None:
            return {}
        return {"translate": tuple(layer.translate)[-2:], "scale": tuple(layer.scale)[-2:]}

    def mask_layer_name(self, entry: ImageEntry) -> str:
        return f"SIA refined mask ({entry.name})"

    @staticmethod
    def map_layer_name(kind: str, class_name: str, entry: ImageEntry) -> str:
        return f"SIA {MAP_TITLES[kind]} [{class_name}] ({entry.name})"

    def _on_inspect_done(self, entry: ImageEntry, result: InspectResult) -> None:
        if entry not in self.entries:
            return  # the image was closed meanwhile
        classes = result.classes
        if not classes.same_classes(self.classes):
            show_warning(
                f"SIA: the model's classes {classes.names} differ from the widget's {self.classes.names}; "
                "layers use the model's"
            )
        choice = self.inspect_class.currentText()
        if choice != PRESENT_CLASSES and choice in classes.names:
            wanted = [classes.names.index(choice)]
        else:
            wanted = [i for i in range(classes.num_classes) if result.present[i]]
        image_id = self._entry_id(entry)
        placement = self._placement(entry)
        keep: set[str] = set()
        first = True
        for kind, maps in result.maps.items():
            for c in wanted:
                name = self.map_layer_name(kind, classes.names[c], entry)
                keep.add(name)
                meta = {SIA_META: {"kind": "map", "map": kind, "class": classes.names[c], "image": image_id}}
                layer = self._layer_named(name)
                if layer is not None:
                    layer.data = maps[c]
                    layer.metadata.update(meta)
                else:
                    self.viewer.add_image(
                        maps[c],
                        name=name,
                        colormap="turbo",
                        contrast_limits=(0.0, 1.0),
                        opacity=0.5,
                        blending="translucent",
                        visible=first,
                        metadata=meta,
                        **placement,
                    )
                first = False
        for layer in list(self.viewer.layers):  # maps of classes or kinds not computed this time
            meta = layer.metadata.get(SIA_META, {})
            if meta.get("kind") == "map" and meta.get("image") == image_id and layer.name not in keep:
                self.viewer.layers.remove(layer)
        self._set_mask_layer(entry, result.refined, classes, image_id, placement)
        present = ", ".join(classes.names[i] for i in range(classes.num_classes) if result.present[i])
        scores = ", ".join(f"{n} {s:.2f}" for n, s in zip(classes.names, result.scores))
        self.inspect_status.setText(f"{entry.name}: maps for {present} (classifier: {scores})")

    def _set_mask_layer(
        self, entry: ImageEntry, refined: np.ndarray, classes: ClassSet, image_id: str, placement: dict
    ) -> None:
        name = self.mask_layer_name(entry)
        meta = {**classes.metadata(), "kind": "mask", "image": image_id, "edited": False}
        layer = self._layer_named(name)
        if layer is not None:
            if layer.metadata.get(SIA_META, {}).get("edited") and not self._ask_yes_no(
                "Replace edited mask?", f"'{name}' has been painted on. Replace it with the new prediction?"
            ):
                return
            layer.data = refined
            layer.colormap = label_colormap(classes)
            layer.metadata[SIA_META] = meta
        else:
            layer = self.viewer.add_labels(
                refined,
                name=name,
                colormap=label_colormap(classes),
                opacity=0.5,
                metadata={SIA_META: meta},
                **placement,
            )
            layer.events.paint.connect(lambda event, lyr=layer: self._mark_edited(lyr))
        self.viewer.layers.selection.active = layer

    @staticmethod
    def _mark_edited(layer: Any) -> None:
        layer.metadata.setdefault(SIA_META, {})["edited"] = True

    def _show_only_current_results(self) -> None:
        """Folder mode shows one image at a time: hide SIA layers of other images, show this one's."""
        if self.mode != "folder" or self.current is None:
            return
        current = self._entry_id(self.current)
        for layer in self.viewer.layers:
            meta = layer.metadata.get(SIA_META, {})
            if meta.get("kind") in ("map", "mask") and "image" in meta:
                if meta["image"] != current:
                    layer.visible = False
                elif meta["kind"] == "mask":
                    layer.visible = True

    # ------------------------------------------------------------------------------------------ pseudo-labels
    def start_pseudo(self) -> None:
        """Write a pseudo-mask for every labelled image, in a thread worker."""
        if self.pseudo_worker is not None:
            return
        model = self._model_path()
        if model is None:
            return
        items = self._labelled()
        if not items:
            show_error("SIA: no labelled images with a file (fix: tick the classes present in some images)")
            return
        out_dir: Optional[Path] = None
        if self.pseudo_out.currentText() == PSEUDO_FOLDER:
            chosen = self._ask_directory("Folder for pseudo-masks", str(self._data_root() or ""))
            if not chosen:
                return
            out_dir = Path(chosen)
        existing = [p for p, _ in items if pseudo_label_path(p, out_dir).exists()]
        overwrite = False
        if existing:
            choice = self._ask_choice(
                "Pseudo-masks exist",
                f"{len(existing)} of {len(items)} pseudo-masks already exist "
                f"(e.g. {pseudo_label_path(existing[0], out_dir)}).",
                ["Overwrite", "Skip existing"],
            )
            if choice is None:
                return
            if choice == "Overwrite":
                overwrite = True
            else:
                done = set(existing)
                items = [(p, v) for p, v in items if p not in done]
                if not items:
                    self.pseudo_status.setText("nothing to do: every pseudo-mask exists")
                    return
        self._pseudo_done = 0
        self._pseudo_total = len(items)
        self._pseudo_pbar = progress(total=len(items), desc="SIA pseudo-labels")
        self.pseudo_status.setText(f"writing {len(items)} pseudo-masks...")
        worker = create_worker(
            pseudo_label_images,
            self.cache,
            model,
            self.device,
            items,
            out_dir,
            overwrite,
            self._pseudo_image_done,
            lambda: bool(worker.abort_requested),
            _connect={
                "errored": self._on_worker_error,
                "finished": self._on_pseudo_finished,
            },
            _start_thread=False,
        )
        self.pseudo_worker = worker
        self.pseudo_button.setEnabled(False)
        self.stop_pseudo_button.setEnabled(True)
        worker.start()

    def stop_pseudo(self) -> None:
        """Stop after the current image."""
        if self.pseudo_worker is not None:
            self.pseudo_worker.quit()
            self.stop_pseudo_button.setEnabled(False)
            self.pseudo_status.setText("stopping after this image...")

    def _pseudo_image_done(self, done: int, total: int) -> None:
        # Runs in the worker thread: keep the count here (queued signals from different connections may
        # arrive after `finished`), and hand the UI update to the GUI thread.
        self._pseudo_done = done
        self._relay_pseudo.progressed.emit(done, total)

    def _on_pseudo_progress(self, done: int, total: int) -> None:
        if self.pseudo_worker is None:
            return  # arrived after the end; the final status is already shown
        self.pseudo_status.setText(f"writing: {done}/{total}")
        if self._pseudo_pbar is not None:  # last: it may process events (see _on_train_step)
            self._pseudo_pbar.update(done - self._pseudo_pbar.n)

    def _on_pseudo_finished(self) -> None:
        worker, self.pseudo_worker = self.pseudo_worker, None
        pbar, self._pseudo_pbar = self._pseudo_pbar, None
        if pbar is not None:
            pbar.close()
        self.pseudo_button.setEnabled(True)
        self.stop_pseudo_button.setEnabled(False)
        if not self.pseudo_status.text().startswith("error"):
            verb = "stopped" if worker is not None and worker.abort_requested else "done"
            done, total = self._pseudo_done, self._pseudo_total
            self.pseudo_status.setText(f"{verb}: {done}/{total} pseudo-masks written")

    # ------------------------------------------------------------------------------------------ masks
    def current_mask_layer(self) -> Any:
        """The selected Labels layer, else the refined mask of the current image."""
        from napari.layers import Labels

        active = self.viewer.layers.selection.active
        if isinstance(active, Labels):
            return active
        if self.current is not None:
            return self._layer_named(self.mask_layer_name(self.current))
        return None

    def export_mask(self) -> Optional[Path]:
        """Save the current mask in the chosen format (asks before replacing a file)."""
        layer = self.current_mask_layer()
        if layer is None:
            show_error("SIA: no mask to export (fix: run Inspect, or select a Labels layer)")
            return None
        ext = EXPORT_FORMATS[self.export_format.currentText()]
        base = self.current.name if self.current is not None else layer.name
        folder = self.current.path.parent if self.current is not None and self.current.path else Path.home()
        chosen = self._ask_save_path("Export mask", str(folder / f"{base}_mask{ext}"), f"*{ext}")
        if not chosen:
            return None
        path = Path(chosen)
        if not path.name.lower().endswith(ext):
            path = path.with_name(path.name + ext)
        overwrite = False
        if path.exists():
            if not self._ask_yes_no("Replace file?", f"{path} exists. Replace it?"):
                return None
            overwrite = True
        data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
        try:
            written = write_mask(path, data, classes_of_layer(data, layer.metadata), overwrite=overwrite)
        except SIAError as err:
            show_error(f"SIA: {err}")
            return None
        self.mask_status.setText(f"exported {written}")
        return written

    def open_mask(self) -> None:
        """Open a mask file as a Labels layer with its class colours (GeoJSON sized like this image)."""
        start = ""
        if self.current is not None and self.current.path is not None:
            start = str(self.current.path.parent)
        chosen = self._ask_open_file(
            "Open mask", start, "Masks (*.tif *.tiff *.png *.geojson *.json *.zarr);;All files (*)"
        )
        if chosen:
            self.add_mask_file(Path(chosen))

    def add_mask_file(self, path: Path) -> Any:
        """Add a mask file as a Labels layer (placed over the current image)."""
        shape = self._entry_shape(self.current) if self.current is not None else None
        try:
            data, attrs, _ = read_mask_layer(path, shape)
        except SIAError as err:
            show_error(f"SIA: {err}")
            return None
        if self.current is not None:
            attrs.update(self._placement(self.current))
        layer = self.viewer.add_labels(data, **attrs)
        self.viewer.layers.selection.active = layer
        return layer

    def save_correction(self) -> Optional[Path]:
        """Save the current mask as this image's correction (pixel supervision for the next training)."""
        entry = self.current
        if entry is None or entry.path is None:
            show_error("SIA: the current image has no file, so its correction cannot be stored beside it")
            return None
        layer = self.current_mask_layer()
        if layer is None:
            show_error("SIA: no mask to save (fix: run Inspect, or select a Labels layer)")
            return None
        data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
        shape = self._entry_shape(entry)
        if data.ndim != 2 or (shape is not None and data.shape != shape):
            show_error(f"SIA: mask '{layer.name}' is {data.shape}, the image is {shape}")
            return None
        meta = layer.metadata.get(SIA_META, {})
        if meta.get("classes") and list(meta["classes"]) != self.classes.names:
            show_error(
                f"SIA: mask '{layer.name}' has classes {meta['classes']}, the widget has "
                f"{self.classes.names} (fix: choose the same classes)"
            )
            return None
        allowed = [*range(self.classes.num_classes), self.classes.ignore_index]
        bad = sorted(set(np.unique(data).tolist()) - set(allowed))
        if bad:
            show_error(
                f"SIA: mask '{layer.name}' holds values {bad[:10]} that are no class "
                f"(fix: paint only labels 0..{self.classes.num_classes - 1}; erase for unlabelled)"
            )
            return None
        target = correction_path(entry.path)
        if target.exists() and not self._ask_yes_no("Replace correction?", f"{target} exists. Replace it?"):
            return None
        from sia_core.data.images import write_palette_png

        try:
            write_palette_png(target, data.astype(np.uint8), self.classes.full_palette())
        except OSError as err:
            show_error(f"SIA: cannot write {target}: {err}")
            return None
        layer.metadata.setdefault(SIA_META, {})["edited"] = False
        self.mask_status.setText(f"correction saved: {target} (used by the next training)")
        self._update_entry_text(entry)
        return target

    # ------------------------------------------------------------------------------------------ whole slides
    def _browse_slide(self) -> None:
        path = self._ask_open_file(
            "Whole-slide image", self.slide_edit.text(), "Slides (*.tif *.tiff *.svs *.btf);;All files (*)"
        )
        if path:
            self.slide_edit.setText(path)

    def predict_slide(self) -> None:
        """Segment a whole slide tile by tile into an OME-Zarr, then show it over the slide (multiscale)."""
        if self.slide_worker is not None:
            return
        text = self.slide_edit.text().strip()
        slide = Path(text).expanduser() if text else None
        if slide is None or not slide.is_file():
            show_error(f"SIA: slide not found: {text or '(none chosen)'} (fix: choose a TIFF/OME-TIFF/SVS file)")
            return
        model = self._model_path()
        if model is None:
            return
        out_text = self.slide_out_edit.text().strip()
        out = Path(out_text).expanduser() if out_text else slide_output_path(slide)
        overwrite = False
        if out.exists() and self._slide_result_complete(out):
            if not self._ask_yes_no("Replace result?", f"{out} holds a finished result. Replace it?"):
                return
            overwrite = True
        self.slide_status.setText(f"computing {slide.name} -> {out}")
        self._slide_pbar = progress(total=0, desc=f"SIA slide {slide.name}")
        worker = create_worker(
            predict_slide_job,
            self.cache,
            model,
            self.device,
            slide,
            out,
            overwrite,
            self._relay_slide.progressed.emit,
            lambda: bool(worker.abort_requested),
            _connect={
                "returned": self._on_slide_done,
                "errored": self._on_worker_error,
                "finished": self._on_slide_finished,
            },
            _start_thread=False,
        )
        self.slide_worker = worker
        self.slide_button.setEnabled(False)
        self.stop_slide_button.setEnabled(True)
        worker.start()

    @staticmethod
    def _slide_result_complete(out: Path) -> bool:
        try:
            from sia_core.slide import open_slide_prediction

            return bool(open_slide_prediction(out)["complete"])
        except (SIAError, OSError, KeyError, ValueError):
            return True  # something else is there: never replace it without asking

    def stop_slide(self) -> None:
        """Stop after the current batch; what is written stays and a new run resumes it."""
        if self.slide_worker is not None:
            self.slide_worker.quit()
            self.stop_slide_button.setEnabled(False)
            self.slide_status.setText("stopping after this batch...")

    def _on_slide_progress(self, done: int, total: int) -> None:
        if self.slide_worker is None:
            return
        self.slide_status.setText(f"computing: tile {done}/{total}")
        pbar = self._slide_pbar  # last: it may process events (see _on_train_step)
        if pbar is not None:
            if pbar.total != total:
                pbar.total = total
            pbar.update(done - pbar.n)

    def _on_slide_done(self, job: SlideJobResult) -> None:
        result = job.result
        for data, attrs, kind in job.layers:
            attrs = dict(attrs)
            if attrs.get("multiscale") and isinstance(data, list) and len(data) == 1:
                # napari cannot take a one-level "pyramid" (a small slide): give it the array itself
                data, attrs["multiscale"] = data[0], False
            if kind == "labels":
                attrs["name"] = f"SIA slide labels ({result.slide.name})"
                if job.classes is not None:
                    attrs["colormap"] = label_colormap(job.classes, job.transparent)
                    attrs["metadata"] = {SIA_META: {**job.classes.metadata(), "kind": "slide"}}
            existing = self._layer_named(attrs["name"])
            if existing is not None:
                self.viewer.layers.remove(existing)
            getattr(self.viewer, f"add_{kind}")(data, **attrs)
        state = "complete" if result.complete else "stopped (run again to resume)"
        self.slide_status.setText(
            f"{result.slide.name}: {result.tiles_done} tiles in {result.seconds:.0f} s, {state}; {result.out}"
        )

    def _on_slide_finished(self) -> None:
        worker, self.slide_worker = self.slide_worker, None
        self.slide_button.setEnabled(True)
        self.stop_slide_button.setEnabled(False)
        pbar, self._slide_pbar = self._slide_pbar, None
        if pbar is not None:
            pbar.close()
        if worker is not None and worker.abort_requested and not self.slide_status.text().startswith("error"):
            self.slide_status.setText("stopped: what is written stays; Predict slide again resumes it")

    # ------------------------------------------------------------------------------------------ teardown
    def close_workers(self, timeout_ms: int = 60_000) -> None:
        """Ask every running worker to stop and wait for it (e.g. before the viewer closes)."""
        for worker in (self.train_worker, self.inspect_worker, self.pseudo_worker, self.slide_worker):
            if worker is not None:
                worker.quit()
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(timeout_ms)
