"""The one RGB ↔ Y'CbCr path of the classical anchors.

Matrix: **BT.601, full range** (H.273 ``matrix_coefficients`` 6, i.e.
SMPTE 170M, with ``video_full_range_flag`` 1; Kr = 0.299, Kb = 0.114).  It
is the matrix JPEG (JFIF) uses and the one libheif (HEVC/HEIF) and libavif
(AVIF) write into their ``nclx`` colour boxes by default, so the anchor that
takes planar input from us (VVenC) codes the same Y'CbCr as the anchors whose
libraries convert internally.  The VVC files are tagged with the same matrix
(and BT.709 primaries, sRGB transfer) so that any decoder shows them right.

Data flow for a 4:2:0 anchor::

    RGB uint8 ─ rgb_to_ycbcr ─▶ Y'CbCr float ─ pad to even, 2×2 mean of chroma ─▶
    quantise to n bits ─▶ codec ─▶ dequantise ─ bilinear chroma upsampling,
    crop ─▶ ycbcr_to_rgb ─▶ RGB uint8

Chroma samples are centre-sited (the 2×2 mean puts them between the four
luma samples they average, H.273 ``chroma_sample_loc_type`` 1) and the
upsampler interpolates from the same positions.  Quantisation follows H.273
full range: ``Y = round((2^n − 1)·E'Y)``, ``C = round((2^n − 1)·E'C + 2^(n−1))``.
"""

from __future__ import annotations

import numpy as np

KR, KB = 0.299, 0.114
KG = 1.0 - KR - KB
MATRIX = "BT.601 full range (H.273 matrix_coefficients 6, video_full_range_flag 1)"

# Rows: Y', Cb, Cr from R', G', B' in [0, 1]; Cb, Cr land in [-0.5, 0.5].
_RGB_TO_YCC = np.array([
    [KR, KG, KB],
    [-0.5 * KR / (1 - KB), -0.5 * KG / (1 - KB), 0.5],
    [0.5, -0.5 * KG / (1 - KR), -0.5 * KB / (1 - KR)],
])
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return rgb


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """``uint8`` (H, W, 3) RGB → ``float64`` (H, W, 3) Y'CbCr; Y' in [0, 1], Cb, Cr in [−0.5, 0.5]."""
    rgb = _check_rgb(rgb)
    return (rgb.astype(np.float64) / 255.0) @ _RGB_TO_YCC.T


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """``float`` (H, W, 3) Y'CbCr (ranges as :func:`rgb_to_ycbcr`) → ``uint8`` RGB, rounded and clipped."""
    rgb = np.asarray(ycc, dtype=np.float64) @ _YCC_TO_RGB.T
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _quantise_plane(plane: np.ndarray, bits: int, chroma: bool) -> np.ndarray:
    scale = (1 << bits) - 1
    q = np.rint(plane * scale) + ((1 << (bits - 1)) if chroma else 0)
    return np.clip(q, 0, scale).astype(np.uint16)


def quantise(ycc: np.ndarray, bits: int) -> np.ndarray:
    """Float Y'CbCr (..., 3) → full-range ``uint16`` codes of ``bits`` bits (H.273)."""
    return np.stack([_quantise_plane(ycc[..., i], bits, i > 0) for i in range(3)], axis=-1)


def dequantise(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (..., 3) → float Y'CbCr; the inverse of :func:`quantise` up to rounding.  Accepts
    non-integer codes (upsampled chroma) so that nothing is rounded twice."""
    scale, mid = (1 << bits) - 1, 1 << (bits - 1)
    ycc = np.asarray(codes, dtype=np.float64).copy()
    ycc[..., 1:] -= mid
    return ycc / scale


def _pad_even(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    pad = [(0, h % 2), (0, w % 2)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad, mode="edge") if h % 2 or w % 2 else a


def downsample_420(plane: np.ndarray) -> np.ndarray:
    """(H, W) float plane with even H, W → (H/2, W/2): the mean of each 2×2 block (centre-sited)."""
    h, w = plane.shape
    return plane.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _upsample_axis(a: np.ndarray, axis: int) -> np.ndarray:
    # Chroma sample k sits at luma position 2k + 0.5: output sample i reads
    # position (i − 0.5) / 2 in chroma units, i.e. weights 3/4 and 1/4 of the
    # two nearest chroma samples, edges clamped.
    a = np.moveaxis(a, axis, 0)
    prev = np.concatenate([a[:1], a[:-1]])
    nxt = np.concatenate([a[1:], a[-1:]])
    out = np.empty((2 * a.shape[0],) + a.shape[1:], dtype=np.float64)
    out[0::2] = 0.75 * a + 0.25 * prev
    out[1::2] = 0.75 * a + 0.25 * nxt
    return np.moveaxis(out, 0, axis)


def upsample_420(plane: np.ndarray) -> np.ndarray:
    """(h, w) chroma plane → (2h, 2w), bilinear from centre-sited samples."""
    return _upsample_axis(_upsample_axis(np.asarray(plane, dtype=np.float64), 0), 1)


def rgb_to_yuv420(rgb: np.ndarray, bits: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``uint8`` RGB (H, W, 3) → planar 4:2:0 ``uint16`` codes (Y, Cb, Cr).

    Odd sizes are padded to even by repeating the last row / column (4:2:0
    pictures have even sides); Y is (H', W'), Cb and Cr (H'/2, W'/2), with
    H', W' the padded sizes.  Undo with :func:`yuv420_to_rgb`.
    """
    ycc = _pad_even(rgb_to_ycbcr(rgb))
    return (_quantise_plane(ycc[..., 0], bits, False),
            _quantise_plane(downsample_420(ycc[..., 1]), bits, True),
            _quantise_plane(downsample_420(ycc[..., 2]), bits, True))


def yuv420_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, bits: int = 10,
                  size: tuple[int, int] | None = None) -> np.ndarray:
    """Planar 4:2:0 codes → ``uint8`` RGB (H, W, 3), cropped to ``size`` = (H, W) when given."""
    hh, ww = y.shape
    if cb.shape != (hh // 2, ww // 2) or cr.shape != cb.shape or hh % 2 or ww % 2:
        raise ValueError(f"inconsistent 4:2:0 planes: Y {y.shape}, Cb {cb.shape}, Cr {cr.shape}")
    codes = np.stack([y.astype(np.float64), upsample_420(cb), upsample_420(cr)], axis=-1)
    rgb = ycbcr_to_rgb(dequantise(codes, bits))
    if size is not None:
        h, w = size
        if h > hh or w > ww:
            raise ValueError(f"cannot crop a {hh}x{ww} picture to {h}x{w}")
        rgb = rgb[:h, :w]
    return np.ascontiguousarray(rgb)


def planes_to_bytes(planes: tuple[np.ndarray, ...]) -> bytes:
    """Planes of ``uint16`` codes → little-endian planar bytes (ffmpeg ``yuv420p10le``)."""
    return b"".join(np.ascontiguousarray(p, dtype="<u2").tobytes() for p in planes)


def bytes_to_yuv420(raw: bytes, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Little-endian planar 16-bit 4:2:0 bytes of an (even) ``height`` × ``width`` picture → (Y, Cb, Cr)."""
    ny, nc = height * width, (height // 2) * (width // 2)
    a = np.frombuffer(raw, dtype="<u2")
    if a.size != ny + 2 * nc:
        raise ValueError(f"expected {2 * (ny + 2 * nc)} bytes of 4:2:0 samples for {height}x{width}, got {len(raw)}")
    y = a[:ny].reshape(height, width)
    cb = a[ny : ny + nc].reshape(height // 2, width // 2)
    cr = a[ny + nc :].reshape(height // 2, width // 2)
    return y, cb, cr
