"""Recursive gated convolution (gnConv) and the HorNet block around it
(Rao, Zhao, Tang, Zhou, Lim, Lu, "HorNet: Efficient High-Order Spatial
Interactions with Recursive Gated Convolutions", NeurIPS 2022).

gnConv of order ``n`` on ``C`` channels splits the channels into widths
``C/2^(n-1), …, C/2, C``; one depth-wise (or global-filter) convolution makes
``n`` gates, and each order multiplies the running product by its gate after a
1×1 widening::

    x ─ 1×1 (C → C0 + ΣCk) ─┬─ p0 (C0) ─────────────┐
                            └─ dw 7×7 ─ g0 … g(n-1)  │
    p1 = g0 · p0 ;  p(k+1) = gk · 1×1(pk)   (k = 1 … n-1)
    out = 1×1(pn)

The optional global filter (``global_filter=True``) replaces the depth-wise
convolution on half of the channels by a learned frequency-domain filter
(FFT over the whole map; the weight is resampled to the input's size), which
gives the last encoder stages an image-wide receptive field.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d  # channels-last LayerNorm of (B, C, H, W) maps
from torch import Tensor, nn


class GlobalLocalFilter(nn.Module):
    """Half the channels: depth-wise 3×3; the other half: a global FFT filter.

    Args:
        dim: channels (even).
        size: ``(h, w)`` the filter is stored at (the expected map size); other
            sizes resample it bilinearly.
    """

    def __init__(self, dim: int, size: tuple[int, int] = (14, 14)) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"GlobalLocalFilter needs an even channel count, got {dim}")
        h, w = size
        self.local = nn.Conv2d(dim // 2, dim // 2, 3, padding=1, groups=dim // 2, bias=False)
        self.weight = nn.Parameter(torch.randn(dim // 2, h, w // 2 + 1, 2) * 0.02)
        self.norm_in = LayerNorm2d(dim, eps=1e-6)
        self.norm_out = LayerNorm2d(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm_in(x)
        a, b = x.chunk(2, dim=1)
        a = self.local(a)
        h, w = b.shape[-2:]
        with torch.autocast(b.device.type, enabled=False):  # FFTs need float32
            spec = torch.fft.rfft2(b.float(), norm="ortho")
            weight = self.weight
            if weight.shape[1:3] != spec.shape[-2:]:
                weight = F.interpolate(weight.permute(3, 0, 1, 2), size=spec.shape[-2:], mode="bilinear",
                                       align_corners=True).permute(1, 2, 3, 0)
            b = torch.fft.irfft2(spec * torch.view_as_complex(weight.contiguous()), s=(h, w), norm="ortho")
        return self.norm_out(torch.cat([a, b.to(a.dtype)], dim=1))


class GnConv(nn.Module):
    """Recursive gated convolution of order ``order`` on ``dim`` channels.

    Args:
        dim: channels; divisible by ``2**(order-1)``.
        order: number of gated interactions (HorNet uses 2–5).
        kernel_size: of the depth-wise gate convolution (HorNet: 7).
        global_filter: gates from :class:`GlobalLocalFilter` instead.
        filter_size: stored size of the global filter.
        scale: multiplier on the gates (HorNet: 1/3).
    """

    def __init__(self, dim: int, order: int = 3, kernel_size: int = 7, global_filter: bool = False,
                 filter_size: tuple[int, int] = (14, 14), scale: float = 1.0 / 3.0) -> None:
        super().__init__()
        if order < 1 or dim % (2 ** (order - 1)):
            raise ValueError(f"gnConv of order {order} needs dim divisible by {2 ** (order - 1)}, got {dim}")
        self.dims = [dim // 2**i for i in reversed(range(order))]
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        gates = sum(self.dims)
        if global_filter:
            self.gate = GlobalLocalFilter(gates, filter_size)
        else:
            self.gate = nn.Conv2d(gates, gates, kernel_size, padding=kernel_size // 2, groups=gates)
        self.widen = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1))
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        p, g = self.proj_in(x).split([self.dims[0], sum(self.dims)], dim=1)
        gates = (self.gate(g) * self.scale).split(self.dims, dim=1)
        p = p * gates[0]
        for widen, gate in zip(self.widen, gates[1:]):
            p = widen(p) * gate
        return self.proj_out(p)


class HorBlock(nn.Module):
    """HorNet block: ``x + γ1·gnConv(LN(x))`` then ``x + γ2·MLP(LN(x))`` (channels first).

    Args:
        dim: channels.
        order, global_filter, filter_size: of the :class:`GnConv`.
        mlp_ratio: hidden width of the MLP.
        layer_scale: initial ``γ`` (HorNet: 1e-6).
    """

    def __init__(self, dim: int, order: int = 3, global_filter: bool = False, filter_size: tuple[int, int] = (14, 14),
                 mlp_ratio: float = 4.0, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.gnconv = GnConv(dim, order, global_filter=global_filter, filter_size=filter_size)
        self.norm2 = LayerNorm2d(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.gamma1 = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.gamma2 = nn.Parameter(torch.full((dim, 1, 1), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.gamma1 * self.gnconv(self.norm1(x))
        return x + self.gamma2 * self.mlp(self.norm2(x))
