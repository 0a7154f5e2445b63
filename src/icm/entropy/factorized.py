"""Factorized prior for hyper-latents (Ballé et al., "Variational image
compression with a scale hyperprior", ICLR 2018, appendix 6.1).

Each channel has its own univariate density, given by a small monotone
network that maps a value to the logit of its cumulative distribution::

    x ─▶ [softplus(H₁)·x + b₁ + tanh(a₁)·tanh(·)] ─▶ … ─▶ [softplus(H_K)·x + b_K] ─▶ logit c(x)

The likelihood of a quantised value ``v`` is ``c(v + ½) − c(v − ½)``.  Symbols
are ``round(z)``; the coding range of each channel is found from its cumulative
when the tables are built, so no auxiliary loss is needed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import coder
from ._tables import TableModule
from .quantize import lower_bound, noise_quantize

_LIKELIHOOD_BOUND = 1e-9


class FactorizedPrior(TableModule):
    """Learned per-channel density for a hyper-latent ``z`` of shape ``(B, C, h, w)``.

    Args:
        channels: number of channels ``C``.
        filters: hidden widths of the per-channel density network.
        init_scale: expected spread of the initial density.
        tail_mass: probability left outside each channel's coding range (coded by escape).
    """

    def __init__(
        self,
        channels: int,
        filters: tuple[int, ...] = (3, 3, 3),
        init_scale: float = 10.0,
        tail_mass: float = 1e-9,
    ) -> None:
        super().__init__()
        self.channels = int(channels)
        self.tail_mass = float(tail_mass)
        dims = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def _logits_cumulative(self, x: Tensor) -> Tensor:
        """``x``: ``(C, 1, N)`` → logits of the cumulative, ``(C, 1, N)``."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(m.to(x)), x) + b.to(x)
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i].to(x)) * torch.tanh(x)
        return x

    def _likelihood_flat(self, v: Tensor) -> Tensor:
        lower = self._logits_cumulative(v - 0.5)
        upper = self._logits_cumulative(v + 0.5)
        # Evaluate on the side of the median where the sigmoids are not saturated.
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def likelihood(self, z: Tensor) -> Tensor:
        """Likelihood of (noisy or rounded) values ``z`` of shape ``(B, C, h, w)``."""
        b, c, h, w = z.shape
        if c != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {c}")
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lik = self._likelihood_flat(v).reshape(c, b, h, w).permute(1, 0, 2, 3)
        return lower_bound(lik, _LIKELIHOOD_BOUND)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Training: noisy values and their likelihoods.  Eval: rounded values."""
        z_hat = noise_quantize(z) if self.training else torch.round(z)
        return z_hat, self.likelihood(z_hat)

    # -- coding ------------------------------------------------------------
    def _table_sources(self) -> list[Tensor]:
        return [*self.matrices, *self.biases, *self.factors, torch.tensor([self.tail_mass])]

    @torch.no_grad()
    def _build_tables(self) -> coder.CodingTables:
        radius = 64
        while True:
            grid = torch.arange(-radius, radius + 1, dtype=torch.float64)
            v = grid.expand(self.channels, 1, -1)
            pmf = self._likelihood_flat(v)[:, 0, :].numpy()
            outside = 1.0 - pmf.sum(axis=1)
            if (outside < self.tail_mass).all() or radius >= 1 << 14:
                break
            radius *= 2
        pmfs, offsets, tails = [], [], []
        half = self.tail_mass / 2
        for c in range(self.channels):
            cum = np.cumsum(pmf[c])
            lo = int(np.searchsorted(cum, half))
            hi = int(np.searchsorted(cum, cum[-1] - half))
            hi = max(min(hi, pmf.shape[1] - 1), lo)
            p = pmf[c, lo : hi + 1]
            pmfs.append(p)
            offsets.append(lo - radius)
            tails.append(max(1.0 - float(p.sum()), 0.0))
        return coder.CodingTables.from_pmfs(pmfs, offsets, tails)

    def compress(self, z_symbols: Tensor) -> list[bytes]:
        """Code integer symbols ``(B, C, h, w)``; one byte string per batch item."""
        tables, models = self.coding_tables()
        idx = np.broadcast_to(np.arange(self.channels)[:, None, None], z_symbols.shape[1:])
        sym = z_symbols.detach().cpu().to(torch.int64).numpy()
        return [coder.encode(s, idx, tables, models) for s in sym]

    def decompress(self, strings: list[bytes], shape: tuple[int, int]) -> Tensor:
        """Decode byte strings into integer-valued symbols ``(B, C, h, w)`` (float32)."""
        tables, models = self.coding_tables()
        idx = np.broadcast_to(np.arange(self.channels)[:, None, None], (self.channels, *shape))
        out = [torch.from_numpy(coder.decode(s, idx, tables, models)) for s in strings]
        return torch.stack(out).to(torch.float32)
