"""Detection and instance-segmentation data: COCO and PASCAL VOC readers.

Every dataset here yields ``(image, target)``: ``image`` is a ``uint8`` numpy
array ``(H, W, 3)`` RGB and ``target`` a torchvision detection target::

    {"boxes":    float32 (N, 4)   x0, y0, x1, y1 in image pixels,
     "labels":   int64   (N,)     category ids, >= 1 (0 is background),
     "masks":    uint8   (N, H, W) in {0, 1}           (only when masks are requested),
     "image_id": int,
     "area":     float32 (N,),
     "iscrowd":  int64   (N,)     in {0, 1}}

Box convention (one for the whole project): continuous pixel-edge
coordinates, pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``.
The tight box of a mask is therefore ``x0 = min column``, ``x1 = max column
+ 1`` (likewise y), exactly COCO's ``[x, y, w, h]`` with ``w`` = number of
columns, and :func:`masks_to_boxes` returns it (torchvision's
``ops.masks_to_boxes`` returns ``max column``; we add 1). VOC boxes are
1-based and inclusive, so ``(xmin, ymin, xmax, ymax)`` becomes
``(xmin - 1, ymin - 1, xmax, ymax)``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from icm.errors import IcmError
from icm.tasks.rle import mask_to_rle, rle_to_mask

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # label id = index + 1

# --------------------------------------------------------------------- masks


def masks_to_boxes(masks: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Tight boxes of masks ``(N, H, W)`` → ``float32 (N, 4)`` xyxy with ``x1 = max column + 1``.

    Empty masks give ``(0, 0, 0, 0)``.
    """
    from torchvision.ops import masks_to_boxes as tv_masks_to_boxes

    masks = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks) != 0
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32)
    full = masks.flatten(1).any(1)
    if full.any():
        boxes[full] = tv_masks_to_boxes(masks[full]).float() + torch.tensor([0.0, 0.0, 1.0, 1.0])
    return boxes


def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) → ``uint8 (H, W)`` in {0, 1}."""
    if isinstance(segmentation, list):
        polygons = [[float(v) for v in p] for p in segmentation if len(p) >= 6]  # < 3 points: no area
        if any(len(p) % 2 for p in polygons):
            raise IcmError("a polygon has an odd number of coordinates")
        if not polygons:
            return np.zeros((height, width), np.uint8)
        from pycocotools import (
            mask as mask_utils,  # polygons: COCO data for eval/train, not the core
        )

        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)
    if isinstance(segmentation, Mapping):
        mask = rle_to_mask(segmentation)
        if mask.shape != (height, width):
            raise IcmError(f"RLE size {list(mask.shape)} differs from the image size {[height, width]}")
        return mask
    raise IcmError(f"unknown segmentation type {type(segmentation).__name__}")


# ------------------------------------------------------------------- helpers


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``uint8 (H, W, 3)`` RGB (greyscale, palette and RGBA are converted)."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # writable, for in-place augmentation
    except FileNotFoundError:
        raise IcmError(f"image file not found: {path}") from None
    except OSError as e:
        raise IcmError(f"cannot read image {path}: {e}") from None


def make_target(image_id: int, boxes, labels, masks=None, area=None, iscrowd=None, **extra) -> dict:
    """Assemble a target dict with the dtypes of the module docstring; ``area`` defaults to
    the mask area when masks are given, else the box area."""
    boxes = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    target = {"boxes": boxes, "labels": torch.as_tensor(np.asarray(labels, np.int64).reshape(-1))}
    if len(target["labels"]) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(target['labels'])} labels")
    if masks is not None:
        target["masks"] = torch.as_tensor(np.asarray(masks, np.uint8))
        if target["masks"].ndim != 3 or len(target["masks"]) != len(boxes):
            raise ValueError(f"masks must be (N={len(boxes)}, H, W), got {tuple(target['masks'].shape)}")
    if area is None:
        area = (target["masks"].flatten(1).sum(1).float() if masks is not None
                else (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    target["image_id"] = int(image_id)
    target["area"] = torch.as_tensor(np.asarray(area, np.float32).reshape(-1))
    n = len(boxes)
    target["iscrowd"] = torch.as_tensor(np.zeros(n, np.int64) if iscrowd is None else np.asarray(iscrowd, np.int64))
    for key, value in extra.items():
        target[key] = torch.as_tensor(np.asarray(value, np.int64))
    return target


# ---------------------------------------------------------------------- COCO


class CocoDetection(Dataset):
    """A COCO "instances" JSON with its images.

    Labels are the COCO category ids as they stand (COCO 2017: 1..90 with gaps;
    size a detector with ``max(categories) + 1`` classes). Boxes come from the
    annotation's ``bbox`` (``[x, y, w, h]`` → xyxy); annotations whose box has no
    area are dropped, as torchvision's reference does. ``area`` is COCO's.

    Args:
        annotations: path of the JSON file.
        image_dir: folder that ``file_name`` is relative to; ``None``: the JSON's folder.
        masks: decode ``segmentation`` (polygons, RLE) into ``target["masks"]``.
        skip_crowd: drop ``iscrowd = 1`` annotations.

    Attributes:
        ids: image ids, sorted; item ``i`` is image ``ids[i]``.
        categories: ``{id: name}``, without a category 0 (reserved for background;
            labelme writes one named ``_background_``).
    """

    def __init__(self, annotations, image_dir=None, masks: bool = True, skip_crowd: bool = False) -> None:
        path = Path(annotations)
        if not path.is_file():
            raise IcmError(f"annotation file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IcmError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
            raise IcmError(f"{path} is not a COCO instances file: it needs lists 'images', 'annotations' and 'categories'")
        self.path = path
        self.image_dir = path.parent if image_dir is None else Path(image_dir)
        self.masks = masks
        try:
            self.categories = {int(c["id"]): str(c["name"]) for c in data["categories"] if int(c["id"]) != 0}
            self._images = {}
            for im in data["images"]:
                if int(im["id"]) in self._images:
                    raise IcmError(f"{path}: image id {im['id']} appears twice")
                self._images[int(im["id"])] = im
        except (KeyError, TypeError, ValueError) as e:
            raise IcmError(f"{path}: malformed image or category entry ({e!r})") from None
        self.ids = sorted(self._images)
        self._anns: dict[int, list[dict]] = {i: [] for i in self.ids}
        for ann in data["annotations"]:
            self._check(ann)
            if skip_crowd and ann.get("iscrowd", 0):
                continue
            if ann["bbox"][2] > 0 and ann["bbox"][3] > 0:
                self._anns[int(ann["image_id"])].append(ann)

    def _check(self, ann) -> None:
        where = f"{self.path}: annotation {ann.get('id', '?') if isinstance(ann, dict) else '?'}"
        if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= ann.keys():
            raise IcmError(f"{where} needs 'image_id', 'category_id' and 'bbox'")
        if not isinstance(ann["image_id"], int) or ann["image_id"] not in self._images:
            raise IcmError(f"{where} refers to unknown image id {ann['image_id']}")
        if not isinstance(ann["category_id"], int) or ann["category_id"] not in self.categories:
            what = "background (0)" if ann["category_id"] == 0 else "unknown"
            raise IcmError(f"{where} refers to {what} category id {ann['category_id']}")
        if not (isinstance(ann["bbox"], list) and len(ann["bbox"]) == 4):
            raise IcmError(f"{where} has a bbox that is not [x, y, w, h]")
        if self.masks and "segmentation" not in ann:
            raise IcmError(f"{where} has no segmentation; use masks=False")

    def __len__(self) -> int:
        return len(self.ids)

    def image_info(self, index: int) -> dict:
        """The JSON's image entry of item ``index`` (``id``, ``file_name``, ``height``, ``width``, …)."""
        return self._images[self.ids[index]]

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict]:
        info = self.image_info(index)
        image = read_rgb(self.image_dir / info["file_name"])
        h, w = image.shape[:2]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise IcmError(f"{info['file_name']} is {h}x{w} but the JSON says {info['height']}x{info['width']}")
        anns = self._anns[info["id"]]
        boxes = [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]
        masks = None
        if self.masks:
            masks = np.zeros((len(anns), h, w), np.uint8)
            for k, a in enumerate(anns):
                try:
                    masks[k] = segmentation_to_mask(a["segmentation"], h, w)
                except IcmError as e:
                    raise IcmError(f"{self.path}: annotation {a.get('id', '?')}: {e}") from None
        return image, make_target(
            info["id"], boxes, [a["category_id"] for a in anns], masks,
            area=[float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in anns],
            iscrowd=[int(a.get("iscrowd", 0)) for a in anns],
        )


# ----------------------------------------------------------------------- VOC


class VocDetection(Dataset):
    """PASCAL VOC in its standard layout::

        root/JPEGImages/<id>.jpg        root/Annotations/<id>.xml
        root/ImageSets/Main/<set>.txt   root/ImageSets/Segmentation/<set>.txt
        root/SegmentationObject/<id>.png  root/SegmentationClass/<id>.png

    Boxes: VOC's 1-based inclusive ``(xmin, ymin, xmax, ymax)`` become
    ``(xmin - 1, ymin - 1, xmax, ymax)`` (see the module docstring), clipped to
    the image. ``target["difficult"]`` (int64, 0/1) carries VOC's flag;
    ``iscrowd`` is all zeros. ``image_id`` is the item index; ``ids[i]`` is its name.

    Masks (``masks=True``): SegmentationObject is a palette PNG of instance
    indices; object ``k`` (1-based) of the XML is the pixels of value ``k``,
    255 (boundary/void) and 0 belong to no instance; an object without pixels
    gets an all-zero mask. Where SegmentationClass exists, each instance's most
    common class (0 and 255 left out) must be its XML label, else the files are
    out of order and :class:`IcmError` is raised. ``area`` is the mask area with
    masks, the box area without.

    Args:
        root: the VOC folder (e.g. ``VOCdevkit/VOC2012``).
        image_set: a set name read from ``ImageSets/Main`` (``ImageSets/Segmentation``
            when ``masks``), a list of ids, or ``None`` for every XML in Annotations.
        masks: read instance masks.
        classes: names in label order (label = index + 1).
    """

    def __init__(self, root, image_set: str | Sequence[str] | None = "train", masks: bool = False,
                 classes: Sequence[str] = VOC_CLASSES) -> None:
        self.root = Path(root)
        if not (self.root / "Annotations").is_dir():
            raise IcmError(f"not a VOC folder (no Annotations/): {self.root}")
        if image_set is None:
            self.ids = sorted(p.stem for p in (self.root / "Annotations").glob("*.xml"))
        elif isinstance(image_set, str):
            listing = self.root / "ImageSets" / ("Segmentation" if masks else "Main") / f"{image_set}.txt"
            if not listing.is_file():
                raise IcmError(f"image set file not found: {listing}")
            self.ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        else:
            self.ids = [str(i) for i in image_set]
        self.masks = masks
        self.classes = tuple(classes)
        self._label = {name: i + 1 for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.ids)

    def _parse(self, index: int) -> tuple[str, list[dict]]:
        path = self.root / "Annotations" / f"{self.ids[index]}.xml"
        try:
            tree = ET.parse(path).getroot()
        except FileNotFoundError:
            raise IcmError(f"annotation file not found: {path}") from None
        except ET.ParseError as e:
            raise IcmError(f"{path} is not valid XML: {e}") from None
        objects = []
        for k, obj in enumerate(tree.iter("object"), 1):
            name = (obj.findtext("name") or "").strip()
            if name not in self._label:
                raise IcmError(f"{path}: object {k} has unknown class {name!r}")
            try:
                box = [float(obj.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                raise IcmError(f"{path}: object {k} has no valid bndbox") from None
            difficult = int(float((obj.findtext("difficult") or "0").strip() or 0))
            objects.append({"label": self._label[name], "box": box, "difficult": difficult})
        return (tree.findtext("filename") or "").strip(), objects

    def image_info(self, index: int) -> dict:
        """``{"id": index, "file_name": "<id>.jpg"}`` (relative to JPEGImages)."""
        return {"id": index, "file_name": f"{self.ids[index]}.jpg"}

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict]:
        name = self.ids[index]
        filename, objects = self._parse(index)
        image_path = self.root / "JPEGImages" / f"{name}.jpg"
        if not image_path.is_file() and filename:
            image_path = self.root / "JPEGImages" / filename
        image = read_rgb(image_path)
        h, w = image.shape[:2]
        boxes = np.array([o["box"] for o in objects], np.float32).reshape(-1, 4) - np.float32([1, 1, 0, 0])
        boxes = np.clip(boxes, 0, np.float32([w, h, w, h]))
        labels = [o["label"] for o in objects]
        masks = self._masks(name, labels, (h, w)) if self.masks else None
        return image, make_target(index, boxes, labels, masks, difficult=[o["difficult"] for o in objects])

    def _masks(self, name: str, labels: list[int], shape: tuple[int, int]) -> np.ndarray:
        inst = _read_indices(self.root / "SegmentationObject" / f"{name}.png", shape)
        values = set(np.unique(inst).tolist()) - {0, 255}
        if values and max(values) > len(labels):
            raise IcmError(f"SegmentationObject/{name}.png has instance {max(values)} but the XML has {len(labels)} objects")
        masks = np.stack([inst == k for k in range(1, len(labels) + 1)]).astype(np.uint8) if labels \
            else np.zeros((0, *shape), np.uint8)
        class_path = self.root / "SegmentationClass" / f"{name}.png"
        if class_path.is_file():
            cls = _read_indices(class_path, shape)
            for k, (mask, label) in enumerate(zip(masks, labels), 1):
                seen = Counter(cls[mask.astype(bool)].tolist())
                for void in (0, 255):
                    seen.pop(void, None)
                if seen and seen.most_common(1)[0][0] != label:
                    found = seen.most_common(1)[0][0]
                    raise IcmError(
                        f"{name}: object {k} is {self.classes[label - 1]!r} in the XML but instance {k} is class "
                        f"{found} in SegmentationClass: XML objects and SegmentationObject are out of order")
        return masks


def _read_indices(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A palette (or greyscale) PNG as its raw indices ``(H, W)``."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise IcmError(f"{path} is {im.mode}; expected a palette PNG of indices")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise IcmError(f"mask file not found: {path}") from None
    if arr.shape != shape:
        raise IcmError(f"{path} is {arr.shape[0]}x{arr.shape[1]}, the image {shape[0]}x{shape[1]}")
    return arr


# -------------------------------------------------------------------- writer


def to_coco_json(dataset_or_items, categories: Mapping[int, str] | Sequence[str]) -> dict:
    """Write targets as a COCO instances dict (``json.dump`` it as it is).

    Args:
        dataset_or_items: a dataset with ``image_info(index)`` (``CocoDetection``,
            ``VocDetection``), or an iterable of ``(image_info, target)`` with
            ``image_info`` a dict holding ``file_name``, ``height``, ``width`` and
            any extra keys to keep; ``id`` defaults to ``target["image_id"]``.
        categories: ``{id: name}``, or names in label order (label = index + 1).

    Returns:
        ``{"images", "annotations", "categories"}``. Masks become compressed RLE
        (``iscrowd`` as the target says); without masks no ``segmentation`` is
        written. Annotation ids count from 1 (pycocotools' COCOeval treats an
        annotation id 0 as "unmatched").
    """
    cats = dict(categories) if isinstance(categories, Mapping) else {i + 1: n for i, n in enumerate(categories)}
    images, annotations = [], []
    for info, target in _records(dataset_or_items):
        entry = {"id": int(info.get("id", target["image_id"])), **{k: v for k, v in info.items() if k != "id"}}
        if not {"file_name", "height", "width"} <= entry.keys():
            raise IcmError(f"image {entry['id']}: image_info needs file_name, height and width")
        images.append(entry)
        boxes = target["boxes"].tolist()
        labels = target["labels"].tolist()
        masks = target.get("masks")
        areas = target["area"].tolist() if "area" in target else None
        crowd = target["iscrowd"].tolist() if "iscrowd" in target else [0] * len(boxes)
        for j, ((x0, y0, x1, y1), label) in enumerate(zip(boxes, labels)):
            if label not in cats:
                raise IcmError(f"image {entry['id']}: label {label} is not among the categories")
            ann = {"id": len(annotations) + 1, "image_id": entry["id"], "category_id": int(label),
                   "bbox": [x0, y0, x1 - x0, y1 - y0]}
            if masks is not None:
                ann["segmentation"] = mask_to_rle(masks[j].numpy())
            ann["area"] = (areas[j] if areas is not None
                           else float(masks[j].sum()) if masks is not None else (x1 - x0) * (y1 - y0))
            ann["iscrowd"] = int(crowd[j])
            annotations.append(ann)
    return {"images": images, "annotations": annotations,
            "categories": [{"id": int(i), "name": n, "supercategory": ""} for i, n in sorted(cats.items())]}


def _records(dataset_or_items) -> Iterable[tuple[dict, dict]]:
    if hasattr(dataset_or_items, "image_info") and hasattr(dataset_or_items, "__getitem__"):
        for i in range(len(dataset_or_items)):
            image, target = dataset_or_items[i]
            yield {**dataset_or_items.image_info(i), "height": image.shape[0], "width": image.shape[1]}, target
    else:
        yield from dataset_or_items
