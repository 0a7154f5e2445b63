"""The offline data pool: sources pinned in :mod:`icm.pool.sources`, fetched by
``icm data pull`` into a cache folder (:func:`data_dir`), and read back here.

* :func:`pool_photos` — the photo sources (``pool:<file>``) of the pool, or of some of
  its sources, for recipes (``set:pool``, ``set:gcompris``, …) and photo-crop datasets;
* :func:`locate` — a Debian data path (``/usr/share/…``) where it is installed
  system-wide, or else where ``icm data pull`` unpacked it;
* :func:`manifest` — every pool picture with its source, licence, credit, size,
  pixel checksum and near-duplicate group.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import IcmError


def data_dir() -> Path:
    """``ICM_DATA_DIR``, else ``$XDG_CACHE_HOME/icm/data`` (``~/.cache/icm/data``)."""
    env = os.environ.get("ICM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "icm" / "data"


def locate(path: str) -> str:
    """``path`` (absolute, under ``/usr/share``) if it exists; else the same path inside a
    package that ``icm data pull`` unpacked into :func:`data_dir`; else ``path`` unchanged
    (so the caller's "not installed" message names the usual place)."""
    if os.path.exists(path):
        return path
    root = data_dir() / "debian"
    if root.is_dir():
        for pkg in sorted(root.iterdir()):
            candidate = pkg / path.lstrip("/")
            if (pkg / ".done").is_file() and candidate.exists():
                return str(candidate)
    return path


def manifest(root: Path | None = None) -> list[dict]:
    """The pool's manifest (empty where nothing was pulled)."""
    m = (root or data_dir()) / "pool" / "manifest.json"
    if not m.is_file():
        return []
    try:
        return json.loads(m.read_text())
    except (OSError, ValueError) as e:
        raise IcmError(f"{m} is unreadable ({e}); run icm data pull again") from None


def pool_photos(sources: tuple[str, ...] | None = None, root: Path | None = None) -> tuple[str, ...]:
    """``pool:<file>`` for every used picture of the pool (or of the named sources), in
    manifest order.

    Raises:
        IcmError: a named source (or, with none named, the whole pool) has not been
            pulled: the message names the command that pulls it.
    """
    from .sources import POOL_SOURCES, source

    names = tuple(sources) if sources else POOL_SOURCES
    for n in names:
        if not source(n).pool:
            raise IcmError(f"{n} is not a pool source (pool sources: {', '.join(POOL_SOURCES)})")
    rows = manifest(root)
    have = {r["source"] for r in rows}
    missing = [n for n in names if n not in have]
    if sources and missing or not rows:
        raise IcmError(f"the photo pool's {', '.join(missing or names)} {'is' if len(missing) == 1 else 'are'} "
                       f"not pulled here ({(root or data_dir())}): icm data pull {' '.join(missing or ['pool'])}")
    return tuple(f"pool:{r['file']}" for r in rows if r["use"] and r["source"] in names)


def pool_share(photos: tuple[str, ...], fraction: float) -> tuple[str, ...]:
    """A fixed share of ``photos`` (``pool:<file>`` names): ordered by a hash of each name,
    the first ``round(fraction · n)`` (at least one), back in the given order.  Shares are
    nested (a quarter lies inside the half) and the same on every machine."""
    import hashlib

    if not 0 < fraction <= 1:
        raise IcmError(f"a share of the pool must be in (0, 1], not {fraction}")
    k = max(1, round(fraction * len(photos)))
    ranked = sorted(photos, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    keep = set(ranked[:k])
    return tuple(s for s in photos if s in keep)


def pool_path(name: str, root: Path | None = None) -> Path:
    """The file of a ``pool:<file>`` source."""
    p = (root or data_dir()) / "pool" / name
    if ".." in Path(name).parts or Path(name).is_absolute():  # root / "/etc/x" is "/etc/x"
        raise IcmError(f"pool:{name} leaves the pool")
    return p
