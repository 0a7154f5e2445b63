"""The redundancy-elimination (RE) module of ``dicm`` (SEEDS.md, section B): ConvFormer-style
blocks around a factorized-prior bottleneck, run at the sender only."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ..entropy import FactorizedPrior
from ..layers.gnconv import LayerNorm2d


class ConvModulation(nn.Module):
    """Token mixer of the RE blocks: ``proj(dw11×11(GELU(1×1 x)) · 1×1 x)``.

    A large depth-wise kernel makes spatial weights that modulate a linear
    value branch (convolutional modulation, as in Conv2Former / ConvFormer).
    """

    def __init__(self, dim: int, kernel_size: int = 11, proj_drop: float = 0.0, **_) -> None:
        super().__init__()
        self.attn = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(),
                                  nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim))
        self.value = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.attn(x) * self.value(x))


def _re_blocks(dim: int, depth: int, kernel_size: int) -> list[nn.Module]:
    from timm.models.metaformer import MetaFormerBlock

    mixer = partial(ConvModulation, kernel_size=kernel_size)
    return [MetaFormerBlock(dim, token_mixer=mixer, norm_layer=LayerNorm2d, layer_scale_init_value=1e-6)
            for _ in range(depth)]


class RedundancyElimination(nn.Module):
    """The RE module: an autoencoder on the cut feature with a factorized-prior rate.

    Args:
        channels: channels of the cut feature (in and out).
        dims: width after the input 1×1 convolution, then after each of the
            three down-scalings (the last is the bottleneck).
        depths: MetaFormer blocks before each down-scaling.
        kernel_size: of the modulation's depth-wise convolution.

    ``forward(f)`` → ``{"f_re", "likelihoods"}``: ``f_re`` has ``f``'s shape
    (``H, W`` multiples of 8); the bottleneck gets uniform noise in training
    and is rounded in eval.  The module works on the feature standardised per
    channel (buffers ``mean`` and ``std``, measured on training images before
    it trains: :func:`icm.train.calibrate.measure_feature_stats`); the codec uses the same
    statistics.
    """

    def __init__(self, channels: int, dims=(128, 128, 128, 192), depths=(1, 1, 2), kernel_size: int = 11) -> None:
        super().__init__()
        if len(dims) != len(depths) + 1:
            raise ValueError("RE needs one more width than stages")
        enc: list[nn.Module] = [nn.Conv2d(channels, dims[0], 1)]
        for i, depth in enumerate(depths):
            enc += _re_blocks(dims[i], depth, kernel_size)
            enc.append(nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1))
            if i < len(depths) - 1:
                # Not after the last one: a LayerNorm on the bottleneck would pin
                # its scale to 1, and with it what the rounding can resolve.
                enc.append(LayerNorm2d(dims[i + 1], eps=1e-6))
        dec: list[nn.Module] = []
        for i in reversed(range(len(depths))):
            dec += [nn.ConvTranspose2d(dims[i + 1], dims[i], 5, stride=2, padding=2, output_padding=1),
                    LayerNorm2d(dims[i], eps=1e-6)]
            dec += _re_blocks(dims[i], depth=depths[i], kernel_size=kernel_size)
        dec.append(nn.Conv2d(dims[0], channels, 1))
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))
        self.encoder = nn.Sequential(*enc)
        self.prior = FactorizedPrior(dims[-1])
        self.decoder = nn.Sequential(*dec)

    @torch.no_grad()
    def init_identity(self, gain: float) -> None:
        """Start a module without stages (``depths=()``: a 1×1 projection to the
        bottleneck and back) as the identity: the bottleneck's first channels
        are the standardised feature times ``gain`` (rounding then errs by at
        most ``0.5/gain`` of a standard deviation), the others start at zero."""
        enc, dec = self.encoder[0], self.decoder[-1]
        c = enc.in_channels
        if len(self.encoder) != 1 or len(self.decoder) != 1 or enc.out_channels < c:
            raise ValueError("init_identity needs an RE module without stages and a bottleneck at least as wide as its input")
        for conv in (enc, dec):
            conv.weight.zero_()
            conv.bias.zero_()
        eye = torch.eye(c)[..., None, None]
        enc.weight[:c] = gain * eye
        dec.weight[:, :c] = eye / gain

    def standardise(self, f: Tensor) -> Tensor:
        return (f - self.mean) / self.std

    def unstandardise(self, f: Tensor) -> Tensor:
        return f * self.std + self.mean

    def forward(self, f: Tensor) -> dict:
        b_hat, likelihoods = self.prior(self.encoder(self.standardise(f)))
        return {"f_re": self.unstandardise(self.decoder(b_hat)), "likelihoods": likelihoods}
