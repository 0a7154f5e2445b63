"""The exact fixed-point network of :mod:`icm.layers.fixed_point` in NumPy alone.

A sender without PyTorch (the ``icm-edge`` package, which carries a verbatim
copy of this file) has to pick every symbol's coding table exactly as the
decoder will: the table index comes out of the hyper-synthesis run in fixed
point.  This module evaluates the same integer network with the same float64
operations — every product and partial sum is an integer below ``2**53``, so
a BLAS matrix product gives the exact sum in whatever order it adds — and
returns the same integers as :class:`icm.layers.fixed_point.FixedPointNet`
(tests/test_export_onnx.py checks it on random networks and every shipped
weight).

The network is described by plain arrays (:meth:`FixedPointNet.to_arrays`),
written by ``icm export-onnx`` beside the ONNX graphs::

    layer i, kind "conv" / "deconv": w (int16), b (int64, or absent), wbits,
                                      stride, padding, output_padding
    layer i, kind "leaky":            slope (integer, in units of 2**-16)
    layer i, kind "relu"
    layer i, kind "shuffle":          upscale factor

Only NumPy is imported here.
"""

from __future__ import annotations

import numpy as np

_ACT_MAG_BITS = 22  # as icm.layers.fixed_point: |a_int| < 2**22 (saturated)
_SLOPE_BITS = 16
_KINDS = ("conv", "deconv", "leaky", "relu", "shuffle")


def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple, padding: tuple) -> np.ndarray:
    """``F.conv2d`` of integer-valued float64 arrays (no groups, no dilation), exact."""
    ph, pw = padding
    sh, sw = stride
    cout, cin, kh, kw = w.shape
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    bsz, _, h, wd = x.shape
    ho, wo = (h - kh) // sh + 1, (wd - kw) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :ho, :wo]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(bsz, ho * wo, cin * kh * kw)
    out = cols @ w.reshape(cout, -1).T  # (B, ho·wo, cout): integer sums below 2**53, exact in any order
    if b is not None:
        out = out + b
    return np.ascontiguousarray(out.transpose(0, 2, 1).reshape(bsz, cout, ho, wo))


def _conv_transpose2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple, padding: tuple,
                      output_padding: tuple) -> np.ndarray:
    """``F.conv_transpose2d`` (no groups, no dilation), exact: one product per kernel tap,
    then the taps scattered onto the strided output grid."""
    cin, cout, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    oph, opw = output_padding
    bsz, _, h, wd = x.shape
    # (B, cout·kh·kw, h·w): every input position's contribution to each tap
    taps = w.reshape(cin, cout * kh * kw).T @ x.reshape(bsz, cin, h * wd)
    taps = taps.reshape(bsz, cout, kh, kw, h, wd)
    full = np.zeros((bsz, cout, (h - 1) * sh + kh + oph, (wd - 1) * sw + kw + opw))
    for i in range(kh):
        for j in range(kw):
            full[:, :, i : i + (h - 1) * sh + 1 : sh, j : j + (wd - 1) * sw + 1 : sw] += taps[:, :, i, j]
    ho = (h - 1) * sh - 2 * ph + kh + oph
    wo = (wd - 1) * sw - 2 * pw + kw + opw
    out = full[:, :, ph : ph + ho, pw : pw + wo]
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out)


def _pixel_shuffle(x: np.ndarray, r: int) -> np.ndarray:
    bsz, c, h, w = x.shape
    x = x.reshape(bsz, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(x.reshape(bsz, c // (r * r), h * r, w * r))


class FixedPointNet:
    """An exact fixed-point network from integer layers.

    Args:
        layers: tuples as :class:`icm.layers.fixed_point.FixedPointNet` keeps them —
            ``("conv" | "deconv", w_int, b_int | None, wbits, (stride, padding, output_padding))``,
            ``("leaky", slope_int)``, ``("relu",)``, ``("shuffle", factor)`` — with NumPy
            arrays (or anything :func:`numpy.asarray` takes) for the weights.
        act_bits: fractional bits of activations and of the output.

    Call it with integer-valued input ``(B, C, H, W)``; it returns
    ``round(out * 2**act_bits)`` as integers in a float64 array.
    """

    def __init__(self, layers: list[tuple], act_bits: int = 10) -> None:
        self.act_bits = int(act_bits)
        self.layers: list[tuple] = []
        for layer in layers:
            kind = layer[0]
            if kind in ("conv", "deconv"):
                _, w, b, wbits, (stride, padding, out_pad) = layer
                w = np.asarray(w, dtype=np.float64)
                if w.ndim != 4:
                    raise ValueError(f"a {kind} layer needs a 4-d weight, got shape {w.shape}")
                b = None if b is None else np.asarray(b, dtype=np.float64).reshape(-1)
                self.layers.append((kind, w, b, int(wbits), (_pair(stride), _pair(padding), _pair(out_pad))))
            elif kind in ("leaky", "shuffle"):
                self.layers.append((kind, int(layer[1])))
            elif kind == "relu":
                self.layers.append(("relu",))
            else:
                raise ValueError(f"unknown fixed-point layer kind {kind!r}")

    @classmethod
    def from_torch(cls, net) -> FixedPointNet:
        """The same network as a :class:`icm.layers.fixed_point.FixedPointNet` (which holds
        torch tensors): its integers, as NumPy arrays."""
        layers = []
        for layer in net.layers:
            if layer[0] in ("conv", "deconv"):
                kind, w, b, wbits, extra = layer
                layers.append((kind, w.numpy(), None if b is None else b.numpy(), wbits, extra))
            else:
                layers.append(layer)
        return cls(layers, net.act_bits)

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The network as named arrays (for ``numpy.savez``): weights as int16 (every
        ``|w| < 2**15``), biases as int64, the rest as small int64 vectors."""
        out = {f"{prefix}act_bits": np.array(self.act_bits, dtype=np.int64),
               f"{prefix}num_layers": np.array(len(self.layers), dtype=np.int64)}
        for i, layer in enumerate(self.layers):
            p = f"{prefix}{i}."
            out[p + "kind"] = np.array(_KINDS.index(layer[0]), dtype=np.int64)
            if layer[0] in ("conv", "deconv"):
                _, w, b, wbits, (stride, padding, out_pad) = layer
                if np.abs(w).max(initial=0) >= 2**15:
                    raise ValueError("fixed-point weights must fit 16 bits")
                out[p + "w"] = w.astype(np.int16)
                if b is not None:
                    out[p + "b"] = b.astype(np.int64)
                out[p + "geometry"] = np.array([wbits, *stride, *padding, *out_pad], dtype=np.int64)
            elif layer[0] in ("leaky", "shuffle"):
                out[p + "value"] = np.array(layer[1], dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> FixedPointNet:
        """Inverse of :meth:`to_arrays` (``arrays``: a mapping such as ``numpy.load``'s)."""
        layers = []
        for i in range(int(arrays[f"{prefix}num_layers"])):
            p = f"{prefix}{i}."
            kind = _KINDS[int(arrays[p + "kind"])]
            if kind in ("conv", "deconv"):
                g = [int(v) for v in arrays[p + "geometry"]]
                b = arrays.get(p + "b")
                layers.append((kind, arrays[p + "w"], b, g[0], ((g[1], g[2]), (g[3], g[4]), (g[5], g[6]))))
            elif kind in ("leaky", "shuffle"):
                layers.append((kind, int(arrays[p + "value"])))
            else:
                layers.append((kind,))
        return cls(layers, int(arrays[f"{prefix}act_bits"]))

    def __call__(self, x_int) -> np.ndarray:
        """``x_int``: integer-valued input ``(B, C, H, W)`` (any numeric dtype)."""
        x = np.asarray(x_int, dtype=np.float64)
        if x.ndim != 4:
            raise ValueError(f"fixed-point input must be (B, C, H, W), got shape {x.shape}")
        if not np.array_equal(x, np.round(x)):
            raise ValueError("fixed-point input must be integer-valued")
        limit = 2.0**_ACT_MAG_BITS - 1
        x = np.clip(x * 2.0**self.act_bits, -limit, limit)
        for layer in self.layers:
            kind = layer[0]
            if kind in ("conv", "deconv"):
                _, w, b, wbits, (stride, padding, out_pad) = layer
                if kind == "conv":
                    acc = _conv2d(x, w, b, stride, padding)
                else:
                    acc = _conv_transpose2d(x, w, b, stride, padding, out_pad)
                x = np.clip(np.floor(acc * 2.0**-wbits + 0.5), -limit, limit)
            elif kind == "leaky":
                x = np.where(x < 0, np.floor(x * layer[1] * 2.0**-_SLOPE_BITS), x)
            elif kind == "relu":
                x = np.maximum(x, 0.0)
            elif kind == "shuffle":
                x = _pixel_shuffle(x, layer[1])
        return x


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))
