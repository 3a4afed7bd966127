"""The one exception type users see: a message that names the file or value at fault and the fix."""

from __future__ import annotations

from typing import Any, Optional


def _one_line(text: str) -> str:
    return " ".join(text.split())


class SIAError(Exception):
    """A user-facing error: what went wrong (naming the file or value) and how to fix it.

    The CLI prints ``str(err)`` as a single line without a traceback; the napari widget shows it as a
    notification. Text that spans lines (a YAML parser's message, an error re-raised from a DataLoader worker)
    is joined into one line.
    """

    def __init__(self, message: str, fix: Optional[str] = None) -> None:
        self.message = _one_line(str(message))
        self.fix = _one_line(fix) if fix else fix
        super().__init__(f"{self.message} (fix: {self.fix})" if self.fix else self.message)


def yaml_problem(err: Any) -> str:
    """A YAML parser error as one short line: 'line L, column C: problem' (PyYAML's own text spans 3-5 lines)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return _one_line(f"{where}{problem}")
