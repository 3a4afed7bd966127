"""The widget's backbone chooser: which weights a fine-tune starts from, with download progress and Cancel.

Random init, the paper's ImageNet ViT-B/16, an ImageNet ViT-S/16, the pathology foundation models of
``sia_core.backbones`` (with the licence note gated models carry), or any other ``model.pretrained`` value
(a local ``local-dir:`` folder or checkpoint file chosen with Browse, a timm name, an ``hf-hub:`` id). The
choice reaches the run as ``--set`` overrides (:meth:`BackboneChooser.overrides`), so the GUI's training and
its CLI command are the same. **Download** fetches the weights into the Hugging Face cache ahead of training
with ``sia_core.pretrained.fetch_pretrained`` in a thread worker: a progress bar, **Cancel**, and the same
one-line errors as the command line (offline and not cached, gated without access, ...).
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QWidget,
)

from ._triton_guard import block_triton_if_unsafe

block_triton_if_unsafe()  # sia_core.pretrained brings timm and torch in

from sia_core import pretrained as sia_pretrained  # noqa: E402
from sia_core.backbones import KNOWN_BACKBONES, known_backbone  # noqa: E402
from sia_core.config import get_preset  # noqa: E402

__all__ = ["BackboneChooser", "PRESET_DEFAULT", "OTHER", "FREEZE_CHOICES"]

PRESET_DEFAULT = "the preset's"
"""First choice: no override, the training preset decides (paper: ImageNet ViT-B/16; cpu, test: random init)."""
OTHER = "Local folder, file or other name..."
FREEZE_CHOICES = {
    "everything": "none",
    "last 2 blocks + heads": "all-but-2",
    "heads and class tokens only": "all",
}
"""Shown text -> ``model.freeze``."""

TOOLTIPS = {
    "backbone": "Weights the encoder starts from. Pretrained weights give far better masks from few images than "
    "random init; pathology foundation models are larger (slower per step, more memory).",
    "other": "A folder in timm's hub layout (config.json + model.safetensors) as local-dir:FOLDER, a "
    ".pth/.bin/.safetensors checkpoint, a timm name with a tag (vit_base_patch16_224.augreg_in21k_ft_in1k) or "
    "hf-hub:org/name.",
    "browse": "Choose a weights folder (config.json + model.safetensors) or a checkpoint file.",
    "freeze": "What trains: everything; only the last 2 blocks of the backbone plus class tokens, heads and "
    "decoder; or only class tokens, heads and decoder (the backbone stays as downloaded). Freezing saves "
    "memory and weight updates on large backbones.",
    "download": "Download the weights into the Hugging Face cache now (training downloads them otherwise). "
    "Offline machines: download elsewhere, then choose the folder here.",
    "cancel": "Stop the download; what was downloaded stays cached and resumes next time.",
}


class _Progress(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    step = Signal(int, object, str)


class BackboneChooser(QWidget):
    """Backbone choice, licence note, freeze option and download, as one widget.

    Signals:
        changed: the choice (and so the CLI command) changed.
        downloaded(dict): a download finished; the weights' origin (repository, commit, file, sha256).
    """

    changed = Signal()
    downloaded = Signal(object)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._cancel: Optional[threading.Event] = None
        self._preset_pretrained: Optional[str] = None
        self.worker: Any = None
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.addItems([PRESET_DEFAULT, *(b.label for b in KNOWN_BACKBONES), OTHER])
        self.combo.setToolTip(TOOLTIPS["backbone"])
        self.combo.currentTextChanged.connect(self._on_choice)
        form.addRow("backbone", self.combo)
        self.other_edit = QLineEdit()
        self.other_edit.setPlaceholderText("local-dir:FOLDER, file.safetensors, timm name or hf-hub:org/name")
        self.other_edit.setToolTip(TOOLTIPS["other"])
        self.other_edit.textChanged.connect(self._on_choice)
        self.browse_button = QPushButton("...")
        self.browse_button.setToolTip(TOOLTIPS["browse"])
        self.browse_button.clicked.connect(self._browse)
        self._other_row = QWidget()
        row = QHBoxLayout(self._other_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.other_edit, 1)
        row.addWidget(self.browse_button)
        form.addRow(self._other_row)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setOpenExternalLinks(True)
        form.addRow(self.note)
        self.freeze_combo = QComboBox()
        self.freeze_combo.addItems(list(FREEZE_CHOICES))
        self.freeze_combo.setToolTip(TOOLTIPS["freeze"])
        self.freeze_combo.currentTextChanged.connect(lambda *_: self.changed.emit())
        form.addRow("train", self.freeze_combo)
        self.download_button = QPushButton("Download")
        self.download_button.setToolTip(TOOLTIPS["download"])
        self.download_button.clicked.connect(self.download)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip(TOOLTIPS["cancel"])
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.download_button)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addRow(self.status)
        self._progress = _Progress()
        self._progress.step.connect(self._on_progress)
        self._on_choice()

    # ------------------------------------------------------------------------------------------- value

    def value(self) -> Optional[str]:
        """The ``model.pretrained`` value of the choice (None = random init; the preset's own for the first
        choice, see :meth:`overrides`)."""
        text = self.combo.currentText()
        if text == OTHER:
            return self.other_edit.text().strip() or None
        if text == PRESET_DEFAULT:
            return self._preset_pretrained
        return next(b.pretrained for b in KNOWN_BACKBONES if b.label == text)

    def set_preset(self, name: str) -> None:
        """The training preset, whose own weights the first choice stands for."""
        self._preset_pretrained = get_preset(name).model.pretrained
        self._on_choice()

    def freeze(self) -> str:
        """The ``model.freeze`` value of the choice."""
        return FREEZE_CHOICES[self.freeze_combo.currentText()]

    def overrides(self) -> list[str]:
        """The ``--set`` overrides of the choice, for the run's config and its CLI command (none for what the
        preset decides: its own weights, freezing nothing)."""
        out = []
        if self.combo.currentText() != PRESET_DEFAULT:
            out.append(f"model.pretrained={self.value() or 'null'}")
        if self.freeze() != "none":
            out.append(f"model.freeze={self.freeze()}")
        return out

    def set_value(self, pretrained: Optional[str]) -> None:
        """Choose a catalogue entry by its ``model.pretrained`` value, else put the value under Other."""
        entry = known_backbone(pretrained)
        if entry is not None:
            self.combo.setCurrentText(entry.label)
        else:
            self.other_edit.setText(pretrained or "")
            self.combo.setCurrentText(OTHER)

    def _on_choice(self, *_: Any) -> None:
        other = self.combo.currentText() == OTHER
        self._other_row.setVisible(other)
        value = self.value()
        entry = known_backbone(value)
        if entry is not None:
            cost = f" {entry.architecture}, {entry.params_m:g}M parameters." if entry.params_m else ""
            self.note.setText(entry.licence_note() + cost)
        elif value:
            self.note.setText("Weights you chose: check their licence; gated hub models need `hf auth login`.")
        else:
            self.note.setText("Type or browse to the weights.")
        self.download_button.setEnabled(bool(value) and self.worker is None)
        self.status.setText("")
        self.changed.emit()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Weights folder (config.json + model.safetensors)")
        if folder:
            self.other_edit.setText(f"local-dir:{folder}")
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Weights file", "", "Weights (*.safetensors *.pth *.bin *.pt);;All files (*)"
        )
        if path:
            self.other_edit.setText(path)

    # ------------------------------------------------------------------------------------------- download

    def download(self) -> None:
        """Fetch the chosen weights in a thread worker (progress bar, Cancel)."""
        value = self.value()
        if not value or self.worker is not None:
            return
        self._cancel = threading.Event()
        self.bar.setRange(0, 0)  # busy until the first byte count
        self.status.setText(f"downloading {value} ...")
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker = create_worker(
            _fetch,
            value,
            self._progress.step.emit,
            self._cancel,
            _connect={"returned": self._on_done, "errored": self._on_error, "finished": self._on_finished},
            _start_thread=False,
        )
        self.worker.start()

    def cancel(self) -> None:
        """Stop the download at the next chunk."""
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("cancelling ...")

    def _on_progress(self, done: int, total: Optional[int], name: str) -> None:
        if total:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * min(done, total) / total))
        self.status.setText(f"{name}: {done / 2**20:.1f} / {(total or 0) / 2**20:.1f} MiB")

    def _on_done(self, origin: dict) -> None:
        self.bar.setRange(0, 1)
        self.bar.setValue(1)
        where = origin.get("repo") or origin.get("path", "")
        commit = f" @ {origin['revision'][:10]}" if origin.get("revision") else ""
        self.status.setText(f"ready: {where}{commit}, {origin.get('file', '')} sha256 {origin['sha256'][:12]}")
        self.downloaded.emit(origin)

    def _on_error(self, exc: BaseException) -> None:
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        pretrained = sia_pretrained
        if isinstance(exc, pretrained.DownloadCancelled):
            self.status.setText("cancelled (what was downloaded stays cached and resumes next time)")
            return
        from napari.utils.notifications import show_error

        self.status.setText(f"error: {exc}")
        show_error(f"SIA: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self._cancel = None
        self.cancel_button.setEnabled(False)
        self.download_button.setEnabled(bool(self.value()))


def _fetch(value: str, progress: Any, cancel: threading.Event) -> dict:
    return sia_pretrained.fetch_pretrained(value, progress=progress, cancel=cancel)
