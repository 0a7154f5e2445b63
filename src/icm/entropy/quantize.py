"""Quantisation: uniform noise and straight-through rounding for training,
annealed stochastic rounding for encoder-side refinement, plain rounding for
coding."""

from __future__ import annotations

import torch
from torch import Tensor


def noise_quantize(x: Tensor) -> Tensor:
    """``x + u`` with ``u ~ U(-0.5, 0.5)``: the differentiable stand-in for rounding
    used to train likelihoods (Ballé et al., ICLR 2017)."""
    return x + torch.empty_like(x).uniform_(-0.5, 0.5)


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class _LowerBound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        # Let the gradient through where it pushes the value back above the bound.
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


def lower_bound(x: Tensor, bound: float) -> Tensor:
    """``max(x, bound)`` whose gradient does not die below the bound."""
    return _LowerBound.apply(x, bound)


def _gumbel(shape, generator, device) -> Tensor:
    """Gumbel noise of ``shape`` ``(2, B, ...)``: from one generator, or, given a
    sequence of them, item ``b``'s noise from ``generator[b]`` alone (so an item's
    draws do not depend on the batch around it)."""
    if isinstance(generator, torch.Generator):
        u = torch.rand(shape, generator=generator)
    else:
        if len(generator) != shape[1]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[1]}")
        item = (shape[0], *shape[2:])
        u = torch.stack([torch.rand(item, generator=g) for g in generator], dim=1)
    return -torch.log(-torch.log(u.to(device).clamp(1e-10, 1.0 - 1e-7)))


def annealed_round(v: Tensor, tau: float, generator) -> Tensor:
    """Stochastic Gumbel annealing (Yang, Bamler, Mandt, NeurIPS 2020): a random
    soft choice between ``floor(v)`` and ``floor(v) + 1``, differentiable in
    ``v``; the closer integer is more likely, and ``tau → 0`` makes the choice
    hard.  The noise comes from ``generator`` (a ``torch.Generator``, or one per
    item of the batch ``v``), so a run is reproducible."""
    lo = torch.floor(v)
    d = (v - lo).clamp(1e-5, 1 - 1e-5)
    logits = torch.stack([-torch.atanh(d), -torch.atanh(1 - d)]) / tau
    logits = logits + _gumbel(logits.shape, generator, v.device)
    return lo + torch.softmax(logits, dim=0)[1]
