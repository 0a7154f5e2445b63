"""The package's shipped weights: within the size budget, each with the metadata
that says how it was trained and what it measured."""

from __future__ import annotations

from importlib import resources

import pytest

from icm.models._registry import read_metadata

BUDGET = 40_000_000  # bytes, every shipped file together


def _files():
    return sorted(p for p in resources.files("icm.weights").iterdir() if p.name.endswith(".safetensors"))


def test_shipped_weights_fit_the_budget():
    files = _files()
    assert files, "no shipped weights found"
    total = sum(p.stat().st_size for p in files)
    assert total < BUDGET, f"{total / 1e6:.1f} MB of weights, budget {BUDGET / 1e6:.0f} MB"


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_every_file_says_how_it_was_trained(path):
    meta = read_metadata(path.read_bytes())
    assert meta.get("recipe") and int(meta.get("steps", 0)) > 0, path.name
    assert any(k.startswith("measured") for k in meta), sorted(meta)


def test_dicm_lite0_qualities_trade_rate_for_agreement():
    """Higher quality numbers code smaller files (whole-file bpp on the photo-crops)."""
    rows = []
    for p in _files():
        if p.name.startswith("dicm-lite0-q"):
            m = read_metadata(p.read_bytes())
            rows.append((m["quality"], m["measured_on_photo_crops"]["bpp_mean"],
                         m["measured_on_photo_crops"]["top1_agreement_from_bitstream"]))
    assert len(rows) >= 3
    rows.sort()
    bpps = [r[1] for r in rows]
    assert all(a > b for a, b in zip(bpps, bpps[1:])), rows
    assert all(0.0 < r[2] <= 1.0 for r in rows)
