"""Latent codec and model contracts: shapes, gradients, exact round trips, determinism,
golden bitstreams, the registry."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

import icm
from icm import codec
from icm.models import Compressed, create_model, list_models, model_info, register_model

from conftest import TINY, gradient_image, make_tiny_model, random_image, requires_weights, shipped_qualities

GOLDEN_PATH = Path(__file__).with_name("golden.json")
GOLDEN_SIZES = [(64, 64), (17, 31)]


def _build_small(name: str):
    torch.manual_seed(0)
    info = model_info(name)
    # each family declares the overrides that make it tiny (register_model(..., small=...))
    return create_model(name, quality=min(info.qualities), pretrained=False, **info.small)


# -- contract, for every registered model -----------------------------------------


def test_list_models_contains_the_families():
    names = list_models()
    assert names == sorted(names)
    assert "hyperprior" in names and TINY in names


@pytest.mark.parametrize("name", list_models())
def test_contract_train_forward_and_backward(name):
    model = _build_small(name).train()
    assert model.model_name == name
    x = random_image(40, 72, seed=1, batch=2)[:, : model.in_channels]
    out = model(x)
    lik = out["likelihoods"]
    # every transmitted latent has its likelihoods: y, and z where there is a hyperprior
    assert "y" in lik and len(lik) == model.num_sections
    # models may have likelihoods of untransmitted latents too (dicm's RE module)
    liks = [*lik.values(), *(v for k, v in out.items() if k.endswith("_likelihoods"))]
    for v in liks:
        assert bool(((v > 0) & (v <= 1)).all())
    loss = sum(-torch.log2(v).sum() for v in liks) / (2 * 40 * 72)
    if model.has_pixel_decoder:
        assert out["x_hat"].shape == x.shape
        loss = loss + 100 * torch.mean((out["x_hat"] - x) ** 2)
    if "logits" in out:  # models with an analysis task train it too
        loss = loss + torch.nn.functional.cross_entropy(out["logits"], torch.tensor([0, 1]))
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    nonfinite = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not nonfinite
    dead = [n for n, p in params if not bool((p.grad != 0).any())]
    assert not dead, f"parameters with all-zero gradient: {dead}"


@pytest.mark.parametrize("name", list_models())
def test_contract_eval_forward_and_round_trip(name):
    model = _build_small(name).eval()
    x = random_image(33, 50, seed=2)[:, : model.in_channels]
    with torch.no_grad():
        out = model(x)
    if model.has_pixel_decoder:
        assert out["x_hat"].shape == x.shape
        assert float(out["x_hat"].min()) >= 0 and float(out["x_hat"].max()) <= 1
    c = model.compress(x)
    assert c.image_size == (33, 50) and len(c.strings) == 1 and len(c.strings[0]) == model.num_sections
    dec = model.decompress(c, pixels=model.has_pixel_decoder)
    assert torch.equal(dec["y_hat"], out["y_hat"])


def test_create_model_returns_eval_mode_with_name_and_quality():
    m = make_tiny_model()
    assert not m.training
    assert (m.model_name, m.quality) == (TINY, 1)
    assert (m.N, m.M) == (8, 12)
    assert m.metadata == {}
    # default quality is the highest
    torch.manual_seed(0)
    assert create_model("hyperprior", pretrained=False, N=8, M=12).quality == max(model_info("hyperprior").qualities)


def test_same_seed_same_weights():
    a, b = make_tiny_model(7), make_tiny_model(7)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_bad_input_shape_raises(tiny_model):
    with pytest.raises(ValueError, match="RGB batch"):
        tiny_model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="RGB batch"):
        tiny_model.compress(torch.zeros(3, 8, 8))


# -- exact round trip ------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (17, 31), (64, 64), (70, 91), (300, 257)])
def test_exact_round_trip(tiny_model, size):
    x = random_image(*size, seed=sum(size))
    with torch.no_grad():
        fwd = tiny_model(x)
    c = tiny_model.compress(x)
    assert c.image_size == size
    dec = tiny_model.decompress(c)
    assert torch.equal(dec["y_hat"], fwd["y_hat"])
    assert dec["x_hat"].shape == x.shape
    assert torch.equal(dec["x_hat"], fwd["x_hat"])
    h_lat, w_lat = -(-size[0] // 64) * 4, -(-size[1] // 64) * 4
    assert dec["y_hat"].shape == (1, 12, h_lat, w_lat)


def test_round_trip_of_gradient_through_codec(tiny_model):
    x = gradient_image(70, 91)
    data = codec.encode(tiny_model, x)
    assert len(data) == 1
    out = codec.decode(data[0], model=tiny_model)
    with torch.no_grad():
        fwd = tiny_model(x)
    assert torch.equal(out["y_hat"], fwd["y_hat"])
    assert out["x_hat"].shape == (1, 3, 70, 91)
    assert out["model"] is tiny_model
    assert (out["file"].header.height, out["file"].header.width) == (70, 91)


def test_decompress_without_pixels(tiny_model):
    c = tiny_model.compress(gradient_image(17, 31))
    out = tiny_model.decompress(c, pixels=False)
    assert set(out) == {"y_hat"}


def test_compressed_num_bytes(tiny_model):
    c = tiny_model.compress(gradient_image(64, 64, batch=2))
    assert len(c.strings) == 2
    for i in range(2):
        assert c.num_bytes(i) == sum(len(s) for s in c.strings[i]) > 0


@pytest.mark.slow
def test_exact_round_trip_large_flat_image(tiny_model):
    x = torch.zeros(1, 3, 4000, 3000)
    with torch.no_grad():
        fwd = tiny_model(x)
    dec = tiny_model.decompress(tiny_model.compress(x))
    assert torch.equal(dec["y_hat"], fwd["y_hat"])
    assert dec["x_hat"].shape == x.shape


# -- determinism ------------------------------------------------------------------------


def _decode_with_threads(model, c: Compressed, n: int) -> torch.Tensor:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return model.decompress(c, pixels=False)["y_hat"]
    finally:
        torch.set_num_threads(before)


def test_decode_identical_for_one_and_two_threads(tiny_model):
    c = tiny_model.compress(random_image(70, 91, seed=9, batch=2))
    a = _decode_with_threads(tiny_model, c, 1)
    b = _decode_with_threads(tiny_model, c, 2)
    assert torch.equal(a, b)


def test_decode_identical_for_batch_one_and_four(tiny_model):
    x = random_image(70, 91, seed=10)
    single = tiny_model.compress(x)
    y1 = tiny_model.decompress(single, pixels=False)["y_hat"]

    # the same file decoded four times in one batch
    four = Compressed([single.strings[0]] * 4, single.image_size)
    y4 = tiny_model.decompress(four, pixels=False)["y_hat"]
    assert y4.shape[0] == 4
    for i in range(4):
        assert torch.equal(y4[i : i + 1], y1)

    # the image compressed as a batch of four: each item decodes, alone or batched,
    # to exactly what the batched eval forward computed
    batch = tiny_model.compress(x.repeat(4, 1, 1, 1))
    with torch.no_grad():
        fwd = tiny_model(x.repeat(4, 1, 1, 1))["y_hat"]
    yb = tiny_model.decompress(batch, pixels=False)["y_hat"]
    assert torch.equal(yb, fwd)
    for i in range(4):
        alone = tiny_model.decompress(Compressed([batch.strings[i]], batch.image_size), pixels=False)["y_hat"]
        assert torch.equal(alone, yb[i : i + 1])


def test_decode_batch_of_different_images_equals_individual(tiny_model):
    xs = [random_image(64, 64, seed=s) for s in range(4)]
    singles = [tiny_model.compress(x) for x in xs]
    batch = Compressed([s.strings[0] for s in singles], (64, 64))
    yb = tiny_model.decompress(batch, pixels=False)["y_hat"]
    for i, s in enumerate(singles):
        assert torch.equal(yb[i : i + 1], tiny_model.decompress(s, pixels=False)["y_hat"])


def test_decode_file_written_by_fresh_process(tmp_path, run_python, tiny_model):
    out = tmp_path / "fresh.icm"
    tests_dir = str(Path(__file__).resolve().parent)
    script = f"""
import sys
sys.path.insert(0, {tests_dir!r})
from conftest import gradient_image, make_tiny_model
from icm import codec
model = make_tiny_model()
open({str(out)!r}, "wb").write(codec.encode(model, gradient_image(70, 91))[0])
"""
    run_python(script)
    data = out.read_bytes()
    x = gradient_image(70, 91)
    dec = codec.decode(data, model=tiny_model)
    with torch.no_grad():
        fwd = tiny_model(x)
    assert torch.equal(dec["y_hat"], fwd["y_hat"])
    assert dec["x_hat"].shape == (1, 3, 70, 91)
    # the file is what this process writes too
    assert codec.encode(tiny_model, x)[0] == data


def test_decode_with_model_of_other_name_or_quality_raises(tiny_model):
    data = codec.encode(tiny_model, gradient_image(17, 31))[0]
    torch.manual_seed(0)
    other = create_model("hyperprior", quality=2, pretrained=False, N=8, M=12)
    with pytest.raises(icm.IcmError, match="coded with hyperprior-tiny q1"):
        codec.decode(data, model=other)


# -- golden bitstreams ------------------------------------------------------------------


def _golden_digests() -> dict:
    model = make_tiny_model(0)
    out = {}
    for h, w in GOLDEN_SIZES:
        data = codec.encode(model, gradient_image(h, w))[0]
        out[f"{h}x{w}"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    # The random tiny model puts little information in y, so also pin the entropy coder
    # itself on a deterministic, information-rich symbol stream (escapes included).
    import numpy as np

    from icm.entropy import GaussianConditional, coder

    n = 4000
    i = np.arange(n, dtype=np.int64)
    index = (i * 7) % 64
    sym = ((i * 2654435761) % 97 - 48) * (1 + index // 16)
    sym[::500] = 10**6 + i[::500]
    tables, models = GaussianConditional().coding_tables()
    data = coder.encode(sym, index, tables, models)
    out["gaussian-coder"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    z = torch.from_numpy(((i[: 8 * 50] * 31) % 23 - 11).reshape(1, 8, 5, 10)).float()
    data = model.latent.z_prior.compress(z)[0]
    out["factorized-coder"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return out


def test_golden_bitstream_hashes():
    digests = _golden_digests()
    if os.environ.get("ICM_REGEN_GOLDEN") == "1":
        GOLDEN_PATH.write_text(json.dumps({
            "_comment": "sha256 of .icm files from hyperprior-tiny (torch.manual_seed(0), pretrained=False) "
                        "coding tests/conftest.py gradient_image(h, w), and of raw coder streams "
                        "(see _golden_digests); regenerate with ICM_REGEN_GOLDEN=1",
            "torch": torch.__version__,
            "files": digests,
        }, indent=2, sort_keys=True) + "\n")
        return
    assert GOLDEN_PATH.is_file(), "tests/golden.json missing; run once with ICM_REGEN_GOLDEN=1"
    golden = json.loads(GOLDEN_PATH.read_text())["files"]
    assert set(golden) == {f"{h}x{w}" for h, w in GOLDEN_SIZES} | {"gaussian-coder", "factorized-coder"}
    assert digests == golden


# -- registry ---------------------------------------------------------------------------


def test_unknown_model_name_lists_known_models():
    with pytest.raises(icm.IcmError) as e:
        create_model("no-such-model", pretrained=False)
    msg = str(e.value)
    assert "no-such-model" in msg
    for name in list_models():
        assert name in msg


def test_unknown_quality_raises():
    with pytest.raises(icm.IcmError, match="qualities"):
        create_model(TINY, quality=7, pretrained=False)
    with pytest.raises(icm.IcmError, match="not 0"):
        create_model("hyperprior", quality=0, pretrained=False, N=8, M=12)


def test_pretrained_with_kwargs_raises():
    with pytest.raises(icm.IcmError, match="pretrained=False"):
        create_model("hyperprior", quality=1, pretrained=True, N=8, M=12)


def test_pretrained_without_weights_raises():
    # hyperprior-tiny never ships weights
    assert not icm.models.has_weights(TINY, 1)
    with pytest.raises(icm.IcmError, match="no shipped weights"):
        create_model(TINY, quality=1, pretrained=True)


def test_icm_error_is_value_error():
    assert issubclass(icm.IcmError, ValueError)
    assert issubclass(icm.BitstreamError, icm.IcmError)


def test_register_duplicate_name_raises():
    before = list_models()
    with pytest.raises(ValueError, match="already registered"):
        register_model("hyperprior", model_id=120, qualities=(1,))(lambda q: None)
    assert list_models() == before
    assert icm.models.model_info_by_id(120) is None


def test_register_duplicate_id_raises():
    before = list_models()
    with pytest.raises(ValueError, match="already used"):
        register_model("test-dup-id", model_id=model_info("hyperprior").model_id, qualities=(1,))(lambda q: None)
    assert list_models() == before


@pytest.mark.parametrize("ids", [
    dict(model_id=121, retired_ids={7: {1: 1}}),  # another model's retired id
    dict(model_id=7, retired_ids={}),  # a retired id as a new model's own
    dict(model_id=121, retired_ids={121: {1: 1}}),  # its own id retired
    dict(model_id=121, retired_ids={1: {1: 1}}),  # a live id
])
def test_register_taken_or_retired_id_raises(ids):
    """A retired id is never handed out again, nor retired twice."""
    before = list_models()
    with pytest.raises(ValueError, match="already used"):
        register_model("test-retired-id", qualities=(1,), **ids)(lambda q: None)
    assert list_models() == before and icm.models.model_info_by_id(121) is None


def test_retired_id_must_map_onto_existing_qualities():
    with pytest.raises(ValueError, match="maps onto qualities"):
        register_model("test-retired-map", model_id=122, qualities=(1, 2), retired_ids={123: {1: 3}})(lambda q: None)
    assert icm.models.model_info_by_id(122) is None and icm.models.model_info_by_id(123) is None


@pytest.mark.parametrize("bad_id", [0, 128, -1])
def test_register_out_of_range_id_raises(bad_id):
    before = list_models()
    with pytest.raises(ValueError, match="1..127"):
        register_model(f"test-bad-id-{bad_id}", model_id=bad_id, qualities=(1,))(lambda q: None)
    assert list_models() == before


def test_model_ids_are_unique_and_in_range():
    ids = [model_info(n).model_id for n in list_models()]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 128 for i in ids)
    for n in list_models():
        assert icm.models.model_info_by_id(model_info(n).model_id).name == n


# -- shipped weights ----------------------------------------------------------------------


@requires_weights
@pytest.mark.parametrize("quality", shipped_qualities("hyperprior") or [0])
def test_shipped_weights_load_and_round_trip(quality):
    model = create_model("hyperprior", quality=quality, pretrained=True)
    assert (model.model_name, model.quality) == ("hyperprior", quality)
    assert not model.training
    assert isinstance(model.metadata, dict) and model.metadata
    # the coding tables shipped beside the weights are the ones used: nothing to rebuild
    from icm.entropy._tables import TableModule

    tables = [m for m in model.modules() if isinstance(m, TableModule)]
    assert tables and not any(m.tables_are_stale() for m in tables)
    x = gradient_image(70, 91)
    data = codec.encode(model, x)[0]
    with torch.no_grad():
        fwd = model(x)
    dec = codec.decode(data)  # through codec.get_model: the shipped model
    assert torch.equal(dec["y_hat"], fwd["y_hat"])
    assert dec["x_hat"].shape == x.shape
