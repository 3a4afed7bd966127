"""``python -m sia_core`` = ``sia-core`` (what torchrun runs: ``torchrun --nproc_per_node=N -m sia_core train ...``)."""

import sys

from .cli import main

sys.exit(main())
