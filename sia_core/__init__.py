"""sia_core: SIA-WSSS weakly supervised segmentation of H&E images from image-level labels.

The headless library behind the ``sia-core`` command line and the napari plugin. It never imports Qt or
napari. Heavy imports (torch, timm) happen in the submodules that need them.
"""

from .config import SIAConfig, apply_variant, get_preset
from .errors import SIAError

__version__ = "0.1.0"

__all__ = ["SIAConfig", "SIAError", "apply_variant", "get_preset", "__version__"]
