"""Encoder-side latent refinement: spend encode time, not bits, for a better file.

An analysis transform predicts ``y`` and ``z`` in one pass; the file that
minimises the model's own rate–distortion cost ``R + λ·255²·MSE`` for *this*
image usually lies a little way off.  :func:`refine_latents` starts at the
predicted latents and descends that cost directly with respect to them
(Campos et al., "Content adaptive optimization for neural image compression",
CVPRW 2019), using stochastic Gumbel annealing for the rounding (Yang, Bamler
and Mandt, "Improving inference for neural image compression", NeurIPS 2020):
each value is pulled towards its floor or ceiling by a soft, randomised choice
whose temperature falls to zero over the run.

Only the encoder changes.  The result is coded with the same entropy models and
decoded by the same decoder; a refined file is an ordinary ``.icm`` file.  The
random choices come from a generator seeded by ``seed``, so one image gives one
file on one machine.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

DEFAULT_STEPS = 100
DEFAULT_LR = 5e-3


def supports_refine(model) -> bool:
    """Whether ``model`` was trained for pixel fidelity with a mean-scale
    hyperprior latent (the cost :func:`refine_latents` descends)."""
    return bool(getattr(model, "refinable", False))


def _gumbel(shape, generator: torch.Generator, device) -> Tensor:
    u = torch.rand(shape, generator=generator).to(device)
    return -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))


def _annealed_round(v: Tensor, tau: float, generator: torch.Generator) -> Tensor:
    """A random soft choice between ``floor(v)`` and ``floor(v) + 1``; the closer
    integer is more likely, and ``tau → 0`` makes the choice hard."""
    lo = torch.floor(v)
    d = (v - lo).clamp(1e-5, 1 - 1e-5)
    logits = torch.stack([-torch.atanh(d), -torch.atanh(1 - d)]) / tau
    logits = logits + _gumbel(logits.shape, generator, v.device)
    return lo + torch.softmax(logits, dim=0)[1]


def refine_latents(
    model,
    x: Tensor,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    callback: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Latents ``(y, z)`` of a batch that cost less to code at ``model.lmbda``.

    Args:
        model: a model for which :func:`supports_refine` is true.
        x: ``(B, 3, H, W)`` in ``[0, 1]`` (any size; padding is added as in
            ``compress``, and only the real pixels count in the distortion).
        steps: gradient steps (Adam); ``0`` returns the analysis transform's latents.
        lr: Adam's step size.
        seed: seed of the rounding noise.
        callback: called with the step number after every step (progress bars).

    Returns:
        ``(y, z)`` to pass to ``model.latent.compress(y, z)``.
    """
    if not supports_refine(model):
        raise ValueError(f"model {getattr(model, 'model_name', type(model).__name__)!r} does not support "
                         "encoder-side refinement (it needs a pixel-fidelity hyperprior model)")
    if steps < 0:
        raise ValueError(f"refinement steps must be >= 0, got {steps}")
    lat = model.latent
    h, w = x.shape[-2:]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            y0 = model.analysis(model.pad(x))
            z0 = lat.h_a(y0)
        if steps == 0:
            return y0, z0
        y = y0.clone().requires_grad_(True)
        z = z0.clone().requires_grad_(True)
        frozen = [p for p in model.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam([y, z], lr=lr)
        weight = model.lmbda * 255.0**2
        try:
            with torch.enable_grad():
                for step in range(steps):
                    # Temperature from 0.5 down to 0.02 over the run.
                    tau = 0.02 + 0.5 * (1.0 - step / max(steps - 1, 1))
                    z_q = _annealed_round(z, tau, gen)
                    scales, means = lat.h_s(z_q).chunk(2, dim=1)
                    r = _annealed_round(y - means, tau, gen)
                    bits = -(torch.log2(lat.y_conditional.likelihood(r, scales)).sum(dim=(1, 2, 3))
                             + torch.log2(lat.z_prior.likelihood(z_q)).sum(dim=(1, 2, 3)))
                    x_hat = model.synthesis(r + means)[..., :h, :w]
                    mse = ((x_hat - x) ** 2).mean(dim=(1, 2, 3))
                    loss = (bits / (h * w) + weight * mse).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if callback is not None:
                        callback(step + 1)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return y.detach(), z.detach()
    finally:
        model.train(was_training)
