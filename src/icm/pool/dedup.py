"""Near-duplicate photos: a 64-bit difference hash and groups of photos within a few
bits of each other (the same landmark at two sizes, neighbouring video frames)."""

from __future__ import annotations

import numpy as np

SAME = 10
"""Photos whose hashes differ in fewer than this many of 64 bits are candidates for one group."""
ALIKE = 0.9
"""…and are one group where their grey 16×16 thumbnails also correlate at least this much
(the hash alone links unrelated pictures with plain backgrounds)."""


def dhash(img) -> int:
    """A difference hash of a picture (PIL image or ``(H, W[, 3])`` array): the signs
    of horizontal gradients of its 9×8 grey thumbnail, as a 64-bit integer."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img, dtype=np.uint8))
    grey = np.asarray(img.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).ravel()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def thumb(img) -> np.ndarray:
    """A picture's 16×16 grey thumbnail, ``uint8`` (256 values)."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img, dtype=np.uint8))
    return np.asarray(img.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.uint8)


def alike(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two thumbnails (1: the same up to brightness and contrast)."""
    x = a.astype(np.float64).ravel() - a.mean()
    y = b.astype(np.float64).ravel() - b.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float(np.array_equal(a, b))


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def groups(hashes: list[int], thumbs: list[np.ndarray] | None = None, same: int = SAME,
           min_alike: float = ALIKE) -> list[int]:
    """A group id for every hash: hashes closer than ``same`` bits (whose ``thumbs``, where
    given, are :func:`alike` by at least ``min_alike``) are linked, and a group is
    everything linked together (its id: the index of its first member)."""
    parent = list(range(len(hashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(hashes)):
        for j in range(i):
            if hamming(hashes[i], hashes[j]) < same and (
                    thumbs is None or alike(thumbs[i], thumbs[j]) >= min_alike):
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(hashes))]
