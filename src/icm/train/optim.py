"""One optimiser factory and one learning-rate schedule for every recipe.

The schedule is a linear warm-up into a cosine decay to ``floor`` (a fraction of
the peak learning rate), stepped per optimisation step, as ``LambdaLR`` factors:

* steps ``i < warmup``: ``start + (1 − start)·i / reach`` (``reach`` is ``warmup``,
  or ``warmup − 1`` to arrive at the peak on the last warm-up step);
* after: ``floor + (1 − floor)·½(1 + cos(π·t))``, ``t = min(1, (i − warmup) / max(1, total − warmup))``.
"""

from __future__ import annotations

import math

import torch

from ..errors import IcmError


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9):
    """``sgd``, ``adam`` or ``adamw`` over ``params`` (tensors or param groups)."""
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise IcmError(f"unknown optimiser {name!r}; use sgd, adam or adamw")


def warmup_cosine_factor(total: int, floor: float = 0.0, warmup: int = 0, start: float = 1e-3,
                         reach: int | None = None):
    """The schedule above as a function of the step (``LambdaLR``'s ``lr_lambda``)."""
    total = max(int(total), 1)
    reach = warmup if reach is None else reach

    def factor(i: int) -> float:
        if i < warmup:
            return start + (1 - start) * i / max(reach, 1)
        t = min(1.0, (i - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def schedule(optimizer, total: int, floor: float = 0.0, warmup: int = 0, start: float = 1e-3,
             reach: int | None = None) -> dict:
    """Lightning's ``lr_scheduler`` entry for :func:`warmup_cosine_factor`, stepped per step."""
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_factor(total, floor, warmup, start, reach))
    return {"scheduler": sched, "interval": "step"}
