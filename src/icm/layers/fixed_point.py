"""Bit-exact evaluation of a small convolutional network in fixed point.

Why: the decoder has to rebuild the encoder's probability tables exactly, but
a float network gives results that differ in the last bits between thread
counts, batch sizes, CPUs and GPUs.  A scale that lands on the other side of a
table boundary, or a mean that rounds differently, desynchronises the range
coder and the rest of the file decodes to garbage.

How: weights and activations are rounded to integers at fixed binary scales
(``2**-w`` per layer for weights, ``2**-a`` for activations).  Products and
their sums are then integers below ``2**53``, which float64 represents
exactly, so *any* summation order gives the same result.  Convolutions run in
float64 on the CPU (oneDNN has no float64 kernels, so no
Winograd or other transformed algorithm is used) over these integers; rescaling between layers
is a division by a power of two followed by ``floor`` — exact as well.  The
result is the same on every machine, for any thread count or batch size.

Supported layers: ``Conv2d``, ``ConvTranspose2d`` (no groups or dilation),
``ReLU``, ``LeakyReLU``, ``PixelShuffle`` (a permutation, exact by nature),
``Identity``, and ``Sequential`` of those.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_WEIGHT_MAG_BITS = 15  # |w_int| < 2**15
_ACT_MAG_BITS = 22  # |a_int| < 2**22 (saturated)
_MAX_PRODUCT_BITS = 52  # keep every partial sum below 2**52 < 2**53
_SLOPE_BITS = 16


def _flatten(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for sub in module for m in _flatten(sub)]
    return [module]


def supports(module: nn.Module) -> bool:
    """Whether :class:`FixedPointNet` can evaluate ``module`` exactly."""
    for m in _flatten(module):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros":
                return False
        elif not isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.PixelShuffle, nn.Identity)):
            return False
    return True


class FixedPointNet:
    """A frozen, exact, CPU fixed-point copy of a float network.

    Args:
        module: the float network (not modified; its current weights are copied).
        act_bits: fractional bits of activations (and of the output).

    Call it with integer-valued input (e.g. decoded symbols); it returns the
    output as *integers* ``round(out * 2**act_bits)`` in a float64 CPU tensor.
    """

    def __init__(self, module: nn.Module, act_bits: int = 10) -> None:
        if not supports(module):
            raise ValueError(f"{type(module).__name__} has layers that cannot run in exact fixed point")
        self.act_bits = int(act_bits)
        self.layers: list[tuple] = []
        for m in _flatten(module):
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                w = m.weight.detach().to("cpu", torch.float64)
                peak = float(w.abs().max()) if w.numel() else 0.0
                wbits = _WEIGHT_MAG_BITS - 1 - (math.frexp(peak)[1] - 1 if peak > 0 else 0)  # floor(log2), exact
                wbits = max(0, min(wbits, 24))
                fan_in = w.shape[1] * w.shape[2] * w.shape[3] if isinstance(m, nn.Conv2d) else w.shape[0] * w.shape[2] * w.shape[3]
                if (_WEIGHT_MAG_BITS + _ACT_MAG_BITS + math.ceil(math.log2(fan_in + 1))) > _MAX_PRODUCT_BITS:
                    raise ValueError(f"layer with fan-in {fan_in} is too wide for exact fixed point")
                w_int = torch.round(w * 2.0**wbits)
                b_int = None
                if m.bias is not None:
                    b_int = torch.round(m.bias.detach().to("cpu", torch.float64) * 2.0 ** (wbits + self.act_bits))
                kind = "conv" if isinstance(m, nn.Conv2d) else "deconv"
                extra = (m.stride, m.padding, getattr(m, "output_padding", (0, 0)))
                self.layers.append((kind, w_int, b_int, wbits, extra))
            elif isinstance(m, nn.LeakyReLU):
                self.layers.append(("leaky", round(m.negative_slope * 2**_SLOPE_BITS)))
            elif isinstance(m, nn.ReLU):
                self.layers.append(("relu",))
            elif isinstance(m, nn.PixelShuffle):
                self.layers.append(("shuffle", m.upscale_factor))

    @torch.no_grad()
    def __call__(self, x_int: Tensor) -> Tensor:
        """``x_int``: integer-valued input (any float dtype/device), ``(B, C, H, W)``."""
        x = x_int.detach().to("cpu", torch.float64)
        if not torch.equal(x, torch.round(x)):
            raise ValueError("fixed-point input must be integer-valued")
        limit = 2.0**_ACT_MAG_BITS - 1
        x = (x * 2.0**self.act_bits).clamp(-limit, limit)
        for layer in self.layers:
            kind = layer[0]
            if kind in ("conv", "deconv"):
                _, w, b, wbits, (stride, padding, out_pad) = layer
                if kind == "conv":
                    acc = F.conv2d(x, w, b, stride=stride, padding=padding)
                else:
                    acc = F.conv_transpose2d(x, w, b, stride=stride, padding=padding, output_padding=out_pad)
                x = torch.floor(acc * 2.0**-wbits + 0.5).clamp(-limit, limit)
            elif kind == "leaky":
                x = torch.where(x < 0, torch.floor(x * layer[1] * 2.0**-_SLOPE_BITS), x)
            elif kind == "relu":
                x = x.clamp_min(0)
            elif kind == "shuffle":
                x = F.pixel_shuffle(x, layer[1])
        return x
