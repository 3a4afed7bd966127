"""Kept for code written against it: now :mod:`sia_core.slide.synthetic`."""

from .slide.synthetic import *  # noqa: F403
from .slide.synthetic import __all__  # noqa: F401
