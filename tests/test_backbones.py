"""Split backbones (icm.models.backbones): exact split, shapes, weights, errors, gradients."""

from __future__ import annotations

import math
import os
import pickle

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F

from icm.errors import IcmError
from icm.models import backbones as B

torch.set_num_threads(1)

SIZES = [(64, 64), (97, 131)]
CATS = {"tabby, tabby cat", "tiger cat", "Persian cat", "Siamese cat, Siamese", "Egyptian cat"}


@pytest.fixture(scope="module")
def lite0_pretrained():
    """(unsplit timm net, its split) with the offline ImageNet weights; they share modules."""
    net = B._lite0_net(pretrained=True)
    return net, B._split_lite0(net)


@pytest.fixture(scope="module")
def r50_random():
    torch.manual_seed(0)
    net = B._resnet50_net()
    return net, B._split_resnet50(net, classifier_trained=False)


def _cat_224() -> torch.Tensor:
    from skimage.data import chelsea

    x = torch.from_numpy(chelsea()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def _resnet_normalise(x):
    mean = torch.tensor(B.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(B.IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------ exact split

@torch.no_grad()
@pytest.mark.parametrize("size", [(224, 224), (97, 131)])
def test_lite0_split_equals_unsplit(lite0_pretrained, size):
    net, split = lite0_pretrained
    g = torch.Generator().manual_seed(1)
    x = _cat_224() if size == (224, 224) else torch.rand(2, 3, *size, generator=g)
    assert torch.equal(split(x), net(x * 2 - 1))


@torch.no_grad()
@pytest.mark.parametrize("size", [(224, 224), (97, 131)])
def test_lite0_cut_at_stride_8_equals_unsplit_and_ends_its_head_with_stage_0(lite0_pretrained, size):
    net, split4 = lite0_pretrained
    split8 = B._split_lite0(net, cut_stride=8)
    x = _cat_224() if size == (224, 224) else torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(3))
    assert torch.equal(split8(x), net(x * 2 - 1))
    h, w = size
    f = split8.head(x)
    assert (split8.name, split8.cut_channels, split8.cut_stride) == ("efficientnet_lite0_s8", 40, 8)
    assert f.shape == (x.shape[0], 40, math.ceil(h / 8), math.ceil(w / 8))
    # the stride-8 stage is the cut itself; the later stages are the stride-4 split's
    s8, s4 = split8.tail(f), split4.tail(split4.head(x))
    assert torch.equal(s8["0"], f) and torch.equal(s8["0"], s4["0"])
    assert torch.equal(s8["2"], s4["2"]) and split8.tail.strides == [8, 16, 32]
    parts = [{id(p) for p in m.parameters()} for m in (split8.head, split8.tail, split8.classifier)]
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
    assert set().union(*parts) == {id(p) for p in net.parameters()}


@torch.no_grad()
@pytest.mark.parametrize("size", SIZES)
def test_resnet50_split_equals_unsplit(r50_random, size):
    net, split = r50_random
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(2))
    assert torch.equal(split(x), net(_resnet_normalise(x)))


@pytest.mark.parametrize("which", ["lite0", "r50"])
def test_split_partitions_the_network(which, lite0_pretrained, r50_random):
    net, split = lite0_pretrained if which == "lite0" else r50_random
    parts = [{id(p) for p in m.parameters()} for m in (split.head, split.tail, split.classifier)]
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
    assert set().union(*parts) == {id(p) for p in net.parameters()}


def test_lite0_pretrained_sees_a_cat(lite0_pretrained):
    from timm.data import ImageNetInfo

    _, split = lite0_pretrained
    assert split.classifier_trained
    with torch.no_grad():
        top5 = split(_cat_224())[0].topk(5).indices.tolist()
    names = [ImageNetInfo().index_to_description(i) for i in top5]
    assert CATS & set(names), names


# ------------------------------------------------------------------ shapes

@torch.no_grad()
@pytest.mark.parametrize("which", ["lite0", "r50"])
@pytest.mark.parametrize("size", SIZES)
def test_stage_shapes(which, size, lite0_pretrained, r50_random):
    _, split = lite0_pretrained if which == "lite0" else r50_random
    name, cut, chans = {"lite0": ("efficientnet_lite0", 24, [40, 112, 320]),
                        "r50": ("resnet50", 256, [512, 1024, 2048])}[which]
    h, w = size
    x = torch.rand(2, 3, h, w)
    assert (split.name, split.cut_channels, split.cut_stride) == (name, cut, 4)
    assert split.tail.out_channels == chans and split.tail.strides == [8, 16, 32]
    f = split.head(x)
    assert f.shape == (2, cut, math.ceil(h / 4), math.ceil(w / 4))
    feats = split.tail(f)
    assert list(feats) == ["0", "1", "2"]
    for (k, v), c, s in zip(feats.items(), chans, [8, 16, 32]):
        assert v.shape == (2, c, math.ceil(h / s), math.ceil(w / s)), k
    assert torch.equal(split.features(x)["2"], feats["2"])
    assert split(x).shape == (2, 1000)


# ------------------------------------------------------------------ gradients

@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50"])
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    kw = {"pretrained": False} if name == "efficientnet_lite0" else {}
    split = B.create_backbone(name, **kw).train()
    split(torch.rand(2, 3, 64, 64)).logsumexp(-1).sum().backward()
    for part in ("head", "tail", "classifier"):
        for pname, p in getattr(split, part).named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{part}.{pname}"


# ------------------------------------------------------------------ ResNet-50 weights

def _seeded_resnet50_state(seed: int = 3) -> dict:
    torch.manual_seed(seed)
    return B._resnet50_net().state_dict()


def _equal_state(split, state: dict, skip_fc: bool = False) -> None:
    ours = B._resnet50_net()
    B._split_resnet50(ours).load_state_dict(split.state_dict())  # same modules, regrouped
    for k, v in ours.state_dict().items():
        if not (skip_fc and k.startswith("fc.")):
            assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("variant", ["plain", "module_prefix", "no_counters"])
def test_resnet50_loads_torchvision_checkpoint(tmp_path, variant):
    state = _seeded_resnet50_state()
    saved = dict(state)
    if variant == "module_prefix":
        saved = {f"module.{k}": v for k, v in state.items()}
    elif variant == "no_counters":
        saved = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(saved, tmp_path / "r50.pth")
    split = B.resnet50(weights=tmp_path / "r50.pth")
    assert split.classifier_trained and not split.training
    _equal_state(split, state)


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_resnet50_loads_moco_v2_checkpoint(tmp_path, prefix):
    state = _seeded_resnet50_state()
    encoder = {k: v for k, v in state.items() if not k.startswith("fc.")}
    g = torch.Generator().manual_seed(4)
    encoder["fc.0.weight"], encoder["fc.0.bias"] = torch.randn(2048, 2048, generator=g), torch.zeros(2048)
    encoder["fc.2.weight"], encoder["fc.2.bias"] = torch.randn(128, 2048, generator=g), torch.zeros(128)
    sd = {f"{prefix}encoder_q.{k}": v for k, v in encoder.items()}
    sd.update({f"{prefix}encoder_k.{k}": v for k, v in encoder.items()})  # shared storage: small file
    sd[f"{prefix}queue"] = torch.randn(128, 4096, generator=g)
    sd[f"{prefix}queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": sd}, tmp_path / "moco.pth.tar")

    torch.manual_seed(9)
    fresh_fc = B._resnet50_net().fc
    torch.manual_seed(9)
    split = B.resnet50(weights=str(tmp_path / "moco.pth.tar"))
    assert split.classifier_trained is False
    _equal_state(split, state, skip_fc=True)
    fc = split.classifier[-1]
    assert torch.equal(fc.weight, fresh_fc.weight) and torch.equal(fc.bias, fresh_fc.bias)


def _write_resnet18(path):
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), path)


def _write_r50_10_classes(path):
    from torchvision.models import resnet50

    torch.save(resnet50(weights=None, num_classes=10).state_dict(), path)


class _Foreign:  # not loadable with weights_only=True
    pass


@pytest.mark.parametrize("write, fragment", [
    (None, "no such file"),
    (lambda p: p.write_text("hello, not a checkpoint\n"), "not a PyTorch checkpoint"),
    (lambda p: p.write_bytes(pickle.dumps({"conv1.weight": [1, 2, 3]}, protocol=2)), "not a PyTorch checkpoint"),
    (lambda p: torch.save(_Foreign(), p), "not a PyTorch checkpoint"),
    (lambda p: torch.save([1, 2, 3], p), "not a state dict of tensors"),
    (_write_resnet18, "not a ResNet-50 checkpoint (missing"),
    (_write_r50_10_classes, "tensors of the wrong shape, e.g. fc.weight is (10, 2048)"),
    (lambda p: torch.save({**_seeded_resnet50_state(), "extra.weight": torch.zeros(1)}, p),
     "1 unexpected keys, e.g. extra.weight"),
])
def test_resnet50_rejects_bad_weights(tmp_path, write, fragment):
    path = tmp_path / "weights.pth"
    if write is not None:
        write(path)
    with pytest.raises(IcmError) as e:
        B.resnet50(weights=path)
    assert fragment in str(e.value) and str(path) in str(e.value)


# ------------------------------------------------------------------ Lite0 weights, factory, import

def test_lite0_by_order_mapping_checks_count_and_shapes():
    net = B._lite0_net(pretrained=False)
    state = list(net.state_dict().items())
    renamed = {f"_w{i}": v for i, (_, v) in enumerate(state)}
    with pytest.raises(IcmError, match=r"expected 296 EfficientNet-Lite0 tensors, found 295"):
        B._load_by_order(net, dict(list(renamed.items())[:-1]), "w.pth")
    swapped = dict(renamed)
    swapped["_w0"], swapped["_w1"] = renamed["_w1"], renamed["_w0"]
    msg = r"w.pth: tensor '_w0' has shape \(32,\), expected \(32, 3, 3, 3\)"
    with pytest.raises(IcmError, match=msg):
        B._load_by_order(net, swapped, "w.pth")


def test_create_backbone_dispatches_and_rejects_unknown():
    with pytest.raises(IcmError, match="unknown backbone 'vgg16'; known: efficientnet_lite0, efficientnet_lite0_s16, efficientnet_lite0_s8, resnet50"):
        B.create_backbone("vgg16")
    split = B.create_backbone("efficientnet_lite0", pretrained=False)
    assert isinstance(split, B.SplitBackbone) and not split.classifier_trained and not split.training
    split = B.create_backbone("efficientnet_lite0_s8", pretrained=False)
    assert (split.cut_stride, split.cut_channels, split.classifier_trained) == (8, 40, False)
    split = B.create_backbone("efficientnet_lite0_s16", pretrained=False)
    assert (split.cut_stride, split.cut_channels, split.tail.strides) == (16, 112, [16, 16, 32])
    with pytest.raises(IcmError, match="cut at stride 4, 8 or 16, not 32"):
        B._split_lite0(B._lite0_net(pretrained=False), cut_stride=32)


@torch.no_grad()
def test_lite0_cut_at_stride_16_equals_unsplit(lite0_pretrained):
    net, split4 = lite0_pretrained
    split16 = B._split_lite0(net, cut_stride=16)
    x = torch.rand(2, 3, 97, 131, generator=torch.Generator().manual_seed(4))
    f = split16.head(x)
    assert f.shape == (2, 112, math.ceil(97 / 16), math.ceil(131 / 16))
    assert torch.equal(split16(x), net(x * 2 - 1))
    assert torch.equal(split16.tail(f)["1"], split4.tail(split4.head(x))["1"])


def test_import_stays_light(run_python):
    run_python(
        "import sys; before = set(sys.modules); import icm.models.backbones\n"
        "new = set(sys.modules) - before\n"
        "assert not {'timm', 'torchvision'} & new, sorted({'timm', 'torchvision'} & new)"
    )
