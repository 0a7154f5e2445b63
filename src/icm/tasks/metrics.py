"""Detection and instance-segmentation accuracy: COCO mean average precision.

A thin, checked front end to :class:`torchmetrics.detection.MeanAveragePrecision`
with the ``pycocotools`` backend (the COCO evaluation of Lin et al., "Microsoft
COCO: Common Objects in Context", ECCV 2014): average precision over IoU
thresholds 0.50:0.05:0.95 and 101 recall points, averaged over classes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

IOU_TYPES = ("bbox", "segm")


def _masks(value, n: int, where: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{where}: 'masks' must be a tensor, got {type(value).__name__}")
    if value.dim() == 4 and value.shape[1] == 1:
        value = value[:, 0]  # Mask R-CNN's (N, 1, H, W)
    if value.dim() != 3 or value.shape[0] != n:
        raise ValueError(f"{where}: 'masks' must be (N, H, W) with N = {n}, got shape {tuple(value.shape)}")
    if value.is_floating_point():
        return value > 0.5  # mask probabilities, binarised as torchvision's Mask R-CNN does
    if value.dtype not in (torch.bool, torch.uint8):
        raise ValueError(f"{where}: 'masks' must be bool, uint8 or float probabilities, got {value.dtype}")
    return value.bool()


def _entry(d, where: str, iou_type: str, scores: bool) -> dict[str, Tensor]:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a dict, got {type(d).__name__}")
    need = ["labels", "boxes" if iou_type == "bbox" else "masks"] + (["scores"] if scores else [])
    missing = [k for k in need if k not in d]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
    labels = d["labels"]
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"{where}: 'labels' must be an integer tensor (N,)")
    n = labels.shape[0]
    out = {"labels": labels.long().cpu()}
    if iou_type == "bbox":
        boxes = d["boxes"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape != (n, 4):
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"{where}: 'boxes' must be (N, 4) x0, y0, x1, y1 with N = {n}, got {shape}")
        out["boxes"] = boxes.detach().float().cpu()
    else:
        out["masks"] = _masks(d["masks"], n, where).cpu()
    if scores:
        s = d["scores"]
        if not isinstance(s, Tensor) or s.shape != (n,):
            raise ValueError(f"{where}: 'scores' must be a tensor (N,) with N = {n}")
        out["scores"] = s.detach().float().cpu()
    elif "iscrowd" in d:  # ground truth: crowd regions match detections without counting as misses
        out["iscrowd"] = torch.as_tensor(d["iscrowd"]).long().reshape(-1).cpu()
    return out


def coco_map(
    predictions: list[dict], targets: list[dict], iou_type: Literal["bbox", "segm"] = "bbox"
) -> dict[str, float]:
    """COCO mAP of ``predictions`` against ``targets`` (pycocotools' evaluation).

    Args:
        predictions: one dict per image: ``labels`` ``(N,)`` int, ``scores`` ``(N,)``
            float, and ``boxes`` ``(N, 4)`` float ``x0, y0, x1, y1`` in pixels
            (``bbox``) or ``masks`` (``segm``) — ``(N, H, W)`` bool/uint8, or float
            probabilities ``(N, H, W)`` / ``(N, 1, H, W)`` binarised at 0.5 (the
            output of :class:`~icm.tasks.detection.CompressedDomainRCNN` as is).
        targets: one dict per image, the same keys without ``scores``; masks
            ``(N, H, W)`` bool/uint8; optional ``iscrowd`` ``(N,)`` 0/1 (COCO's
            crowd regions).
        iou_type: ``"bbox"`` (box IoU) or ``"segm"`` (mask IoU).

    Returns:
        ``{"map": mAP@[.5:.95], "map_50": AP@.5}`` as floats in ``[0, 1]``; COCO's
        convention of ``-1`` where there is no ground truth at all.

    Raises:
        ValueError: an unknown ``iou_type``, lists of different lengths, or an
            entry with missing keys, wrong shapes or types.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    metric = CocoMAP((iou_type,))
    metric.update(predictions, targets)
    result = metric.compute()
    prefix = "" if iou_type == "bbox" else "mask_"
    return {"map": result[f"{prefix}map"], "map_50": result[f"{prefix}map_50"]}


class CocoMAP:
    """Incremental COCO mAP over box and/or mask IoU: :meth:`update` image by image
    (masks are kept run-length encoded, so a whole validation set fits in memory),
    :meth:`compute` at the end.

    Args:
        iou_types: ``("bbox",)``, ``("segm",)`` or both.

    ``compute()`` → ``{"map", "map_50"}`` for ``bbox`` and ``{"mask_map",
    "mask_map_50"}`` for ``segm`` (floats; ``-1`` without any ground truth).
    """

    def __init__(self, iou_types=("bbox",)) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        iou_types = tuple(iou_types)
        if not iou_types or any(t not in IOU_TYPES for t in iou_types):
            raise ValueError(f"iou_types must be among {IOU_TYPES}, got {iou_types!r}")
        # No synchronisation across processes: callers gather compact records themselves
        # (icm.tasks.results), which is cheaper than torchmetrics' tensor gathering.
        self.metrics = {t: MeanAveragePrecision(iou_type=t, backend="pycocotools", sync_on_compute=False)
                        for t in iou_types}

    def update(self, predictions: list[dict], targets: list[dict]) -> None:
        """Add images: the same arguments as :func:`coco_map`."""
        if not isinstance(predictions, (list, tuple)) or not isinstance(targets, (list, tuple)):
            raise ValueError("predictions and targets must be lists of dicts, one per image")
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets: one of each per image")
        for iou_type, metric in self.metrics.items():
            preds = [_entry(p, f"prediction {i}", iou_type, scores=True) for i, p in enumerate(predictions)]
            gts = [_entry(t, f"target {i}", iou_type, scores=False) for i, t in enumerate(targets)]
            if iou_type == "segm":
                for i, (p, t) in enumerate(zip(preds, gts)):
                    if len(p["masks"]) and len(t["masks"]) and p["masks"].shape[-2:] != t["masks"].shape[-2:]:
                        raise ValueError(f"image {i}: predicted masks are {tuple(p['masks'].shape[-2:])}, "
                                         f"ground truth {tuple(t['masks'].shape[-2:])}")
            metric.update(preds, gts)

    def compute(self) -> dict[str, float]:
        out = {}
        for iou_type, metric in self.metrics.items():
            result = metric.compute()
            prefix = "" if iou_type == "bbox" else "mask_"
            out.update({f"{prefix}map": float(result["map"]), f"{prefix}map_50": float(result["map_50"])})
        return out

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
