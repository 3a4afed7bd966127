"""Keep Triton from being imported into a process where Mesa's LLVM is already loaded.

Triton (pulled in by torchvision / ``torch._dynamo`` on CUDA builds of torch) ships its own LLVM inside
``libtriton.so``. Importing it *after* an OpenGL context on Mesa's llvmpipe (or another LLVM-based Mesa
driver) has loaded ``libLLVM-*.so`` segfaults the whole process - which is exactly the situation when napari
is already showing its canvas and the SIA widget then imports ``sia_core``. Imported the other way round
(Triton first) both work. When the crash condition holds, this marks Triton as unavailable, so torch falls
back to its Triton-free code paths (SIA never needs Triton: it does not use ``torch.compile``).
"""

from __future__ import annotations

import re
import sys

_LLVM_LIB = re.compile(r"/libLLVM[^/]*\.so")


def _llvm_loaded() -> bool:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any(_LLVM_LIB.search(line) for line in maps)
    except OSError:  # not Linux
        return False


def block_triton_if_unsafe() -> bool:
    """Make ``import triton`` raise ImportError when importing it now would crash. Returns True if blocked."""
    if "triton" in sys.modules or not _llvm_loaded():
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # import system: None means "not importable"
    return True
