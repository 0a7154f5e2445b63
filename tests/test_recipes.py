"""Recipes are checked key by key when they load: every YAML in configs/ passes, and a
misspelt or unread key is an error naming it and the nearest valid key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icm.errors import IcmError
from icm.train.config import SCHEMA, load_config, recipe_kind, validate

ROOT = Path(__file__).resolve().parents[1] / "configs"
# every recipe, the archived ones included, but those whose code has left icm (configs/archive/README.md)
CODE_REMOVED = {"archive/dicm/lite0-receiver-q3.yaml"}
CONFIGS = sorted(p for p in ROOT.rglob("*.yaml") if str(p.relative_to(ROOT)) not in CODE_REMOVED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_in_configs_validates(path):
    cfg = load_config(path)
    assert recipe_kind(cfg) in SCHEMA


def test_every_kind_is_exercised_by_some_recipe():
    kinds = {recipe_kind(yaml.safe_load(p.read_text())) for p in CONFIGS}
    assert kinds == set(SCHEMA)


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["loss"].update(lamda=0.5), "unknown key loss.'lamda'; did you mean 'lmbda'?"),
    (lambda c: c["optim"].update(learning_rate=1e-3), "unknown key optim."),
    (lambda c: c.update(optimizer={}), "unknown key 'optimizer'; did you mean 'optim'?"),
    (lambda c: c["model"].update(fit_prior={"image": 3}), "unknown key model.fit_prior.'image'; did you mean 'images'?"),
    (lambda c: c["trainer"].update(max_step=10), "unknown key trainer.'max_step'; did you mean 'max_steps'?"),
    (lambda c: c["trainer"].update(acelerator="cpu"), "did you mean 'accelerator'?"),
    (lambda c: c["trainer"].update(gradient_clip_val=1.0), "has no effect here: the recipes clip gradients with optim.clip"),
    (lambda c: c.update(data=[1, 2]), "'data' must be a mapping"),
    (lambda c: c["optim"].update(lr="fast"), "optim.lr must be a number, not 'fast'"),
    (lambda c: c["data"].update(batch_size=2.5), "data.batch_size must be a whole number, not 2.5"),
    (lambda c: c["trainer"].update(max_steps="many"), "trainer.max_steps must be a whole number"),
    (lambda c: c["data"].update(short_sides=256), "data.short_sides must be a list"),
])
def test_a_bad_key_is_one_clear_error(tmp_path, edit, words):
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/dicm/lite0-stage4-q3-factorized.yaml").read_text())
    edit(cfg)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(IcmError) as e:
        load_config(path)
    assert words in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_lightning_keys_pass_and_validate_returns_the_recipe():
    cfg = {"model": {"name": "hyperprior-tiny"}, "trainer": {"devices": 2, "strategy": "ddp", "accelerator": "cpu",
                                                            "max_steps": 3}}
    assert validate(cfg) is cfg
    # numbers as YAML reads them: "2e-4" is a string to PyYAML, and null means unset
    assert validate({"model": {"name": "hyperprior", "init": None}, "optim": {"lr": "2e-4"}})


HYPERPRIOR = sorted((ROOT / "hyperprior").glob("*.yaml"))


@pytest.mark.parametrize("path", HYPERPRIOR, ids=lambda p: p.name)
def test_hyperprior_recipes_build(path, tmp_path):
    """Every hyperprior recipe builds (model, module, loaders) as written, with a narrow model,
    bundled training photos and no init checkpoint standing in for the long runs."""
    from conftest import PHOTOS
    from icm.train.run import build

    cfg = load_config(path)
    lmbda = float(cfg["model"].get("lmbda", 0))
    cfg["model"] = {"name": "hyperprior", "quality": cfg["model"]["quality"], "kwargs": {"N": 8, "M": 12},
                    **({"lmbda": lmbda} if lmbda else {})}
    cfg["data"].update(train_photos=list(PHOTOS[:2]), val_photos=[PHOTOS[2]], crop=64)
    cfg["trainer"].update(out_dir=str(tmp_path))
    model, module, train_loader, val_loader = build(cfg)
    batch = next(iter(train_loader))
    assert batch.shape[1:] == (3, 64, 64) and module.lmbda > 0
    assert module.max_steps_ == int(cfg["trainer"]["max_steps"]) and module.clip == float(cfg["optim"].get("clip", 1.0))
