"""Gaussian conditional with a scale table (Ballé et al. 2018; Minnen et al. 2018).

A latent ``y`` is coded as integer symbols ``round(y − μ)`` under a zero-mean
Gaussian of scale ``σ`` convolved with a unit box.  ``σ`` is snapped to one of
``num_scales`` levels spaced evenly in log between ``scale_min`` and
``scale_max``; each level has one integer coding table.  Which level codes a
symbol is decided by :meth:`scale_index` from a fixed-point scale, so encoder
and decoder agree exactly (see :mod:`icm.layers.fixed_point`).

Nothing here depends on the PyTorch or NumPy version: the levels and the
fixed-point boundaries between them are computed with :mod:`decimal`
(correctly rounded, the same on every platform), and the tables' probabilities
with the C library's ``erfc`` in float64.  The integer tables a checkpoint
stores are what files are coded with; they are stamped with the constants
above, so loading never rebuilds them (see :mod:`icm.entropy._tables`).
"""

from __future__ import annotations

import decimal
import math

import numpy as np
import torch
from torch import Tensor

from . import coder
from ._tables import TableModule
from .quantize import lower_bound

_LIKELIHOOD_BOUND = 1e-9


def _std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-x * (2.0**-0.5))


_DECIMAL = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)


def scale_levels(scale_min: float, scale_max: float, num_scales: int) -> list[float]:
    """``num_scales`` levels evenly spaced in log from ``scale_min`` to ``scale_max``:
    exact decimal arithmetic, each rounded once to the nearest float64."""
    c = _DECIMAL
    lo, hi = c.ln(decimal.Decimal(scale_min)), c.ln(decimal.Decimal(scale_max))
    step = c.divide(c.subtract(hi, lo), num_scales - 1)
    return [float(c.exp(c.add(lo, c.multiply(step, i)))) for i in range(num_scales)]


def level_thresholds(levels: list[float], frac_bits: int) -> list[int]:
    """Boundaries between consecutive levels (their geometric midpoints) in fixed
    point with ``frac_bits`` fractional bits, rounded half to even; exact decimal arithmetic."""
    c = _DECIMAL
    unit = decimal.Decimal(1 << frac_bits)
    out = []
    for a, b in zip(levels[:-1], levels[1:]):
        mid = c.sqrt(c.multiply(decimal.Decimal(a), decimal.Decimal(b)))
        out.append(int(c.multiply(mid, unit).to_integral_value(rounding=decimal.ROUND_HALF_EVEN)))
    return out


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x * 0.7071067811865476)


def _upper_quantile(p: float) -> float:
    """``z`` with ``P(N(0, 1) > z) = p`` (bisection on ``erfc``; deterministic)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(mid * 0.7071067811865476) > p:
            lo = mid
        else:
            hi = mid
    return hi


class GaussianConditional(TableModule):
    """Args:
        scale_min, scale_max, num_scales: the scale table (SEEDS.md: 0.11, 256, 64).
        tail_mass: probability left outside each table (coded by escape).
    """

    def __init__(
        self,
        scale_min: float = 0.11,
        scale_max: float = 256.0,
        num_scales: int = 64,
        tail_mass: float = 1e-9,
    ) -> None:
        super().__init__()
        if not (0 < scale_min < scale_max) or num_scales < 2:
            raise ValueError("need 0 < scale_min < scale_max and num_scales >= 2")
        self.scale_min = float(scale_min)
        self.scale_max = float(scale_max)
        self.num_scales = int(num_scales)
        self.tail_mass = float(tail_mass)
        self._levels = scale_levels(self.scale_min, self.scale_max, self.num_scales)
        self.register_buffer("scale_table", torch.tensor(self._levels, dtype=torch.float64), persistent=False)

    def likelihood(self, values: Tensor, scales: Tensor) -> Tensor:
        """Likelihood of ``values`` (already centred: ``ŷ − μ``, noisy or integer)."""
        scales = lower_bound(scales, self.scale_min)
        v = torch.abs(values)
        upper = _std_normal_cdf((0.5 - v) / scales)
        lower = _std_normal_cdf((-0.5 - v) / scales)
        return lower_bound(upper - lower, _LIKELIHOOD_BOUND)

    def scale_thresholds(self, frac_bits: int) -> np.ndarray:
        """Fixed-point boundaries between levels (geometric midpoints), int64."""
        return np.array(level_thresholds(self._levels, frac_bits), dtype=np.int64)

    def scale_index(self, scales_fixed: Tensor, frac_bits: int) -> Tensor:
        """Table level for each fixed-point scale (integers in a float64 tensor)."""
        thr = torch.from_numpy(self.scale_thresholds(frac_bits)).to(torch.float64)
        return torch.bucketize(scales_fixed.to(torch.float64).contiguous(), thr, right=True).to(torch.int64)

    # -- coding ------------------------------------------------------------
    def _table_sources(self) -> list:
        return [self.scale_min, self.scale_max, self.num_scales, self.tail_mass]

    @torch.no_grad()
    def _build_tables(self) -> coder.CodingTables:
        z = _upper_quantile(self.tail_mass / 2)
        pmfs, offsets, tails = [], [], []
        for s in self._levels:
            half = int(math.ceil(s * z))
            cdf = [_cdf((k + 0.5) / s) for k in range(-half - 1, half + 1)]
            pmf = np.diff(np.array(cdf, dtype=np.float64))
            pmfs.append(pmf)
            offsets.append(-half)
            tails.append(max(1.0 - float(pmf.sum()), 0.0))
        return coder.CodingTables.from_pmfs(pmfs, offsets, tails)

    def compress(self, symbols: Tensor, index: Tensor) -> list[bytes]:
        """Code integer ``symbols`` ``(B, C, h, w)`` with table levels ``index``."""
        tables, models = self.coding_tables()
        sym = symbols.detach().cpu().to(torch.int64).numpy()
        idx = index.detach().cpu().to(torch.int64).numpy()
        return [coder.encode(s, i, tables, models) for s, i in zip(sym, idx)]

    def decompress(self, strings: list[bytes], index: Tensor) -> Tensor:
        """Decode integer symbols shaped like ``index`` (float32 tensor)."""
        tables, models = self.coding_tables()
        idx = index.detach().cpu().to(torch.int64).numpy()
        out = [torch.from_numpy(coder.decode(s, i, tables, models)) for s, i in zip(strings, idx)]
        return torch.stack(out).to(torch.float32)
