"""Mean-scale hyperprior latent codec (Minnen, Ballé, Toderici, NeurIPS 2018,
without the autoregressive context; the "mean-scale hyperprior" of their paper).

::

    y ──▶ h_a ──▶ z ──▶ Q ──▶ ẑ ──[factorized prior]──▶ bits(z)
                              │
                              ▼
                             h_s ──▶ (σ, μ)
                                      │
    y ──▶ Q(y − μ) + μ ──▶ ŷ ──[Gaussian(σ) conditional]──▶ bits(y)

``h_s`` is evaluated in exact fixed point whenever the result is coded or
compared with coded data (eval mode, ``compress``, ``decompress``), so the
decoder reproduces the encoder's ``σ`` table levels and ``μ`` bit for bit on
any machine (see :mod:`icm.layers.fixed_point`).  In training mode ``h_s``
runs in float with additive-noise quantisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..entropy import FactorizedPrior, GaussianConditional, annealed_round, noise_quantize, ste_round
from ..layers.fixed_point import FixedPointNet, supports


@dataclass
class LatentStrings:
    """Coded latents of a batch: ``strings[i] == [y_bytes, z_bytes]`` for item ``i``."""

    strings: list[list[bytes]]
    z_shape: tuple[int, int]


class MeanScaleHyperprior(nn.Module):
    """Args:
        h_a: hyper-analysis, ``(B, M, h, w)`` → ``(B, N, h/4, w/4)``.
        h_s: hyper-synthesis, ``(B, N, h/4, w/4)`` → ``(B, 2M, h, w)``: scales then means.
            Must consist of layers :func:`icm.layers.fixed_point.supports` accepts.
        z_channels: ``N``.
        scale_table: ``(scale_min, scale_max, num_scales)`` of the Gaussian conditional.
        act_bits: fractional bits of the fixed-point hyper-synthesis.
        ste: in training, pass ``round(y − μ) + μ`` with straight-through gradients
            to the synthesis instead of the noisy latent (the likelihood always
            uses noise).
    """

    def __init__(
        self,
        h_a: nn.Module,
        h_s: nn.Module,
        z_channels: int,
        scale_table: tuple[float, float, int] = (0.11, 256.0, 64),
        act_bits: int = 10,
        ste: bool = True,
    ) -> None:
        super().__init__()
        if not supports(h_s):
            raise ValueError("h_s must be built from Conv2d/ConvTranspose2d/ReLU/LeakyReLU for exact decoding")
        self.h_a = h_a
        self.h_s = h_s
        self.z_prior = FactorizedPrior(z_channels)
        self.y_conditional = GaussianConditional(*scale_table)
        self.act_bits = int(act_bits)
        self.ste = ste
        self._fixed_point_cache: tuple | None = None

    def _fixed_point_h_s(self) -> FixedPointNet:
        # Rebuilt whenever a weight of h_s changed (optimiser step, load_state_dict).
        key = tuple((id(p), p._version) for p in self.h_s.parameters())
        if self._fixed_point_cache is None or self._fixed_point_cache[0] != key:
            self._fixed_point_cache = (key, FixedPointNet(self.h_s, self.act_bits))
        return self._fixed_point_cache[1]

    # -- exact entropy parameters -------------------------------------------
    def _exact_params(self, z_int: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """From integer ``ẑ``: ``(means, scales, scale_index)`` identical on every machine."""
        out = self._fixed_point_h_s()(z_int)
        scales_fixed, means_fixed = out.chunk(2, dim=1)
        index = self.y_conditional.scale_index(scales_fixed, self.act_bits)
        unit = 2.0**-self.act_bits
        dev = z_int.device
        return (
            (means_fixed * unit).to(dev, torch.float32),
            (scales_fixed * unit).to(dev, torch.float32),
            index.to(dev),
        )

    def forward(self, y: Tensor) -> dict:
        """Returns ``{"y_hat", "likelihoods": {"y", "z"}}``.

        Training: noisy likelihoods, straight-through ``ŷ``.  Eval: exactly the
        ``ŷ`` that :meth:`decompress` returns, and the likelihoods it is coded with
        (before the scale-table snap).
        """
        z = self.h_a(y)
        if self.training:
            z_tilde, z_lik = self.z_prior(z)
            scales, means = self.h_s(z_tilde).chunk(2, dim=1)
            y_lik = self.y_conditional.likelihood(noise_quantize(y - means), scales)
            y_hat = ste_round(y - means) + means if self.ste else noise_quantize(y)
        else:
            z_hat = torch.round(z)
            z_lik = self.z_prior.likelihood(z_hat)
            means, scales, _ = self._exact_params(z_hat)
            sym = torch.round(y - means)
            y_lik = self.y_conditional.likelihood(sym, scales)
            y_hat = sym + means
        return {"y_hat": y_hat, "likelihoods": {"y": y_lik, "z": z_lik}}

    # -- encoder-side refinement (icm.refine) --------------------------------
    def hyper_latent(self, y: Tensor) -> Tensor:
        """The ``z`` that :meth:`compress` codes with ``y`` by default."""
        return self.h_a(y)

    def annealed(self, y: Tensor, z: Tensor | None, tau: float, generator) -> tuple[Tensor, Tensor]:
        """Soft-rounded ``(ŷ, bits per item)`` of continuous ``y`` and ``z``
        (:func:`icm.entropy.annealed_round` at temperature ``tau``), differentiable
        in both: the rate the refinement descends."""
        z_q = annealed_round(z, tau, generator)
        scales, means = self.h_s(z_q).chunk(2, dim=1)
        r = annealed_round(y - means, tau, generator)
        bits = -(torch.log2(self.y_conditional.likelihood(r, scales)).sum(dim=(1, 2, 3))
                 + torch.log2(self.z_prior.likelihood(z_q)).sum(dim=(1, 2, 3)))
        return r + means, bits

    @torch.no_grad()
    def compress(self, y: Tensor, z: Tensor | None = None) -> LatentStrings:
        """Code ``y``; ``z`` (default ``h_a(y)``) is the hyper-latent to code with
        it, for an encoder that chose both itself (:mod:`icm.refine`)."""
        z_int = torch.round(self.h_a(y) if z is None else z)
        z_strings = self.z_prior.compress(z_int)
        means, _, index = self._exact_params(z_int)
        y_strings = self.y_conditional.compress(torch.round(y - means), index)
        return LatentStrings([[ys, zs] for ys, zs in zip(y_strings, z_strings)], tuple(z_int.shape[-2:]))

    @torch.no_grad()
    def decompress(self, strings: list[list[bytes]], z_shape: tuple[int, int], device=None) -> Tensor:
        """Decode ``[[y_bytes, z_bytes], …]`` into ``ŷ`` ``(B, M, 4h_z, 4w_z)``."""
        device = device if device is not None else self.z_prior._table_stamp.device
        z_int = self.z_prior.decompress([s[1] for s in strings], z_shape).to(device)
        means, _, index = self._exact_params(z_int)
        sym = self.y_conditional.decompress([s[0] for s in strings], index).to(device)
        return sym + means
