"""A model family defined here, in the tests, and nowhere in the library: registered with
its spec, trained two steps by ``icm train``, exported by the export command, coded and
analysed — with no edit to any library file.  This is what a new family costs."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import Tensor, nn

from icm import codec
from icm.limits import CostModel
from icm.models import create_model, list_models, model_info, register_model
from icm.models._spec import unregister_model
from icm.models.hyperprior import Hyperprior

from conftest import PHOTOS

NAME, MODEL_ID = "toy-plugin", 121


class ToyCodec(Hyperprior):
    """A small hyperprior with a two-class head on the decoded latent."""

    tasks = ("classify",)
    class_names = ("dark", "bright")

    def __init__(self, N: int = 8, M: int = 12) -> None:
        super().__init__(N=N, M=M)
        self.head = nn.Linear(M, 2)

    def analyze_latent(self, y_hat: Tensor, task: str, image_size=None) -> Tensor:
        return self.head(y_hat.mean(dim=(2, 3)))


def build(quality: int, **kwargs) -> ToyCodec:
    model = ToyCodec(**kwargs)
    model.lmbda = {1: 0.005, 2: 0.02}[quality]
    return model


def export_toy(model, cfg: dict, common: dict, out_dir) -> tuple:
    from icm.train.export import save_weights

    meta = {**common, "measured_on_nothing": {"note": "a test family"}}
    out = save_weights(model, out_dir / f"{NAME}-q{common['quality']}.safetensors", meta)
    return out, "exported by the test family's own hook"


@pytest.fixture
def toy_family():
    assert NAME not in list_models()
    register_model(NAME, model_id=MODEL_ID, qualities=(1, 2), tasks=("classify",),
                   description="a family defined in the tests only",
                   train="icm.train.run:build_rd", export=export_toy, small={"N": 8, "M": 12},
                   cost=CostModel(bytes_per_pixel=320, seconds_per_pixel=1e-6))(build)
    yield
    unregister_model(NAME)
    assert NAME not in list_models() and codec.model_info_by_id(MODEL_ID) is None


def test_a_family_from_outside_the_library_trains_exports_codes_and_analyses(toy_family, run_cli, tmp_path):
    info = model_info(NAME)
    assert info.tasks == ("classify",) and info.small == {"N": 8, "M": 12}
    r = run_cli("models", "--json")
    assert NAME in {json.loads(line)["name"] for line in r.out.splitlines()}

    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": NAME, "quality": 1},
        "data": {"kind": "photos", "crop": 64, "batch_size": 2, "train_photos": list(PHOTOS[:2]),
                 "val_photos": [PHOTOS[2]]},
        "optim": {"lr": 1e-3, "clip": 1.0},
        "trainer": {"max_steps": 2, "val_every": 2, "ckpt_every": 2, "out_dir": str(tmp_path / "run"),
                    "threads": 1, "seed": 0},
    }))
    r = run_cli("train", recipe)
    assert r.code == 0, r.err
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and torch.load(ckpt, weights_only=True)["global_step"] == 2

    from icm.train.export import main as export_main

    assert export_main([str(recipe), "--out-dir", str(tmp_path / "w")]) == 0
    weights = tmp_path / "w" / f"{NAME}-q1.safetensors"
    from icm.models._registry import read_metadata
    from safetensors.torch import load_file

    meta = read_metadata(weights.read_bytes())
    assert (meta["model"], meta["quality"], meta["steps"]) == (NAME, 1, 2) and meta["recipe"]["model"]["name"] == NAME

    model = create_model(NAME, quality=1, pretrained=False)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(weights).items()})
    model.eval()
    x = torch.rand(1, 3, 48, 80, generator=torch.Generator().manual_seed(3))
    data = codec.encode(model, x)[0]
    f = codec.parse(data)
    assert (f.header.model_id, f.header.quality, f.header.height, f.header.width) == (MODEL_ID, 1, 48, 80)
    out = codec.analyze(data, model=model)
    assert out["task"] == "classify" and out["output"].shape == (1, 2) and bool(torch.isfinite(out["output"]).all())
    assert codec.decode(data, model=model)["x_hat"].shape == (1, 3, 48, 80)
    with torch.no_grad():  # the receiver's answer is the sender's model's answer on the same latent
        y_hat = model.decompress(codec.Compressed([f.sections], (48, 80)), pixels=False)["y_hat"]
        assert torch.equal(out["output"], model.analyze_latent(y_hat, "classify"))
