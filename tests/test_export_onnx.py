"""The sender without PyTorch, its parts: the NumPy fixed point and global filter, and
``icm export-onnx`` (graphs checked with onnxruntime; those tests skip, with the pip
line, where the ``onnx`` extra is not installed).

The edge package built from these files is tested in tests/test_edge.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import shipped_qualities
from torch import nn

from icm import create_model
from icm.export_onnx import EXPORTABLE, export, shipped
from icm.layers.fixed_point import FixedPointNet as TorchFixedPoint
from icm.layers.fixed_point_numpy import FixedPointNet
from icm.layers.global_filter_numpy import global_filter
from icm.layers.gnconv import GlobalLocalFilter

ONNX_MISSING = [m for m in ("onnx", "onnxruntime") if __import__("importlib").util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(bool(ONNX_MISSING), reason="needs the onnx extra: pip install 'icm[onnx]' "
                                                           "(or pip install onnx onnxruntime)")


# -- the fixed point in NumPy ------------------------------------------------------------------------------

def _random_net(seed: int) -> nn.Sequential:
    """A network of every layer kind the fixed point supports, of random widths and strides."""
    g = torch.Generator().manual_seed(seed)

    def r(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    torch.manual_seed(seed)
    c = [r(2, 9) for _ in range(5)]
    k, s = 2 * r(1, 2) + 1, r(1, 3)
    return nn.Sequential(
        nn.ConvTranspose2d(c[0], c[1], k, stride=s, padding=k // 2, output_padding=s - 1),
        nn.LeakyReLU(0.01 * r(1, 30)),
        nn.Sequential(nn.Conv2d(c[1], c[2], 2 * r(0, 1) + 1, stride=r(1, 2), padding=1), nn.ReLU()),
        nn.Identity(),
        nn.Conv2d(c[2], 4 * c[3], 3, padding=1, bias=bool(r(0, 1))),
        nn.PixelShuffle(2),
        nn.LeakyReLU(),
        nn.ConvTranspose2d(c[3], c[4], 5, stride=2, padding=2, output_padding=1, bias=bool(r(0, 1))),
    )


@pytest.mark.parametrize("seed", range(6))
def test_numpy_fixed_point_equals_torch_on_random_networks(seed):
    net = _random_net(seed)
    for p in net.parameters():  # spread the weights' magnitudes (each layer picks its own scale)
        p.data.mul_(10.0 ** (seed - 3))
    ref = TorchFixedPoint(net, act_bits=8 + seed % 4)
    ours = FixedPointNet.from_torch(ref)
    g = torch.Generator().manual_seed(100 + seed)
    for batch, hw, r in ((1, (1, 1), 3), (2, (3, 5), 40), (3, (7, 4), 2000)):
        x = torch.randint(-r, r + 1, (batch, net[0].in_channels, *hw), generator=g).float()
        want = ref(x).numpy()
        got = ours(x.numpy())
        assert got.dtype == np.float64 and got.shape == want.shape
        assert np.array_equal(got, want)
        assert np.array_equal(ours(x.numpy().astype(np.int64)), want)  # any numeric input dtype


def test_numpy_fixed_point_arrays_round_trip_and_refusals():
    ref = TorchFixedPoint(_random_net(7))
    ours = FixedPointNet.from_torch(ref)
    arrays = ours.to_arrays("h_s.")
    assert arrays["h_s.0.w"].dtype == np.int16
    back = FixedPointNet.from_arrays(arrays, "h_s.")
    x = torch.randint(-9, 10, (1, ref.layers[0][1].shape[0], 4, 6)).float()
    assert np.array_equal(back(x.numpy()), ref(x).numpy())
    with pytest.raises(ValueError, match="integer-valued"):
        ours(x.numpy() + 0.5)
    with pytest.raises(ValueError, match="B, C, H, W"):
        ours(x.numpy()[0])
    with pytest.raises(ValueError, match="unknown fixed-point layer kind 'gelu'"):
        FixedPointNet([("gelu",)])


def _hyper_families():
    return [(n, q) for n in ("hyperprior", "bai2022-fmnist") for q in shipped_qualities(n)]


@pytest.mark.parametrize("name, quality", _hyper_families())
def test_numpy_fixed_point_equals_torch_on_every_shipped_hyper_synthesis(name, quality):
    latent = create_model(name, quality).latent
    ref = latent._fixed_point_h_s()
    ours = FixedPointNet.from_arrays(FixedPointNet.from_torch(ref).to_arrays())
    n = latent.z_prior.channels
    g = torch.Generator().manual_seed(quality)
    for shape, r in (((1, n, 1, 1), 2), ((1, n, 4, 6), 12), ((2, n, 5, 3), 300)):
        z = torch.randint(-r, r + 1, shape, generator=g).float()
        assert np.array_equal(ours(z.numpy()), ref(z).numpy()), (name, quality, shape)
    # and the scale levels the decoder picks from them
    scales = ours(z.numpy())[:, : ours(z.numpy()).shape[1] // 2]
    thr = latent.y_conditional.scale_thresholds(latent.act_bits)
    want = latent.y_conditional.scale_index(torch.from_numpy(scales), latent.act_bits).numpy()
    assert np.array_equal(np.searchsorted(thr.astype(np.float64), scales, side="right"), want)


# -- the global filter in NumPy -----------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(8, 8), (8, 9), (12, 6), (5, 17), (1, 4)])
def test_numpy_global_filter_equals_torch(hw):
    torch.manual_seed(0)
    f = GlobalLocalFilter(12, size=(8, 8)).eval()
    f.weight.data.normal_(0, 0.5)
    x = torch.randn(2, 12, *hw)
    with torch.no_grad():
        want = f(x)
        a, b = f.norm_in(x).chunk(2, dim=1)
        b = torch.from_numpy(global_filter(b.numpy(), f.weight.numpy()))
        got = f.norm_out(torch.cat([f.local(a), b], dim=1))
    assert got.dtype == torch.float32
    assert torch.allclose(got, want, atol=2e-5, rtol=1e-5), float((got - want).abs().max())


# -- icm export-onnx ------------------------------------------------------------------------------------------

def _perturbed(name: str, seed: int = 0):
    """A small model of ``name``'s architecture with every weight moved off its initialisation."""
    from icm.models import model_info

    torch.manual_seed(seed)
    model = create_model(name, pretrained=False, **model_info(name).small)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for m in model.modules():
            if hasattr(m, "gamma1"):  # HorNet layer scales start at 1e-6: make the blocks count
                m.gamma1.fill_(0.5)
                m.gamma2.fill_(0.5)
    return model.eval()


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _close(got, want, what):
    want = want.detach().numpy()
    scale = max(1.0, float(np.abs(want).max()))
    assert got.shape == want.shape, what
    assert np.abs(got - want).max() <= 2e-5 * scale, (what, float(np.abs(got - want).max()), scale)


@needs_onnx
@pytest.mark.parametrize("name", ["hyperprior", "bai2022-fmnist", "dicm-lite0"])
def test_exported_graphs_compute_the_torch_sender_at_any_size(name, tmp_path):
    model = _perturbed(name)
    paths = export(name, 1, tmp_path, model=model)
    desc = json.loads((tmp_path / f"{name}-q1.json").read_text())
    assert {p.name for p in paths} == {p.name for p in tmp_path.iterdir()}  # no temporary left
    assert desc["model"] == name and desc["stride"] == model.stride and desc["format"] == 1
    g = desc["graphs"]
    arrays = np.load(tmp_path / desc["tables"])
    c = getattr(model, "in_channels", 3)
    for h, w in ((1, 1), (2, 3), (1, 5)):
        x = torch.rand(1, c, h * model.stride, w * model.stride)
        with torch.no_grad():
            feat = x.numpy()
            if "head" in g:
                f = model.head_features(x)
                feat = _session(tmp_path / g["head"]).run(None, {"x": x.numpy()})[0]
                _close(feat, f, "head")
                feat = _session(tmp_path / g["re"]).run(None, {"f": f.numpy()})[0]  # torch's f: same rounding
                _close(feat, model.re(f)["f_re"], "re")
            want_y = model.analysis(x)
            out = _session(tmp_path / g["g_a"][0]).run(None, {"f": feat})
            for i, part in enumerate(g["g_a"][1:]):
                xs, p, a, b = out
                out = _session(tmp_path / part).run(None, {"x": xs, "p": p, "a": a,
                                                           "b": global_filter(b, arrays[f"g_a.filter.{i}"])})
            _close(out[0], want_y, "g_a")
            if "h_a" in g:
                z = _session(tmp_path / g["h_a"]).run(None, {"y": want_y.numpy()})[0]
                _close(z, model.latent.h_a(want_y), "h_a")


@needs_onnx
def test_exported_tables_are_the_checkpoints_integers(tmp_path):
    name, quality = "hyperprior", shipped_qualities("hyperprior")[0]
    export(name, quality, tmp_path)
    desc = json.loads((tmp_path / f"{name}-q{quality}.json").read_text())
    assert desc["weights"].startswith(f"{name}-q{quality}.safetensors sha256:")
    t = np.load(tmp_path / desc["tables"])
    latent = create_model(name, quality).latent
    for prefix, em in (("z", latent.z_prior), ("y", latent.y_conditional)):
        assert not em.tables_are_stale()
        assert np.array_equal(t[f"{prefix}.freqs"], em._table_freqs.numpy())
        assert np.array_equal(t[f"{prefix}.lengths"], em._table_lengths.numpy())
        assert np.array_equal(t[f"{prefix}.offsets"], em._table_offsets.numpy())
    assert np.array_equal(t["y.thresholds"], latent.y_conditional.scale_thresholds(latent.act_bits))


def test_every_shipped_weight_of_the_exported_families_exports():
    want = {(n, q) for n in EXPORTABLE for q in shipped_qualities(n)}
    assert set(shipped()) == want and {n for n, _ in want} == set(EXPORTABLE)


# -- the command ----------------------------------------------------------------------------------------------

def test_export_onnx_refusals(run_cli, tmp_path):
    out = tmp_path / "out"
    for argv, line in (
        ((), "name a MODEL (with -q), or give --all for every shipped quality"),
        (("hyperprior", "--all"), "name a MODEL (with -q), or give --all for every shipped quality"),
        (("--all", "-q", "2"), "-q goes with a MODEL; --all exports every shipped quality"),
        (("bai2022",), "icm export-onnx exports hyperprior, bai2022-fmnist, dicm-lite0, dicm-lite0-s8, dicm-lite0-s8-cutmix, not 'bai2022'"),
        (("hyperprior", "-q", "9"), "-q 9: model 'hyperprior' has qualities 1, 2, 3, 4, 5"),
    ):
        r = run_cli("export-onnx", *argv, "-o", out)
        assert r.code == 2 and r.err_lines == [f"icm: error: {line}"], argv
    assert not out.exists()


@needs_onnx
def test_export_onnx_command_keeps_existing_senders(run_cli, tmp_path):
    q = shipped_qualities("bai2022-fmnist")[0]
    r = run_cli("export-onnx", "bai2022-fmnist", "-q", q, "-o", tmp_path / "senders")
    assert r.code == 0, r.err
    assert r.out.startswith(f"{tmp_path / 'senders'}: bai2022-fmnist q{q}, 4 files, ")
    before = {p.name: p.read_bytes() for p in (tmp_path / "senders").iterdir()}
    assert set(before) == {f"bai2022-fmnist-q{q}.{e}" for e in ("json", "npz", "g_a.onnx", "h_a.onnx")}
    r = run_cli("export-onnx", "bai2022-fmnist", "-q", q, "-o", tmp_path / "senders")
    assert r.code == 2 and r.err_lines == [(f"icm: error: {tmp_path / 'senders'}/bai2022-fmnist-q{q}.json: "
                                           "already exists; use --force to overwrite it")]
    r = run_cli("export-onnx", "bai2022-fmnist", "-q", q, "-o", tmp_path / "senders", "-f")
    assert r.code == 0, r.err
    assert {p.name: p.read_bytes() for p in (tmp_path / "senders").iterdir()} == before  # deterministic
