"""FixedPointNet: bit-exact, thread- and batch-independent evaluation of h_s."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from icm.layers.fixed_point import FixedPointNet, supports


def _net(seed: int = 0) -> nn.Sequential:
    """A small h_s-like network using every supported layer kind."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.ConvTranspose2d(6, 10, 5, stride=2, padding=2, output_padding=1),
        nn.LeakyReLU(0.01),
        nn.Sequential(nn.Conv2d(10, 12, 3, stride=1, padding=1), nn.ReLU()),
        nn.Identity(),
        nn.ConvTranspose2d(12, 9, 5, stride=2, padding=2, output_padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(9, 8, 3, stride=1, padding=1, bias=False),
    )


def _int_input(batch: int = 1, seed: int = 1, r: int = 20, hw=(5, 7)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-r, r + 1, (batch, 6, *hw), generator=g).to(torch.float32)


def _with_threads(n: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_output_is_integer_float64_on_cpu():
    fp = FixedPointNet(_net(), act_bits=10)
    out = fp(_int_input())
    assert out.dtype == torch.float64 and out.device.type == "cpu"
    assert out.shape == (1, 8, 20, 28)
    assert torch.equal(out, torch.round(out))
    assert float(out.abs().max()) > 0


def test_identical_for_one_and_two_threads():
    fp = FixedPointNet(_net(), act_bits=10)
    x = _int_input(batch=3)
    a = _with_threads(1, lambda: fp(x))
    b = _with_threads(2, lambda: fp(x))
    assert torch.equal(a, b)


def test_identical_for_batch_one_and_four():
    fp = FixedPointNet(_net(), act_bits=10)
    x = _int_input(batch=1)
    single = fp(x)
    four = fp(x.repeat(4, 1, 1, 1))
    for i in range(4):
        assert torch.equal(four[i : i + 1], single)
    # and with four different items, each equals its own single evaluation
    xs = torch.cat([_int_input(seed=s) for s in range(4)])
    batch = fp(xs)
    for i in range(4):
        assert torch.equal(batch[i : i + 1], fp(xs[i : i + 1]))


def test_input_dtype_and_device_do_not_matter():
    fp = FixedPointNet(_net(), act_bits=10)
    x = _int_input()
    assert torch.equal(fp(x), fp(x.double()))
    assert torch.equal(fp(x), fp(x.half()))


@pytest.mark.parametrize("act_bits", [8, 10, 12])
@pytest.mark.parametrize("r", [3, 30])
def test_close_to_float_network(act_bits, r):
    net = _net()
    fp = FixedPointNet(net, act_bits=act_bits)
    x = _int_input(batch=2, r=r)
    out = fp(x) / 2.0**act_bits
    ref = copy.deepcopy(net).double()(x.double()).detach()
    err_units = float((out - ref).abs().max()) * 2.0**act_bits
    assert err_units <= 4.0, err_units
    assert float(ref.abs().max()) > 10 * 2.0**-act_bits  # the comparison is not trivially zero


def test_tiny_model_h_s_close_to_float(tiny_model):
    hs = tiny_model.latent.h_s
    fp = FixedPointNet(hs, act_bits=10)
    g = torch.Generator().manual_seed(4)
    z = torch.randint(-10, 11, (2, 8, 3, 4), generator=g).float()
    ref = copy.deepcopy(hs).double()(z.double()).detach()
    # The fixture amplifies h_s's last layer tenfold, which amplifies the rounding of
    # earlier activations too: allow 16 units of 2**-10 (0.016, against a step of 1).
    assert float((fp(z) / 1024 - ref).abs().max()) * 1024 <= 16.0


def test_does_not_modify_module():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    FixedPointNet(net)(_int_input())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_later_weight_changes_do_not_affect_a_built_net():
    net = _net()
    fp = FixedPointNet(net)
    x = _int_input()
    a = fp(x)
    with torch.no_grad():
        net[0].weight.mul_(2)
    assert torch.equal(fp(x), a)
    assert not torch.equal(FixedPointNet(net)(x), a)


@pytest.mark.parametrize(
    "module",
    [
        nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3)),
        nn.Sequential(nn.Conv2d(3, 3, 3), nn.GELU()),
        nn.BatchNorm2d(3),
        nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)),
        nn.Sequential(nn.Conv2d(3, 3, 3, dilation=2)),
        nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")),
        nn.Sequential(nn.Linear(3, 3)),
    ],
    ids=["batchnorm", "gelu", "bare-batchnorm", "groups", "dilation", "reflect-padding", "linear"],
)
def test_unsupported_layers_raise(module):
    assert not supports(module)
    with pytest.raises(ValueError, match="cannot run in exact fixed point"):
        FixedPointNet(module)


def test_supported_layers_accepted():
    assert supports(_net())
    assert supports(nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Identity(), nn.LeakyReLU()))


def test_too_wide_layer_raises():
    with pytest.raises(ValueError, match="too wide"):
        FixedPointNet(nn.Conv2d(4096, 1, 3))


@pytest.mark.parametrize("bad", [0.5, 1e-3, float("nan")])
def test_non_integer_input_raises(bad):
    fp = FixedPointNet(_net())
    x = _int_input()
    x[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="integer-valued"):
        fp(x)
