"""Object detection and instance segmentation on compressed-domain features.

Faster R-CNN (Ren, He, Girshick, Sun, NeurIPS 2015, arXiv 1506.01497) and
Mask R-CNN (He, Gkioxari, Dollár, Girshick, ICCV 2017, arXiv 1703.06870) from
torchvision, on a feature pyramid (FPN: Lin, Dollár, Girshick, He, Hariharan,
Belongie, CVPR 2017, arXiv 1612.03144) built over the tail of a ``dicm``
split backbone.  One set of heads runs on either input::

    pixels (reference):   x ─▶ head ─▶ f ───────────────┐
    bitstream:          .icm ─▶ entropy decode ─▶ ŷ ─▶ g_s ─▶ f̂ ─┴▶ tail ─▶ {"0": s8, "1": s16, "2": s32}
                                                                         │
            FPN (+ max-pool level "pool", s64) ◀─────────────────────────┘
              │
              ├─▶ RPN (anchors on 4 levels) ─▶ proposals ─▶ RoI heads (RoIAlign on "0","1","2")
              └──────────────────────────────────────────▶ boxes, labels, scores [, masks]

Only torchvision's parts run here: :class:`~torchvision.ops.FeaturePyramidNetwork`
with :class:`~torchvision.ops.feature_pyramid_network.LastLevelMaxPool`, the
RPN, the RoI heads, anchors and NMS of :class:`~torchvision.models.detection.MaskRCNN`
/ :class:`~torchvision.models.detection.FasterRCNN`.  Two things differ from
torchvision's detectors:

* **No resizing inside the model.** torchvision's transform rescales every
  image to ``min_size`` (its ``_skip_resize`` flag only holds in training
  mode); here the transform only pads and batches, so features, boxes and
  masks stay in the pixel coordinates of the coded image.  The backbones
  normalise their input themselves, so the transform does not either.
* **A second entry point** :meth:`CompressedDomainRCNN.forward_latent` feeds the
  same FPN, RPN and RoI heads from a decoded latent ``ŷ``: no pixels exist.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..layers.modes import eval_mode
from .dense import DenseBoxHead, build_dense_head

if TYPE_CHECKING:
    from ..models import Compressed
    from ..models.backbones import SplitBackbone
    from ..models.dicm import DICM

# Anchor side lengths per pyramid level (strides 8, 16, 32 and the pooled 64):
# twice the stride, i.e. objects of about 16 to 256 pixels at CPU image sizes.
ANCHOR_SIZES = ((16,), (32,), (64,), (128,))
ASPECT_RATIOS = (0.5, 1.0, 2.0)
# RoIAlign on the tail's stages, not on the pooled level (as torchvision's FPN detectors).
ROI_LEVELS = ["0", "1", "2"]
# Arguments of the torchvision constructors that would bring back resizing or normalisation.
_TRANSFORM_ARGS = ("min_size", "max_size", "image_mean", "image_std", "fixed_size", "_skip_resize", "size_divisible")


class AgnosticMaskPredictor(nn.Module):
    """A mask predictor with one mask per box whatever its class: torchvision's
    up-sampling and 1×1 convolution to a single channel, repeated for every class, so
    that torchvision's loss and inference (which pick the channel of a box's class) read
    that one mask.  For masks learned from instances that carry no class the boxes' know
    (objects cut out on transparency, :class:`icm.teachers.distill.StampInstances`)."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int) -> None:
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, 1, 1, 1, 0)
        self.num_classes = num_classes
        # He initialisation, over the inputs for the single-channel logits (over its one
        # output it would start with logits of several units and a saturated loss)
        nn.init.kaiming_normal_(self.conv5_mask.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.mask_fcn_logits.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv5_mask.bias)
        nn.init.zeros_(self.mask_fcn_logits.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x))).expand(-1, self.num_classes, -1, -1)


def _fpn(in_channels: list[int], out_channels: int) -> FeaturePyramidNetwork:
    return FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=LastLevelMaxPool())


class PixelBackbone(nn.Module):
    """Unsplit backbone + FPN: the reference path on pixels.

    Args:
        backbone: a :class:`~icm.models.backbones.SplitBackbone` (shared, not copied).
        out_channels: FPN width (torchvision's 256; 64 or 96 at CPU scale).
        fpn: an FPN to use instead of a new one (to share it with a :class:`LatentBackbone`).

    ``forward(x)``: ``x`` is RGB ``(B, 3, H, W)`` in ``[0, 1]`` (the head
    normalises it), ``H, W`` multiples of 32 (the detector's transform pads
    to the codec's stride) → ``OrderedDict`` ``"0", "1", "2",
    "pool"`` of ``(B, out_channels, H/s, W/s)`` at ``s`` = 8, 16, 32, 64
    (the pooled level rounds up).
    """

    def __init__(self, backbone: SplitBackbone, out_channels: int = 256, fpn: FeaturePyramidNetwork | None = None):
        super().__init__()
        self.body = backbone
        self.fpn = fpn if fpn is not None else _fpn(backbone.tail.out_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body.features(x))


class LatentBackbone(nn.Module):
    """A ``dicm`` codec's receiver + FPN: decoded latent ``ŷ`` → feature pyramid.

    ``ŷ → g_s → f̂ (stride 4) → tail → {"0", "1", "2"} → FPN → {"0", "1", "2", "pool"}``

    The features cover the codec's padded extent (``ŷ`` at stride 16 of the
    image padded to ``codec.stride``), not the image cropped: every level then
    has an exact power-of-two stride, which the anchor generator derives from
    the ratio of the padded size to the feature size.  The detector clips its
    proposals to each image's true size.

    Args:
        codec: a :class:`~icm.models.dicm.DICM` (shared, not copied).
        out_channels: FPN width.
        fpn: an FPN to use instead of a new one (to share it with a :class:`PixelBackbone`).
    """

    def __init__(self, codec: DICM, out_channels: int = 256, fpn: FeaturePyramidNetwork | None = None):
        super().__init__()
        self.codec = codec
        self.fpn = fpn if fpn is not None else _fpn(codec.backbone.tail.out_channels, out_channels)
        self.out_channels = out_channels

    def padded_size(self, y_hat: Tensor) -> tuple[int, int]:
        """``(H, W)`` in pixels of the padded image that ``ŷ`` codes."""
        s = self.codec.y_stride
        return y_hat.shape[-2] * s, y_hat.shape[-1] * s

    def forward(self, y_hat: Tensor) -> OrderedDict[str, Tensor]:
        """``ŷ`` ``(B, M, h, w)`` → pyramid of ``(B, out_channels, 16h/s, 16w/s)`` at ``s`` = 8, 16, 32, 64."""
        return self.fpn(self.codec.stages(self.codec.decode_features(y_hat)))


class PadOnlyTransform(GeneralizedRCNNTransform):
    """torchvision's detector transform without resizing or normalisation.

    Images ``(3, H, W)`` in ``[0, 1]`` are padded at the bottom and right by
    edge replication (as the codecs pad) to the largest size in the batch,
    rounded up to ``size_divisible``, and stacked; ``image_sizes`` are the
    original sizes, so :meth:`postprocess` maps boxes with a scale of exactly 1
    and pastes masks at the original size.
    """

    def __init__(self, size_divisible: int = 32):
        super().__init__(min_size=1, max_size=1, image_mean=[0.0] * 3, image_std=[1.0] * 3,
                         size_divisible=size_divisible)

    def normalize(self, image: Tensor) -> Tensor:
        if not image.is_floating_point():
            raise TypeError(f"expected float images in [0, 1], got {image.dtype}")
        return image

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        return image, target

    def batch_images(self, images: list[Tensor], size_divisible: int = 32) -> Tensor:
        d = size_divisible
        hp = -(-max(img.shape[-2] for img in images) // d) * d
        wp = -(-max(img.shape[-1] for img in images) // d) * d
        return torch.cat([F.pad(img[None], (0, wp - img.shape[-1], 0, hp - img.shape[-2]), mode="replicate")
                          for img in images])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size_divisible={self.size_divisible}, no resize, no normalisation)"


def _check_targets(targets: list[dict[str, Tensor]] | None, batch: int, masks: bool) -> None:
    if targets is None:
        raise ValueError("training mode needs targets (one dict with 'boxes' and 'labels' per image)")
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} targets for {batch} images")
    for i, t in enumerate(targets):
        boxes = t.get("boxes")
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"target {i}: 'boxes' must be a tensor (N, 4) of x0, y0, x1, y1")
        if (boxes[:, 2:] <= boxes[:, :2]).any():
            raise ValueError(f"target {i}: boxes need x1 > x0 and y1 > y0")
        if "labels" not in t:
            raise ValueError(f"target {i}: no 'labels'")
        if masks and "masks" not in t:
            raise ValueError(f"target {i}: Mask R-CNN needs 'masks' (N, H, W) uint8")


class CompressedDomainRCNN(nn.Module):
    """Faster / Mask R-CNN whose FPN, RPN and RoI heads run on pixels or on a decoded ``dicm`` latent.

    ``self.detector`` is a torchvision :class:`~torchvision.models.detection.MaskRCNN`
    (``masks=True``) or :class:`~torchvision.models.detection.FasterRCNN` built
    on a :class:`PixelBackbone` over ``codec.backbone``, with a
    :class:`PadOnlyTransform`; ``self.latent_backbone`` is a
    :class:`LatentBackbone` over ``codec`` that shares the FPN.  Both entry
    points therefore use the same weights:

    * :meth:`forward_pixels` — the plain torchvision forward on the unsplit
      backbone (the uncompressed reference);
    * :meth:`forward_latent` — the same heads on ``tail(g_s(ŷ))``.

    Both return, like torchvision: in training mode a dict of losses
    (``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``,
    ``loss_box_reg`` and, with masks, ``loss_mask``); in eval mode one dict per
    image with ``boxes`` ``(N, 4)`` float ``x0, y0, x1, y1`` in the image's
    pixels (within ``[0, W] × [0, H]``), ``labels`` ``(N,)`` int64 (0 is the
    background, never returned), ``scores`` ``(N,)`` in ``[0, 1]`` and, with
    masks, ``masks`` ``(N, 1, H, W)`` probabilities in ``[0, 1]`` (threshold at
    0.5 for a binary mask).

    Args:
        codec: a ``dicm`` model (:class:`~icm.models.dicm.DICM`), shared, not copied.
        num_classes: object classes including the background (≥ 2).
        masks: Mask R-CNN (instance segmentation) rather than Faster R-CNN.
        fpn_channels: FPN width (torchvision's 256; 64 or 96 at CPU scale).
        anchor_sizes: anchor side lengths per level ``"0", "1", "2", "pool"``
            (one tuple per level, four levels).
        aspect_ratios: anchor height/width ratios, the same on every level.
        representation_size: width of the box head's two fully connected layers
            (torchvision's 1024).
        mask_layers: channels of the mask head's 3×3 convolutions (torchvision's
            four of 256); the predictor's up-sampling keeps the last width.
        mask_agnostic: one mask per box whatever its class
            (:class:`AgnosticMaskPredictor`) instead of one per class.
        freeze_codec: keep every parameter of ``codec`` — sender, ``g_s``, the
            backbone tail and classifier — fixed (``requires_grad=False``) and in
            eval mode whatever ``train()`` says, so that the very bitstream and
            tail that serve classification also serve detection; only the FPN,
            RPN and RoI heads learn.  With ``False`` the codec's parameters keep
            their ``requires_grad`` flags and follow ``train()``/``eval()``: the
            detection loss then also reaches ``g_s`` and the tail (and, on
            pixels, the head).
        **rcnn_kwargs: further arguments of the torchvision constructor (RPN and
            RoI settings such as ``box_score_thresh``, ``rpn_post_nms_top_n_test``,
            ``box_detections_per_img``, or injected modules).  Resizing and
            normalisation arguments are refused.

    Note:
        The split backbone is registered as ``detector.backbone.body`` and inside
        ``latent_backbone.codec``, and the FPN under both backbones, so the
        state dict names those weights twice (loading it back works);
        ``parameters()`` and :meth:`trainable_parameters` list each one once.

    Attributes:
        architecture: the constructor's arguments (JSON-able), stored with shipped heads.
        categories: ``{label id: class name}`` of the data the heads learned, or ``None``.
    """

    def __init__(
        self,
        codec: DICM,
        num_classes: int,
        *,
        masks: bool = True,
        fpn_channels: int = 256,
        anchor_sizes: tuple[tuple[int, ...], ...] = ANCHOR_SIZES,
        aspect_ratios: tuple[float, ...] = ASPECT_RATIOS,
        representation_size: int = 1024,
        mask_layers: tuple[int, ...] = (256, 256, 256, 256),
        mask_agnostic: bool = False,
        dense: dict | None = None,
        freeze_codec: bool = True,
        **rcnn_kwargs,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too and must be at least 2, got {num_classes}")
        if len(anchor_sizes) != 4:
            raise ValueError(f"anchor_sizes needs one tuple per pyramid level ('0', '1', '2', 'pool'), "
                             f"got {len(anchor_sizes)}")
        if not mask_layers:
            raise ValueError("mask_layers needs at least one convolution width")
        refused = [k for k in _TRANSFORM_ARGS if k in rcnn_kwargs]
        if refused:
            raise ValueError(f"{', '.join(refused)}: the detector neither resizes nor normalises its input")
        self.masks = masks
        self.freeze_codec = freeze_codec
        # What rebuilds these heads (save_heads / load_heads); class names are set by whoever trains them.
        self.architecture = {
            "num_classes": int(num_classes), "masks": bool(masks), "fpn_channels": int(fpn_channels),
            "anchor_sizes": [[int(a) for a in level] for level in anchor_sizes],
            "aspect_ratios": [float(r) for r in aspect_ratios], "representation_size": int(representation_size),
            "mask_layers": [int(c) for c in mask_layers], "rcnn_kwargs": dict(rcnn_kwargs),
        }
        if mask_agnostic:  # written only when set: older heads files rebuild as they were
            self.architecture["mask_agnostic"] = True
        dense = dict(dense or {})
        dense_labels = dense.pop("labels", None)
        self.categories: dict[int, str] | None = None
        if freeze_codec:
            codec.requires_grad_(False).eval()

        pixel = PixelBackbone(codec.backbone, fpn_channels)
        resolution = 7
        # The predictors fix the number of classes: torchvision then wants num_classes=None.
        kw = dict(
            rpn_anchor_generator=AnchorGenerator(tuple(anchor_sizes), (tuple(aspect_ratios),) * len(anchor_sizes)),
            box_roi_pool=MultiScaleRoIAlign(ROI_LEVELS, output_size=resolution, sampling_ratio=2),
            box_head=TwoMLPHead(fpn_channels * resolution**2, representation_size),
            box_predictor=FastRCNNPredictor(representation_size, num_classes),
        )
        if masks:
            kw.update(mask_roi_pool=MultiScaleRoIAlign(ROI_LEVELS, output_size=14, sampling_ratio=2),
                      mask_head=MaskRCNNHeads(fpn_channels, list(mask_layers), 1),
                      mask_predictor=(AgnosticMaskPredictor if mask_agnostic else MaskRCNNPredictor)(
                          mask_layers[-1], mask_layers[-1], num_classes))
        kw.update(rcnn_kwargs)
        self.detector = (MaskRCNN if masks else FasterRCNN)(pixel, **kw)
        # Pad to the codec's stride: the pixel path then sees what the codec's
        # analysis sees, and both paths give features of the same shapes.
        self.detector.transform = PadOnlyTransform(size_divisible=codec.stride)
        # Registered after the detector, so that named_parameters() names the
        # shared FPN and backbone under detector.backbone.
        self.latent_backbone = LatentBackbone(codec, fpn_channels, fpn=pixel.fpn)
        self.dense_head: DenseBoxHead | None = None
        if dense_labels is not None:
            # Boxes come from a dense head (icm.tasks.dense) whose class indices map to these labels;
            # the RPN and RoI box heads are then unused, the mask branch reads the dense boxes.
            self.dense_head = build_dense_head(codec.backbone.tail.out_channels, **dense)
            if len(dense_labels) != self.dense_head.num_classes or not all(
                    0 < int(v) < num_classes for v in dense_labels):
                raise ValueError(f"dense labels must map each of the head's {self.dense_head.num_classes} classes "
                                 f"to a label in [1, {num_classes})")
            self.register_buffer("dense_labels", torch.tensor([int(v) for v in dense_labels]), persistent=False)
            self.architecture["dense"] = {**self.dense_head.arguments, "labels": [int(v) for v in dense_labels]}

    @property
    def codec(self) -> DICM:
        return self.latent_backbone.codec

    def train(self, mode: bool = True) -> CompressedDomainRCNN:
        super().train(mode)
        if self.freeze_codec:
            self.codec.eval()  # frozen BatchNorm statistics must not move
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter that requires a gradient, once (for the optimiser)."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, images, targets: list[dict[str, Tensor]] | None = None):
        """Same as :meth:`forward_pixels`."""
        return self.forward_pixels(images, targets)

    def forward_pixels(self, images: Tensor | list[Tensor], targets: list[dict[str, Tensor]] | None = None,
                       masks: bool | None = None):
        """The torchvision forward on pixels through the unsplit backbone (no codec).

        Args:
            images: ``(B, 3, H, W)`` or a list of ``(3, H_i, W_i)``, RGB in ``[0, 1]``.
            targets: training mode: one dict per image, ``boxes`` ``(N, 4)`` float
                ``x0, y0, x1, y1`` in pixels, ``labels`` ``(N,)`` int64 in
                ``[1, num_classes)``, and for masks ``masks`` ``(N, H, W)`` uint8.
            masks: eval: ``False`` skips the masks of heads that make them (a
                mask per box at the image's size costs memory; boxes need none).

        Returns:
            Losses (training) or detections (eval), see the class docstring.
        """
        images = list(images)
        if self.training:
            _check_targets(targets, len(images), self.masks)
            return self.detector(images, targets)
        if self.dense_head is not None:
            batched, _ = self.detector.transform(images)
            sizes = [tuple(x.shape[-2:]) for x in images]
            body = self.detector.backbone.body
            cut = body.head(batched.tensors)
            return self._dense_detect(body.tail(cut), sizes, masks, cut)
        with _without_masks(self.detector.roi_heads, masks is False):
            return self.detector(images, targets)

    def forward_latent(self, y_hat: Tensor, image_sizes, targets: list[dict[str, Tensor]] | None = None,
                       masks: bool | None = None):
        """The same FPN, RPN and RoI heads on a decoded latent; no pixels.

        Args:
            y_hat: ``(B, M, h, w)`` decoded latent of images padded to the codec's
                stride (``DICM.forward(x)["y_hat"]`` or ``DICM.decompress``).
            image_sizes: ``(H, W)`` of the coded images before padding, one pair
                for the whole batch or a list of ``B`` pairs.
            targets: as in :meth:`forward_pixels` (training mode).
            masks: as in :meth:`forward_pixels` (eval).

        Returns:
            Losses (training) or detections (eval), see the class docstring; boxes
            and masks are in the pixels of each ``image_sizes`` entry.
        """
        if y_hat.dim() != 4:
            raise ValueError(f"expected y_hat (B, M, h, w), got shape {tuple(y_hat.shape)}")
        batch = y_hat.shape[0]
        sizes = _image_sizes(image_sizes, batch)
        padded = self.latent_backbone.padded_size(y_hat)
        for h, w in sizes:
            if not (0 < h <= padded[0] and 0 < w <= padded[1]):
                raise ValueError(f"image size {(h, w)} does not fit the latent, which codes {padded}")
        if self.training:
            _check_targets(targets, batch, self.masks)
            targets = [dict(t) for t in targets]
        elif self.dense_head is not None:
            codec = self.latent_backbone.codec
            cut = codec.decode_features(y_hat)
            return self._dense_detect(codec.stages(cut), sizes, masks, cut)
        features = self.latent_backbone(y_hat)
        # The RPN's anchor generator reads only the shape of the batched image
        # tensor (to derive each level's stride): a stride-0 view holds no pixels.
        images = ImageList(y_hat.new_zeros(()).expand(batch, 3, *padded), sizes)
        det = self.detector
        proposals, proposal_losses = det.rpn(images, features, targets)
        with _without_masks(det.roi_heads, not self.training and masks is False):
            detections, detector_losses = det.roi_heads(features, proposals, images.image_sizes, targets)
        if self.training:
            return {**detector_losses, **proposal_losses}
        return det.transform.postprocess(detections, sizes, sizes)

    def _dense_boxes(self, stages: OrderedDict[str, Tensor], sizes: list[tuple[int, int]],
                     cut: Tensor | None = None) -> list[dict[str, Tensor]]:
        found = self.dense_head.detect(stages, sizes, cut)
        for d in found:
            d["labels"] = self.dense_labels[d["labels"]]
        return found

    @torch.no_grad()
    def _dense_detect(self, stages: OrderedDict[str, Tensor], sizes: list[tuple[int, int]],
                      masks: bool | None = None, cut: Tensor | None = None) -> list[dict[str, Tensor]]:
        """Eval: the dense head's boxes (from ``stages`` and the ``cut`` feature they come
        from) and, with masks, the mask branch's masks for them (torchvision's mask
        inference and pasting)."""
        from torchvision.models.detection.roi_heads import maskrcnn_inference

        found = self._dense_boxes(stages, sizes, cut)
        if self.masks and masks is not False:
            rh = self.detector.roi_heads
            features = self.latent_backbone.fpn(stages)
            boxes = [d["boxes"] for d in found]
            if sum(len(b) for b in boxes):
                logits = rh.mask_predictor(rh.mask_head(rh.mask_roi_pool(features, boxes, sizes)))
                for d, m in zip(found, maskrcnn_inference(logits, [d["labels"] for d in found])):
                    d["masks"] = m
            else:
                for d in found:
                    d["masks"] = stages["0"].new_zeros((0, 1, 28, 28))
        return self.detector.transform.postprocess(found, sizes, sizes)

    @torch.no_grad()
    def find_boxes(self, stages: OrderedDict[str, Tensor], padded: tuple[int, int],
                   image_sizes, cut: Tensor | None = None) -> list[dict[str, Tensor]]:
        """Boxes, labels and scores (no masks) from the backbone's stage features
        ``{"0", "1", "2"}`` of images padded to ``padded``: what the detector finds in
        eval mode (the same boxes as :meth:`forward_pixels` on the pixels those stages
        come from), for a sender that has the stages already and needs no masks.  ``cut``:
        the cut feature the stages come from, for a dense head that reads it
        (:attr:`icm.tasks.dense.DenseBoxHead.reads_cut`).  The heads are back in their
        previous train/eval mode afterwards."""
        sizes = _image_sizes(image_sizes, stages["0"].shape[0])
        if self.dense_head is not None:
            with eval_mode(self):
                return self._dense_boxes(stages, sizes, cut)
        with eval_mode(self):
            features = self.latent_backbone.fpn(stages)
            images = ImageList(stages["0"].new_zeros(()).expand(len(sizes), 3, *padded), sizes)
            proposals, _ = self.detector.rpn(images, features)
            rh = self.detector.roi_heads
            logits, regression = rh.box_predictor(rh.box_head(rh.box_roi_pool(features, proposals, sizes)))
            boxes, scores, labels = rh.postprocess_detections(logits, regression, proposals, sizes)
        return [{"boxes": b, "labels": c, "scores": v} for b, c, v in zip(boxes, labels, scores)]


@contextlib.contextmanager
def _without_masks(roi_heads, skip: bool):
    """torchvision's RoI heads with their mask branch switched off (``has_mask()`` false)
    while ``skip``, back as they were afterwards."""
    if not skip or roi_heads.mask_roi_pool is None:
        yield
        return
    pool = roi_heads.mask_roi_pool
    roi_heads.mask_roi_pool = None
    try:
        yield
    finally:
        roi_heads.mask_roi_pool = pool


def _image_sizes(image_sizes, batch: int) -> list[tuple[int, int]]:
    one = isinstance(image_sizes, (tuple, list)) and len(image_sizes) == 2
    if one and all(isinstance(v, int) for v in image_sizes):
        sizes = [tuple(image_sizes)] * batch
    else:
        sizes = [tuple(int(v) for v in s) for s in image_sizes]
    if len(sizes) != batch or any(len(s) != 2 for s in sizes):
        raise ValueError(f"image_sizes must be one (H, W) or {batch} of them, got {image_sizes!r}")
    return sizes


@torch.no_grad()
def detect_from_bitstream(model: DICM, heads: CompressedDomainRCNN, compressed: Compressed,
                          masks: bool | None = None) -> list[dict[str, Tensor]]:
    """Detections (and masks) straight from a coded batch: entropy decoding → ``ŷ`` →
    :meth:`CompressedDomainRCNN.forward_latent` in eval mode.  No pixels are made.

    Args:
        model: the ``dicm`` codec the bitstream was made with; ``heads`` must be built on it.
        heads: the detector.
        compressed: :class:`~icm.models.Compressed` (``model.compress(x)`` or a parsed ``.icm``).
        masks: ``False``: boxes only, even from heads that make masks.

    Returns:
        One dict per coded image (``boxes``, ``labels``, ``scores`` [, ``masks``]),
        in the pixels of ``compressed.image_size``; ``heads`` is back in its
        previous train/eval mode afterwards.
    """
    if heads.codec is not model:
        raise ValueError("the detection heads were built on another codec instance than `model`")
    y_hat = model.decompress(compressed, pixels=False)["y_hat"]
    with eval_mode(heads):
        return heads.forward_latent(y_hat, tuple(compressed.image_size), masks=masks)


@torch.no_grad()
def detector_picture(model: DICM, heads: CompressedDomainRCNN, compressed: Compressed) -> Tensor:
    """The picture a picture head (:class:`icm.tasks.dense.PictureHead`) decodes from a coded
    batch for its detector: ``(B, 3, H, W)`` in ``[0, 1]`` at ``compressed.image_size``.  It is
    made for NanoDet-g's layers, not for the eye (colours and fine detail are approximate).

    Raises:
        ValueError: heads without a picture head, or built on another codec instance."""
    if heads.codec is not model:
        raise ValueError("the detection heads were built on another codec instance than `model`")
    if not hasattr(heads.dense_head, "picture"):
        raise ValueError("these heads make no picture: their boxes do not come from a picture head")
    h, w = (int(v) for v in compressed.image_size)
    cut = model.decode_features(model.decompress(compressed, pixels=False)["y_hat"])
    with eval_mode(heads):
        return heads.dense_head.picture(model.stages(cut), cut)[..., :h, :w].clamp(0.0, 1.0)
