"""ImageNet-1k class names and WordNet ids, from timm's bundled tables (offline), in index order."""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=1)
def info():
    """timm's ``ImageNetInfo`` (read from files inside timm; never downloads)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from timm.data import ImageNetInfo

    return ImageNetInfo()


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """Human-readable names of the 1000 classes, index order."""
    return tuple(info().index_to_description(i) for i in range(1000))


def wnids() -> list[str]:
    """WordNet ids (``n01440764`` …) of the 1000 classes, index order."""
    return list(info().label_names())
