"""A dense box head on the backbone's stage features, learned from a dense teacher.

Region proposals and RoI classifiers (:class:`icm.tasks.detection.CompressedDomainRCNN`)
need many annotated boxes; the teacher of this project (NanoDet-g,
:mod:`icm.teachers.nanodet`) gives far more than boxes: on every cell of its three
pyramid levels a score for each of the 80 COCO classes and a distribution over each box
side (generalised focal loss: Li et al., NeurIPS 2020, arXiv 2006.04388).  A student
with the same output layout can learn all of it from every picture, box or not::

    stages {"0": s8, "1": s16, "2": s32} ─▶ per level 1×1, 3×3 (``refine`` of them), linear 1×1
        ─▶ top-down + bottom-up sums (PAN) ─▶ [features the teacher's PAN is mimicked with]
        ─▶ 3×3 conv ─▶ 1×1 conv ─▶ per cell: 80 class logits, 4 × (reg_max + 1) side logits

The last two convolutions have the teacher's head's shapes, so training starts from the
teacher's own head (:meth:`DenseBoxHead.init_from_teacher`); the rest learns to turn the
codec's decoded stages into what the teacher's head reads.  Decoding is the teacher's:
the softmax expectation of each side's bins × stride from the cell centre, scores above a
threshold, per-class NMS.

The head answers in the teacher's 80 class indices; :class:`CompressedDomainRCNN` maps
them to its labels (COCO 2017 ids) and keeps its mask branch for the boxes this head finds.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STRIDES = (8, 16, 32)
NMS_PRE = 1000
"""Cells per level that decoding considers (by their best class score), as NanoDet does."""
CUT_WIDTH = 64
"""Channels a stitched head makes of the cut feature (:class:`StitchedHead`, ``cut``)."""


def _conv(cin: int, cout: int, k: int, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2)]
    if act:
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class DenseBoxHead(nn.Module):
    """Per-cell class scores and box-side distributions on three stage features.

    Args:
        in_channels: channels of the stages ``"0", "1", "2"`` (strides 8, 16, 32).
        width: channels of the pyramid (the teacher's 128).
        num_classes: classes scored per cell (the teacher's 80).
        reg_max: the largest bin of a side's distribution (the teacher's 10: 11 bins).
        refine: 3×3 convolutions per level before the pyramid sums.
        score_thresh, iou, max_det: decoding: the lowest score kept, the per-class NMS
            overlap, the most boxes per image.

    ``forward(stages)`` → ``(features, outputs)``: the refined pyramid (one
    ``(B, width, h, w)`` per level) and per level ``(logits (B, h·w, num_classes),
    side logits (B, h·w, 4·(reg_max+1)))``, cells row-major.
    """

    def __init__(self, in_channels: list[int], width: int = 128, num_classes: int = 80, reg_max: int = 10,
                 refine: int = 1, score_thresh: float = 0.05, iou: float = 0.6, max_det: int = 100) -> None:
        super().__init__()
        if len(in_channels) != len(STRIDES):
            raise ValueError(f"a dense head reads {len(STRIDES)} stages, got {len(in_channels)} channel counts")
        self.num_classes, self.reg_max = int(num_classes), int(reg_max)
        self.score_thresh, self.iou, self.max_det = float(score_thresh), float(iou), int(max_det)
        # per level: 1×1 in, ``refine`` 3×3 convolutions, a linear 1×1 out (the teacher's laterals
        # and pyramid sums are linear: its head reads values of either sign)
        self.laterals = nn.ModuleList([
            nn.Sequential(_conv(c, width, 1), *[_conv(width, width, 3) for _ in range(refine)],
                          _conv(width, width, 1, act=False)) for c in in_channels])
        self.head_convs = nn.ModuleList([_conv(width, width, 3) for _ in STRIDES])
        self.head_outs = nn.ModuleList([_conv(width, num_classes + 4 * (reg_max + 1), 1, act=False)
                                        for _ in STRIDES])
        with torch.no_grad():  # start near an empty pyramid: the teacher's head then sees little, not noise
            for m in self.laterals:
                m[-1][0].weight.mul_(0.1)
        self.arguments = {"width": int(width), "num_classes": self.num_classes, "reg_max": self.reg_max,
                          "refine": int(refine), "score_thresh": self.score_thresh, "iou": self.iou,
                          "max_det": self.max_det}

    def pyramid(self, stages: OrderedDict[str, Tensor] | list[Tensor]) -> list[Tensor]:
        """The refined pyramid of the stages (what the teacher's PAN output is compared with)."""
        from ..teachers.nanodet import pan_sums

        feats = list(stages.values()) if isinstance(stages, dict) else list(stages)
        return pan_sums([m(f) for m, f in zip(self.laterals, feats)])

    def outputs(self, pyramid: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        from ..teachers.nanodet import head_outputs

        return [(y[..., : self.num_classes], y[..., self.num_classes:])
                for y in head_outputs(pyramid, self.head_convs, self.head_outs)]

    mimics = "pan"
    """What :meth:`forward`'s first output is compared with: the teacher's PAN output."""

    def forward(self, stages, cut: Tensor | None = None):
        """``cut`` is not read (:attr:`reads_cut` false)."""
        pyramid = self.pyramid(stages)
        return pyramid, self.outputs(pyramid)

    @torch.no_grad()
    def init_from_teacher(self, teacher: nn.Module) -> None:
        """Copy the teacher's head (3×3 conv and 1×1 output per level).

        Raises:
            ValueError: a head whose width, classes or bins are not the teacher's."""
        for m, t in zip(list(self.head_convs) + list(self.head_outs), list(teacher.head_convs) + list(teacher.head_outs)):
            if m[0].weight.shape != t.conv.weight.shape:
                raise ValueError(f"the teacher's head is {tuple(t.conv.weight.shape)}, this one "
                                 f"{tuple(m[0].weight.shape)}: width, classes and bins must be the teacher's")
        for mine, theirs in ((self.head_convs, teacher.head_convs), (self.head_outs, teacher.head_outs)):
            for m, t in zip(mine, theirs):
                m[0].weight.copy_(t.conv.weight)
                m[0].bias.copy_(t.conv.bias)

    reads_cut = False
    """Whether :meth:`forward` needs the codec's cut feature (stride 4) beside the stages."""

    @torch.no_grad()
    def detect(self, stages, image_sizes: list[tuple[int, int]], cut: Tensor | None = None) -> list[dict[str, Tensor]]:
        """Boxes in each image's pixels (``image_sizes``: ``(H, W)`` before padding),
        ``labels`` as class indices ``0…num_classes-1``, ``scores``; best first.  ``cut``:
        the cut feature the stages come from (heads that :attr:`reads_cut`)."""
        feats = list(stages.values()) if isinstance(stages, dict) else list(stages)
        _, outs = self(feats, cut)
        return self.decode(outs, [tuple(f.shape[-2:]) for f in feats], image_sizes)

    @torch.no_grad()
    def decode(self, outs: list[tuple[Tensor, Tensor]], grids: list[tuple[int, int]],
               image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """:meth:`detect` from given outputs (per level ``(logits, side logits)`` of grids
        ``(h, w)``): each side the expectation of its bins × stride from the cell centre
        ``((j + 0.5)·s, (i + 0.5)·s)``, clipped to the image; of each level's :data:`NMS_PRE`
        best cells, every (cell, class) above ``score_thresh``; per-class NMS at ``iou``;
        the ``max_det`` best."""
        from torchvision.ops import batched_nms

        results = []
        for b, (h, w) in enumerate(image_sizes):
            boxes, scores = [], []
            for (logits, sides), s, (gh, gw) in zip(outs, STRIDES, grids):
                ys, xs = torch.meshgrid(torch.arange(gh, device=logits.device), torch.arange(gw, device=logits.device),
                                        indexing="ij")
                ctr = torch.stack(((xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s), 1).float()
                p = sides[b].float().reshape(-1, 4, self.reg_max + 1).softmax(-1)
                d = (p * torch.arange(self.reg_max + 1, dtype=p.dtype, device=p.device)).sum(-1) * s
                box = torch.cat((ctr - d[:, :2], ctr + d[:, 2:]), 1)
                box[:, 0::2] = box[:, 0::2].clamp(0, w)
                box[:, 1::2] = box[:, 1::2].clamp(0, h)
                score = logits[b].float().sigmoid()
                if score.shape[0] > NMS_PRE:  # the teacher's: the best cells of each level only
                    keep = score.max(1).values.topk(NMS_PRE).indices
                    box, score = box[keep], score[keep]
                boxes.append(box)
                scores.append(score)
            boxes, scores = torch.cat(boxes), torch.cat(scores)
            cell, label = torch.nonzero(scores > self.score_thresh, as_tuple=True)
            bx, sc = boxes[cell], scores[cell, label]
            ok = (bx[:, 2] - bx[:, 0] >= 1) & (bx[:, 3] - bx[:, 1] >= 1)
            bx, sc, label = bx[ok], sc[ok], label[ok]
            keep = batched_nms(bx, sc, label, self.iou)[: self.max_det]
            results.append({"boxes": bx[keep], "scores": sc[keep], "labels": label[keep]})
        return results


def _teachers_layout(head: nn.Module, kind: str, in_channels, width: int, num_classes: int, reg_max: int,
                     score_thresh: float, iou: float, max_det: int) -> None:
    """Check that a head running the teacher's own layers has its layout, and set its decoding."""
    if len(in_channels) != len(STRIDES):
        raise ValueError(f"a dense head reads {len(STRIDES)} stages, got {len(in_channels)} channel counts")
    if (width, num_classes, reg_max) != (128, 80, 10):
        raise ValueError(f"a {kind} head has the teacher's width 128, 80 classes and 11 bins per side")
    head.num_classes, head.reg_max = int(num_classes), int(reg_max)
    head.score_thresh, head.iou, head.max_det = float(score_thresh), float(iou), int(max_det)


def _check_cut_grid(cut: Tensor | None, s8: Tensor, who: str) -> None:
    """The cut feature (stride 4) given and twice the stride-8 stage's grid."""
    if cut is None:
        raise ValueError(f"{who} reads the cut feature: pass cut=")
    if tuple(cut.shape[-2:]) != tuple(2 * n for n in s8.shape[-2:]):
        raise ValueError(f"a cut feature of {tuple(cut.shape[-2:])} is not twice the stride-8 grid "
                         f"{tuple(s8.shape[-2:])}")


class StitchedHead(DenseBoxHead):
    """The teacher's own upper network on the codec's features: an adapter stands in for
    NanoDet-g's backbone up to stride 8, the rest is the teacher's.

    The lower layers of any convolutional network compute local, generic features, which
    a small adapter learns to reproduce from every cell of every picture, object or not;
    the upper ones, which know COCO's objects, the teacher brings trained::

        stage s8 ─┬─▶ concat ─▶ 1×1, 3×3 (``refine``), 1×1 ─▶ [≈ teacher's stage-2 output, 128 × s8]
        stage s16 ┤ (up-sampled)     ─▶ teacher's CSP stages 3, 4 ─▶ laterals ─▶ PAN ─▶ head
        cut (s4) ─┘ (3×3, stride 2; with ``cut``)

    With ``cut`` (its channels: 24 for Lite0) the adapter also reads the codec's decoded
    cut feature at stride 4, which holds four times the cells of the stride-8 stage and
    none of the network's later squeezing (Lite0's stride-8 stage has 40 channels, the
    teacher's 128); :meth:`load_grown` starts such a head from one without it.

    With ``enter=4`` the stitch is one stage lower: the adapter works at stride 4 on the cut
    feature and the stride-8 stage (up-sampled) and stands in for the teacher's stem and first
    CSP stage only (64 channels at stride 4); the teacher's stages 2, 3 and 4 follow.  Features
    that low are local and generic (edges, colours, textures), closer to what the codec keeps
    than the teacher's stride-8 stage, and more of the teacher is kept::

        cut (s4) ─┬─▶ concat ─▶ 1×1, 3×3 (``refine``), 1×1 ─▶ [≈ teacher's stage-1 output, 64 × s4]
        stage s8 ─┘ (up-sampled)     ─▶ teacher's CSP stages 2, 3, 4 ─▶ laterals ─▶ PAN ─▶ head

    ``forward`` returns ``([adapter output], outputs)``: what training compares with the
    teacher's stage at the adapter's stride (``mimics = "stage"``, :attr:`enter`).  The
    teacher's parts come from :meth:`init_from_teacher`; with ``finetune`` false only the
    adapter learns.
    """

    mimics = "stage"

    def __init__(self, in_channels: list[int], width: int = 128, num_classes: int = 80, reg_max: int = 10,
                 refine: int = 2, score_thresh: float = 0.05, iou: float = 0.6, max_det: int = 100,
                 finetune: bool = False, cut: int = 0, enter: int = 8) -> None:
        from ..teachers.nanodet import ConvAct, CspStage

        nn.Module.__init__(self)
        _teachers_layout(self, "stitched", in_channels, width, num_classes, reg_max, score_thresh, iou, max_det)
        if enter not in (4, 8):
            raise ValueError(f"a stitched head enters the teacher at stride 4 or 8, not {enter}")
        if enter == 4 and not cut:
            raise ValueError("a stitched head that enters at stride 4 reads the cut feature: give cut=")
        self.enter = int(enter)
        if enter == 4:  # the cut joins the concatenation as it is; the stride-8 stage is up-sampled
            self.cut_in, inner, first = None, 64, int(cut) + in_channels[0]
            self.upper = nn.ModuleList([CspStage(64, 2, 2), CspStage(128, 2, 2), CspStage(256, 3, 2)])
        else:
            self.cut_in = ConvAct(int(cut), CUT_WIDTH, stride=2) if cut else None
            inner, first = width, in_channels[0] + in_channels[1] + (CUT_WIDTH if cut else 0)
            self.upper = nn.ModuleList([CspStage(128, 2, 2), CspStage(256, 3, 2)])
        layers = [ConvAct(first, inner, k=1)]
        layers += [ConvAct(inner, inner) for _ in range(refine)]
        layers.append(ConvAct(inner, inner, k=1))  # the teacher's stage outputs follow a LeakyReLU too
        self.adapter = nn.Sequential(*layers)
        self.laterals = nn.ModuleList([ConvAct(c, 128, k=1, act=False) for c in (128, 256, 512)])
        self.head_convs = nn.ModuleList([ConvAct(128, 128) for _ in STRIDES])
        self.head_outs = nn.ModuleList([ConvAct(128, num_classes + 4 * (reg_max + 1), k=1, act=False)
                                        for _ in STRIDES])
        self.finetune = bool(finetune)
        self.arguments = {"kind": "stitch", "width": int(width), "num_classes": self.num_classes,
                          "reg_max": self.reg_max, "refine": int(refine), "score_thresh": self.score_thresh,
                          "iou": self.iou, "max_det": self.max_det, "finetune": self.finetune}
        if cut:
            self.arguments["cut"] = int(cut)
        if enter != 8:
            self.arguments["enter"] = int(enter)

    @property
    def reads_cut(self) -> bool:
        return self.cut_in is not None or self.enter == 4

    def teacher_parts(self) -> list[nn.Module]:
        return [self.upper, self.laterals, self.head_convs, self.head_outs]

    def stitch(self, stages, cut: Tensor | None = None) -> Tensor:
        feats = list(stages.values()) if isinstance(stages, dict) else list(stages)
        if self.enter == 4:
            _check_cut_grid(cut, feats[0], "this stitched head")
            return self.adapter(torch.cat((cut, F.interpolate(feats[0], size=cut.shape[-2:], mode="nearest")), 1))
        grid = feats[0].shape[-2:]
        parts = [feats[0], F.interpolate(feats[1], size=grid, mode="nearest")]
        if self.cut_in is not None:
            if cut is None:
                raise ValueError("this stitched head reads the cut feature too: pass cut=")
            c = self.cut_in(cut)
            if c.shape[-2:] != grid:
                raise ValueError(f"a cut feature of {tuple(cut.shape[-2:])} does not give the stride-8 grid {tuple(grid)}")
            parts.append(c)
        return self.adapter(torch.cat(parts, 1))

    def pyramid_of(self, a: Tensor) -> list[Tensor]:
        """The PAN of the adapter's output ``a`` (at the stride :attr:`enter`)."""
        from ..teachers.nanodet import pan_sums

        feats = [a]
        for stage in self.upper:
            feats.append(stage(feats[-1]))
        return pan_sums([m(f) for m, f in zip(self.laterals, feats[-3:])])

    def pyramid(self, stages, cut: Tensor | None = None) -> list[Tensor]:
        return self.pyramid_of(self.stitch(stages, cut))

    def forward(self, stages, cut: Tensor | None = None):
        a = self.stitch(stages, cut)
        return [a], self.outputs(self.pyramid_of(a))

    @torch.no_grad()
    def load_grown(self, state: dict[str, Tensor]) -> list[str]:
        """Start from a stitched head without the cut input (``state``, same ``refine``):
        every weight copied, the first 1×1's columns for the cut set to zero, so that the
        head answers as before until the cut input learns.  Returns the names not in ``state``."""
        if self.cut_in is None:
            raise ValueError("load_grown needs a head that enters at stride 8 with a cut input")
        own = self.state_dict()
        first = "adapter.0.conv.weight"
        grown = dict(state)
        if first in state:
            old = state[first]
            if old.shape[1] + CUT_WIDTH != own[first].shape[1] or old.shape[0] != own[first].shape[0]:
                raise ValueError(f"{first}: {tuple(old.shape)} is not this head's {tuple(own[first].shape)} less the cut")
            w = torch.zeros_like(own[first])
            w[:, : old.shape[1]] = old
            grown[first] = w
        fresh = [k for k in own if k not in grown]
        if any(not k.startswith("cut_in.") for k in fresh):
            raise ValueError(f"state lacks {[k for k in fresh if not k.startswith('cut_in.')]}")
        self.load_state_dict({**{k: own[k] for k in fresh}, **grown})
        return fresh


    @torch.no_grad()
    def init_from_teacher(self, teacher: nn.Module) -> None:
        """Copy NanoDet-g's stages after the stitch (3 and 4; 2 too with ``enter=4``),
        laterals and head."""
        for mine, theirs in zip(self.upper, list(teacher.stages)[-len(self.upper):]):
            mine.load_state_dict(theirs.state_dict())
        for mine, theirs in ((self.laterals, teacher.laterals), (self.head_convs, teacher.head_convs),
                             (self.head_outs, teacher.head_outs)):
            mine.load_state_dict(theirs.state_dict())


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.b(F.leaky_relu(self.a(x), 0.1))


class PictureHead(DenseBoxHead):
    """The whole teacher on a picture that the head decodes from the codec's features.

    The stitched head's adapter has to be the teacher's lower layers; this one only has to
    give them their input.  A small decoder turns the codec's decoded cut feature (stride
    4) with its stride-8 and stride-16 stages (up-sampled) into an RGB picture of the coded
    image's size, and NanoDet-g runs on it as trained, stem to head::

        cut (s4) ─┬─▶ concat ─▶ 1×1 ─▶ residual 3×3 pairs (``refine``) ─▶ ×2 ─▶ 3×3 ─▶ ×2 ─▶ 3×3
        stage s8 ─┤ (up-sampled)       [pixel shuffles]                            ─▶ RGB picture
        stage s16 ┘                    ─▶ NanoDet-g: stem, CSP stages 1–4, PAN, head

    Training compares the picture (in the teacher's normalised input) and the teacher's
    stages at strides 4, 8 and 16 on it with the same on the original view (``mimics =
    "picture"``): the decoder learns what the teacher's layers need, not a faithful
    picture (it is not meant to be looked at).  ``forward`` returns ``([normalised picture,
    s4, s8, s16], outputs)``.  The teacher's parts (all of NanoDet-g) come from
    :meth:`init_from_teacher`; with ``finetune`` false only the decoder learns.
    """

    mimics = "picture"
    reads_cut = True

    def __init__(self, in_channels: list[int], width: int = 128, num_classes: int = 80, reg_max: int = 10,
                 refine: int = 2, score_thresh: float = 0.05, iou: float = 0.6, max_det: int = 100,
                 finetune: bool = False, cut: int = 0, decoder_width: int = 64) -> None:
        from ..teachers.nanodet import NanoDet

        nn.Module.__init__(self)
        _teachers_layout(self, "picture", in_channels, width, num_classes, reg_max, score_thresh, iou, max_det)
        if not cut:
            raise ValueError("a picture head decodes the cut feature: give cut=")
        c = int(decoder_width)
        self.picture_in = nn.Conv2d(int(cut) + in_channels[0] + in_channels[1], c, 1)
        self.picture_body = nn.Sequential(*[_Residual(c) for _ in range(refine)])
        self.picture_up = nn.Sequential(
            nn.Conv2d(c, 128, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.1),
            nn.Conv2d(32, 32, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(32, 64, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.1),
            nn.Conv2d(16, 3, 3, padding=1))
        self.teacher = NanoDet()
        self.finetune = bool(finetune)
        self.arguments = {"kind": "picture", "width": int(width), "num_classes": self.num_classes,
                          "reg_max": self.reg_max, "refine": int(refine), "score_thresh": self.score_thresh,
                          "iou": self.iou, "max_det": self.max_det, "finetune": self.finetune, "cut": int(cut),
                          "decoder_width": c}

    def teacher_parts(self) -> list[nn.Module]:
        return [self.teacher]

    def picture(self, stages, cut: Tensor | None) -> Tensor:
        """RGB ``[0, 1]``-scaled picture (not clipped) ``(B, 3, 4h, 4w)`` of a cut feature ``(B, C, h, w)``."""
        feats = list(stages.values()) if isinstance(stages, dict) else list(stages)
        _check_cut_grid(cut, feats[0], "a picture head")
        size = cut.shape[-2:]
        x = torch.cat((cut, F.interpolate(feats[0], size=size, mode="nearest"),
                       F.interpolate(feats[1], size=size, mode="nearest")), 1)
        return self.picture_up(self.picture_body(self.picture_in(x))) + 0.5

    def outputs(self, pyramid: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        from ..teachers.nanodet import head_outputs

        return [(y[..., : self.num_classes], y[..., self.num_classes:])
                for y in head_outputs(pyramid, self.teacher.head_convs, self.teacher.head_outs)]

    def forward(self, stages, cut: Tensor | None = None):
        from ..teachers.nanodet import normalise

        x = normalise(self.picture(stages, cut))
        feats = self.teacher.backbone(x, 0)
        return [x] + feats[:3], self.outputs(self.teacher.features(x, feats[1:]))

    @torch.no_grad()
    def init_from_teacher(self, teacher: nn.Module) -> None:
        """Copy all of NanoDet-g."""
        self.teacher.load_state_dict(teacher.state_dict())


def build_dense_head(in_channels: list[int], **arguments) -> DenseBoxHead:
    """A dense head from its ``arguments`` (``kind``: ``"stitch"`` for :class:`StitchedHead`,
    ``"picture"`` for :class:`PictureHead`)."""
    kind = arguments.pop("kind", "dense")
    if kind == "stitch":
        return StitchedHead(in_channels, **arguments)
    if kind == "picture":
        return PictureHead(in_channels, **arguments)
    if kind != "dense":
        raise ValueError(f"dense head kind is 'dense', 'stitch' or 'picture', not {kind!r}")
    return DenseBoxHead(in_channels, **arguments)


def distillation_losses(student: list[tuple[Tensor, Tensor]], teacher: list[tuple[Tensor, Tensor]],
                        reg_max: int = 10, box_from: float = 0.1, beta: float = 2.0) -> dict[str, Tensor]:
    """Dense losses of a student's outputs against the teacher's on the same cells.

    * ``cls``: quality focal loss with the teacher's scores as soft targets, the binary
      cross-entropy of every (cell, class) weighted by ``|σ(s) − t|^beta``, summed and
      divided by the number of cells where the teacher's best score exceeds 0.3 (at least 1);
    * ``box``: KL divergence of the student's side distributions from the teacher's, on the
      cells where the teacher's best score exceeds ``box_from``, weighted by that score.

    ``student``: per level ``(logits, side logits)``; ``teacher``: per level ``(scores after
    the sigmoid, side logits)``; both ``(B, N, ·)``.
    """
    cls, box, weight, positives = 0.0, 0.0, 0.0, 0.0
    for (logits, sides), (t, t_sides) in zip(student, teacher):
        p = logits.sigmoid()
        cls = cls + (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * (p - t).abs().pow(beta)).sum()
        best = t.max(-1).values
        positives = positives + (best > 0.3).sum()
        m = best > box_from
        if m.any():
            ls = F.log_softmax(sides[m].reshape(-1, 4, reg_max + 1), -1)
            lt = F.log_softmax(t_sides[m].reshape(-1, 4, reg_max + 1), -1)
            kl = (lt.exp() * (lt - ls)).sum(-1).mean(-1)
            box = box + (kl * best[m]).sum()
            weight = weight + best[m].sum()
    n = torch.as_tensor(positives).clamp(min=1).float()
    box = box / weight if torch.is_tensor(weight) and weight > 0 else torch.zeros(()) + 0.0 * cls
    return {"cls": cls / n, "box": box}


def mimic_loss(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """Mean squared difference of the student's pyramid from the teacher's, each level
    divided by the teacher level's mean square (so that no level dominates)."""
    total = 0.0
    for s, t in zip(student, teacher):
        total = total + (s - t).pow(2).mean() / t.pow(2).mean().clamp(min=1e-6)
    return total / len(student)
