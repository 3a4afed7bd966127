"""Kept for code written against it: the label formats now live in :mod:`sia_core.formats`."""

from __future__ import annotations

from .formats import *  # noqa: F403
from .formats import __all__  # noqa: F401
