"""Detections as JSON records, in compact columns, and drawn over a picture.

Detections are torchvision-style dicts (``boxes`` ``(N, 4)`` float ``x0, y0,
x1, y1`` in pixels, ``labels`` ``(N,)``, ``scores`` ``(N,)``, optionally
``masks`` ``(N, 1, H, W)`` probabilities or ``(N, H, W)`` binary).  Three forms
leave the process:

* :func:`to_records` — one JSON object per detection, the ``detections`` list
  of ``icm analyze --json`` (``DESIGN.md``): ``{"label", "index", "score",
  "box": [x0, y0, x1, y1]}`` plus ``"mask"`` (COCO compressed RLE) for
  segmentation;
* :func:`compact` / :func:`expand` — columns for the ``icm eval`` cache and
  for gathering validation results across processes: ``{"boxes", "labels",
  "scores", "masks": [RLE counts, …]}`` and back (the image size is stored
  once, outside);
* :func:`draw` — boxes, labels and translucent masks over a picture (PNG).

Masks are binarised at 0.5, as torchvision's Mask R-CNN does.  Boxes are
rounded to 1/100 pixel and scores to 1e-4 (COCO mAP does not see the difference).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from . import REPORT_SCORE
from .rle import mask_to_rle, rle_to_mask

# Distinct colours (RGB) for class indices, cycled.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0))


def _binary_masks(masks: torch.Tensor) -> np.ndarray:
    """``(N, 1, H, W)`` / ``(N, H, W)`` probabilities or 0/1 → ``uint8 (N, H, W)``."""
    if masks.dim() == 4:
        masks = masks[:, 0]
    masks = masks > 0.5 if masks.is_floating_point() else masks != 0
    return masks.to(torch.uint8).cpu().numpy()


def _keep(det: Mapping, score_min: float) -> torch.Tensor:
    return (det["scores"] >= score_min).nonzero().flatten()


def analysis_row(f, model_name: str, task: str) -> dict:
    """The fields every ``icm analyze --json`` row (and the service's answer) starts with."""
    return {"model": model_name, "quality": f.header.quality, "bytes": f.size, "bpp": round(f.bpp, 6), "task": task}


def top_classes(logits: torch.Tensor, names, k: int) -> list[dict]:
    """The ``k`` most probable classes of one image's logits: ``{"index", "label", "prob"}``, best first."""
    names = names or ()
    probs = torch.softmax(logits.float(), dim=0)
    values, indices = probs.topk(min(k, probs.numel()))
    return [{"index": int(i), "label": names[i] if i < len(names) else str(int(i)), "prob": round(float(v), 6)}
            for v, i in zip(values, indices)]


def to_records(det: Mapping, categories: Mapping[int, str] | None = None, score_thresh: float = REPORT_SCORE,
               masks: bool = False) -> list[dict]:
    """Detections of one image scoring at least ``score_thresh`` → JSON objects, best first.

    Args:
        det: one image's detections.
        categories: ``{label id: name}``; an id without a name is labelled by its number.
        masks: add ``"mask"``, COCO compressed RLE ``{"size": [H, W], "counts": str}``.
    """
    keep = _keep(det, score_thresh)
    keep = keep[det["scores"][keep].argsort(descending=True, stable=True)]
    binary = _binary_masks(det["masks"][keep]) if masks else None
    names = categories or {}
    out = []
    for j, i in enumerate(keep.tolist()):
        index = int(det["labels"][i])
        rec = {"label": names.get(index, str(index)), "index": index, "score": round(float(det["scores"][i]), 4),
               "box": [round(float(v), 2) for v in det["boxes"][i]]}
        if binary is not None:
            rec["mask"] = mask_to_rle(binary[j])
        out.append(rec)
    return out


def compact(det: Mapping, score_min: float = 0.0) -> dict:
    """Detections (or a target, without ``scores``) of one image → JSON-able columns.

    ``masks`` become a list of RLE ``counts`` strings; a target's ``iscrowd`` is kept.
    """
    n = len(det["labels"])
    keep = _keep(det, score_min) if "scores" in det else torch.arange(n)
    out = {"boxes": [[round(float(v), 2) for v in det["boxes"][i]] for i in keep.tolist()],
           "labels": [int(det["labels"][i]) for i in keep.tolist()]}
    if "scores" in det:
        out["scores"] = [round(float(det["scores"][i]), 4) for i in keep.tolist()]
    if "iscrowd" in det:
        out["iscrowd"] = [int(det["iscrowd"][i]) for i in keep.tolist()]
    if "masks" in det:
        out["masks"] = [mask_to_rle(m)["counts"] for m in _binary_masks(det["masks"][keep])]
    return out


def expand(columns: Mapping, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """:func:`compact`'s columns → tensors (``masks`` ``uint8 (N, H, W)`` of ``size``)."""
    h, w = (int(s) for s in size)
    n = len(columns["labels"])
    out = {"boxes": torch.tensor(columns["boxes"], dtype=torch.float32).reshape(n, 4),
           "labels": torch.tensor(columns["labels"], dtype=torch.int64).reshape(n)}
    if "scores" in columns:
        out["scores"] = torch.tensor(columns["scores"], dtype=torch.float32).reshape(n)
    if "iscrowd" in columns:
        out["iscrowd"] = torch.tensor(columns["iscrowd"], dtype=torch.int64).reshape(n)
    if "masks" in columns:
        masks = [rle_to_mask({"size": [h, w], "counts": c}) for c in columns["masks"]]
        out["masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
    return out


def draw(picture: np.ndarray, records: list[dict], alpha: float = 0.45) -> np.ndarray:
    """Boxes, ``label score`` captions and translucent masks of :func:`to_records` over a picture.

    Args:
        picture: ``uint8 (H, W, 3)`` RGB; masks must be of its size.
        records: detections, drawn worst first so that the best ends on top.
        alpha: mask opacity.

    Returns:
        ``uint8 (H, W, 3)``.
    """
    from PIL import Image, ImageDraw

    canvas = np.asarray(picture, dtype=np.float32).copy()
    h, w = canvas.shape[:2]
    order = sorted(records, key=lambda r: r["score"])
    for r in order:
        if "mask" in r:
            m = rle_to_mask(r["mask"]).astype(bool)
            if m.shape != (h, w):
                raise ValueError(f"a mask is {m.shape[1]}x{m.shape[0]}, the picture {w}x{h}")
            colour = np.float32(PALETTE[r["index"] % len(PALETTE)])
            canvas[m] = (1 - alpha) * canvas[m] + alpha * colour
    im = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(im)
    for r in order:
        colour = PALETTE[r["index"] % len(PALETTE)]
        x0, y0, x1, y1 = r["box"]
        pen.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=2)
        caption = f"{r['label']} {r['score']:.2f}"
        left, top, right, bottom = pen.textbbox((0, 0), caption)
        ty = y0 - (bottom - top) - 3 if y0 >= bottom - top + 3 else y0 + 1
        pen.rectangle([x0, ty, x0 + right - left + 3, ty + bottom - top + 2], fill=colour)
        pen.text((x0 + 2, ty - top + 1), caption, fill=(255, 255, 255))
    return np.asarray(im)
