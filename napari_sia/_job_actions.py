"""The widget's four background jobs: train, inspect, pseudo-labels and whole slides, each in its ``JobSlot``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from napari.utils.notifications import show_error, show_warning
from qtpy.QtGui import QGuiApplication

from sia_core.config import get_preset
from sia_core.data.sidecars import correction_path, pseudo_label_path
from sia_core.errors import SIAError
from sia_core.run_files import RunFiles

from ._classes import SIA_META, ClassSet, dataset_root
from ._images import ImageEntry
from ._job_slot import JobState
from ._jobs import (
    InspectResult,
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
from ._layout import is_edited
from ._result_layers import MAP_LAYER_ATTRS, layers_of, map_layer_name, mask_layer_name, masks_of, style_mask
from ._tooltips import PRESENT_CLASSES, PSEUDO_FOLDER


class _JobActions:
    """Model choice and the four jobs (mixed into ``SIAWidget``)."""

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
            extra_overrides=tuple(self.backbone.overrides()),
        )

    def _update_cli(self, *_: Any) -> None:
        if not hasattr(self, "cli_edit") or self.train_job.busy:
            return
        self._update_train_summary()
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
            if is_edited(layer) and not self._ask_yes_no(
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
