"""The package's shipped weights: within the size budget, each with the metadata
that says how it was trained and what it measured."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

import icm
from icm.models._registry import read_metadata

from conftest import shipped_qualities

ROOT = Path(__file__).resolve().parents[1]

BUDGET = 64_000_000  # bytes, every shipped file together (the weights budget)


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


def _measured(meta: dict) -> tuple[float, float]:
    """``(rate, fidelity)`` a weight file measured on held-out data: whole-file bpp
    or bits per image, and PSNR, accuracy or top-1 agreement."""
    (m,) = [v for k, v in meta.items() if k.startswith("measured") and isinstance(v, dict)]  # not the flag measured_at_export
    rate = m.get("bpp_mean", m.get("bits_per_image_mean"))
    fidelity = m.get("top1_agreement_from_bitstream", m.get("accuracy_from_bitstream", m.get("psnr_mean_db")))
    return float(rate), float(fidelity)


@pytest.mark.parametrize("name", ["hyperprior", "bai2022-fmnist", "dicm-lite0", "dicm-lite0-s8", "dicm-lite0-s8-cutmix"])
def test_higher_quality_means_more_bits_and_more_fidelity(name):
    """One quality direction in every family: each shipped quality's held-out rate and
    fidelity (from its weight file) grow with the quality number, and the
    declared trade-off moves the same way (less weight on rate, or more on
    distortion)."""
    from icm.models._registry import read_weights

    qualities = shipped_qualities(name)
    assert len(qualities) >= 3
    rows = [_measured(read_weights(name, q)[1]) for q in qualities]
    rates, fidelity = [r for r, _ in rows], [f for _, f in rows]
    assert all(a < b for a, b in zip(rates, rates[1:])), (name, qualities, rates)
    assert all(a <= b for a, b in zip(fidelity, fidelity[1:])), (name, qualities, fidelity)
    assert fidelity[-1] > fidelity[0]
    offs = [_trade_off(icm.create_model(name, quality=q, pretrained=False)) for q in qualities]
    if "lambda" in offs[0] and name.startswith("dicm"):  # λ weighs the rate: falls as quality rises
        assert all(a["lambda"] > b["lambda"] for a, b in zip(offs, offs[1:])), offs
    elif "lambda" in offs[0]:  # λ weighs the distortion: grows
        assert all(a["lambda"] < b["lambda"] for a, b in zip(offs, offs[1:])), offs
    else:
        assert all(a["alpha"] < b["alpha"] and a["beta"] < b["beta"] for a, b in zip(offs, offs[1:])), offs


def test_paper_dicm_qualities_run_the_same_way():
    """``dicm`` (no shipped weights) declares its λ per quality in the same direction."""
    from icm.models.dicm import QUALITIES

    assert sorted(QUALITIES) == list(icm.models.model_info("dicm").qualities)
    lambdas = [QUALITIES[q] for q in sorted(QUALITIES)]
    assert all(a > b for a, b in zip(lambdas, lambdas[1:])), lambdas


def _trade_off(model) -> dict:
    """The rate–distortion weights a model declares (models/*.py)."""
    return ({"lambda": model.lmbda} if hasattr(model, "lmbda")
            else {"alpha": model.alpha, "beta": model.beta})


@pytest.mark.parametrize("name,quality", [(n, q) for n in ("hyperprior", "bai2022-fmnist", "dicm-lite0", "dicm-lite0-s8",
                                                           "dicm-lite0-s8-cutmix")
                                          for q in shipped_qualities(n)])
def test_declared_trade_off_is_the_one_each_weight_file_was_trained_at(name, quality):
    """What a quality declares (used by --refine and by training) matches the
    weight file's own metadata, so a drift like an old λ cannot come back."""
    from icm.models._registry import read_weights

    model = icm.create_model(name, quality=quality, pretrained=False)
    _, meta = read_weights(name, quality)
    declared = _trade_off(model)
    assert declared and {k: meta[k] for k in declared} == pytest.approx(declared), (name, quality, meta)


INEXACT = {"fmnist-pixel-classifier.safetensors": "the recipe file adds model.kwargs M=N=32, which the "
           "pixel classifier (step 0) does not use; the metadata's recipe has none"}


def _configs() -> dict:
    import yaml
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    return {str(p.relative_to(root)): yaml.safe_load(p.read_text()) for p in sorted(root.rglob("*.yaml"))}


def lineage(meta: dict, configs: dict) -> list[str]:
    """The recipe files of a weight file, last first: the one equal to its metadata's recipe
    (or with its out_dir), then the one whose out_dir its model.init names (or, where the init
    is a shipped weight file, that file's own recipe), and so on."""
    by_out = {}
    for name, c in configs.items():
        by_out.setdefault((c.get("trainer") or {}).get("out_dir"), []).append(name)
    chain, recipe = [], meta["recipe"]
    while recipe is not None and len(chain) < 12:
        exact = [n for n, c in configs.items() if c == recipe]
        names = exact or by_out.get((recipe.get("trainer") or {}).get("out_dir"), [])
        assert names, f"no recipe file matches {recipe.get('trainer')}"
        chain.append(names[0] if exact else names[0] + " (by out_dir)")
        init = (recipe.get("model") or {}).get("init")
        if init and init.endswith(".safetensors"):
            recipe = read_metadata((ROOT / init).read_bytes())["recipe"]
        else:
            recipe = configs[by_out[init.split("/checkpoints")[0]][0]] if init else None
    return chain


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_every_shipped_weight_has_its_lineage_in_configs(path):
    """configs/ holds the whole chain of recipes of every shipped weight (nothing archived)."""
    chain = lineage(read_metadata(path.read_bytes()), _configs())
    assert chain and not any(c.startswith("archive/") for c in chain), chain
    inexact = [c for c in chain if c.endswith("(by out_dir)")]
    assert not inexact or (path.name in INEXACT and len(inexact) == 1), (chain, INEXACT.get(path.name))


def test_archived_recipes_are_listed_and_load():
    from pathlib import Path

    import yaml

    archive = Path(__file__).resolve().parents[1] / "configs" / "archive"
    listed = (archive / "README.md").read_text()
    files = sorted(archive.rglob("*.yaml"))
    assert files
    for p in files:
        rel = str(p.relative_to(archive))
        assert rel in listed or (rel.startswith("bai2022/fmnist-step2-q") and "fmnist-step2-q1.yaml" in listed), rel
        assert yaml.safe_load(p.read_text())["model"]["name"]  # a record: the code some used has left icm
