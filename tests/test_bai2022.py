"""``bai2022`` (Bai et al., AAAI 2022): shapes, gradients, classification from the
bitstream without the pixel decoder, training recipes and configs, ``icm analyze``."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import icm
from icm import codec
from icm.models import Compressed, create_model, list_models, model_info
from icm.models.bai2022 import FASHION_MNIST_CLASSES, FMNIST_QUALITIES, QUALITIES, Bai2022

from conftest import TINY as HP_TINY, gradient_image, make_tiny_model, random_image

BAI = [n for n in list_models() if n.startswith("bai2022")]
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "bai2022").glob("*.yaml"))
# Small architecture overrides so that every configuration runs in milliseconds.
SMALL = {
    "bai2022": dict(stem=(8, 8, 8), M=12, N=8, dim=24, depth=4, heads=2, num_classes=7),
    "bai2022-fmnist": dict(dim=24, depth=4, heads=2),
    "bai2022-tiny": {},
}


def make_bai(name: str = "bai2022-tiny", quality: int = 2, seed: int = 0, busy: bool = True, **kw) -> Bai2022:
    """Seeded model in eval mode; ``busy`` scales the latents up so y and z carry many symbols."""
    torch.manual_seed(seed)
    model = create_model(name, quality=quality, pretrained=False, **{**SMALL[name], **kw}).eval()
    if busy:
        with torch.no_grad():
            model.g_a[-1].weight.mul_(10.0)
            model.latent.h_a[-1].weight.mul_(30.0)
            model.latent.h_s[-1].weight.mul_(10.0)
    return model


def image_for(model, h: int, w: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    return random_image(h, w, seed=seed, batch=batch)[:, : model.in_channels]


def loss_of(model, out: dict, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from icm.losses import rate_accuracy_distortion

    return rate_accuracy_distortion(out, x, target, model.alpha, model.beta)["loss"]


# -- registry and the paper configuration ------------------------------------------------


def test_registered_configurations():
    assert {"bai2022", "bai2022-fmnist", "bai2022-tiny"} <= set(BAI)
    ids = {n: model_info(n).model_id for n in BAI}
    assert ids == {"bai2022": 3, "bai2022-fmnist": 4, "bai2022-tiny": 5}
    for n in BAI:
        info = model_info(n)
        assert info.tasks == ("classify",) and info.pixel_decoder
        assert info.qualities == ((1, 2, 3, 4, 5, 6, 7, 8, 9) if n == "bai2022-fmnist" else (1, 2, 3, 4))
    for q, (a, b) in {1: (0.1, 0.001), 2: (0.3, 0.003), 3: (0.6, 0.006), 4: (1.2, 0.012)}.items():
        assert QUALITIES[q] == FMNIST_QUALITIES[q] == (a, b)
        m = create_model("bai2022-tiny", quality=q, pretrained=False)
        assert (m.alpha, m.beta) == (a, b)
    # the machine-weighted Fashion-MNIST points: β/α ten times below the paper's 0.01
    for q in (5, 6, 7, 8):
        a, b = FMNIST_QUALITIES[q]
        assert b / a == pytest.approx(0.001)
        m = create_model("bai2022-fmnist", quality=q, pretrained=False)
        assert (m.alpha, m.beta) == (a, b)


def test_paper_configuration_at_224():
    torch.manual_seed(0)
    model = create_model("bai2022", quality=1, pretrained=False)
    assert len(model.class_names) == 1000 and model.class_names[0].startswith("tench")
    assert model.stride == 32 and model.y_stride == 16 and model.in_channels == 3
    assert (model.dim, model.depth, len(model.blocks), model.blocks[0].attn.num_heads) == (384, 12, 12, 6)
    assert model.blocks[0].norm1.eps == 1e-6 and model.blocks[0].attn.qkv.bias is not None
    assert [m.out_channels for m in model.g_a if isinstance(m, torch.nn.Conv2d)] == [128, 128, 128, 192]
    assert [m.out_channels for m in model.latent.h_s if hasattr(m, "out_channels")] == [192, 288, 384]
    assert [m.out_channels for m in model.decoder if hasattr(m, "out_channels")] == [128, 128, 128, 3]
    assert [p.out_features for p in model.tap_proj] == [96] * 4 and model.taps == (0, 1, 2, 3)
    assert model.latent.y_conditional.scale_table.numel() == 64
    n = sum(p.numel() for p in model.parameters())
    assert 29e6 < n < 31e6  # DeiT-S (22M) + stem, hyperprior, aggregation, decoder
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        y = model.analysis(model.pad(x))
        assert y.shape == (1, 192, 14, 14)
        assert model.latent.h_a(y).shape == (1, 128, 7, 7)
        assert model.classify(torch.round(y)).shape == (1, 1000)


def test_fmnist_configuration():
    model = create_model("bai2022-fmnist", quality=1, pretrained=False)
    assert model.class_names == FASHION_MNIST_CLASSES and model.num_classes == 10
    assert (model.in_channels, model.y_stride, model.stride) == (1, 4, 8)
    assert (model.M, model.N) == (8, 8)  # 8×8×8 latent values for 28×28 pixels
    with torch.no_grad():
        out = model(torch.rand(2, 1, 28, 28))
    assert out["y_hat"].shape[-2:] == (8, 8) and out["likelihoods"]["z"].shape[-2:] == (4, 4)
    assert out["x_hat"].shape == (2, 1, 28, 28) and out["logits"].shape == (2, 10)
    with pytest.raises(ValueError, match=r"greyscale batch \(B, 1, H, W\)"):
        model(torch.rand(1, 3, 28, 28))


def test_bad_architecture_arguments():
    with pytest.raises(ValueError, match="taps"):
        create_model("bai2022-tiny", quality=1, pretrained=False, taps=(0, 5))
    with pytest.raises(ValueError, match="class names"):
        create_model("bai2022-tiny", quality=1, pretrained=False, class_names=("a", "b"))


# -- forward, backward, shapes -----------------------------------------------------------


@pytest.mark.parametrize("name", BAI)
def test_train_forward_backward_every_parameter_gets_a_gradient(name):
    model = make_bai(name, busy=False).train()
    x = image_for(model, 28, 36, seed=1, batch=4)
    out = model(x)
    assert set(out) == {"x_hat", "y_hat", "logits", "likelihoods"} and set(out["likelihoods"]) == {"y", "z"}
    assert out["logits"].shape == (4, model.num_classes) and out["x_hat"].shape == x.shape
    loss_of(model, out, x, torch.arange(4) % model.num_classes).backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert {"cls_token", "cls_pos", "pos_embed", "head.weight"} <= {n for n, _ in params}
    assert any(n.startswith("decoder.") for n, _ in params) and any(n.startswith("latent.z_prior") for n, _ in params)
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for _, p in params)
    dead = [n for n, p in params if not bool((p.grad != 0).any())]
    assert not dead, f"parameters with all-zero gradient: {dead}"


def test_step1_forward_skips_the_hyperprior():
    model = make_bai(busy=False).train()
    x = image_for(model, 32, 32, batch=2)
    out = model(x, rate=False)
    assert out["likelihoods"] == {}
    assert torch.equal(out["y_hat"], model.analysis(model.pad(x)))
    F.cross_entropy(out["logits"], torch.tensor([0, 1])).backward()
    assert all(p.grad is None for p in model.latent.parameters())
    assert model.pos_embed.grad is not None and model.g_a[0].weight.grad is not None


@pytest.mark.parametrize("name", ["bai2022-tiny", "bai2022-fmnist"])
@pytest.mark.parametrize("size", [(17, 31), (28, 28), (50, 70)])
def test_shapes_at_odd_sizes(name, size):
    model = make_bai(name)
    x = image_for(model, *size, seed=sum(size), batch=2)
    with torch.no_grad():
        out = model(x)
    grid = (-(-size[0] // model.stride) * 2, -(-size[1] // model.stride) * 2)
    assert out["y_hat"].shape == (2, model.M, *grid)
    assert out["likelihoods"]["z"].shape == (2, model.N, grid[0] // 2, grid[1] // 2)
    assert out["x_hat"].shape == x.shape and 0 <= float(out["x_hat"].min()) <= float(out["x_hat"].max()) <= 1
    assert out["logits"].shape == (2, model.num_classes) and torch.isfinite(out["logits"]).all()


def test_position_embedding_is_resampled_bicubically():
    from icm.models.bai2022 import resample_pos_embed

    model = make_bai()
    stored = model.pos_embed
    assert torch.equal(resample_pos_embed(stored, model.grid), stored.flatten(1, 2))
    grown = resample_pos_embed(stored, (7, 9))
    assert grown.shape == (1, 63, model.dim)
    ref = F.interpolate(stored.permute(0, 3, 1, 2), size=(7, 9), mode="bicubic", align_corners=False)
    assert torch.allclose(grown, ref.permute(0, 2, 3, 1).flatten(1, 2))


# -- analysis from the bitstream ---------------------------------------------------------


@pytest.mark.parametrize("name", ["bai2022-tiny", "bai2022-fmnist"])
def test_analysis_from_bitstream_equals_eval_forward_exactly(name):
    model = make_bai(name)
    x = image_for(model, 50, 70, seed=5, batch=2)
    with torch.no_grad():
        fwd = model(x)
    c = model.compress(x)
    assert sum(len(s) for s in c.strings[0]) > 50  # busy latents: real symbols were coded
    assert torch.equal(model.analyze(c), fwd["logits"])
    assert torch.equal(model.analyze(c, task="classify"), fwd["logits"])
    dec = model.decompress(c, pixels=True)
    assert torch.equal(dec["y_hat"], fwd["y_hat"]) and torch.equal(dec["x_hat"], fwd["x_hat"])
    # one file at a time, through the .icm container: the latent is bit-exact across
    # batch sizes; the Transformer's float sums are exact for the same batch only
    for i in range(2):
        data = codec.encode(model, x[i : i + 1])[0]
        res = codec.analyze(data, model=model)
        with torch.no_grad():
            single = model(x[i : i + 1])
        assert torch.equal(single["y_hat"], fwd["y_hat"][i : i + 1])
        assert res["task"] == "classify" and torch.equal(res["output"], single["logits"])
        assert torch.allclose(res["output"], fwd["logits"][i : i + 1], atol=1e-5)


def test_analyze_does_not_run_the_pixel_decoder():
    model = make_bai()
    c = model.compress(image_for(model, 40, 40))
    calls = []

    def forbid(module, args):
        calls.append(type(module).__name__)
        raise AssertionError("the pixel decoder ran during analysis")

    handles = [model.decoder.register_forward_pre_hook(forbid), model.fuse.register_forward_pre_hook(forbid)]
    try:
        logits = model.analyze(c)
        assert logits.shape == (1, model.num_classes) and not calls
        with pytest.raises(AssertionError, match="pixel decoder ran"):
            model.decompress(c, pixels=True)
    finally:
        for h in handles:
            h.remove()
    assert set(model.decompress(c, pixels=False)) == {"y_hat"}


def test_analyze_errors():
    model = make_bai()
    c = model.compress(image_for(model, 16, 16))
    with pytest.raises(ValueError, match="does not run task 'detect'"):
        model.analyze(c, task="detect")
    hp = make_tiny_model()
    with pytest.raises(ValueError, match="has no analysis tasks"):
        hp.analyze(hp.compress(gradient_image(16, 16)))
    with pytest.raises(icm.IcmError, match="has no analysis tasks; use icm decompress"):
        codec.analyze(codec.encode(hp, gradient_image(16, 16))[0], model=hp)


def test_greyscale_model_codes_the_luma_of_rgb_input():
    model = make_bai("bai2022-fmnist")
    rgb = gradient_image(28, 28)
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert codec.encode(model, rgb)[0] == codec.encode(model, luma)[0]
    out = codec.decode(codec.encode(model, rgb)[0], model=model)
    assert out["x_hat"].shape == (1, 1, 28, 28) and codec.to_uint8(out["x_hat"]).shape == (28, 28)


# -- training ----------------------------------------------------------------------------


def _write_idx(path: Path, arr: np.ndarray) -> None:
    code = {np.uint8: 0x08}[arr.dtype.type]
    header = b"\0\0" + bytes([code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes()))


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory) -> Path:
    """Fashion-MNIST-format idx.gz files: 3 classes of easy 28×28 patterns."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)

    def split(n):
        labels = (np.arange(n) % 3).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            if c == 0:
                images[i, 4:24, 10:18] = 220
            elif c == 1:
                images[i, 10:18, 4:24] = 220
            else:
                images[i, 6:22, 6:22] = 140
        return images, labels

    for prefix, n in (("train", 96), ("t10k", 24)):
        images, labels = split(n)
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def _fmnist_cfg(root: Path, step: int = 1, **model) -> dict:
    return {
        "step": step,
        "model": {"name": "bai2022-fmnist", "quality": 2, "init": None,
                  "kwargs": dict(stem=(8, 8, 8), M=8, N=8, dim=32, depth=3, heads=2), **model},
        "loss": {},
        "data": {"kind": "fashion-mnist", "root": str(root), "batch_size": 16, "val_limit": 24},
        "optim": {"lr": 3e-3, "lr_batch": None, "warmup_steps": 2},
        "trainer": {"max_steps": 30, "seed": 0},
    }


def _train_and_compare(cfg: dict, steps: int) -> tuple[float, float]:
    """Loss of a fixed validation batch (eval mode) before and after ``steps`` steps."""
    from icm.train.run import build

    torch.manual_seed(0)
    model, module, train_loader, val_loader = build(cfg)
    fixed = next(iter(val_loader))

    def fixed_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = module.loss(fixed)["loss"]
        model.train()
        return float(value)

    before = fixed_loss()
    opt = module.configure_optimizers()
    optimizer, sched = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    done = 0
    while done < steps:
        for batch in train_loader:
            loss = module.loss(batch)["loss"]
            optimizer.zero_grad()
            loss.backward()
            module.configure_gradient_clipping(optimizer)
            optimizer.step()
            sched.step()
            done += 1
            if done == steps:
                break
    return before, fixed_loss()


def test_training_on_fashion_mnist_format_lowers_the_loss(fmnist_root):
    cfg = _fmnist_cfg(fmnist_root, step=1)
    before, after = _train_and_compare(cfg, 24)
    assert after < 0.8 * before, (before, after)


def test_step2_on_fashion_mnist_format_lowers_the_loss(fmnist_root):
    cfg = _fmnist_cfg(fmnist_root, step=2)
    cfg["optim"] = {"lr": 3e-3}
    before, after = _train_and_compare(cfg, 24)
    assert after < before, (before, after)


def test_training_on_imagefolder_lowers_the_loss(imagefolder_root):
    cfg = {
        "step": 1,
        "model": {"name": "bai2022-tiny", "quality": 1, "kwargs": {"num_classes": 2}},
        "data": {"kind": "imagefolder", "root": str(imagefolder_root), "crop": 32, "batch_size": 8,
                 "randaugment": True},
        "optim": {"lr": 3e-3, "lr_batch": None, "warmup_steps": 2},
        "trainer": {"max_steps": 20, "seed": 0},
    }
    before, after = _train_and_compare(cfg, 20)
    assert after < 0.8 * before, (before, after)


def test_run_step1_then_step2_from_its_checkpoint(fmnist_root, tmp_path):
    from icm.train.run import run

    cfg = _fmnist_cfg(fmnist_root, step=1)
    cfg["trainer"] = {"max_steps": 3, "val_every": 3, "out_dir": str(tmp_path / "s1"), "seed": 0,
                      "enable_progress_bar": False}
    last = run(cfg)
    assert last.is_file()
    logs = list((tmp_path / "s1").rglob("metrics.csv"))
    assert logs and "val/acc" in logs[0].read_text()
    cfg2 = _fmnist_cfg(fmnist_root, step=2, init=str(last))
    cfg2["optim"] = {"lr": 1e-4}
    cfg2["trainer"] = {"max_steps": 2, "val_every": 2, "out_dir": str(tmp_path / "s2"), "seed": 0,
                       "enable_progress_bar": False}
    last2 = run(cfg2)
    state = torch.load(last2, map_location="cpu", weights_only=True)["state_dict"]
    first = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert state.keys() == first.keys()
    assert "val/bpp" in next((tmp_path / "s2").rglob("metrics.csv")).read_text()


def test_step0_pixel_classifier_trains_only_encoder_and_transformer(fmnist_root):
    from icm.train.run import build

    cfg = _fmnist_cfg(fmnist_root, step=0)
    model, module, train_loader, _ = build(cfg)
    frozen = ("latent.", "tap_proj.", "fuse.", "decoder.")
    for n, p in model.named_parameters():
        assert p.requires_grad == (not n.startswith(frozen)), n
    calls = []
    hook = model.decoder.register_forward_pre_hook(lambda m, a: calls.append(1))
    x, y = next(iter(train_loader))
    terms = module.loss((x, y))
    hook.remove()
    assert not calls and set(terms) == {"loss", "ce", "acc"} and terms["loss"] == terms["ce"]
    model.eval()
    torch.testing.assert_close(model.classify_pixels(x), model.classify(model.analysis(model.pad(x))))
    before, after = _train_and_compare(_fmnist_cfg(fmnist_root, step=0), 24)
    assert after < 0.8 * before, (before, after)


def test_unknown_step_and_data_kind_raise(fmnist_root):
    from icm.train.run import build

    cfg = _fmnist_cfg(fmnist_root, step=3)
    with pytest.raises(icm.IcmError, match="steps 1 and 2"):
        build(cfg)
    cfg = _fmnist_cfg(fmnist_root)
    cfg["data"]["kind"] = "mnist-video"
    with pytest.raises(icm.IcmError, match="unknown data kind 'mnist-video'"):
        build(cfg)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses_and_builds(path, fmnist_root, imagefolder_root):
    from icm.train.bai2022 import Bai2022Module
    from icm.train.run import build, load_config

    cfg = load_config(path)
    step = cfg["step"]
    assert step in (0, 1, 2) and cfg["model"]["name"] in BAI
    q = cfg["model"]["quality"]
    assert q in model_info(cfg["model"]["name"]).qualities
    if step == 0:  # the pixel-domain baseline: step 1's budget and optimiser, CE only
        step1 = load_config(path.with_name("fmnist-step1.yaml"))
        assert cfg["optim"] == step1["optim"] and cfg["data"] == step1["data"]
        assert cfg["trainer"]["max_steps"] == step1["trainer"]["max_steps"]
        alpha, beta = 1.0, 0.001  # unused by step 0
    else:
        alpha, beta = cfg["loss"]["alpha"], cfg["loss"]["beta"]
        assert (alpha, beta) == ((1.0, 0.001) if step == 1 else FMNIST_QUALITIES[q])
        assert "SEEDS.md" in path.read_text()
    if step == 2:
        assert cfg["model"]["init"].endswith("last.ckpt") and cfg["optim"]["clip"] == 1.0
    if cfg["data"]["kind"] == "imagefolder":
        t = cfg["trainer"]
        assert (t["accelerator"], t["devices"], t["strategy"], t["precision"]) == ("gpu", 8, "ddp", "bf16-mixed")
        model = create_model(cfg["model"]["name"], quality=q, pretrained=False)
        assert model.num_classes == 1000
        return
    cfg["model"]["init"] = None
    cfg["data"]["root"] = str(fmnist_root)
    model, module, train_loader, val_loader = build(cfg)
    assert isinstance(module, Bai2022Module) and module.step == step
    assert (module.alpha, module.beta) == (alpha, beta)
    assert train_loader.batch_size == 128 and len(val_loader.dataset) == 24


def test_imagefolder_build_with_mixup(imagefolder_root):
    from icm.train.run import build

    cfg = {"step": 1, "model": {"name": "bai2022-tiny", "quality": 1, "kwargs": {"num_classes": 2}},
           "data": {"kind": "imagefolder", "root": str(imagefolder_root), "crop": 32, "batch_size": 4,
                    "mixup": 0.8, "cutmix": 1.0, "random_erasing": 0.25}, "optim": {}, "trainer": {"seed": 0}}
    model, module, train_loader, val_loader = build(cfg)
    assert model.class_names == ("n01440764", "n01443537")
    x, target = next(iter(train_loader))
    assert x.shape == (4, 3, 32, 32) and target.shape == (4, 2)  # soft labels
    assert torch.allclose(target.sum(1), torch.ones(4))
    out = model.train()(x, rate=False)
    assert torch.isfinite(module.loss((x, target))["loss"])
    assert out["logits"].shape == (4, 2)
    vx, vy = next(iter(val_loader))
    assert vx.shape[-2:] == (32, 32) and vy.dtype == torch.int64


# -- command line ------------------------------------------------------------------------


@pytest.fixture
def bai_get_model(monkeypatch):
    """``codec.get_model`` serves a seeded bai2022-tiny (no weights are shipped)."""
    real = codec.get_model
    model = make_bai("bai2022-tiny", quality=2)
    model.model_name, model.quality = "bai2022-tiny", 2

    def fake(name, quality):
        if name == "bai2022-tiny" and quality == 2:
            return model
        if name == HP_TINY and quality == 1:
            return make_tiny_model()
        return real(name, quality)

    monkeypatch.setattr(codec, "get_model", fake)
    return model


def _bai_files(model, tmp_path, n=2) -> list[Path]:
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.icm"
        p.write_bytes(codec.encode(model, gradient_image(30 + 7 * i, 41))[0])
        paths.append(p)
    return paths


def test_cli_analyze_json_lines(run_cli, bai_get_model, tmp_path):
    model = bai_get_model
    paths = _bai_files(model, tmp_path)
    r = run_cli("analyze", *paths, "--json")
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert len(lines) == 2
    for path, line in zip(paths, lines):
        row = json.loads(line)
        assert list(row) == ["file", "model", "quality", "bytes", "bpp", "task", "top5"]
        f = codec.read(path)
        assert (row["file"], row["model"], row["quality"], row["task"]) == (str(path), "bai2022-tiny", 2, "classify")
        assert row["bytes"] == f.size == path.stat().st_size and row["bpp"] == pytest.approx(f.bpp, abs=1e-6)
        assert len(row["top5"]) == 5
        assert all(list(t) == ["index", "label", "prob"] for t in row["top5"])
        probs = [t["prob"] for t in row["top5"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
        logits = model.analyze(Compressed([f.sections], (f.header.height, f.header.width)))
        assert [t["index"] for t in row["top5"]] == logits[0].topk(5).indices.tolist()
        assert [t["label"] for t in row["top5"]] == [model.class_names[t["index"]] for t in row["top5"]]


def test_cli_analyze_text_and_top(run_cli, bai_get_model, tmp_path):
    path = _bai_files(bai_get_model, tmp_path, n=1)[0]
    r = run_cli("analyze", path)
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert lines[0].startswith(f"{path}: bai2022-tiny q2, 41x30,") and len(lines) == 6
    assert all(line.strip()[0] in "12345" for line in lines[1:])
    r = run_cli("analyze", path, "--json", "--top", "3", "--task", "classify")
    assert r.code == 0 and len(json.loads(r.out)["top3"]) == 3
    r = run_cli("analyze", path, "--json", "--top", "50")
    assert len(json.loads(r.out)["top50"]) == bai_get_model.num_classes


def _one_line_error(r, *parts):
    assert r.code == 2, (r.code, r.out, r.err)
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("icm: error:") and "Traceback" not in r.err
    for p in parts:
        assert p in r.err_lines[0], r.err_lines[0]


def test_cli_analyze_errors(run_cli, bai_get_model, tmp_path):
    hp = tmp_path / "hp.icm"
    hp.write_bytes(codec.encode(make_tiny_model(), gradient_image(20, 20))[0])
    _one_line_error(run_cli("analyze", hp), "'hyperprior-tiny' has no analysis tasks; use icm decompress")
    good = _bai_files(bai_get_model, tmp_path, n=1)[0]
    _one_line_error(run_cli("analyze", good, "--task", "detect"), "does not run task 'detect'")
    _one_line_error(run_cli("analyze", tmp_path / "missing.icm"), "no such file")
    bad = tmp_path / "bad.icm"
    bad.write_bytes(good.read_bytes()[:-7])
    _one_line_error(run_cli("analyze", bad), "bad.icm")
    _one_line_error(run_cli("analyze", good, "--top", "0"), "--top")
    assert run_cli("analyze", good, "--task", "ocr").code == 2
    assert run_cli("analyze").code == 2


def test_cli_models_and_decompress(run_cli, bai_get_model, tmp_path):
    r = run_cli("models", "--json")
    rows = {json.loads(line)["name"]: json.loads(line) for line in r.out.splitlines()}
    assert rows["bai2022"]["tasks"] == ["classify"] and rows["bai2022"]["pixels"]
    path = _bai_files(bai_get_model, tmp_path, n=1)[0]
    r = run_cli("decompress", path, "-o", tmp_path / "out.png")
    assert r.code == 0, r.err
    assert Image.open(tmp_path / "out.png").size == (41, 30)
