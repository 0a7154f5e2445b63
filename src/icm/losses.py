"""Losses shared by every recipe."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bits(likelihoods: dict[str, Tensor]) -> Tensor:
    """Total ``−log2 p`` over all latents and the whole batch."""
    return sum(torch.log(l).sum() for l in likelihoods.values()) / -math.log(2)


def bpp(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated bits per pixel; ``num_pixels`` counts the whole batch (B·H·W)."""
    return bits(likelihoods) / num_pixels


def rate_distortion(out: dict, x: Tensor, lmbda: float) -> dict[str, Tensor]:
    """``bpp + λ·255²·MSE`` (MSE on ``[0, 1]`` pixels), the usual learned-codec loss.

    Returns ``{"loss", "bpp", "mse", "psnr"}``.
    """
    b, _, h, w = x.shape
    rate = bpp(out["likelihoods"], b * h * w)
    mse = torch.mean((out["x_hat"] - x) ** 2)
    return {
        "loss": rate + lmbda * 255**2 * mse,
        "bpp": rate,
        "mse": mse,
        "psnr": -10 * torch.log10(mse.detach().clamp_min(1e-10)),
    }
