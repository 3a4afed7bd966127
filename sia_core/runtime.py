"""Where a process runs: the torch device it computes on and its place among ``torchrun`` processes.

Training, the predictor and slide inference all ask these two questions; the answers live here so that none
of them has to import another for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

import torch

from .errors import SIAError

__all__ = ["DistInfo", "dist_info", "resolve_device"]


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is a clear error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise SIAError(f"unknown device {str(device)!r}", fix="use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SIAError("CUDA was requested but no GPU is available", fix="use device 'auto' or 'cpu'")
    return device


@dataclass
class DistInfo:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank and world size from torchrun's environment (single process when absent)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )
