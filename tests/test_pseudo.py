"""Pseudo-labels (:mod:`icm.teachers.pseudo`): the teacher's boxes on the photo pool as COCO
JSON, checked exactly on a small synthetic pool with a stub detector (no teacher files, no
network): original, flipped and rescaled variants, resuming, atomic writes, the per-class
counts table.  One test, marked ``needs_pool`` and ``needs_teacher``, runs the real teacher
on two pool photos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icm.errors import IcmError
from icm.teachers import pseudo
from icm.teachers.nanodet import COCO_CLASSES, Detections

torch.set_num_threads(1)

# Stub classes: a pure red block is a "person" (label 0, COCO id 1) at 0.9, a pure green one
# a "dog" (label 16, COCO id 18) at 0.4, a pure blue one a "cat" (label 15) at 0.2 (under
# the default threshold: never written).
STUB = {0: (0, 0.9), 1: (16, 0.4), 2: (15, 0.2)}

# name -> (width, height, [(channel, x0, y0, x1, y1)]) blocks on black, x1/y1 exclusive;
# even coordinates so that a 0.5 rescale keeps them exactly (PIL bilinear, threshold 127).
PICTURES = {
    "gcompris/a.png": (40, 30, [(0, 4, 6, 14, 20)]),
    "gcompris/b.png": (36, 48, [(1, 20, 2, 34, 10), (2, 2, 30, 8, 40)]),
    "skvideo/f.png": (32, 24, [(0, 2, 2, 10, 12), (1, 16, 8, 30, 22)]),
    "gcompris/unused.png": (20, 20, [(0, 2, 2, 8, 8)]),
}


class StubTeacher:
    """Finds pure red/green/blue blocks: the box is the block's pixel extent (xyxy, x1 exclusive)."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[tuple[int, int]] = []
        self.fail_at = fail_at
        self.kwargs: list[dict] = []

    def detect(self, image, score_thresh=0.35, iou=0.6, max_det=100, keep_ratio=True):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt
        self.calls.append(image.shape[:2])
        self.kwargs.append({"score_thresh": score_thresh, "iou": iou, "max_det": max_det, "keep_ratio": keep_ratio})
        boxes, scores, labels = [], [], []
        for ch, (label, score) in STUB.items():
            others = [c for c in range(3) if c != ch]
            mask = (image[..., ch] > 127) & (image[..., others] < 128).all(-1)
            if mask.any() and score > score_thresh:
                ys, xs = np.nonzero(mask)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                scores.append(score)
                labels.append(label)
        order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
        return Detections(np.asarray(boxes, np.float32).reshape(-1, 4)[order],
                          np.asarray(scores, np.float32)[order], np.asarray(labels, np.int64)[order])


@pytest.fixture
def pool(tmp_path, monkeypatch):
    """A data folder holding a pool of the pictures above (the last one not used)."""
    root = tmp_path / "data"
    rows = []
    for name, (w, h, blocks) in PICTURES.items():
        a = np.zeros((h, w, 3), np.uint8)
        for ch, x0, y0, x1, y1 in blocks:
            a[y0:y1, x0:x1, ch] = 255
        (root / "pool" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / "pool" / name)
        rows.append({"file": name, "source": name.split("/")[0], "kind": "frame" if name.startswith("skvideo") else "photo",
                     "width": w, "height": h, "split": "train", "use": "unused" not in name})
    (root / "pool" / "manifest.json").write_text(json.dumps(rows))
    monkeypatch.setenv("ICM_DATA_DIR", str(root))
    stub = StubTeacher()
    monkeypatch.setattr(pseudo, "load_teacher", lambda *a, **k: stub)
    return root


def _stub(monkeypatch, **kw) -> StubTeacher:
    stub = StubTeacher(**kw)
    monkeypatch.setattr(pseudo, "load_teacher", lambda *a, **k: stub)
    return stub


def _box(name, ch, scale=1.0, flip=False):
    """The block's expected COCO bbox in a variant's pixels."""
    w, _, blocks = PICTURES[name]
    x0, y0, x1, y1 = next(b[1:] for b in blocks if b[0] == ch)
    x0, y0, x1, y1, w = (v * scale for v in (x0, y0, x1, y1, w))
    if flip:
        x0, x1 = w - x1, w - x0
    return [x0, y0, x1 - x0, y1 - y0]


def _ann(aid, iid, name, ch, scale=1.0, flip=False):
    label, score = STUB[ch]
    b = _box(name, ch, scale, flip)
    return {"id": aid, "image_id": iid, "category_id": pseudo.COCO_IDS[label], "bbox": b, "area": b[2] * b[3],
            "iscrowd": 0, "score": float(np.float32(score))}


def _img(iid, name, scale=1.0, flip=False):
    w, h, _ = PICTURES[name]
    src = name.split("/")[0]
    return {"id": iid, "file_name": f"pool:{name}" + pseudo.variant_tag(scale, flip),
            "width": round(w * scale), "height": round(h * scale), "source": f"pool:{name}", "scale": scale,
            "flip": flip, "pool_source": src, "kind": "frame" if src == "skvideo" else "photo"}


def _strip(coco):
    c = json.loads(json.dumps(coco))
    c["info"].pop("seconds")
    return c


# -- the COCO file -----------------------------------------------------------------------------------


def test_categories_are_the_80_coco_classes_with_their_ids():
    # index = COCO id, "N/A" for the unused ids
    from torchvision.models._meta import _COCO_CATEGORIES

    cats = pseudo.CATEGORIES
    assert len(cats) == 80 == len(set(pseudo.COCO_IDS)) and [c["name"] for c in cats] == list(COCO_CLASSES)
    assert all(_COCO_CATEGORIES[c["id"]] == c["name"] for c in cats)
    assert {c["name"]: c["supercategory"] for c in cats if c["name"] in ("person", "truck", "dog", "cup", "toothbrush",
                                                                         "tv", "bench", "sink", "pizza", "skis")} == {
        "person": "person", "truck": "vehicle", "dog": "animal", "cup": "kitchen", "toothbrush": "indoor",
        "tv": "electronic", "bench": "outdoor", "sink": "appliance", "pizza": "food", "skis": "sports"}


def test_original_flipped_and_rescaled_variants_exactly(pool, tmp_path):
    out = tmp_path / "p.json"
    coco = pseudo.pseudo_label(out, flip=True, scales=(1.0, 0.5), progress=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(coco))
    names = [n for n in PICTURES if "unused" not in n]
    images, anns = [], []
    for name in names:
        for scale, flip in ((1.0, False), (1.0, True), (0.5, False), (0.5, True)):
            iid = len(images) + 1
            images.append(_img(iid, name, scale, flip))
            # best first, as the teacher answers: red (0.9) before green (0.4); blue (0.2) never
            for ch in sorted((b[0] for b in PICTURES[name][2] if STUB[b[0]][1] > 0.3), key=lambda c: -STUB[c][1]):
                anns.append(_ann(len(anns) + 1, iid, name, ch, scale, flip))
    assert coco["images"] == images
    assert coco["annotations"] == anns
    assert coco["categories"] == [dict(c) for c in pseudo.CATEGORIES]
    assert coco["images"][1]["file_name"] == "pool:gcompris/a.png#flip"
    assert coco["images"][3]["file_name"] == "pool:gcompris/a.png#s0.5#flip"
    # a.png is 40 wide, its red block spans x 4..14: mirrored, 26..36; at half scale, 13..18
    assert coco["annotations"][1]["bbox"] == [26, 6, 10, 14]
    assert coco["annotations"][3]["bbox"] == [13, 3, 5, 7]
    info = coco["info"]
    assert info["complete"] is True and info["score_threshold"] == 0.3 and info["keep_ratio"] is True
    assert info["variants"] == ["#flip", "#s0.5", "#s0.5#flip", "original"] and info["sources"] == ["pool"]


def test_the_teacher_gets_its_own_settings_and_each_variant(pool, tmp_path, monkeypatch):
    stub = _stub(monkeypatch)
    pseudo.pseudo_label(tmp_path / "p.json", scales=(1.0, 0.75), score=0.35, progress=False)
    assert stub.calls == [(30, 40), (22, 30), (48, 36), (36, 27), (24, 32), (18, 24)]
    assert stub.kwargs[0] == {"score_thresh": 0.35, "iou": 0.6, "max_det": 100, "keep_ratio": True}


def test_variant_pixels():
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(pseudo.make_variant(a, 1.0, True), a[:, ::-1])
    assert np.array_equal(pseudo.make_variant(a), a)
    assert pseudo.make_variant(np.zeros((30, 40, 3), np.uint8), 0.75).shape == (22, 30, 3)  # round(22.5) = 22
    assert pseudo.make_variant(np.zeros((1, 3, 3), np.uint8), 0.1).shape == (1, 1, 3)
    assert [pseudo.variant_tag(s, f) for s, f in pseudo.variants((1.0, 0.75, 1.5), True)] == [
        "", "#flip", "#s0.75", "#s0.75#flip", "#s1.5", "#s1.5#flip"]


def test_sources_limit_and_unused_pictures(pool, tmp_path):
    coco = pseudo.pseudo_label(tmp_path / "a.json", sources=("skvideo",), progress=False)
    assert [im["file_name"] for im in coco["images"]] == ["pool:skvideo/f.png"]
    assert coco["info"]["sources"] == ["skvideo"]
    coco = pseudo.pseudo_label(tmp_path / "b.json", limit=2, progress=False)
    assert [im["file_name"] for im in coco["images"]] == ["pool:gcompris/a.png", "pool:gcompris/b.png"]
    coco = pseudo.pseudo_label(tmp_path / "c.json", progress=False)
    assert "pool:gcompris/unused.png" not in {im["file_name"] for im in coco["images"]}
    with pytest.raises(IcmError, match="not a pool source"):
        pseudo.pseudo_label(tmp_path / "d.json", sources=("opencv-doc",), progress=False)


def test_no_pool_names_the_pull_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ICM_DATA_DIR", str(tmp_path / "empty"))
    _stub(monkeypatch)
    with pytest.raises(IcmError, match="icm data pull"):
        pseudo.pseudo_label(tmp_path / "p.json", progress=False)
    assert pseudo.default_out() == tmp_path / "empty" / "pseudo" / "nanodet-pool.json"


# -- resuming and atomic writes ----------------------------------------------------------------------


def test_resume_skips_done_images_and_ends_as_a_fresh_run(pool, tmp_path, monkeypatch):
    fresh = pseudo.pseudo_label(tmp_path / "fresh.json", flip=True, progress=False)
    out = tmp_path / "p.json"
    pseudo.pseudo_label(out, flip=True, limit=1, progress=False)
    stub = _stub(monkeypatch)
    resumed = pseudo.pseudo_label(out, flip=True, progress=False)
    assert stub.calls == [(48, 36)] * 2 + [(24, 32)] * 2  # a.png and its flip were not run again
    assert _strip(resumed) == _strip(fresh)
    stub = _stub(monkeypatch)
    again = pseudo.pseudo_label(out, flip=True, progress=False)  # nothing left to do
    assert stub.calls == [] and _strip(again) == _strip(fresh)
    # a later run with other variants adds only those, keeping what the file holds
    more = pseudo.pseudo_label(out, scales=(0.5,), progress=False)
    assert len(stub.calls) == 3 and len(more["images"]) == 9
    assert more["images"][:6] == fresh["images"] and more["annotations"][:len(fresh["annotations"])] == fresh["annotations"]
    assert [im["id"] for im in more["images"]] == list(range(1, 10))
    assert [a["id"] for a in more["annotations"]] == list(range(1, len(more["annotations"]) + 1))
    assert more["info"]["variants"] == ["#flip", "#s0.5", "original"]


def test_an_interrupted_run_leaves_a_partial_file_to_resume(pool, tmp_path, monkeypatch):
    fresh = pseudo.pseudo_label(tmp_path / "fresh.json", flip=True, progress=False)
    out = tmp_path / "p.json"
    _stub(monkeypatch, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        pseudo.pseudo_label(out, flip=True, every=2, progress=False)
    partial = json.loads(out.read_text())
    assert partial["info"]["complete"] is False
    assert partial["images"] == fresh["images"][:3]
    assert partial["annotations"] == [a for a in fresh["annotations"] if a["image_id"] <= 3]
    stub = _stub(monkeypatch)
    assert _strip(pseudo.pseudo_label(out, flip=True, progress=False)) == _strip(fresh)
    assert len(stub.calls) == 3


def test_writes_are_atomic(pool, tmp_path, monkeypatch):
    out = tmp_path / "p.json"
    writes = []
    real_dump, real_replace = json.dump, os.replace

    def dump(obj, f, **kw):
        writes.append(1)
        if len(writes) >= 3:  # the third write dies half-way
            f.write('{"images": [')
            raise OSError("disk full")
        real_dump(obj, f, **kw)

    replaced = []

    def replace(src, dst):
        assert Path(src).parent == Path(dst).parent == tmp_path and Path(src).name.startswith(".p.json.")
        assert json.loads(Path(src).read_text())  # whole before it takes the file's name
        replaced.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(pseudo.json, "dump", dump)
    monkeypatch.setattr(pseudo.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        pseudo.pseudo_label(out, flip=True, every=1, progress=False)
    assert len(replaced) == 2 and len(writes) == 4  # two whole, the broken third, the last try on the way out
    kept = json.loads(out.read_text())  # the last whole write, not the broken one
    assert [im["file_name"] for im in kept["images"]] == ["pool:gcompris/a.png", "pool:gcompris/a.png#flip"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "p.json"]  # no temporary file left


def test_resume_refuses_other_settings_or_a_foreign_file(pool, tmp_path):
    out = tmp_path / "p.json"
    pseudo.pseudo_label(out, limit=1, progress=False)
    with pytest.raises(IcmError, match=r"other settings: score_threshold 0\.3 \(now 0\.5\)"):
        pseudo.pseudo_label(out, score=0.5, progress=False)
    out.write_text("[1, 2]")
    with pytest.raises(IcmError, match="not a pseudo-label file"):
        pseudo.pseudo_label(out, progress=False)
    out.write_text("{")
    with pytest.raises(IcmError, match="unreadable"):
        pseudo.pseudo_label(out, progress=False)


# -- the command line and the counts ------------------------------------------------------------------


def test_command_line(pool, tmp_path, capsys):
    out = tmp_path / "p.json"
    assert pseudo.main(["--out", str(out), "--flip", "--scales", "1.0,0.5", "--threads", "1"]) == 0
    assert f"{out}: 12 images, 16 boxes" in capsys.readouterr().out
    assert pseudo.main(["--counts", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("3 pictures (unaugmented only), 4 boxes at score ≥ 0.3\n")
    assert "| person | 1 | 2 | 2 | 2 | 2 | 1 | too few to learn |" in table
    assert "| dog | 18 | 2 | 2 | 0 | 0 | 1 | too few to learn |" in table
    assert pseudo.main(["--counts", str(out), "--all-variants"]) == 0
    assert "| dog | 18 | 8 | 8 | 0 | 0 | 1 | too few to learn |" in capsys.readouterr().out
    assert pseudo.main(["--out", str(out), "--score", "0.5"]) == 2
    assert "icm: error:" in capsys.readouterr().err
    assert pseudo.main(["--counts", str(tmp_path / "none.json")]) == 2
    for bad in (["--scales", "0"], ["--scales", "a"], ["--score", "1"], ["--limit", "0"]):
        with pytest.raises(SystemExit):
            pseudo.main(bad)


def _coco(rows):
    """A pseudo-label dict from ``(image id, flip, [(COCO id, score), ...])``."""
    images = [{"id": i, "file_name": f"pool:{i}.png" + ("#flip" if f else ""), "width": 9, "height": 9,
               "scale": 1.0, "flip": f} for i, f, _ in rows]
    anns = [{"id": k + 1, "image_id": i, "category_id": c, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0, "score": s}
            for k, (i, c, s) in enumerate((i, c, s) for i, _, boxes in rows for c, s in boxes)]
    return {"info": {"score_threshold": 0.3}, "images": images, "annotations": anns,
            "categories": [dict(c) for c in pseudo.CATEGORIES]}


def test_counts_table_exactly():
    coco = _coco([(1, False, [(1, 0.9)] * 12 + [(18, 0.31), (18, 0.5)]),
                  (2, False, [(1, 0.45)] * 10 + [(62, 0.3), (18, 0.8)]),
                  (3, True, [(88, 0.99)] * 40)])  # a flipped copy: not counted by default
    rows = pseudo.class_counts(coco)
    assert rows[:4] == [{"id": 1, "name": "person", "instances": [22, 12], "images": [2, 1], "most": [12, 12]},
                        {"id": 18, "name": "dog", "instances": [3, 2], "images": [2, 2], "most": [2, 1]},
                        {"id": 62, "name": "chair", "instances": [1, 0], "images": [1, 0], "most": [1, 0]},
                        {"id": 5, "name": "airplane", "instances": [0, 0], "images": [0, 0], "most": [0, 0]}]
    assert len(rows) == 80
    table = pseudo.counts_table(coco).splitlines()
    assert table[:7] == [
        "2 pictures (unaugmented only), 26 boxes at score ≥ 0.3", "",
        ("| class | COCO id | instances ≥ 0.3 | images ≥ 0.3 | instances ≥ 0.5 | images ≥ 0.5 "
         "| most in one picture ≥ 0.3 | note |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        "| person | 1 | 22 | 2 | 12 | 1 | 12 | only in 2 pictures |",
        "| dog | 18 | 3 | 2 | 2 | 2 | 2 | too few to learn |",
        "| chair | 62 | 1 | 1 | 0 | 0 | 1 | too few to learn |"]
    assert table[7:11] == ["", "1 classes with ≥ 20 instances at score ≥ 0.3: person",
                           "  of them from fewer than 5 pictures: person",
                           "2 classes with fewer than 20 (too few to learn): dog, chair"]
    assert table[11].startswith("77 classes never seen: airplane, apple, ")
    assert "| person | 1 | 22 | 2 | 12 | 1 | 12 |  |" in pseudo.counts_table(coco, min_images=2)
    everything = pseudo.counts_table(coco, all_variants=True).splitlines()
    assert everything[0] == "3 pictures (every variant), 66 boxes at score ≥ 0.3"
    assert everything[4] == "| teddy bear | 88 | 40 | 1 | 40 | 1 | 40 | only in 1 picture |"
    assert pseudo.counts_table(coco, min_instances=23).splitlines()[4].endswith("| too few to learn |")
    coco["info"]["score_threshold"] = 0.4
    assert "counts below it are incomplete" in pseudo.counts_table(coco)


# -- the real teacher ---------------------------------------------------------------------------------


@pytest.mark.needs_pool
@pytest.mark.needs_teacher
def test_real_teacher_on_two_pool_photos(tmp_path, capsys):
    from icm.data import load_photo
    from icm.pool import pool_photos
    from icm.teachers.nanodet import load_teacher

    out = tmp_path / "p.json"
    assert pseudo.main(["--out", str(out), "--limit", "2", "--flip", "--threads", "1"]) == 0
    coco = json.loads(out.read_text())
    photos = pool_photos()[:2]
    assert [im["file_name"] for im in coco["images"]] == [p + t for p in photos for t in ("", "#flip")]
    assert coco["info"]["complete"] and len(coco["categories"]) == 80
    teacher = load_teacher()
    ids = {c["id"] for c in coco["categories"]}
    for im in coco["images"]:
        det = teacher.detect(pseudo.make_variant(load_photo(im["source"]), 1.0, im["flip"]), score_thresh=0.3)
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        assert [a["score"] for a in anns] == [float(s) for s in det.scores]
        assert [a["category_id"] for a in anns] == [pseudo.COCO_IDS[i] for i in det.labels]
        for a, b in zip(anns, det.boxes):
            x, y, w, h = a["bbox"]
            assert a["category_id"] in ids and a["score"] > 0.3 and a["iscrowd"] == 0
            assert 0 <= x and 0 <= y and x + w <= im["width"] + 1e-3 and y + h <= im["height"] + 1e-3
            assert np.allclose([x, y, x + w, y + h], b, atol=2e-3)
    assert sum(1 for _ in coco["annotations"]) > 0  # the teacher finds something on real photos
