"""The SIA dock widget: image-level labels in, editable tissue masks out, without writing code.

Sections follow the work, top to bottom: 1 Images, 2 Classes and image labels, 3 Model (train one or choose
one), 4 Inspect and correct (paint by class name, Save correction, then train again), 5 Pseudo-labels,
6 Export and open masks, Whole slide; the last three start folded. Every heavy step is a background job
(``_job_slot``) that calls ``sia_core`` (``_jobs``); this module builds the UI, keeps the labels CSV in step
with the checkboxes and turns results into layers tied to their image (``_result_layers``): a mask action
only ever acts on a mask of the current image.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, SpinBox
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QGuiApplication, QIcon, QPixmap
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sia_core.config import get_preset
from sia_core.data.corrections import write_correction
from sia_core.data.images import IMAGE_EXTENSIONS, list_images, read_mask, read_rgb
from sia_core.data.layout import DATASET_PRESETS, write_dataset_yaml
from sia_core.data.sidecars import OUTPUT_DIRS, correction_path, export_path, pseudo_label_path
from sia_core.errors import SIAError
from sia_core.run_files import RunFiles

from ._classes import (
    SIA_META,
    UNLABELLED,
    ClassSet,
    class_set_for_folder,
    dataset_root,
    display_colour,
    preset_matching,
)
from ._images import ImageEntry, LabelBook, csv_header
from ._job_slot import JobSlot, JobState
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
    slide_result_complete,
    train_job,
)
from ._reader import read_mask_layer
from ._result_layers import (
    MAP_LAYER_ATTRS,
    MAP_TITLES,
    image_of,
    layer_shape,
    layers_of,
    link,
    map_layer_name,
    mask_layer_name,
    masks_of,
    style_mask,
)
from ._tooltips import CUSTOM, EXPORT_FORMATS, PRESENT_CLASSES, PSEUDO_BESIDE, PSEUDO_FOLDER, TOOLTIPS
from ._triton_guard import block_triton_if_unsafe
from ._writer import classes_of_layer, write_mask

if TYPE_CHECKING:
    import napari

__all__ = ["SIAWidget", "MAP_TITLES"]

TRAIN_PRESETS = ("cpu", "paper", "test")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_CLASSES = "wsss4luad"
START_FROM = ("scratch", "model above")
OTHER_LAYERS = ("remove", "hide", "keep")
"""What happens to the layers of the image you leave: removed (a painted, unsaved mask is asked about), hidden,
or kept as they are."""
ERASE = "erase"


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


def _swatch(rgb: list[int]) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(*rgb[:3]))
    return QIcon(pixmap)


def _is_edited(layer: Any) -> bool:
    return bool(layer.metadata.get(SIA_META, {}).get("edited"))


class _Section(QWidget):
    """A titled part of the widget whose body folds away, so the work in progress fits a 768 px screen."""

    def __init__(self, title: str, expanded: bool = True) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.header = QToolButton()
        self.header.setText(title)
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.header.setStyleSheet("QToolButton { border: none; font-weight: bold; padding: 3px 0px; }")
        self.header.toggled.connect(self._show_body)
        layout.addWidget(self.header)
        self.body = QWidget()
        layout.addWidget(self.body)
        self.header.setChecked(expanded)
        self._show_body(expanded)

    @property
    def expanded(self) -> bool:
        return self.header.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        self.header.setChecked(expanded)

    def _show_body(self, expanded: bool) -> None:
        self.header.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.body.setVisible(expanded)


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
        self._current_id: Optional[str] = None
        self.cache = PredictorCache()
        self.last_run: Optional[Path] = None
        self._pending_run: Optional[Path] = None
        self._train_last: Any = None
        self._pseudo_done = 0
        self._pseudo_total = 0
        self._pseudo_dir: Optional[Path] = None
        self._inspect_notes: dict[str, str] = {}
        """Image id -> what Inspect showed for it (the Inspect status follows the current image)."""
        self._paint_layer: Any = None
        self._syncing = False

        self._build_ui()
        self._set_classes(self.classes, reload_labels=False)
        self._on_train_preset(self.train_form.preset.value)

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
        layout.setSpacing(4)
        self.sections: dict[str, _Section] = {}
        for key, title, expanded, build in (
            ("images", "1  Images", True, self._build_images),
            ("labels", "2  Classes and image labels", True, self._build_labels),
            ("model", "3  Model: train one, or choose one", True, self._build_model),
            ("inspect", "4  Inspect and correct", True, self._build_inspect),
            ("pseudo", "5  Pseudo-labels for every labelled image", False, self._build_pseudo),
            ("export", "6  Export and open masks", False, self._build_export),
            ("slide", "Whole slide", False, self._build_slide),
        ):
            section = _Section(title, expanded)
            build(section.body)
            layout.addWidget(section)
            self.sections[key] = section
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

    @staticmethod
    def _note(text: str = "") -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        return label

    def _build_images(self, box: QWidget) -> None:
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
        self.folder_edit.setPlaceholderText("folder of images")
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
        self.images_status = self._note()
        grid.addWidget(self.images_status, 3, 0, 1, 3)

    def _build_labels(self, box: QWidget) -> None:
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        row.addWidget(QLabel("classes"))
        self.class_preset = self._tip(QComboBox(), "class_preset")
        self.class_preset.addItems([*DATASET_PRESETS, CUSTOM])
        self.class_preset.currentTextChanged.connect(self._on_class_preset)
        row.addWidget(self.class_preset, 1)
        self.edit_classes = self._tip(QToolButton(), "edit_classes")
        self.edit_classes.setText("edit...")
        self.edit_classes.setCheckable(True)
        row.addWidget(self.edit_classes)
        layout.addLayout(row)
        self.class_editor = QWidget()
        editor = QVBoxLayout(self.class_editor)
        editor.setContentsMargins(0, 0, 0, 0)
        self.class_table = self._tip(QTableWidget(0, 2), "class_table")
        self.class_table.setHorizontalHeaderLabels(["class", "colour"])
        self.class_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.class_table.verticalHeader().setVisible(True)
        self.class_table.itemChanged.connect(self._on_class_name_edited)
        self.class_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        editor.addWidget(self.class_table)
        row = QHBoxLayout()
        row.addWidget(self._button("+ class", "add_class", self._add_class))
        row.addWidget(self._button("- class", "remove_class", self._remove_class))
        row.addStretch(1)
        editor.addLayout(row)
        self.class_editor.setVisible(False)
        self.edit_classes.toggled.connect(self.class_editor.setVisible)
        layout.addWidget(self.class_editor)
        layout.addWidget(QLabel("present in this image:"))
        self.checkbox_grid = QGridLayout()
        layout.addLayout(self.checkbox_grid)
        self.label_checks: list[QCheckBox] = []
        self.labels_status = self._note()
        layout.addWidget(self.labels_status)

    def _build_model(self, box: QWidget) -> None:
        layout = QVBoxLayout(box)
        form = QFormLayout()
        self.model_edit = self._tip(QLineEdit(), "model")
        self.model_edit.setPlaceholderText("run folder or .safetensors")
        self.model_edit.textChanged.connect(self._update_cli)
        row = QHBoxLayout()
        row.addWidget(self.model_edit, 1)
        row.addWidget(self._button("Run...", "browse_run", self._browse_run))
        row.addWidget(self._button("File...", "browse_weights", self._browse_weights))
        form.addRow("model", row)
        self.device_combo = self._tip(QComboBox(), "device")
        self.device_combo.addItems(list(DEVICES))
        self.device_combo.currentTextChanged.connect(self._update_cli)
        form.addRow("device", self.device_combo)
        layout.addLayout(form)
        self.train_form = Container(
            widgets=[
                ComboBox(name="preset", choices=TRAIN_PRESETS, value="cpu", tooltip=TOOLTIPS["train_preset"]),
                SpinBox(name="iterations", min=1, max=1_000_000, tooltip=TOOLTIPS["iterations"]),
                ComboBox(name="start_from", label="start from", choices=START_FROM, tooltip=TOOLTIPS["start_from"]),
                FileEdit(name="run_folder", label="new run", mode="d", nullable=True, tooltip=TOOLTIPS["run_dir"]),
            ],
        )
        self.train_form.margins = (0, 0, 0, 0)
        self.train_form.run_folder.line_edit.native.setPlaceholderText("sia_runs/run-<time> beside the images")
        self.train_form.preset.changed.connect(self._on_train_preset)
        self.train_form.changed.connect(self._update_cli)
        layout.addWidget(self.train_form.native)
        self.train_job = JobSlot(
            "Train on the labelled images",
            self.start_training,
            TOOLTIPS["train"],
            TOOLTIPS["stop_train"],
            unit="step",
            preparing="reading images, building the model",
        )
        layout.addWidget(self.train_job)
        cli = _Section("command line (the same training)", expanded=False)
        cli.header.setStyleSheet("QToolButton { border: none; padding: 2px 0px; }")
        row = QHBoxLayout(cli.body)
        row.setContentsMargins(0, 0, 0, 0)
        self.cli_edit = self._tip(QLineEdit(), "cli")
        self.cli_edit.setReadOnly(True)
        row.addWidget(self.cli_edit, 1)
        row.addWidget(self._button("Copy", "copy_cli", self._copy_cli))
        layout.addWidget(cli)

    def _build_inspect(self, box: QWidget) -> None:
        layout = QVBoxLayout(box)
        form = QFormLayout()
        self.inspect_class = self._tip(QComboBox(), "inspect_class")
        form.addRow("maps for", self.inspect_class)
        self.other_layers = self._tip(QComboBox(), "other_layers")
        self.other_layers.addItems(list(OTHER_LAYERS))
        form.addRow("on ◀ ▶, layers of the image left", self.other_layers)
        layout.addLayout(form)
        self.inspect_job = JobSlot(
            "Inspect current image", self.inspect, TOOLTIPS["inspect"], unit="tile", preparing="loading the model"
        )
        layout.addWidget(self.inspect_job)
        form = QFormLayout()
        self.paint_class = self._tip(QComboBox(), "paint_class")
        self.paint_class.activated.connect(self._on_paint_class)  # a user's choice, even of the shown class
        form.addRow("paint", self.paint_class)
        layout.addLayout(form)
        layout.addWidget(self._note(f"Erase = {UNLABELLED}. Hover a pixel: napari shows its class."))
        self.correction_button = self._button("Save correction", "save_correction", self.save_correction)
        layout.addWidget(self.correction_button)
        self.mask_status = self._note()
        layout.addWidget(self.mask_status)
        layout.addWidget(self._note("<i>Then train again, starting from the model above.</i>"))

    def _build_pseudo(self, box: QWidget) -> None:
        layout = QVBoxLayout(box)
        self.pseudo_form = Container(
            widgets=[ComboBox(name="write_to", label="write to", choices=(PSEUDO_BESIDE, PSEUDO_FOLDER))]
        )
        self.pseudo_form.margins = (0, 0, 0, 0)
        self.pseudo_form.write_to.tooltip = TOOLTIPS["pseudo_out"]
        layout.addWidget(self.pseudo_form.native)
        self.pseudo_job = JobSlot(
            "Pseudo-label all labelled images",
            self.start_pseudo,
            TOOLTIPS["pseudo"],
            TOOLTIPS["stop_pseudo"],
            unit="image",
            preparing="loading the model",
        )
        layout.addWidget(self.pseudo_job)
        layout.addWidget(self._button("Show this image's pseudo-mask", "show_pseudo", self.show_pseudo_mask))

    def _build_export(self, box: QWidget) -> None:
        form = QFormLayout(box)
        self.export_format = self._tip(QComboBox(), "export_format")
        self.export_format.addItems(list(EXPORT_FORMATS))
        form.addRow("format", self.export_format)
        row = QHBoxLayout()
        row.addWidget(self._button("Export mask...", "export", self.export_mask))
        row.addWidget(self._button("Open mask...", "open_mask", self.open_mask))
        form.addRow(row)
        self.export_status = self._note()
        form.addRow(self.export_status)

    def _build_slide(self, box: QWidget) -> None:
        layout = QVBoxLayout(box)
        self.slide_form = Container(
            widgets=[
                FileEdit(
                    name="slide",
                    mode="r",
                    filter="Slides (*.tif *.tiff *.svs *.btf)",
                    nullable=True,
                    tooltip=TOOLTIPS["slide"],
                ),
                FileEdit(name="result", mode="w", nullable=True, tooltip=TOOLTIPS["slide_out"]),
            ]
        )
        self.slide_form.margins = (0, 0, 0, 0)
        self.slide_form.result.line_edit.native.setPlaceholderText("<slide>.ome.zarr beside the slide")
        layout.addWidget(self.slide_form.native)
        self.slide_job = JobSlot(
            "Predict slide",
            self.predict_slide,
            TOOLTIPS["predict_slide"],
            TOOLTIPS["stop_slide"],
            unit="tile",
            preparing="loading the model, finding tissue",
        )
        layout.addWidget(self.slide_job)

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
            shape = layer_shape(layer)
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
        previous = self._current_id
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
        ids = [e.id for e in self.entries]
        self._fill_image_combo(ids.index(previous) if previous in ids else 0)

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
        for i, e in enumerate(self.entries):
            if e.id == entry.id:
                self.image_combo.setItemText(i, self._entry_text(entry))
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
        moved = (entry.id if entry is not None else None) != self._current_id
        self._current_id = entry.id if entry is not None else None
        resized = False
        if entry is not None and entry.layer is None and entry.path is not None:
            resized = self._show_folder_image(entry)
        if entry is not None:
            self._follow(entry, refit=moved or resized)
        self._sync_paint_target()
        self._sync_checkboxes()
        self._update_images_status()
        self._update_cli()

    def _show_folder_image(self, entry: ImageEntry) -> bool:
        """Show a folder image in the one folder-image layer; True when the view needs refitting."""
        try:
            rgb = read_rgb(entry.path)
        except SIAError as err:
            show_error(f"SIA: {err}")
            return False
        layer = self._folder_layer
        if layer is None or layer not in self.viewer.layers:
            layer = self.viewer.add_image(rgb, name=entry.name, rgb=True, metadata={SIA_META: {"kind": "folder-image"}})
            self._folder_layer = layer
            resized = True
        else:
            resized = layer.data.shape != rgb.shape
            layer.data = rgb
            layer.name = entry.name
        layer.metadata[SIA_META]["image"] = entry.id
        return resized

    def _image_layer(self, entry: ImageEntry) -> Any:
        layer = entry.layer if entry.layer is not None else self._folder_layer
        return layer if layer is not None and layer in self.viewer.layers else None

    def _follow(self, entry: ImageEntry, refit: bool) -> None:
        """Make the view describe ``entry``: other images' layers as chosen, its mask shown and selected,
        the view fitted to it, the Inspect status its own."""
        self._put_away_other_layers(entry)
        image_layer = self._image_layer(entry)
        own = masks_of(self.viewer, entry.id)
        if own:
            own[0].visible = True
        target = own[0] if own else image_layer
        if target is not None and self.viewer.layers.selection.active != target:
            self._syncing = True
            try:
                self.viewer.layers.selection.active = target
            finally:
                self._syncing = False
        if refit and image_layer is not None:
            self.viewer.fit_to_view(layers=[image_layer])
        self.inspect_job.set_status(self._inspect_notes.get(entry.id, f"{entry.name}: not inspected yet"))

    def _put_away_other_layers(self, entry: ImageEntry) -> None:
        """Hide or remove (as chosen) the layers SIA made for other images."""
        policy = self.other_layers.currentText()
        if policy == "keep":
            return
        for layer in list(self.viewer.layers):
            owner = image_of(layer)
            if owner is None or owner == entry.id or layer.metadata[SIA_META].get("kind") == "folder-image":
                continue
            meta = layer.metadata[SIA_META]
            if policy == "remove" and not meta.get("keep"):
                if not _is_edited(layer) or self._ask_yes_no(
                    "Remove painted mask?",
                    f"'{layer.name}' has paint that is not saved as a correction. Remove it? (No: keep it, hidden)",
                ):
                    self.viewer.layers.remove(layer)
                    continue
                meta["keep"] = True
            layer.visible = False

    def _on_layers_changed(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if self.mode == "layers" and (layer is None or SIA_META not in getattr(layer, "metadata", {})):
            self._refresh_entries()
        else:
            self._sync_paint_target()

    def _on_active_layer(self, event: Any = None) -> None:
        """Selection follows the image: selecting an image's layer (or a layer tied to it) makes it current."""
        if self._syncing:
            return
        active = self.viewer.layers.selection.active
        if active is not None:
            owner = image_of(active)
            for i, entry in enumerate(self.entries):
                mine = (entry.layer is not None and entry.layer == active) or owner == entry.id
                if mine and self.image_combo.currentIndex() != i:
                    self.image_combo.setCurrentIndex(i)
                    return
        self._sync_paint_target()

    def _entry_image(self, entry: ImageEntry) -> Any:
        """What the predictor gets: the layer's pixels (layer mode) or the file (read in the worker)."""
        if entry.layer is not None:
            return _to_rgb_uint8(entry.layer.data, tuple(entry.layer.contrast_limits))
        return entry.path

    def _entry_shape(self, entry: ImageEntry) -> Optional[tuple[int, int]]:
        layer = self._image_layer(entry)
        return layer_shape(layer)[:2] if layer is not None else None

    def _placement(self, entry: ImageEntry) -> dict[str, Any]:
        layer = self._image_layer(entry)
        if layer is None:
            return {}
        return {"translate": tuple(layer.translate)[-2:], "scale": tuple(layer.scale)[-2:]}

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
        """Use ``classes`` everywhere: table, checkboxes, paint and inspect choosers, labels CSV."""
        self.classes = classes
        self._syncing = True
        try:
            self.class_preset.setCurrentText(classes.preset or CUSTOM)
            self.class_table.setRowCount(len(classes.names))
            # One numbering everywhere: a row is headed by the label value its class paints.
            self.class_table.setVerticalHeaderLabels([str(i) for i in range(len(classes.names))])
            for i, (name, colour) in enumerate(zip(classes.names, classes.palette)):
                self.class_table.setItem(i, 0, QTableWidgetItem(name))
                button = QPushButton()
                shown = display_colour(colour)
                button.setStyleSheet(f"background-color: rgb({shown[0]}, {shown[1]}, {shown[2]});")
                button.setToolTip(f"files: rgb{tuple(colour)}; on screen: rgb{tuple(shown)}")
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
            self.paint_class.clear()
            for i, name in enumerate(classes.names):
                self.paint_class.addItem(_swatch(display_colour(classes.palette[i])), f"{name}  (label {i})")
            self.paint_class.addItem(f"{ERASE}: {UNLABELLED}")
        finally:
            self._syncing = False
        self._rebuild_checkboxes()
        if reload_labels:
            self.book = LabelBook(classes.names)
            self._fill_image_combo(max(self.image_combo.currentIndex(), 0))
        self._sync_paint_target()
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

    def _record_custom_classes(self, folder: Path) -> None:
        """Custom classes go to dataset.yaml beside the images, for the CLI and for reopening the folder."""
        if self.classes.preset is not None:
            return
        try:
            write_dataset_yaml(dataset_root(folder), self.classes.description())
        except SIAError as err:
            show_warning(f"SIA: {err}")

    # ------------------------------------------------------------------------------------------ labels
    def _rebuild_checkboxes(self) -> None:
        for check in self.label_checks:
            self.checkbox_grid.removeWidget(check)
            check.deleteLater()
        self.label_checks = []
        for i, name in enumerate(self.classes.names):
            check = QCheckBox(name)
            check.setToolTip(TOOLTIPS["labels"])
            colour = display_colour(self.classes.palette[i])
            check.setStyleSheet(f"QCheckBox::indicator:checked {{ background-color: rgb{tuple(colour)}; }}")
            check.toggled.connect(self._on_label_toggled)
            self.checkbox_grid.addWidget(check, i // 3, i % 3)
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
            self._record_custom_classes(entry.csv_folder)
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
        self.train_form.iterations.value = get_preset(name).train.iterations
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
        form = self.train_form
        init = None
        if form.start_from.value != "scratch" and self.model_edit.text().strip():
            init = Path(self.model_edit.text().strip()).expanduser()
        return TrainRequest(
            preset=form.preset.value,
            classes=self.classes,
            iterations=int(form.iterations.value),
            device=self.device,
            out_dir=out_dir or form.run_folder.value or Path("<run folder>"),
            data_root=self._data_root(),
            init_from=init,
            force=force,
        )

    def _update_cli(self, *_: Any) -> None:
        if not hasattr(self, "cli_edit") or self.train_job.busy:
            return
        self.cli_edit.setText(cli_command(self._train_request()))
        self.cli_edit.setCursorPosition(0)

    def _copy_cli(self) -> None:
        QGuiApplication.clipboard().setText(self.cli_edit.text())

    def start_training(self) -> None:
        """Train (or fine-tune) on every labelled image in a background job."""
        if self.train_job.busy:
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
        out_dir = self.train_form.run_folder.value or self._default_run_dir()
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
        self._pending_run = out_dir
        self.train_job.run(
            train_job,
            request,
            items,
            generator=True,
            on_yield=self._on_train_step,
            on_end=self._on_train_end,
            status=f"{len(items)} images ({n_corr} with corrected masks) -> {out_dir}",
        )

    def stop_training(self) -> None:
        """Stop at the next step; the worker closes the training generator, which saves a checkpoint."""
        self.train_job.stop()

    def _on_train_step(self, info: Any) -> None:
        self._train_last = info
        loss = info.logs.get("loss", float("nan"))
        self.train_job.set_status(f"step {info.iteration}: loss {loss:.3f}, {info.images_per_s:.1f} images/s")
        self.train_job.report(info.iteration, info.total)

    def _on_train_end(self, state: JobState) -> None:
        out_dir = self._pending_run
        info = self._train_last
        weights = out_dir / "last.safetensors" if out_dir is not None else None
        if weights is not None and weights.is_file() and info is not None:
            self.last_run = out_dir
            self.cache.clear()
            self.model_edit.setText(str(out_dir))
            verb = {JobState.STOPPED: "stopped", JobState.FAILED: "failed"}.get(state, "finished")
            if verb == "finished" and info.iteration < info.total:
                verb = "ended"
            self.train_job.set_status(f"{verb} at step {info.iteration}/{info.total}; weights: {weights}")
            self.sections["inspect"].set_expanded(True)
        elif state != JobState.FAILED:
            self.train_job.set_status("ended before the first step; nothing saved")
        self._update_cli()

    # ------------------------------------------------------------------------------------------ inspect
    def inspect(self) -> None:
        """Compute the maps and the mask of the current image in a background job."""
        if self.inspect_job.busy:
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
        self.inspect_job.run(
            inspect_image,
            self.cache,
            model,
            self.device,
            image,
            labels,
            progress=self.inspect_job.report,
            status=f"computing {entry.name}...",
            on_return=lambda result: self._on_inspect_done(entry, result, labels is not None),
        )

    def _on_inspect_done(self, entry: ImageEntry, result: InspectResult, labelled: bool) -> None:
        if entry.id not in {e.id for e in self.entries}:
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
        placement = self._placement(entry)
        old_maps = {
            (m["map"], m["class"]): layer
            for layer in layers_of(self.viewer, entry.id)
            if (m := layer.metadata[SIA_META]).get("kind") == "map"
        }
        kept: set[tuple[str, str]] = set()
        for kind, maps in result.maps.items():
            for c in wanted:
                key = (kind, classes.names[c])
                kept.add(key)
                layer = old_maps.get(key)
                if layer is not None:
                    layer.data = maps[c]
                    continue
                layer = self.viewer.add_image(
                    maps[c],
                    name=map_layer_name(kind, classes.names[c], entry.name),
                    metadata={SIA_META: {"kind": "map", "map": kind, "class": classes.names[c], "image": entry.id}},
                    **MAP_LAYER_ATTRS,
                    **placement,
                )
                layer.colorbar.visible = True
        for key, layer in old_maps.items():  # maps of classes or kinds not computed this time
            if key not in kept:
                self.viewer.layers.remove(layer)
        what = "refined mask (labels given)" if labelled else "prediction (no labels given)"
        mask = result.refined if labelled else result.label_map
        self._set_mask_layer(entry, mask, classes, placement, what)
        present = ", ".join(classes.names[i] for i in wanted)
        scores = ", ".join(f"{n} {s:.2f}" for n, s in zip(classes.names, result.scores))
        note = f"{entry.name}: {what} shown; maps of {present} added hidden (eye icon shows them). Classifier: {scores}"
        self._inspect_notes[entry.id] = note
        if self.current is not None and self.current.id == entry.id:
            self._follow(entry, refit=False)
        elif self.current is not None:  # the user moved on while it ran: treat it as an image left
            self._put_away_other_layers(self.current)

    def _set_mask_layer(
        self, entry: ImageEntry, data: np.ndarray, classes: ClassSet, placement: dict, what: str
    ) -> None:
        meta = {**classes.metadata(), "kind": "mask", "image": entry.id, "edited": False, "shows": what}
        existing = [m for m in masks_of(self.viewer, entry.id) if m.metadata[SIA_META].get("kind") == "mask"]
        if existing:
            layer = existing[0]
            if _is_edited(layer) and not self._ask_yes_no(
                "Replace edited mask?", f"'{layer.name}' has been painted on. Replace it with the new prediction?"
            ):
                return
            layer.data = data
            layer.metadata[SIA_META] = meta
        else:
            layer = self.viewer.add_labels(
                data, name=mask_layer_name(entry.name), opacity=0.7, metadata={SIA_META: meta}, **placement
            )
            layer.events.paint.connect(lambda event, lyr=layer: self._mark_edited(lyr))
            present = [int(v) for v in np.unique(data) if v < classes.num_classes]
            layer.selected_label = present[0] if present else 0  # napari would start at label 1
        style_mask(layer, classes)

    @staticmethod
    def _mark_edited(layer: Any) -> None:
        layer.metadata.setdefault(SIA_META, {})["edited"] = True

    # ------------------------------------------------------------------------------------------ paint
    def _paint_target(self) -> Any:
        """The mask painting applies to: the selected Labels layer of the current image, else its top mask."""
        from napari.layers import Labels

        if self.current is None:
            return None
        active = self.viewer.layers.selection.active
        if isinstance(active, Labels) and image_of(active) == self.current.id:
            return active
        own = masks_of(self.viewer, self.current.id)
        return own[0] if own else None

    def _sync_paint_target(self) -> None:
        """Point the paint chooser at the current image's mask and show the label it paints."""
        if not hasattr(self, "paint_class"):
            return
        layer = self._paint_target()
        previous = self._paint_layer
        if previous is not None and previous != layer:
            for event in (previous.events.selected_label, previous.events.mode):
                with contextlib.suppress(TypeError, RuntimeError, ValueError):
                    event.disconnect(self._on_layer_label)
        self._paint_layer = layer
        self.paint_class.setEnabled(layer is not None)
        if layer is None:
            self.paint_class.setToolTip(TOOLTIPS["paint_class"] + " (no mask for this image yet: Inspect it)")
            return
        self.paint_class.setToolTip(TOOLTIPS["paint_class"])
        if previous != layer:
            layer.events.selected_label.connect(self._on_layer_label)
            layer.events.mode.connect(self._on_layer_label)
        self._on_layer_label()

    def _on_layer_label(self, *_: Any) -> None:
        layer = self._paint_layer
        if layer is None:
            return
        erase = self.paint_class.count() - 1
        value = int(layer.selected_label)
        index = erase if str(layer.mode) == ERASE or value == self.classes.ignore_index else value
        self._syncing = True
        try:
            self.paint_class.setCurrentIndex(index if 0 <= index <= erase else -1)
        finally:
            self._syncing = False

    def _on_paint_class(self, index: int) -> None:
        if self._syncing or index < 0:
            return
        self.set_paint_class(self.classes.names[index] if index < self.classes.num_classes else ERASE)

    def set_paint_class(self, name: str) -> None:
        """Paint the current image's mask with class ``name`` (``"erase"``: mark pixels unlabelled)."""
        layer = self._paint_target()
        if layer is None:
            show_error("SIA: no mask to paint for this image (fix: Inspect it, or open a mask for it)")
            return
        if name == ERASE:
            layer.mode = ERASE
        else:
            if name not in self.classes.names:
                show_error(f"SIA: no class '{name}' (classes: {', '.join(self.classes.names)})")
                return
            layer.selected_label = self.classes.names.index(name)
            layer.mode = "paint"
        if self.viewer.layers.selection.active != layer:
            self._syncing = True
            try:
                self.viewer.layers.selection.active = layer
            finally:
                self._syncing = False
        self._on_layer_label()

    # ------------------------------------------------------------------------------------------ masks
    def mask_for_current(self, action: str) -> Any:
        """The mask of the current image that ``action`` acts on, or None after saying why (never another
        image's mask: a Labels layer tied to another image is refused, an untied one is used only if the user
        says it belongs to this image and it has this image's size)."""
        from napari.layers import Labels

        entry = self.current
        if entry is None:
            active = self.viewer.layers.selection.active
            if isinstance(active, Labels):
                return active
            show_error(f"SIA: no mask to {action} (fix: open an image and Inspect it, or select a Labels layer)")
            return None
        active = self.viewer.layers.selection.active
        own = masks_of(self.viewer, entry.id)
        if isinstance(active, Labels) and image_of(active) != entry.id:
            owner = image_of(active)
            if owner is not None:
                show_error(
                    f"SIA: '{active.name}' is the mask of another image ({Path(owner).name}), not of "
                    f"{entry.name} (fix: go back to that image, or select {entry.name}'s own mask)"
                )
                return None
            shape = self._entry_shape(entry)
            if shape is not None and layer_shape(active) != shape:
                show_error(
                    f"SIA: '{active.name}' is {layer_shape(active)}, image {entry.name} is {shape} "
                    f"(fix: select {entry.name}'s own mask)"
                )
                return None
            if not self._ask_yes_no(
                "Use this mask?", f"'{active.name}' is tied to no image. Use it as the mask of {entry.name}?"
            ):
                return None
            link(active, entry.id)
            return active
        if isinstance(active, Labels):
            return active
        if len(own) == 1:
            return own[0]
        if not own:
            show_error(f"SIA: {entry.name} has no mask to {action} (fix: Inspect it, or Open mask... for it)")
        else:
            names = ", ".join(f"'{m.name}'" for m in own)
            show_error(f"SIA: {entry.name} has several masks ({names}) (fix: select the one to {action})")
        return None

    def export_mask(self) -> Optional[Path]:
        """Save the current image's mask in the chosen format (suggested in sia_exports/; asks before replacing)."""
        layer = self.mask_for_current("export")
        if layer is None:
            return None
        ext = EXPORT_FORMATS[self.export_format.currentText()]
        entry = self.current
        if entry is not None and entry.path is not None:
            suggested = export_path(entry.path, ext)
        else:
            suggested = Path.home() / f"{entry.name if entry is not None else layer.name}_mask{ext}"
        chosen = self._ask_save_path("Export mask", str(suggested), f"*{ext}")
        if not chosen:
            return None
        path = Path(chosen)
        if not path.name.lower().endswith(ext):
            path = path.with_name(path.name + ext)
        if self._would_be_listed(path):
            if not self._ask_yes_no(
                "Save among the images?",
                f"{path.name} would then be listed, and labelled, as an image. Save it in "
                f"{export_path(path, ext).parent.name}/ instead?",
            ):
                return None
            path = path.parent / export_path(path, ext).parent.name / path.name
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
        self.export_status.setText(f"exported {layer.name} -> {written}")
        return written

    def _would_be_listed(self, path: Path) -> bool:
        """Would ``path`` show up in the image list (an image extension inside the listed folder)?"""
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            return False
        if self.mode == "folder" and self.folder is not None:
            folder = self.folder
        elif self.current is not None and self.current.path is not None:
            folder = self.current.path.parent
        else:
            return False
        try:
            rel = path.resolve().relative_to(folder)
        except ValueError:
            return False
        return not any(part in OUTPUT_DIRS or part.startswith(".") for part in rel.parts[:-1])

    def open_mask(self) -> None:
        """Open a mask file as a Labels layer of the current image (GeoJSON sized like this image)."""
        start = ""
        if self.current is not None and self.current.path is not None:
            start = str(self.current.path.parent)
        chosen = self._ask_open_file(
            "Open mask", start, "Masks (*.tif *.tiff *.png *.geojson *.json *.zarr);;All files (*)"
        )
        if chosen:
            self.add_mask_file(Path(chosen))

    def add_mask_file(self, path: Path) -> Any:
        """Add a mask file as a Labels layer over the current image, tied to it when it has its size."""
        shape = self._entry_shape(self.current) if self.current is not None else None
        try:
            data, attrs, _ = read_mask_layer(path, shape)
        except SIAError as err:
            show_error(f"SIA: {err}")
            return None
        if self.current is not None:
            attrs.update(self._placement(self.current))
        layer = self.viewer.add_labels(data, **attrs)
        if self.current is not None:
            if shape is not None and layer_shape(layer)[:2] == shape:
                link(layer, self.current.id, kind="opened")
                layer.events.paint.connect(lambda event, lyr=layer: self._mark_edited(lyr))
            else:
                show_warning(
                    f"SIA: {path.name} is {layer_shape(layer)}, image {self.current.name} is {shape}: "
                    "opened, but not tied to this image"
                )
        self.viewer.layers.selection.active = layer
        return layer

    def show_pseudo_mask(self) -> Any:
        """Open the current image's pseudo-mask (written by Pseudo-labels) as an editable mask of this image."""
        entry = self.current
        if entry is None or entry.path is None:
            show_error("SIA: the current image has no file, so it has no pseudo-mask")
            return None
        candidates = [pseudo_label_path(entry.path, self._pseudo_dir), pseudo_label_path(entry.path)]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            show_error(f"SIA: no pseudo-mask for {entry.name} yet (fix: Pseudo-label all labelled images)")
            return None
        classes = self.classes
        try:
            data = read_mask(found, classes.num_classes, classes.ignore_index, classes.full_palette())
        except SIAError as err:
            show_error(f"SIA: {err}")
            return None
        name = f"pseudo-mask ({entry.name})"
        old = [m for m in masks_of(self.viewer, entry.id) if m.metadata[SIA_META].get("kind") == "pseudo"]
        for layer in old:
            self.viewer.layers.remove(layer)
        meta = {**classes.metadata(), "kind": "pseudo", "image": entry.id, "edited": False, "source": str(found)}
        placement = self._placement(entry)
        layer = self.viewer.add_labels(data, name=name, opacity=0.7, metadata={SIA_META: meta}, **placement)
        style_mask(layer, classes)
        layer.events.paint.connect(lambda event, lyr=layer: self._mark_edited(lyr))
        self.viewer.layers.selection.active = layer
        return layer

    def save_correction(self) -> Optional[Path]:
        """Save the current image's mask as its correction (pixel supervision for the next training)."""
        entry = self.current
        if entry is None or entry.path is None:
            show_error("SIA: the current image has no file, so its correction cannot be stored beside it")
            return None
        layer = self.mask_for_current("save as the correction")
        if layer is None:
            return None
        meta = layer.metadata.get(SIA_META, {})
        if meta.get("classes") and list(meta["classes"]) != self.classes.names:
            show_error(
                f"SIA: mask '{layer.name}' has classes {meta['classes']}, the widget has "
                f"{self.classes.names} (fix: choose the same classes)"
            )
            return None
        target = correction_path(entry.path)
        overwrite = False
        if target.exists():
            if not self._ask_yes_no("Replace correction?", f"{target} exists. Replace it?"):
                return None
            overwrite = True
        data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
        try:
            write_correction(
                entry.path,
                data,
                self.classes.num_classes,
                self.classes.ignore_index,
                self.classes.full_palette(),
                overwrite=overwrite,
            )
        except SIAError as err:
            show_error(f"SIA: mask '{layer.name}': {err}")
            return None
        layer.metadata.setdefault(SIA_META, {})["edited"] = False
        self.mask_status.setText(f"saved {layer.name} as the correction of {entry.name}: {target}")
        self._update_entry_text(entry)
        return target

    # ------------------------------------------------------------------------------------------ pseudo-labels
    def start_pseudo(self) -> None:
        """Write a pseudo-mask for every labelled image, in a background job."""
        if self.pseudo_job.busy:
            return
        model = self._model_path()
        if model is None:
            return
        items = self._labelled()
        if not items:
            show_error("SIA: no labelled images with a file (fix: tick the classes present in some images)")
            return
        out_dir: Optional[Path] = None
        if self.pseudo_form.write_to.value == PSEUDO_FOLDER:
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
                    self.pseudo_job.set_status("nothing to do: every pseudo-mask exists")
                    return
        self._pseudo_done, self._pseudo_total, self._pseudo_dir = 0, len(items), out_dir
        self.pseudo_job.run(
            pseudo_label_images,
            self.cache,
            model,
            self.device,
            items,
            out_dir,
            overwrite,
            self._pseudo_image_done,
            self.pseudo_job.should_stop,
            status=f"writing {len(items)} pseudo-masks...",
            on_end=self._on_pseudo_end,
        )

    def stop_pseudo(self) -> None:
        """Stop after the current image."""
        self.pseudo_job.stop()

    def _pseudo_image_done(self, done: int, total: int) -> None:
        # Runs in the worker thread: keep the count here (it is read when the job ends), report to the slot.
        self._pseudo_done = done
        self.pseudo_job.report(done, total)

    def _on_pseudo_end(self, state: JobState) -> None:
        if state != JobState.FAILED:
            verb = "stopped" if state == JobState.STOPPED else "done"
            where = self._pseudo_dir or "sia_pseudo/ beside the images"
            self.pseudo_job.set_status(
                f"{verb}: {self._pseudo_done}/{self._pseudo_total} pseudo-masks written to {where}"
            )

    # ------------------------------------------------------------------------------------------ whole slides
    def predict_slide(self) -> None:
        """Segment a whole slide tile by tile into an OME-Zarr, then show it over the slide (multiscale)."""
        if self.slide_job.busy:
            return
        slide = self.slide_form.slide.value
        if slide is None or not Path(slide).is_file():
            show_error(f"SIA: slide not found: {slide or '(none chosen)'} (fix: choose a TIFF/OME-TIFF/SVS file)")
            return
        model = self._model_path()
        if model is None:
            return
        out = self.slide_form.result.value or slide_output_path(slide)
        overwrite = False
        if out.exists() and slide_result_complete(out):
            if not self._ask_yes_no("Replace result?", f"{out} holds a finished result. Replace it?"):
                return
            overwrite = True
        self.slide_job.run(
            predict_slide_job,
            self.cache,
            model,
            self.device,
            slide,
            out,
            overwrite,
            self.slide_job.report,
            self.slide_job.should_stop,
            status=f"{slide.name} -> {out}",
            on_return=self._on_slide_done,
            on_end=self._on_slide_end,
        )

    def stop_slide(self) -> None:
        """Stop after the current batch; what is written stays and a new run resumes it."""
        self.slide_job.stop()

    def _on_slide_done(self, job: SlideJobResult) -> None:
        from ._classes import label_colormap

        result = job.result
        for data, attrs, kind in job.layers:
            attrs = dict(attrs)
            if attrs.get("multiscale") and isinstance(data, list) and len(data) == 1:
                # napari cannot take a one-level "pyramid" (a small slide): give it the array itself
                data, attrs["multiscale"] = data[0], False
            if kind == "labels":
                attrs["name"] = f"slide labels ({result.slide.name})"
                if job.classes is not None:
                    attrs["colormap"] = label_colormap(job.classes, job.transparent)
                    attrs["metadata"] = {SIA_META: {**job.classes.metadata(), "kind": "slide"}}
            if attrs["name"] in self.viewer.layers:
                self.viewer.layers.remove(attrs["name"])
            getattr(self.viewer, f"add_{kind}")(data, **attrs)
        state = "complete" if result.complete else "stopped (run again to resume)"
        self.slide_job.set_status(
            f"{result.slide.name}: {result.tiles_done} tiles in {result.seconds:.0f} s, {state}; {result.out}"
        )

    def _on_slide_end(self, state: JobState) -> None:
        if state == JobState.STOPPED:
            self.slide_job.set_status("stopped: what is written stays; Predict slide again resumes it")

    # ------------------------------------------------------------------------------------------ teardown
    def close_workers(self, timeout_ms: int = 60_000) -> None:
        """Ask every running job to stop and wait for it (e.g. before the viewer closes)."""
        for slot in (self.train_job, self.inspect_job, self.pseudo_job, self.slide_job):
            slot.close_worker()
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(timeout_ms)
