"""Image fidelity measures shared by the demo, evaluation, export and benchmarks."""

from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, cap: float | None = None) -> float:
    """PSNR in dB between two ``uint8`` images (``inf`` for identical ones, or ``cap`` if given,
    which also bounds every other value)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    value = float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
    return value if cap is None else min(cap, value)
