"""Reading an image file as the sender codes it: 8-bit RGB, with a note for what changed.

Standard library, NumPy and Pillow only: :mod:`icm.codec` and the ``icm-edge``
sender (which carries a verbatim copy of this file) read images with it, so
both say the same about an alpha channel, 16-bit samples or a greyscale picture.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import IcmError


def read_rgb(path: str | os.PathLike, notes: list | None = None) -> np.ndarray:
    """Read an image file as ``uint8`` RGB ``(H, W, 3)``; :class:`IcmError` if it cannot be read.

    16-bit images are scaled to 8 bits (not clipped).  What the conversion
    changes — an alpha channel dropped, frames after the first ignored,
    greyscale or palette expanded to RGB — is appended to ``notes`` (one short
    phrase each), so a caller can say so.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return _to_rgb8(im, notes if notes is not None else [])
    except FileNotFoundError:
        raise IcmError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise IcmError(f"{path} is a directory, not an image") from None
    except Image.DecompressionBombError:
        raise IcmError(f"{path} declares more pixels than Pillow's decompression-bomb limit") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise IcmError(f"cannot read {path} as an image ({e.__class__.__name__})") from None


def _to_rgb8(im, notes: list) -> np.ndarray:
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"coded its first frame only (of {frames})")
    mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        notes.append("alpha channel dropped")
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode == "F":
            a = a * 255.0 if a.max(initial=0.0) <= 1.0 else a
        elif mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0  # 0…65535 onto 0…255
        grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        notes.append("16-bit samples scaled to 8 bits" if mode != "F" else "float samples scaled to 8 bits")
        notes.append("greyscale coded as RGB")
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("1", "L", "LA", "P") and _palette_is_grey(im):
        notes.append("greyscale coded as RGB")
    elif mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return np.array(im.convert("RGB"))  # writable, C-contiguous


def _palette_is_grey(im) -> bool:
    if im.mode != "P":
        return True
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
