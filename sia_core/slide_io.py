"""Kept for code written against it: now :mod:`sia_core.slide.reader`."""

from .slide.reader import *  # noqa: F403
from .slide.reader import __all__  # noqa: F401
