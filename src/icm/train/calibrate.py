"""Calibration of a ``dicm`` model from training data, run by the stage recipes
(:mod:`icm.train.dicm`) before their first step: the cut feature's statistics
(stage 2), the block transform fitted to the data (stage 4's ``fit_transform``) and
a factorized latent's densities fitted to ``y`` (``fit_prior``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def measure_feature_stats(model, images: Tensor) -> None:
    """Set the per-channel mean and standard deviation of the cut feature from
    a batch of training images (done once, before the RE module trains)."""
    f = model.head_features(model.pad(images))
    model.re.mean.copy_(f.mean(dim=(0, 2, 3), keepdim=True))
    model.re.std.copy_(f.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3))


@torch.no_grad()
def fit_block_transform(model, images: Tensor, step: float = 1.0, chunk: int = 16) -> dict:
    """Fit the block-transform codec (``codec_patch``) to training images.

    On the RE module's standardised output, each ``p×p`` block of the cut
    feature (``p`` = ``codec_patch``, ``C·p²`` values) is expanded in the
    eigenvectors of the blocks' covariance (the Karhunen–Loève transform).
    Each coefficient ``k`` is weighted by the tail's sensitivity to it: the
    Fisher information ``F_k``, the mean squared gradient of the log
    probability of a class drawn from the network's own prediction.  Small
    noise of variance ``σ²`` on coefficient ``k`` costs about ``F_k σ²/2`` nats
    of KL divergence, so the rounding grid of coefficient ``k`` is
    ``step·(F_k / mean F)^(-1/2)``: the same task distortion everywhere.  The
    ``M`` coefficients kept are those with the largest ``F_k·var_k`` (what
    dropping them would cost).  ``g_a``'s last convolution becomes the
    scaled projection and ``g_s``'s first its inverse, and the hyper-decoder
    starts as a fixed Gaussian per channel of ``y`` fitted to the images.

    Returns ``{"kept_share", "fisher", "variance"}`` (the share of
    ``Σ F_k var_k`` the kept coefficients carry).
    """
    p = model.codec_patch
    if not p:
        raise ValueError("fit_block_transform needs a block-transform codec (codec_patch > 0)")
    enc, dec = model.g_a[-1], model.g_s[0]
    was = model.training
    model.eval()
    s = torch.cat([model.re.standardise(model.re(model.head_features(model.pad(images[i:i + chunk])))["f_re"])
                   for i in range(0, len(images), chunk)])
    blocks = F.pixel_unshuffle(s, p).permute(0, 2, 3, 1).reshape(-1, s.shape[1] * p * p)
    mu = blocks.mean(0)
    var, U = torch.linalg.eigh(torch.cov((blocks - mu).T))
    fisher = torch.zeros(U.shape[1])
    with torch.enable_grad():
        for i in range(0, len(s), chunk):
            c = torch.einsum("bchw,ck->bkhw", F.pixel_unshuffle(s[i:i + chunk], p) - mu[:, None, None], U)
            c.requires_grad_(True)
            back = F.pixel_shuffle(torch.einsum("bkhw,ck->bchw", c, U) + mu[:, None, None], p)
            logits = model.classify_features(model.re.unstandardise(back))
            label = torch.distributions.Categorical(logits=logits.detach()).sample()
            grad, = torch.autograd.grad(F.log_softmax(logits, 1).gather(1, label[:, None]).sum(), c)
            fisher += grad.pow(2).mean(dim=(2, 3)).sum(0)
    fisher /= len(s)
    importance = fisher * var.clamp_min(0)
    keep = importance.argsort(descending=True)[: model.M]
    grid = step * (fisher[keep] / fisher.mean()).clamp_min(1e-8).rsqrt()
    Uk = U[:, keep]
    enc.weight.copy_((Uk / grid).T.reshape(enc.weight.shape))
    enc.bias.copy_(-(Uk.T @ mu) / grid)
    dec.weight.copy_((Uk * grid).T.reshape(dec.weight.shape))
    dec.bias.copy_(mu.reshape(-1, p * p).mean(1))
    # The entropy model starts as one Gaussian per channel of y, fitted to
    # these images: h_s's last convolution outputs (nearly) constant scales
    # and means.  From PyTorch's initialisation the estimated rate sat at
    # 3–4.5 bpp against a zeroth-order entropy of 0.5 and stayed there for
    # hundreds of steps while the rate term pushed y to zero.
    y = torch.cat([model.g_a(s[i:i + chunk]) for i in range(0, len(s), chunk)])
    if model.entropy == "hyperprior":  # a factorized latent is fitted by fit_prior
        last = model.latent.h_s[-1]
        last.weight.mul_(0.01)
        last.bias.copy_(torch.cat([y.std(dim=(0, 2, 3)), y.mean(dim=(0, 2, 3))]))
    model.train(was)
    return {"kept_share": float(importance[keep].sum() / importance.sum()), "fisher": fisher[keep],
            "variance": var[keep]}


def fit_prior(model, images: Tensor, steps: int = 2000, chunk: int = 16) -> float:
    """Fit a factorized latent's densities to ``y`` of ``images`` (the codec as it
    is); returns the fitted bits per element of ``y``."""
    if model.entropy != "factorized":
        raise ValueError("fit_prior needs entropy='factorized'")
    was = model.training
    model.eval()
    with torch.no_grad():
        y = torch.cat([model.analysis(model.pad(images[i:i + chunk])) for i in range(0, len(images), chunk)])
    model.train(was)
    return model.latent.fit(y, steps=steps)
