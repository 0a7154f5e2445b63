"""Distinct scenes from a video: one frame per interval, near-duplicates dropped."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator

import numpy as np

from .dedup import dhash, hamming

EVERY_S = 1.0
"""Seconds between sampled frames."""
MIN_DISTANCE = 6
"""A sampled frame whose perceptual hash is this close (bits of 64) to the last kept one
shows the same scene and is dropped."""


def sample_frames(frames: Iterable[np.ndarray], fps: float, every_s: float = EVERY_S,
                  min_distance: int = MIN_DISTANCE) -> Iterator[tuple[float, np.ndarray]]:
    """``(time in seconds, frame)`` for the frames at ``0, every_s, 2·every_s, …``, except
    those within ``min_distance`` hash bits of the last frame kept."""
    if not fps > 0 or not every_s > 0:
        raise ValueError(f"fps and every_s must be > 0, not {fps} and {every_s}")
    next_t, last = 0.0, None
    for i, frame in enumerate(frames):
        t = i / fps
        if t + 1e-9 < next_t:
            continue
        next_t += every_s
        h = dhash(frame)
        if last is not None and hamming(h, last) < min_distance:
            continue
        last = h
        yield t, frame


def sample_video(blob: bytes, every_s: float = EVERY_S) -> Iterator[tuple[float, object]]:
    """:func:`sample_frames` of an encoded video (any format the ffmpeg of
    ``imageio-ffmpeg`` reads), as PIL images."""
    import imageio_ffmpeg
    from PIL import Image

    fd, path = tempfile.mkstemp(suffix=".video")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        reader = imageio_ffmpeg.read_frames(path)
        meta = next(reader)
        w, h = meta["size"]

        def frames():
            for raw in reader:
                yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)

        for t, frame in sample_frames(frames(), float(meta["fps"]), every_s):
            yield t, Image.fromarray(frame.copy())
        reader.close()
    finally:
        os.unlink(path)
