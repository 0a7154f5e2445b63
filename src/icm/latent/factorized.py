"""Factorized latent codec: ``y`` coded with a learned per-channel density and
no side information (Ballé, Laparra, Simoncelli, ICLR 2017, the "factorized
prior" model)::

    y ──▶ Q ──▶ ŷ ──[per-channel density, FactorizedPrior]──▶ bits(y)

One section per item.  Where ``y``'s channels are already decorrelated and
their statistics do not vary much across positions (a fitted block
transform, :func:`icm.train.calibrate.fit_block_transform`), a hyperprior's
side information can cost more than it saves; this codec is the alternative.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..entropy import FactorizedPrior, annealed_round, ste_round
from .hyperprior import LatentStrings


class FactorizedLatent(nn.Module):
    """Args:
        channels: channels of ``y``.
        upsample: ``y``'s positions per position of the model's coarsest grid
            (``model.stride / y_stride``), the grid ``decompress`` is given.
    """

    def __init__(self, channels: int, upsample: int = 1) -> None:
        super().__init__()
        self.prior = FactorizedPrior(channels)
        self.upsample = int(upsample)

    def forward(self, y: Tensor) -> dict:
        """Returns ``{"y_hat", "likelihoods": {"y"}}``.  Training: likelihood of the
        noisy latent, straight-through rounded ``ŷ``; eval: exactly what
        :meth:`decompress` returns."""
        if self.training:
            _, lik = self.prior(y)
            return {"y_hat": ste_round(y), "likelihoods": {"y": lik}}
        y_hat = torch.round(y)
        return {"y_hat": y_hat, "likelihoods": {"y": self.prior.likelihood(y_hat)}}

    # -- encoder-side refinement (icm.refine) --------------------------------
    def hyper_latent(self, y: Tensor) -> None:
        """No side information: there is nothing besides ``y`` to refine."""
        return None

    def annealed(self, y: Tensor, z: None, tau: float, generator) -> tuple[Tensor, Tensor]:
        """Soft-rounded ``(ŷ, bits per item)`` of continuous ``y``, differentiable in it."""
        if z is not None:
            raise ValueError("a factorized latent has no hyper-latent to refine")
        r = annealed_round(y, tau, generator)
        return r, -torch.log2(self.prior.likelihood(r)).sum(dim=(1, 2, 3))

    @torch.no_grad()
    def compress(self, y: Tensor, z: Tensor | None = None) -> LatentStrings:
        if z is not None:
            raise ValueError("a factorized latent has no hyper-latent to refine")
        sym = torch.round(y)
        return LatentStrings([[s] for s in self.prior.compress(sym)], tuple(sym.shape[-2:]))

    @torch.no_grad()
    def decompress(self, strings: list[list[bytes]], z_shape: tuple[int, int], device=None) -> Tensor:
        """Decode ``[[y_bytes], …]``; ``z_shape`` is the coarsest grid's shape."""
        shape = (z_shape[0] * self.upsample, z_shape[1] * self.upsample)
        device = device if device is not None else self.prior._table_stamp.device
        return self.prior.decompress([s[0] for s in strings], shape).to(device)

    def fit(self, y: Tensor, steps: int = 2000, lr: float = 1e-2, batch: int = 2048, seed: int = 0) -> float:
        """Fit the density to latents ``y`` ``(B, C, h, w)`` (maximum likelihood of the
        noisy values, Adam), in place.  Returns the final bits per element."""
        g = torch.Generator().manual_seed(seed)
        c = y.shape[1]
        flat = y.detach().permute(1, 0, 2, 3).reshape(c, -1)
        opt = torch.optim.Adam(self.prior.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 20)
        bits = float("nan")
        for _ in range(steps):
            idx = torch.randint(flat.shape[1], (min(batch, flat.shape[1]),), generator=g)
            v = flat[:, idx] + torch.rand(c, idx.numel(), generator=g) - 0.5
            with torch.enable_grad():  # callers may hold gradients off (train.calibrate.fit_prior under no_grad)
                loss = -torch.log2(self.prior.likelihood(v[None, :, :, None])).mean()
                opt.zero_grad()
                loss.backward()
            opt.step()
            sched.step()
            bits = float(loss)
        return bits
