"""Gaussian conditional with a scale table (Ballé et al. 2018; Minnen et al. 2018).

A latent ``y`` is coded as integer symbols ``round(y − μ)`` under a zero-mean
Gaussian of scale ``σ`` convolved with a unit box.  ``σ`` is snapped to one of
``num_scales`` levels spaced evenly in log between ``scale_min`` and
``scale_max``; each level has one integer coding table.  Which level codes a
symbol is decided by :meth:`scale_index` from a fixed-point scale, so encoder
and decoder agree exactly (see :mod:`icm.layers.fixed_point`).
"""

from __future__ import annotations

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
        self.tail_mass = float(tail_mass)
        levels = torch.exp(torch.linspace(math.log(scale_min), math.log(scale_max), num_scales, dtype=torch.float64))
        self.register_buffer("scale_table", levels, persistent=False)

    def likelihood(self, values: Tensor, scales: Tensor) -> Tensor:
        """Likelihood of ``values`` (already centred: ``ŷ − μ``, noisy or integer)."""
        scales = lower_bound(scales, self.scale_min)
        v = torch.abs(values)
        upper = _std_normal_cdf((0.5 - v) / scales)
        lower = _std_normal_cdf((-0.5 - v) / scales)
        return lower_bound(upper - lower, _LIKELIHOOD_BOUND)

    def scale_thresholds(self, frac_bits: int) -> np.ndarray:
        """Fixed-point boundaries between levels (geometric midpoints), int64."""
        s = self.scale_table.cpu().numpy()
        mids = np.sqrt(s[:-1] * s[1:])
        return np.round(mids * (1 << frac_bits)).astype(np.int64)

    def scale_index(self, scales_fixed: Tensor, frac_bits: int) -> Tensor:
        """Table level for each fixed-point scale (integers in a float64 tensor)."""
        thr = torch.from_numpy(self.scale_thresholds(frac_bits)).to(torch.float64)
        return torch.bucketize(scales_fixed.to(torch.float64).contiguous(), thr, right=True).to(torch.int64)

    # -- coding ------------------------------------------------------------
    def _table_sources(self) -> list[Tensor]:
        return [self.scale_table, torch.tensor([self.tail_mass])]

    @torch.no_grad()
    def _build_tables(self) -> coder.CodingTables:
        z = float(torch.special.ndtri(torch.tensor(1.0 - self.tail_mass / 2, dtype=torch.float64)))
        pmfs, offsets, tails = [], [], []
        for s in self.scale_table.cpu().tolist():
            half = int(math.ceil(s * z))
            k = torch.arange(-half, half + 1, dtype=torch.float64)
            pmf = (_std_normal_cdf((k + 0.5) / s) - _std_normal_cdf((k - 0.5) / s)).numpy()
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
