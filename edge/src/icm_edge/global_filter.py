"""The global FFT filter of HorNet's gnConv (:class:`icm.layers.gnconv.GlobalLocalFilter`)
in NumPy alone.

ONNX has no convenient real FFT, so the exported ``g_a`` of ``dicm-lite0`` is cut
in two around this filter and a sender runs it in NumPy between the graphs
(``icm export-onnx``; the ``icm-edge`` package carries a verbatim copy of this
file).  Computed in float64 and rounded once to float32: within float32's
last bits of PyTorch's own float32 FFT (tests/test_export_onnx.py).
"""

from __future__ import annotations

import numpy as np


def global_filter(b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The global FFT filter of :class:`icm.layers.gnconv.GlobalLocalFilter` on ``b``
    ``(B, C, H, W)``: ``irfft2(rfft2(b) · w)`` (orthonormal), in float64; the weight
    ``(C, h, w, 2)`` is resampled bilinearly (corners aligned) where the spectrum's size differs."""
    h, w = b.shape[-2:]
    spec = np.fft.rfft2(b.astype(np.float64), norm="ortho")
    wt = weight.astype(np.float64)
    if wt.shape[1:3] != spec.shape[-2:]:
        wt = _resize_bilinear_corners(wt, spec.shape[-2:])
    out = np.fft.irfft2(spec * (wt[..., 0] + 1j * wt[..., 1]), s=(h, w), norm="ortho")
    return out.astype(np.float32)


def _resize_bilinear_corners(wt: np.ndarray, size) -> np.ndarray:
    """``(C, h, w, 2)`` resampled over ``h, w`` to ``size``: bilinear, corners aligned."""
    for axis, n in ((1, size[0]), (2, size[1])):
        m = wt.shape[axis]
        pos = np.arange(n) * ((m - 1) / (n - 1)) if n > 1 else np.zeros(1)
        lo = np.minimum(np.floor(pos).astype(np.int64), m - 1)
        hi = np.minimum(lo + 1, m - 1)
        t = (pos - lo).reshape([-1 if i == axis else 1 for i in range(wt.ndim)])
        wt = np.take(wt, lo, axis=axis) * (1 - t) + np.take(wt, hi, axis=axis) * t
    return wt
