"""COCO run-length encoding of binary masks, in numpy alone (no pycocotools).

``icm analyze --task segment --json`` prints instance masks as COCO compressed
RLE, and the core install (``pip install icm``) has no pycocotools, so the
format is written here; the output is byte for byte that of
``pycocotools.mask.encode`` (``tests/test_core_install.py`` compares them).

The format (pycocotools' ``maskApi.c``): the mask is read in column-major
(Fortran) order; ``counts`` are the lengths of alternating runs, starting with a
run of zeros (0 when the first pixel is set).  The compressed string codes each
count — from the fourth on, as the difference to the count two before it — in
little-endian groups of 5 bits, one character ``48 + group`` each, bit ``0x20``
set while more groups follow; the last group's bit ``0x10`` is the sign.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import IcmError


def run_lengths(mask: np.ndarray) -> list[int]:
    """Binary mask ``(H, W)`` → COCO's uncompressed ``counts`` (column-major runs, zeros first)."""
    flat = np.asarray(mask).ravel(order="F") != 0
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size])))
    counts = runs.tolist()
    return [0, *counts] if flat[0] else counts


def counts_to_string(counts: list[int]) -> str:
    """Uncompressed ``counts`` → COCO's compressed string (``rleToString`` of ``maskApi.c``)."""
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift, as for C's long
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def string_to_counts(s: str | bytes) -> list[int]:
    """COCO's compressed string → uncompressed ``counts`` (``rleFrString`` of ``maskApi.c``)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise IcmError("RLE counts string ends inside a number")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise IcmError(f"RLE counts string has a character {s[p]!r} outside the COCO alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x -= 1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise IcmError("RLE counts string decodes to a negative run length")
        counts.append(x)
    return counts


def mask_to_rle(mask: np.ndarray) -> dict:
    """Binary mask ``(H, W)`` (bool or ``{0,1}`` integers) → COCO compressed RLE.

    Returns:
        ``{"size": [H, W], "counts": str}``, JSON-able; ``counts`` equals
        ``pycocotools.mask.encode(np.asfortranarray(mask))["counts"].decode()``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    return {"size": [int(s) for s in mask.shape], "counts": counts_to_string(run_lengths(mask))}


def rle_to_mask(rle: Mapping) -> np.ndarray:
    """COCO RLE (``counts`` a str/bytes, compressed, or a list, uncompressed) → ``uint8 (H, W)`` in {0, 1}."""
    if "size" not in rle or "counts" not in rle:
        raise IcmError("an RLE needs 'size' and 'counts'")
    h, w = (int(s) for s in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (list, tuple)):
        counts = [int(c) for c in counts]
        if sum(counts) != h * w:
            raise IcmError(f"uncompressed RLE counts sum to {sum(counts)}, not {h}*{w}")
    else:
        counts = string_to_counts(counts)
        if sum(counts) != h * w:
            raise IcmError(f"RLE counts cover {sum(counts)} pixels, not {h}*{w}")
    values = np.arange(len(counts), dtype=np.uint8) & 1
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape((h, w), order="F"))
