"""The learning rate at each training iteration (``train.lr_schedule``).

A function of the iteration alone, set on the optimiser before every step (no scheduler state to save): a run
resumed from a checkpoint follows exactly the curve it would have followed without the interruption.
"""

from __future__ import annotations

import math

__all__ = ["LR_SCHEDULES", "lr_at"]

LR_SCHEDULES = ("constant", "poly", "cosine")

POLY_POWER = 0.9
"""ToCo's and MoRe's PolyWarmupAdamW power."""


def lr_at(base: float, schedule: str, iteration: int, total: int) -> float:
    """Learning rate of the step that starts at ``iteration`` (0-based) of ``total``.

    Args:
        base: ``train.lr``, the rate at iteration 0.
        schedule: 'constant' (the paper's fixed rate), 'poly' (base (1 - t/T)^0.9) or 'cosine'
            (base (1 + cos(pi t/T)) / 2).
        iteration: steps already taken.
        total: ``train.iterations``.
    """
    frac = min(max(iteration / max(total, 1), 0.0), 1.0)
    if schedule == "constant":
        return base
    if schedule == "poly":
        return base * (1.0 - frac) ** POLY_POWER
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"unknown learning-rate schedule '{schedule}' (use one of {', '.join(LR_SCHEDULES)})")
