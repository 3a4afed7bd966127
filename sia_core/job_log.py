"""What a batch job has finished in its output folder, so that running the same command again skips it.

``sia-core predict`` keeps ``sia_predict.jsonl`` beside its outputs: a first line naming the model (path and
SHA-256) and the options, then a line when an input is started and one when it is done. A rerun with the same
model and options skips what is done and redoes what was only started (its partial outputs are its own);
outputs the log does not account for (another model's, a user's files) are never overwritten without
``--overwrite``. Lines are appended whole (:func:`sia_core.io_utils.append_line`); a line torn by a crash is
ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .io_utils import append_line, atomic_write_text

__all__ = ["JobLog"]


class JobLog:
    """The log of one output folder for one job description.

    Args:
        path: the log file.
        record: what makes outputs interchangeable (model, its hash, options); compared with the log's first line.
    """

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = Path(path)
        self.record = dict(record)
        self.previous: Optional[dict[str, Any]] = None
        self._state: dict[str, str] = {}
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        lines = self.path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # torn by a crash
            if not isinstance(entry, dict):
                continue
            if i == 0:
                self.previous = entry
            elif isinstance(entry.get("input"), str) and entry.get("state") in ("started", "done"):
                self._state[entry["input"]] = entry["state"]

    @property
    def same_job(self) -> bool:
        """The folder's log was written by the same model with the same options."""
        return self.previous == self.record

    def state(self, key: str) -> Optional[str]:
        """'done', 'started' (interrupted or failed: its outputs are this job's own) or None."""
        return self._state.get(key) if self.same_job else None

    def restart(self) -> None:
        """Begin a new log for this job (forgets what an earlier job did)."""
        atomic_write_text(self.path, json.dumps(self.record) + "\n")
        self.previous, self._state = dict(self.record), {}

    def mark(self, key: str, state: str) -> None:
        """Record that ``key`` was 'started' or is 'done'."""
        append_line(self.path, json.dumps({"input": key, "state": state}))
        self._state[key] = state
