"""Kept for code written against it: now :mod:`sia_core.slide.store`."""

from .slide.store import *  # noqa: F403
from .slide.store import __all__  # noqa: F401
