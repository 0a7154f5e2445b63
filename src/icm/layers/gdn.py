"""Generalized divisive normalization (Ballé, Laparra, Simoncelli, ICLR 2016).

``y_i = x_i / sqrt(β_i + Σ_j γ_ij x_j²)``; the inverse (IGDN) multiplies instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..entropy.quantize import lower_bound

_PEDESTAL = 2.0**-18


class GDN(nn.Module):
    """Args:
        channels: number of channels.
        inverse: compute IGDN (for synthesis transforms).
        beta_min: lower bound of β, keeps the division away from zero.
        gamma_init: initial value of the diagonal of γ.
    """

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse = inverse
        self._beta_bound = (beta_min + _PEDESTAL) ** 0.5
        # β and γ are stored as square roots (plus a pedestal) so that they stay non-negative.
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + _PEDESTAL))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + _PEDESTAL))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        beta = lower_bound(self.beta, self._beta_bound) ** 2 - _PEDESTAL
        gamma = lower_bound(self.gamma, _PEDESTAL**0.5) ** 2 - _PEDESTAL
        norm = F.conv2d(x * x, gamma.reshape(c, c, 1, 1), beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)
