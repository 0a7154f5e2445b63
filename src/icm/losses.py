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


def rate_accuracy_distortion(out: dict, x: Tensor, target: Tensor, alpha: float, beta: float,
                             label_smoothing: float = 0.1) -> dict[str, Tensor]:
    """``α·CE + β·MSE + bpp`` of Bai et al. (2022), MSE on ``0–255`` pixels.

    Args:
        out: a model output with ``logits``, ``x_hat`` and ``likelihoods``
            (an empty ``likelihoods`` drops the rate term: training step 1).
        x: the input ``(B, C, H, W)`` in ``[0, 1]``.
        target: class indices ``(B,)`` or class probabilities ``(B, classes)``
            (mixup / cutmix).

    Returns:
        ``{"loss", "ce", "mse", "bpp", "psnr", "acc"}``; ``mse`` on ``0–255``.
    """
    b, _, h, w = x.shape
    ce = torch.nn.functional.cross_entropy(out["logits"], target, label_smoothing=label_smoothing)
    mse = torch.mean((255.0 * (out["x_hat"] - x)) ** 2)
    rate = bpp(out["likelihoods"], b * h * w) if out["likelihoods"] else x.new_zeros(())
    labels = target if target.dim() == 1 else target.argmax(dim=1)
    return {
        "loss": alpha * ce + beta * mse + rate,
        "ce": ce,
        "mse": mse,
        "bpp": rate,
        "psnr": 10 * torch.log10(255.0**2 / mse.detach().clamp_min(1e-10)),
        "acc": (out["logits"].detach().argmax(dim=1) == labels).float().mean(),
    }
