"""Classes and image-level labels in the widget: presets, custom classes, the checkboxes and the labels CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
from napari.utils.notifications import show_error, show_warning
from qtpy.QtWidgets import QCheckBox, QPushButton, QTableWidgetItem

from sia_core.data.layout import write_dataset_yaml
from sia_core.errors import SIAError

from ._classes import UNLABELLED, ClassSet, dataset_root, display_colour
from ._images import ImageEntry, LabelBook
from ._layout import ERASE, swatch
from ._tooltips import CUSTOM, PRESENT_CLASSES, TOOLTIPS


class _LabelActions:
    """Classes and image labels (mixed into ``SIAWidget``)."""

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
                self.paint_class.addItem(swatch(display_colour(classes.palette[i])), f"{name}  (label {i})")
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
            self.labels_status.setText("saved to sia_labels.csv beside the images")
        self.labels_status.setToolTip(str(entry.csv_folder / "sia_labels.csv") if entry.csv_folder else "")

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
