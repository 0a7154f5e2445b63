"""Learned compression of backbone features for several analysis tasks from one
bitstream (Tang, Yi, Wang, "Learned image compression for multiple semantic
analysis tasks", IEEE Transactions on Broadcasting 2025; the project's
``SEEDS.md``, section B).

A classification backbone is split after its stride-4 stage.  The sender runs
the head, a redundancy-elimination (RE) module and the encoder of a
compression network; only ``ŷ`` and ``ẑ`` travel.  The receiver decodes the
features and runs the rest of the backbone: no pixels exist anywhere::

    sender                                                         receiver
    x ─▶ head ─▶ f ─▶ RE (enc ▶ Q ▶ dec) ─▶ f_re ─▶ g_a ─▶ y ─▶ [hyperprior] ─▶ ŷ ─▶ g_s ─▶ f̂ ─▶ tail ─▶ {s8, s16, s32} ─▶ classifier
         (stride 4)   ConvFormer blocks,            gnConv                          gnConv       (stage features for
                      8× down, factorized rate      blocks, 4× down                 blocks       detection heads too)
                      (not transmitted)             (y at stride 16)

* **RE module** — ConvFormer-style MetaFormer blocks (timm's
  ``MetaFormerBlock``) whose token mixer modulates with an 11×11 depth-wise
  convolution, stride-2 down-scaling (×3) to a bottleneck with a factorized
  prior, mirrored by transposed convolutions.  It runs at the sender only and
  its rate is a training constraint, not part of the file.
* **Compression network** — HorNet blocks (recursive gated convolution,
  :mod:`icm.layers.gnconv`) of orders 2, 3, 4 (the last with a global
  filter) with two stride-2 convolutions; the decoder mirrors it.
* **Hyperprior** — the foundation's mean-scale hyperprior.  The hyper-encoder
  is stride-2 convolutions around timm ViT blocks, as in the paper.  The
  hyper-decoder is convolutions and pixel shuffles only: it must run in
  exact fixed point so that every machine rebuilds the same probability
  tables (:mod:`icm.layers.fixed_point`); a Transformer there could not be
  decoded bit-exactly across thread counts and devices.

Registered configurations: ``dicm`` (the paper's ResNet-50 at 256 channels;
backbone weights come from a file the user gives, ``backbone_weights=``) and
``dicm-lite0`` (EfficientNet-Lite0 cut at 24 channels, the ImageNet weights
that install offline, widths scaled to the cut, an RE module without
down-scaling because the frozen ImageNet tail cannot adapt to a coarser one;
z at stride 32 so that 224² crops need no padding).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..latent import FactorizedLatent, MeanScaleHyperprior
from ..layers.gnconv import HorBlock
from ..layers.tokens import TokenBlocks
from .redundancy import RedundancyElimination
from ._base import ImageCodec
from ..tasks import TASK_NAMES

# The registry's facts of the dicm models (ids, qualities, tasks, cost, description) are
# declared in ._facts, which names the builders below.
# Rate weight λ of stage 4 (λ·bpp + feature distortion) per quality; 4 is the
# paper's 0.08 (SEEDS.md, dicm stage 4), lower qualities double λ each step.
QUALITIES = {1: 0.64, 2: 0.32, 3: 0.16, 4: 0.08}


class SemanticSteer(nn.Module):
    """Sender-side steering of ``y`` by what the picture shows.

    The block-transform encoder of ``dicm-lite0`` sees 16×16 pixels per latent position;
    which of them matter for the receiver's class is decided far away, in the tail's last
    stages.  The sender has the picture and can run the whole network, so this branch
    reads the uncompressed tail's stride-16 stage and its stride-32 stage (up-sampled),
    and gives per position and channel a log-scale ``a`` and a shift ``b``:
    ``y' = y·exp(a) + b``.  Its last convolution starts at zero (``y' = y``).  Nothing
    of it travels: files are decoded as before.
    """

    def __init__(self, stage_channels: list[int], width: int, M: int) -> None:
        super().__init__()
        cin = stage_channels[1] + stage_channels[2]
        self.net = nn.Sequential(nn.Conv2d(cin, width, 1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1),
                                 nn.GELU(), nn.Conv2d(width, 2 * M, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, stages, y: Tensor) -> Tensor:
        s16 = stages["1"]
        s32 = F.interpolate(stages["2"], size=s16.shape[-2:], mode="nearest")
        a, b = self.net(torch.cat((s16, s32), 1)).chunk(2, dim=1)
        h, w = y.shape[-2:]
        a, b = a[..., :h, :w], b[..., :h, :w]
        return y * torch.exp(a.clamp(-8.0, 8.0)) + b


class ReceiverRefine(nn.Module):
    """Receiver-side refinement of the decoded cut feature: ``f̂ + net(f̂)``.

    ``g_s`` of the block-transform codec is near linear (its HorNet blocks keep small
    layer scales), so what a low-rate ``ŷ`` leaves out is not inferred from what it
    keeps.  This branch — a few 3×3 convolutions of ``width`` channels, one dilated,
    at the cut's stride (receptive field 9×9 positions) — learns that inference.  It
    reads and writes the standardised feature; its last convolution starts at zero
    (``f̂`` unchanged).  Nothing of it is at the sender: a file's bits do not change.
    """

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.GELU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(width, channels, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, f: Tensor) -> Tensor:
        return f + self.net(f)


def _conv(cin: int, cout: int, k: int, s: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)


def _deconv(cin: int, cout: int, k: int = 5) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=2, padding=k // 2, output_padding=1)


class DICM(ImageCodec):
    """Split backbone + RE module + gnConv/hyperprior codec (Tang et al. 2025).

    Args:
        backbone: ``"resnet50"`` or ``"efficientnet_lite0"`` (:mod:`icm.models.backbones`).
        backbone_weights: file of ResNet-50 weights (torchvision or MoCo v2).
        pretrained_backbone: load EfficientNet-Lite0's offline ImageNet weights.
        re_dims, re_depths, re_kernel: of the :class:`RedundancyElimination`.
        dims: widths of the compression network after its first HorNet block,
            the first down-scaling and the 3×3 convolution (the first must
            equal the cut's channels).
        orders: gnConv orders of its three HorNet blocks (the last has a
            global filter, stored at ``filter_size``).
        M: channels of ``y`` (stride 16).
        N: channels of ``z``.
        hyper_dim, hyper_heads, hyper_depth: ViT blocks of the hyper-encoder.
        hyper_down: stride-2 steps from ``y`` to ``z`` (2 in the paper: z at 64).
        layer_scale: initial γ of the codec's HorNet blocks (HorNet: 1e-6, which
            leaves them out of the first thousands of steps).
        codec_patch: if above 0, the compression network is the block-transform
            variant: three HorNet blocks at the cut's resolution, then a
            ``codec_patch``-strided ``codec_patch``² convolution to ``y`` (a linear
            transform of each block of the cut feature); ``g_s`` mirrors it with
            a transposed convolution.  Fitted to data by
            :func:`icm.train.calibrate.fit_block_transform`.  ``dims[1:]`` are then unused.
            Otherwise the paper's network: two stride-2 steps, ``y`` at 4× the cut's stride.
        entropy: ``"hyperprior"`` (the paper: mean-scale hyperprior, ``y`` and
            ``z`` in the file) or ``"factorized"`` (one learned density per
            channel of ``y``, no ``z``: :class:`icm.latent.FactorizedLatent`;
            the hyper-encoder/decoder arguments are then unused).
        class_names: names of the classifier's outputs (ImageNet's by default).
        semantic: if above 0, a sender-side steering branch of that width
            (:class:`SemanticSteer`): the uncompressed tail's stride-16 and stride-32
            stages of the picture scale and shift ``y`` before it is quantised, so that
            the encoder knows what the picture shows when it chooses what to keep.  The
            receiver does not change: it decodes such files as any other.
        receiver: if above 0, a receiver-side refinement of the decoded cut feature of
            that width (:class:`ReceiverRefine`), after ``g_s``; the sender does not change.

    Inputs are RGB ``(B, 3, H, W)`` in ``[0, 1]``, any size (padded to
    ``stride``; stage features are cropped back to the input's extent).
    """

    has_pixel_decoder = False
    tasks = ("classify",)
    refinable = True  # refine_objective: λ·bpp + KL of the class distributions, or detection features
    # "all" (the default): class distribution and detection features at once
    # (icm.tasks.refine.joint_objective), so one refined file keeps every task
    refine_tasks = ("all",) + TASK_NAMES
    refine_default = "all"
    @property
    def unshipped_parts(self) -> tuple[str, ...]:
        """EfficientNet-Lite0's ImageNet weights come with their own package and are not
        stored; a ResNet-50 backbone trained through stages 1–3 is."""
        return ("backbone.",) if self.backbone.name != "resnet50" else ()
    # 8 steps from the analysis transform's latents, the temperature from 0.2: chosen on
    # crops of the training photos (benchmarks/refine.py tune; docs/dicm.md)
    refine_lr = 0.02
    refine_steps = 8
    refine_tau = (0.2, 0.02)

    def __init__(
        self,
        *,
        backbone: str = "resnet50",
        backbone_weights: str | None = None,
        pretrained_backbone: bool = True,
        re_dims: tuple[int, ...] = (128, 128, 128, 192),
        re_depths: tuple[int, ...] = (1, 1, 2),
        re_kernel: int = 11,
        dims: tuple[int, int, int] = (256, 128, 192),
        orders: tuple[int, int, int] = (2, 3, 4),
        filter_size: tuple[int, int] = (28, 28),
        M: int = 192,
        N: int = 128,
        hyper_dim: int = 384,
        hyper_heads: int = 6,
        hyper_depth: int = 1,
        hyper_down: int = 2,
        layer_scale: float = 1e-6,
        codec_patch: int = 0,
        entropy: str = "hyperprior",
        class_names: tuple[str, ...] | None = None,
        semantic: int = 0,
        receiver: int = 0,
    ) -> None:
        super().__init__()
        from .backbones import create_backbone

        if backbone == "resnet50":
            self.backbone = create_backbone("resnet50", weights=backbone_weights)
        else:
            self.backbone = create_backbone(backbone, pretrained=pretrained_backbone)
        c0 = self.backbone.cut_channels
        if dims[0] != c0:
            raise ValueError(f"dims[0] must equal the cut's {c0} channels, got {dims[0]}")
        if hyper_down not in (1, 2):
            raise ValueError("hyper_down is 1 (z at stride 32) or 2 (z at stride 64)")
        self.cut_stride = self.backbone.cut_stride
        if codec_patch < 0:
            raise ValueError("codec_patch is a positive patch size or 0")
        self.codec_patch = codec_patch
        self.y_stride = self.cut_stride * (codec_patch or 4)
        if entropy not in ("hyperprior", "factorized"):
            raise ValueError(f"entropy is 'hyperprior' or 'factorized', not {entropy!r}")
        self.entropy = entropy
        side = 2**hyper_down if entropy == "hyperprior" else 1
        self.stride = max(self.cut_stride * 2 ** len(re_depths), self.y_stride * side)
        self.M, self.N = M, N
        self.class_names = tuple(class_names) if class_names else None

        self.re = RedundancyElimination(c0, re_dims, re_depths, re_kernel)
        c1, c2 = dims[1], dims[2]
        hor = partial(HorBlock, layer_scale=layer_scale)
        if codec_patch:
            self._build_block_codec(c0, orders, filter_size, M, codec_patch, hor)
        else:
            self._build_codec(c0, c1, c2, orders, filter_size, M, hor)
        self.semantic = SemanticSteer(self.backbone.tail.out_channels, semantic, M) if semantic else None
        self.receiver = ReceiverRefine(c0, receiver) if receiver else None
        if entropy == "factorized":
            self.latent = FactorizedLatent(M, upsample=self.stride // self.y_stride)
            self.num_sections = 1  # y only
        else:
            self.latent = self._build_hyperprior(M, N, hyper_dim, hyper_heads, hyper_depth, hyper_down)

    @staticmethod
    def _build_hyperprior(M, N, hyper_dim, hyper_heads, hyper_depth, hyper_down) -> MeanScaleHyperprior:
        last_down = 2 if hyper_down == 2 else 1
        h_a = nn.Sequential(_conv(M, hyper_dim, 3, 2), TokenBlocks(hyper_dim, hyper_depth, hyper_heads),
                            _conv(hyper_dim, N, 3, last_down))
        h_s: list[nn.Module] = [_conv(N, hyper_dim, 3), nn.LeakyReLU(inplace=True)]
        for _ in range(hyper_down):
            h_s += [_conv(hyper_dim, 4 * hyper_dim, 3), nn.PixelShuffle(2), nn.LeakyReLU(inplace=True)]
        h_s.append(_conv(hyper_dim, 2 * M, 3))
        return MeanScaleHyperprior(h_a, nn.Sequential(*h_s), z_channels=N)

    def _build_codec(self, c0, c1, c2, orders, filter_size, M, hor) -> None:
        self.g_a = nn.Sequential(
            hor(c0, orders[0]), _conv(c0, c1, 5, 2), nn.LeakyReLU(inplace=True),
            hor(c1, orders[1]), _conv(c1, c2, 3),
            hor(c2, orders[2], global_filter=True, filter_size=filter_size), _conv(c2, M, 5, 2),
            nn.LeakyReLU(inplace=True),
        )
        self.g_s = nn.Sequential(
            _deconv(M, c2), nn.LeakyReLU(inplace=True),
            hor(c2, orders[2], global_filter=True, filter_size=filter_size), _conv(c2, c1, 3),
            hor(c1, orders[1]), _deconv(c1, c0), nn.LeakyReLU(inplace=True),
            hor(c0, orders[0]),
        )
        self._init_codec()

    def _build_block_codec(self, c0, orders, filter_size, M, patch, hor) -> None:
        # The path from the cut to y and back is linear (the HorNet blocks are
        # residual and start near the identity), so a fitted block transform
        # (fit_block_transform) is a working quantiser before the first step.
        gf = dict(global_filter=True, filter_size=filter_size)
        self.g_a = nn.Sequential(hor(c0, orders[0]), hor(c0, orders[1]), hor(c0, orders[2], **gf),
                                 nn.Conv2d(c0, M, patch, stride=patch))
        self.g_s = nn.Sequential(nn.ConvTranspose2d(M, c0, patch, stride=patch),
                                 hor(c0, orders[2], **gf), hor(c0, orders[1]), hor(c0, orders[0]))
        self._init_codec()

    def _init_codec(self) -> None:
        # Variance-preserving convolutions: with PyTorch's default initialisation
        # the standardised feature shrinks 13× through g_a (y's spread 0.08 on
        # Lite0), everything rounds to 0 and stage 4 starts without a signal.
        for m in [*self.g_a, *self.g_s]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=0.01, nonlinearity="leaky_relu",
                                        mode="fan_in" if isinstance(m, nn.Conv2d) else "fan_out")
                nn.init.zeros_(m.bias)

    # -- shipped weights -----------------------------------------------------
    def load_shipped(self, state: dict) -> None:
        """Load a shipped state dict; EfficientNet-Lite0's own weights are not in it
        (they come with their package), every other key must be."""
        if any(k.startswith("backbone.") for k in state):
            self.load_state_dict(state)
            return
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("backbone.")]
        for part in ("semantic", "receiver"):
            if getattr(self, part) is not None and not any(k.startswith(part + ".") for k in state):
                # a plain codec's weights: the steering or the receiver's branch starts as the identity
                missing = [k for k in missing if not k.startswith(part + ".")]
        if missing or unexpected:
            raise RuntimeError(f"shipped weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")

    # -- parts ---------------------------------------------------------------
    def head_features(self, x: Tensor) -> Tensor:
        """Sender's backbone head on a padded batch: the cut feature ``f``."""
        return self.backbone.head(x)

    def encode_features(self, f_re: Tensor) -> Tensor:
        """Codec encoder: cut feature → ``y``."""
        return self.g_a(self.re.standardise(f_re))

    def analysis(self, x: Tensor) -> Tensor:
        """Padded images → ``y``: head, then :meth:`analysis_of_head`."""
        return self.analysis_of_head(self.head_features(x))

    def analysis_of_head(self, f: Tensor) -> Tensor:
        """The head's cut feature ``f`` → ``y``: RE (bottleneck rounded in eval), codec encoder
        (and the semantic steering, where the model has it)."""
        return self.steer(f, self.encode_features(self.re(f)["f_re"]))

    def steer(self, f: Tensor, y: Tensor) -> Tensor:
        """``y`` scaled and shifted by :class:`SemanticSteer` from the uncompressed tail's
        stages of the cut feature ``f`` (the padded picture's); ``y`` itself without one."""
        if self.semantic is None:
            return y
        return self.semantic(self.backbone.tail(f), y)

    def decode_features(self, y_hat: Tensor, image_size: tuple[int, int] | None = None) -> Tensor:
        """``ŷ`` → decoded cut feature ``f̂``, cropped to the input's extent at the cut stride."""
        # one memory layout → one convolution algorithm → the same result as decoding
        f_hat = self.g_s(y_hat.contiguous())
        if self.receiver is not None:
            f_hat = self.receiver(f_hat)
        f_hat = self.re.unstandardise(f_hat)
        return f_hat if image_size is None else self._crop_to_input(f_hat, image_size)

    def _crop_to_input(self, f: Tensor, image_size: tuple[int, int]) -> Tensor:
        """A cut-stride feature of the padded image cropped to the input's extent."""
        s = self.cut_stride
        return f[..., : -(-image_size[0] // s), : -(-image_size[1] // s)]

    def stages(self, f: Tensor) -> OrderedDict:
        """Receiver's tail on a cut feature: ``{"0": s8, "1": s16, "2": s32}``."""
        return self.backbone.tail(f)

    def classify_features(self, f: Tensor) -> Tensor:
        return self.backbone.classifier(self.stages(f)["2"])

    def analyze_latent(self, y_hat: Tensor, task: str, image_size: tuple[int, int] | None = None) -> Tensor:
        return self.classify_features(self.decode_features(y_hat, image_size))

    # -- verbs ---------------------------------------------------------------
    def forward(self, x: Tensor) -> dict:
        """Everything training and tests need, for ``(B, 3, H, W)`` in ``[0, 1]``.

        Returns:
            ``{"f", "f_re", "f_hat", "y_hat", "stages", "logits", "likelihoods": {"y", "z"},
            "re_likelihoods"}`` (``stages``: the tail's features of ``f̂``); features are at the cut stride, cropped to the
            input; in eval mode ``y_hat`` and ``logits`` equal what decoding the
            bitstream and :meth:`analyze` give.
        """
        self._check_input(x)
        size = tuple(x.shape[-2:])
        f = self.head_features(self.pad(x))
        re = self.re(f)
        with torch.autocast(f.device.type, enabled=False):
            out = self.latent(self.steer(f, self.encode_features(re["f_re"])).float())
        f_hat = self.decode_features(out["y_hat"], size)
        crop = f_hat.shape[-2:]
        stages = self.stages(f_hat)
        return {
            "f": f[..., : crop[0], : crop[1]], "f_re": re["f_re"][..., : crop[0], : crop[1]], "f_hat": f_hat,
            "y_hat": out["y_hat"], "stages": stages, "logits": self.backbone.classifier(stages["2"]),
            "likelihoods": out["likelihoods"], "re_likelihoods": re["likelihoods"],
        }

    def refine_objective(self, x: Tensor, task: str = "classify"):
        """What encoder-side refinement (:mod:`icm.refine`) descends, per image.

        ``all``: the classification term below plus the tail's stage features
        (:func:`icm.tasks.refine.joint_objective`, without detection heads here:
        :func:`icm.codec.encode` passes the shipped ones).

        ``classify``: ``λ·bpp + KL(p‖q)``, ``p`` the uncompressed network's class
        distribution for ``x`` (the sender has the picture), ``q`` the one the
        receiver decodes from ``ŷ``: the CPU-scale stage-4 objective at each
        quality's own ``λ``.

        Detection and segmentation keep their own features instead
        (:func:`icm.tasks.refine.detection_objective`: the model knows no detection heads).
        """
        size = tuple(x.shape[-2:])
        if task == "all":
            from ..tasks.refine import joint_objective

            return joint_objective(x, self, None)
        if task == "classify":
            from ..tasks.refine import keeps_class, last_pass

            with torch.no_grad():
                log_p = F.log_softmax(self.classify_pixels(x), dim=1)
            logits = last_pass(lambda y_hat: self.analyze_latent(y_hat, "classify", size))

            def distortion(y_hat: Tensor) -> Tensor:
                log_q = F.log_softmax(logits(y_hat), dim=1)
                return (log_p.exp() * (log_p - log_q)).sum(dim=1)

            distortion.keeps = keeps_class(log_p, logits)
            return self.lmbda, distortion
        raise ValueError(f"dicm's own refinement objective is for classify, not {task!r}; detection keeps "
                         "its boxes with icm.tasks.refine.detection_objective")

    def classify_pixels(self, x: Tensor) -> Tensor:
        """The uncompressed network's logits (head → tail → classifier, no RE, no codec)."""
        self._check_input(x)
        return self.backbone(x)


def _imagenet_names() -> tuple[str, ...]:
    from ..imagenet import class_names

    return class_names()


def _build(quality: int, defaults: dict, kwargs: dict, lambdas: dict = QUALITIES) -> DICM:
    cfg = {**defaults, **kwargs}
    cfg.setdefault("class_names", _imagenet_names())
    model = DICM(**cfg)
    model.lmbda = lambdas[quality]
    return model


def dicm(quality: int, **kwargs) -> DICM:
    return _build(quality, {"backbone": "resnet50"}, kwargs)


# dicm-lite0: an RE module at the cut's resolution (1×1 projection to 64 channels and back),
# the block-transform codec (codec_patch 4: y at stride 16, z at 32) and a factorized latent;
# why each choice, with the measurements behind it: docs/dicm.md, "Why dicm-lite0 is built so".
LITE0 = dict(backbone="efficientnet_lite0", re_dims=(64,), re_depths=(), dims=(24, 64, 96), orders=(2, 3, 3),
             M=384, N=64, hyper_dim=64, hyper_heads=4, hyper_depth=1, hyper_down=1, filter_size=(56, 56),
             codec_patch=4, entropy="factorized")


# λ of the CPU-scale stage-4 loss (configs/dicm/lite0-stage4-q*.yaml:
# λ·bpp + KL of the class distributions).  Qualities 3–6 started near the slope
# -dKL/dbpp of the fitted transform at the grid each recipe starts from (6, 4, 3,
# 1.5); qualities 1 and 2 are quality 3's codec trained on at λ = 20 and 10.
# As in every family, a higher quality spends more bits.
LITE0_QUALITIES = {1: 20.0, 2: 10.0, 3: 6.0, 4: 0.9, 5: 0.45, 6: 0.16}  # the λ each shipped quality was trained at
# The ids its files carried before its qualities were renumbered: ._facts.LITE0_RETIRED_IDS.


def dicm_lite0(quality: int, **kwargs) -> DICM:
    return _build(quality, LITE0, kwargs, LITE0_QUALITIES)


# dicm-lite0-s8: the same codec on EfficientNet-Lite0 cut one stage later (40 channels at stride 8):
# 2×2 blocks of the cut feature (160 values) become y's 160 channels at stride 16.  Fitted and trained
# on the photo pool through soft rounding (configs/dicm/cut8/); why and what it measured: docs/dicm.md,
# "Status at CPU scale".
LITE0_S8 = dict(LITE0, backbone="efficientnet_lite0_s8", dims=(40, 64, 96), M=160, codec_patch=2, filter_size=(28, 28))
LITE0_S8_QUALITIES = {1: 15.0, 2: 10.0, 3: 6.0, 4: 3.0}  # the λ each shipped quality was trained at


def dicm_lite0_s8(quality: int, **kwargs) -> DICM:
    return _build(quality, LITE0_S8, kwargs, LITE0_S8_QUALITIES)


# dicm-lite0-s8-cutmix: dicm-lite0-s8's network, its qualities 1–3 each trained on at its own λ with
# every batch's crops mixed pairwise (CutMix, loss.mix; configs/dicm/mix/); from dicm-lite0-s8's
# quality 4 at λ 3 and its quality 3 at λ 4.5 CutMix did not pay, and from its quality 2 at λ 8 and 7
# the rate stayed at λ 10's; what each measured: docs/dicm.md, "Status at CPU scale".
LITE0_S8_CUTMIX_QUALITIES = {1: 15.0, 2: 10.0, 3: 6.0}  # the λ each was trained at


def dicm_lite0_s8_cutmix(quality: int, **kwargs) -> DICM:
    return _build(quality, LITE0_S8, kwargs, LITE0_S8_CUTMIX_QUALITIES)
