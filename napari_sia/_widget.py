"""The SIA dock widget: image-level labels in, editable tissue masks out, without writing code.

Sections follow the work, top to bottom: 1 Images, 2 Classes and image labels, 3 Model (train one or choose
one), 4 Inspect and correct (paint by class name, Save correction, then train again), 5 Pseudo-labels,
6 Export and open masks, Whole slide; the last three start folded.

The widget is one class made of parts, one file each: its layout (``_layout``), classes and image labels
(``_label_actions``), painting and mask files (``_mask_actions``) and the four background jobs
(``_job_actions``, each in a ``_job_slot.JobSlot`` calling ``sia_core`` through ``_jobs``). This file holds
what ties them together: the images and the current one, which the view, the selection and every layer SIA
adds follow (``_result_layers``), so a mask action only ever acts on a mask of the current image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QColorDialog, QFileDialog, QMessageBox, QWidget

from sia_core.data.images import IMAGE_EXTENSIONS, list_images, read_rgb, to_rgb_uint8
from sia_core.data.sidecars import correction_path
from sia_core.errors import SIAError

from ._classes import SIA_META, ClassSet, class_set_for_folder, preset_matching
from ._images import ImageEntry, LabelBook, csv_header
from ._job_actions import _JobActions
from ._jobs import PredictorCache
from ._label_actions import _LabelActions
from ._layout import DEFAULT_CLASSES, _Layout, is_edited
from ._mask_actions import _MaskActions
from ._result_layers import MAP_TITLES, image_of, layer_shape, masks_of
from ._triton_guard import block_triton_if_unsafe

if TYPE_CHECKING:
    import napari

__all__ = ["SIAWidget", "MAP_TITLES"]


class SIAWidget(_Layout, _LabelActions, _MaskActions, _JobActions, QWidget):
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
        self.folder_edit.setVisible(self.mode == "folder")
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
                if not is_edited(layer) or self._ask_yes_no(
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
            layer = entry.layer
            return to_rgb_uint8(layer.data, f"image layer {layer.name!r}", tuple(layer.contrast_limits))
        return entry.path

    def _entry_shape(self, entry: ImageEntry) -> Optional[tuple[int, int]]:
        layer = self._image_layer(entry)
        return layer_shape(layer)[:2] if layer is not None else None

    def _placement(self, entry: ImageEntry) -> dict[str, Any]:
        layer = self._image_layer(entry)
        if layer is None:
            return {}
        return {"translate": tuple(layer.translate)[-2:], "scale": tuple(layer.scale)[-2:]}
