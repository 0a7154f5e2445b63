"""The package's shipped weights: within the size budget, each with the metadata
that says how it was trained and what it measured."""

from __future__ import annotations

from importlib import resources

import pytest

import icm
from icm.models._registry import read_metadata

from conftest import shipped_qualities

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


def _trade_off(model) -> dict:
    """The rate–distortion weights a model declares (models/*.py)."""
    return ({"lambda": model.lmbda} if hasattr(model, "lmbda")
            else {"alpha": model.alpha, "beta": model.beta})


@pytest.mark.parametrize("name,quality", [(n, q) for n in ("hyperprior", "bai2022-fmnist", "dicm-lite0")
                                          for q in shipped_qualities(n)])
def test_declared_trade_off_is_the_one_each_weight_file_was_trained_at(name, quality):
    """What a quality declares (used by --refine and by training) matches the
    weight file's own metadata, so a drift like an old λ cannot come back."""
    from icm.models._registry import read_weights

    model = icm.create_model(name, quality=quality, pretrained=False)
    _, meta = read_weights(name, quality)
    declared = _trade_off(model)
    assert declared and {k: meta[k] for k in declared} == pytest.approx(declared), (name, quality, meta)
