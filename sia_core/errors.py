"""The one exception type users see: a message that names the file or value at fault and the fix."""

from __future__ import annotations

from typing import Optional


class SIAError(Exception):
    """A user-facing error: what went wrong (naming the file or value) and how to fix it.

    The CLI prints ``str(err)`` as a single line without a traceback; the napari widget shows it as a
    notification.
    """

    def __init__(self, message: str, fix: Optional[str] = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} (fix: {fix})" if fix else message)
