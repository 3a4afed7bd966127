"""The files of a training run directory (plain paths, no torch: the GUI checks them on its own thread).

::

    config.yaml         the full config of the run (written once everything is checked)
    last.safetensors    latest weights (+ config in the metadata)
    best.safetensors    weights with the best validation mIoU of the decoder (when a val split exists)
    state.pt            the checkpoint: weights, optimiser state, iteration, best score (weights_only-safe)
    log.jsonl           one JSON object per logged step and per validation
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunFiles", "RUN_FILE_NAMES"]

RUN_FILE_NAMES = ("config.yaml", "last.safetensors", "best.safetensors", "state.pt", "log.jsonl")


@dataclass
class RunFiles:
    """Paths of a run directory."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def last(self) -> Path:
        return self.root / "last.safetensors"

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def state(self) -> Path:
        return self.root / "state.pt"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    def has_checkpoint(self) -> bool:
        """A checkpoint to resume from is here (``state.pt``)."""
        return self.state.exists()

    def holds_run(self) -> bool:
        """A run that trained (finished or not) is in this directory: weights or a checkpoint. A directory with
        only a config (a run stopped before its first checkpoint) is not one: it can simply be started again."""
        return any(p.exists() for p in (self.last, self.best, self.state))
