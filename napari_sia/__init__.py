"""napari_sia: napari plugin for SIA weakly supervised segmentation of H&E images.

The plugin is declared in ``napari.yaml`` (npe2). This package stays light on import: the widget, writer and
sample-data modules named there import Qt, napari and ``sia_core`` only when napari asks for them.
"""

from ._triton_guard import block_triton_if_unsafe

__version__ = "0.1.0"

__all__ = ["__version__"]

# napari imports this package only when a contribution is used, i.e. after its OpenGL canvas exists.
block_triton_if_unsafe()
