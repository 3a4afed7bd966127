"""Mask actions of the widget: paint by class name, Save correction, Export, Open mask, pseudo-masks.

Every action acts on a mask of the current image only (``mask_for_current``): a mask is tied to its image in
the layer metadata, so it is never saved or exported under another image's name.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

from napari.utils.notifications import show_error, show_warning

from sia_core.data.corrections import write_correction
from sia_core.data.images import IMAGE_EXTENSIONS, read_mask
from sia_core.data.sidecars import OUTPUT_DIRS, correction_path, export_path, pseudo_label_path
from sia_core.errors import SIAError

from ._classes import SIA_META
from ._layout import ERASE
from ._reader import read_mask_layer
from ._result_layers import full_resolution, image_of, layer_shape, link, masks_of, style_mask
from ._tooltips import EXPORT_FORMATS, TOOLTIPS
from ._writer import classes_of_layer, write_mask


class _MaskActions:
    """Painting and mask files (mixed into ``SIAWidget``)."""

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
        overwrite = self._may_replace(path, "Replace file?")
        if overwrite is None:
            return None
        data = full_resolution(layer)
        try:
            written = write_mask(path, data, classes_of_layer(data, layer.metadata), overwrite=overwrite)
        except SIAError as err:
            show_error(f"SIA: {err}")
            return None
        self.export_status.setText(f"exported {layer.name} -> {written}")
        return written

    def _may_replace(self, path: Path, title: str) -> Optional[bool]:
        """False: ``path`` is free; True: it exists and the user said to replace it; None: keep it (cancel)."""
        if not path.exists():
            return False
        return True if self._ask_yes_no(title, f"{path} exists. Replace it?") else None

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
        overwrite = self._may_replace(target, "Replace correction?")
        if overwrite is None:
            return None
        try:
            write_correction(
                entry.path,
                full_resolution(layer),
                self.classes.num_classes,
                self.classes.ignore_index,
                self.classes.full_palette(),
                overwrite=overwrite,
            )
        except SIAError as err:
            show_error(f"SIA: mask '{layer.name}': {err}")
            return None
        layer.metadata.setdefault(SIA_META, {})["edited"] = False
        self.mask_status.setText(
            f"saved as {entry.name}'s correction ({target.parent.name}/{target.name}); train again, starting from "
            "the model above, to learn from it"
        )
        self.mask_status.setToolTip(str(target))
        self._update_entry_text(entry)
        return target
