"""icm-edge: the sender of ``icm`` without PyTorch.

Writes the same ``.icm`` files as ``icm compress`` with ONNX graphs, NumPy,
``constriction`` and Pillow; any ``icm`` decodes and analyses them.

>>> import icm_edge
>>> data = icm_edge.encode("photo.png", "dicm-lite0", 3)   # bytes of an .icm file
"""

from __future__ import annotations

import os

import numpy as np

from .errors import BitstreamError, IcmError

__version__ = "0.1.0"
__all__ = ["BitstreamError", "IcmError", "__version__", "encode", "list_models"]


def encode(image, model: str = "dicm-lite0", quality: int | None = None, notes: list | None = None) -> bytes:
    """The ``.icm`` bytes of one image.

    Args:
        image: a path, or ``uint8`` RGB ``(H, W, 3)``.
        model: a shipped model (:func:`list_models`).
        quality: one of its shipped qualities (default: the highest).
        notes: where reading a path appends what the conversion to 8-bit RGB changed
            (an alpha channel dropped, 16-bit samples scaled, …).

    Raises:
        IcmError: an unknown model or quality, or an image that cannot be read or coded.
    """
    from .sender import sender

    s = sender(model, quality)
    if isinstance(image, (str, os.PathLike)):
        from .images import read_rgb

        image = read_rgb(image, notes)
    return s.encode(np.asarray(image))


def list_models() -> dict[str, list[int]]:
    """``{model: [shipped qualities]}``."""
    from .sender import available

    return available()
