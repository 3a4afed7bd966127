"""How the SIA widget is laid out: numbered sections in the order of the work, folds for what is not in use.

At 1366x768 the sections in use (images, labels, model, inspect and correct) fit without scrolling; options and
the command line fold into one-line summaries.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QTableWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from sia_core.data.layout import DATASET_PRESETS

from ._backbone_chooser import BackboneChooser
from ._classes import SIA_META, UNLABELLED
from ._job_slot import JobSlot
from ._tooltips import CUSTOM, EXPORT_FORMATS, PRESENT_CLASSES, PSEUDO_BESIDE, PSEUDO_FOLDER, TOOLTIPS

TRAIN_PRESETS = ("cpu", "paper", "test")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_CLASSES = "wsss4luad"
START_FROM = ("scratch", "model above")
OTHER_LAYERS = ("remove", "hide", "keep")
"""What happens to the layers of the image you leave: removed (a painted, unsaved mask is asked about), hidden,
or kept as they are."""
ERASE = "erase"
"""The paint chooser's last entry: napari's eraser, which marks pixels unlabelled."""


def swatch(rgb: list[int]) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(*rgb[:3]))
    return QIcon(pixmap)


def is_edited(layer: Any) -> bool:
    return bool(layer.metadata.get(SIA_META, {}).get("edited"))


class Section(QWidget):
    """A titled part of the widget whose body folds away, so the work in progress fits a 768 px screen.

    Args:
        title: the header text.
        expanded: open at first.
        minor: a fold inside a section (plain header text, no bold).
    """

    def __init__(self, title: str, expanded: bool = True, minor: bool = False) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.header = QToolButton()
        self.header.setText(title)
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        weight = "normal" if minor else "bold"
        self.header.setStyleSheet(f"QToolButton {{ border: none; font-weight: {weight}; padding: 1px 0px; }}")
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


def tight(layout: Any) -> Any:
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(3)
    return layout


class _Layout:
    """Builds the widget's sections (mixed into ``SIAWidget``)."""

    # ------------------------------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        self.sections: dict[str, Section] = {}
        for key, title, expanded, build in (
            ("images", "1  Images", True, self._build_images),
            ("labels", "2  Classes and image labels", True, self._build_labels),
            ("model", "3  Model: train one, or choose one", True, self._build_model),
            ("inspect", "4  Inspect and correct", True, self._build_inspect),
            ("pseudo", "5  Pseudo-labels for every labelled image", False, self._build_pseudo),
            ("export", "6  Export and open masks", False, self._build_export),
            ("slide", "Whole slide", False, self._build_slide),
        ):
            section = Section(title, expanded)
            build(section.body)
            layout.addWidget(section)
            self.sections[key] = section
        layout.addStretch(1)
        self.setMinimumWidth(300)

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

    @staticmethod
    def _short_file_button(edit: FileEdit) -> FileEdit:
        edit.choose_btn.text = "..."
        edit.choose_btn.native.setMaximumWidth(32)
        return edit

    def _build_images(self, box: QWidget) -> None:
        layout = tight(QVBoxLayout(box))
        self.source_layers = self._tip(QRadioButton("open layers"), "source_layers")
        self.source_folder = self._tip(QRadioButton("folder"), "source_folder")
        self.source_layers.setChecked(True)
        group = QButtonGroup(box)
        group.addButton(self.source_layers)
        group.addButton(self.source_folder)
        self.source_layers.toggled.connect(self._on_source_changed)
        row = QHBoxLayout()
        row.addWidget(self.source_layers)
        row.addWidget(self.source_folder)
        row.addStretch(1)
        row.addWidget(self._button("Choose folder...", "browse_folder", self._browse_folder))
        layout.addLayout(row)
        self.folder_edit = self._tip(QLineEdit(), "folder")
        self.folder_edit.setPlaceholderText("folder of images (type a path + Enter, or Choose folder...)")
        self.folder_edit.returnPressed.connect(lambda: self.open_folder(self.folder_edit.text()))
        self.folder_edit.setVisible(False)
        layout.addWidget(self.folder_edit)
        self.image_combo = self._tip(QComboBox(), "image")
        self.image_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.image_combo.setMinimumContentsLength(12)
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
        layout.addLayout(row)
        self.images_status = self._note()
        layout.addWidget(self.images_status)

    def _build_labels(self, box: QWidget) -> None:
        layout = tight(QVBoxLayout(box))
        row = QHBoxLayout()
        row.addWidget(QLabel("classes"))
        self.class_preset = self._tip(QComboBox(), "class_preset")
        self.class_preset.addItems([*DATASET_PRESETS, CUSTOM])
        self.class_preset.currentTextChanged.connect(self._on_class_preset)
        row.addWidget(self.class_preset, 1)
        self.edit_classes = self._tip(QToolButton(), "edit_classes")
        self.edit_classes.setText("edit")
        self.edit_classes.setCheckable(True)
        row.addWidget(self.edit_classes)
        layout.addLayout(row)
        self.class_editor = QWidget()
        editor = tight(QVBoxLayout(self.class_editor))
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
        self.checkbox_grid = QGridLayout()
        self.checkbox_grid.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.checkbox_grid)
        self.label_checks: list[QCheckBox] = []
        self.labels_status = self._note()
        layout.addWidget(self.labels_status)

    def _build_model(self, box: QWidget) -> None:
        layout = tight(QVBoxLayout(box))
        row = QHBoxLayout()
        self.model_edit = self._tip(QLineEdit(), "model")
        self.model_edit.setPlaceholderText("run folder or .safetensors")
        self.model_edit.textChanged.connect(self._update_cli)
        row.addWidget(self.model_edit, 1)
        row.addWidget(self._button("Run...", "browse_run", self._browse_run))
        row.addWidget(self._button("File...", "browse_weights", self._browse_weights))
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("device"))
        self.device_combo = self._tip(QComboBox(), "device")
        self.device_combo.addItems(list(DEVICES))
        self.device_combo.currentTextChanged.connect(self._update_cli)
        row.addWidget(self.device_combo, 1)
        layout.addLayout(row)
        self.train_options = Section("", expanded=False, minor=True)
        self.train_form = Container(
            widgets=[
                ComboBox(name="preset", choices=TRAIN_PRESETS, value="cpu", tooltip=TOOLTIPS["train_preset"]),
                SpinBox(name="iterations", min=1, max=1_000_000, tooltip=TOOLTIPS["iterations"]),
                ComboBox(name="start_from", label="start from", choices=START_FROM, tooltip=TOOLTIPS["start_from"]),
                self._short_file_button(
                    FileEdit(name="run_folder", label="new run", mode="d", nullable=True, tooltip=TOOLTIPS["run_dir"])
                ),
            ],
        )
        self.train_form.margins = (0, 0, 0, 0)
        self.train_form.run_folder.line_edit.native.setPlaceholderText("sia_runs/run-<time> beside the images")
        self.train_form.preset.changed.connect(self._on_train_preset)
        self.train_form.changed.connect(self._update_cli)
        options = tight(QVBoxLayout(self.train_options.body))
        options.addWidget(self.train_form.native)
        self.backbone = BackboneChooser()
        self.backbone.changed.connect(self._update_cli)
        options.addWidget(self.backbone)
        layout.addWidget(self.train_options)
        self.train_job = JobSlot(
            "Train on the labelled images",
            self.start_training,
            TOOLTIPS["train"],
            TOOLTIPS["stop_train"],
            unit="step",
            preparing="reading images, building the model",
        )
        layout.addWidget(self.train_job)
        cli = Section("command line (the same training)", expanded=False, minor=True)
        row = tight(QHBoxLayout(cli.body))
        self.cli_edit = self._tip(QLineEdit(), "cli")
        self.cli_edit.setReadOnly(True)
        row.addWidget(self.cli_edit, 1)
        row.addWidget(self._button("Copy", "copy_cli", self._copy_cli))
        layout.addWidget(cli)

    def _build_inspect(self, box: QWidget) -> None:
        layout = tight(QVBoxLayout(box))
        self.view_options = Section("", expanded=False, minor=True)
        form = QFormLayout(self.view_options.body)
        form.setContentsMargins(0, 0, 0, 0)
        self.inspect_class = self._tip(QComboBox(), "inspect_class")
        self.inspect_class.currentTextChanged.connect(self._update_view_summary)
        form.addRow("maps for", self.inspect_class)
        self.other_layers = self._tip(QComboBox(), "other_layers")
        self.other_layers.addItems(list(OTHER_LAYERS))
        self.other_layers.currentTextChanged.connect(self._update_view_summary)
        form.addRow("image left", self.other_layers)
        layout.addWidget(self.view_options)
        self.inspect_job = JobSlot(
            "Inspect current image", self.inspect, TOOLTIPS["inspect"], unit="tile", preparing="loading the model"
        )
        layout.addWidget(self.inspect_job)
        row = QHBoxLayout()
        row.addWidget(QLabel("paint"))
        self.paint_class = self._tip(QComboBox(), "paint_class")
        self.paint_class.activated.connect(self._on_paint_class)  # a user's choice, even of the shown class
        row.addWidget(self.paint_class, 1)
        layout.addLayout(row)
        layout.addWidget(self._note(f"erase = {UNLABELLED}; hover a pixel to see its class"))
        self.correction_button = self._button("Save correction", "save_correction", self.save_correction)
        layout.addWidget(self.correction_button)
        self.mask_status = self._note()
        layout.addWidget(self.mask_status)
        self._update_view_summary()

    def _build_pseudo(self, box: QWidget) -> None:
        layout = tight(QVBoxLayout(box))
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
        layout = tight(QVBoxLayout(box))
        row = QHBoxLayout()
        row.addWidget(QLabel("format"))
        self.export_format = self._tip(QComboBox(), "export_format")
        self.export_format.addItems(list(EXPORT_FORMATS))
        row.addWidget(self.export_format, 1)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self._button("Export mask...", "export", self.export_mask))
        row.addWidget(self._button("Open mask...", "open_mask", self.open_mask))
        layout.addLayout(row)
        self.export_status = self._note()
        layout.addWidget(self.export_status)

    def _build_slide(self, box: QWidget) -> None:
        layout = tight(QVBoxLayout(box))
        self.slide_form = Container(
            widgets=[
                self._short_file_button(
                    FileEdit(
                        name="slide",
                        mode="r",
                        filter="Slides (*.tif *.tiff *.svs *.btf)",
                        nullable=True,
                        tooltip=TOOLTIPS["slide"],
                    )
                ),
                self._short_file_button(
                    FileEdit(name="result", mode="w", nullable=True, tooltip=TOOLTIPS["slide_out"])
                ),
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

    def _update_view_summary(self, *_: Any) -> None:
        if hasattr(self, "other_layers"):
            self.view_options.header.setText(
                f"maps for {self.inspect_class.currentText() or PRESENT_CLASSES}; "
                f"layers of an image left: {self.other_layers.currentText()}"
            )

    def _update_train_summary(self) -> None:
        form = self.train_form
        self.train_options.header.setText(
            f"options: {form.preset.value} preset, {form.iterations.value} steps, from {form.start_from.value}"
        )
