"""Train/eval mode helpers for modules that callers share (a codec inside detection heads)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with every submodule in eval mode for the block; afterwards exactly
    those that were training train again.  A module already in eval mode is left
    untouched, so inner loops (a refinement step's checks) pay a scan, not a
    ``train()`` over hundreds of modules."""
    training = [m for m in module.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield module
    finally:
        for m in training:
            m.training = True
