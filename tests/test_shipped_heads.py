"""The shipped detection and segmentation heads of ``dicm-lite0``: COCO's classes, learned
from the NanoDet-g teacher on the training photos and the photo pool, masks from Tux
Paint stamps; one low-rate ``.icm`` file of a held-out photo answers classify, detect and
segment through ``icm analyze`` and names what is in the picture."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from test_shapes_heads import assert_senders_boxes_are_the_pixel_detectors

from icm import codec
from icm.models._registry import heads_name, read_metadata
from icm.samples import sample_paths
from icm.tasks.annotations import rle_to_mask

HEADS = resources.files("icm.weights").joinpath(heads_name("dicm-lite0"))
pytestmark = pytest.mark.skipif(not HEADS.is_file(), reason="no shipped dicm-lite0 detection heads")


def test_the_weights_card_says_what_the_heads_learned_from():
    from icm.teachers.distill import coco_categories

    meta = read_metadata(HEADS.read_bytes())
    assert meta["model"] == "dicm-lite0" and meta["task"] == "segment"
    assert meta["architecture"]["masks"] and meta["architecture"].get("mask_agnostic") is True
    assert meta["categories"] == {str(k): v for k, v in coco_categories().items()} and len(meta["categories"]) == 80
    assert "NanoDet-g" in meta["taught_by"] and "stamps" in meta["taught_by"]
    # two stages: boxes and classes from the teacher, then the mask head alone on stamps
    assert meta["recipe"]["data"]["kind"] == "stamps" and meta["recipe"]["model"]["train_only"] == "mask"
    assert meta["heads_init"]["recipe"]["data"]["kind"] == "teacher" and meta["heads_init"]["steps"] >= 3000
    assert int(meta["steps"]) > 0
    assert set(meta["measured"]) == {f"q{q}" for q in range(1, 7)}
    assert all(0.0 <= m["bitstream"]["map_50"] <= 1.0 for m in meta["measured"].values())
    # the boxes: all of the teacher on a picture its decoder makes from the file's features
    boxes = meta["boxes"]
    assert meta["architecture"]["dense"]["kind"] == "picture" and len(meta["architecture"]["dense"]["labels"]) == 80
    assert boxes["head"].startswith("picture") and "NanoDet-g" in boxes["taught_by"]
    assert "all of NanoDet-g" in boxes["teacher_parts"] and "Apache-2.0" in boxes["teacher_parts"]
    assert boxes["recipe"]["task"] == "dense" and int(boxes["steps"]) == boxes["recipe"]["trainer"]["max_steps"] == 2000
    assert boxes["recipe"]["dense"].get("cut") == 24  # the decoder reads the decoded cut feature
    assert boxes["recipe"]["loss"]["cls"] == boxes["recipe"]["loss"]["box"] == 0.0  # input and stages only
    assert "stages at strides 4, 8 and 16" in boxes["taught_by"] and "raw outputs" not in boxes["taught_by"]
    assert set(boxes["measured"]) == {f"q{q}" for q in range(1, 7)} and "val photos" in boxes["measured_on"]
    assert all(0.0 <= m["bitstream"]["map_50"] <= 1.0 for m in boxes["measured"].values())
    assert boxes["measured"]["q1"]["pixels"]["map_50"] > 0.6  # on the held-out val photos, against the teacher


@pytest.fixture(scope="module")
def astronaut_file(tmp_path_factory):
    """The astronaut (a bundled photo of the test split) coded once at quality 2."""
    path = tmp_path_factory.mktemp("heads") / "astronaut-q2.icm"
    image = codec.read_rgb(next(p for p in sample_paths() if p.stem == "astronaut"))
    from icm.data import to_tensor

    path.write_bytes(codec.encode(codec.get_model("dicm-lite0", 2), to_tensor(image)[None])[0])
    return path


def test_a_low_rate_file_of_a_held_out_photo_names_the_person_in_it(run_cli, astronaut_file):
    r = run_cli("analyze", astronaut_file, "--task", "detect", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["bpp"] < 0.25  # the whole file
    best = max(out["detections"], key=lambda d: d["score"])
    assert best["label"] == "person" and best["score"] >= 0.4, out["detections"]  # the teacher: 0.73 on pixels
    x0, y0, x1, y1 = best["box"]
    assert x0 < 256 < x1 and y0 < 200 < y1  # it covers the middle of the picture, where she is
    assert {d["label"] for d in out["detections"]} <= {"person", "chair", "tie", "cell phone", "bottle", "cup",
                                                      "teddy bear", "kite", "umbrella", "clock", "tv"}


def test_the_same_file_gives_masks_inside_their_boxes_and_a_class(run_cli, astronaut_file):
    r = run_cli("analyze", astronaut_file, "--task", "segment", "--json")
    assert r.code == 0, r.err
    dets = json.loads(r.out)["detections"]
    assert dets and all(d["label"] == "person" or d["score"] < 0.7 for d in dets)
    for d in dets:
        m = rle_to_mask(d["mask"]).astype(bool)
        assert m.shape == (512, 512)
        x0, y0, x1, y1 = (int(round(v)) for v in d["box"])
        inside = m[max(0, y0 - 2): y1 + 2, max(0, x0 - 2): x1 + 2].sum()
        assert m.sum() > 0 and inside == m.sum()  # the mask is drawn within its box
        assert m.sum() >= 0.03 * (x1 - x0) * (y1 - y0)  # blobs, not boxes: measured 8-40% of the box
    r = run_cli("analyze", astronaut_file, "--task", "classify", "--json")
    assert r.code == 0 and isinstance(json.loads(r.out)["top5"][0]["label"], str)


def test_find_boxes_from_the_senders_stages_are_the_pixel_detectors():
    # Refinement's sender finds its boxes from the backbone stages it computes anyway:
    # bit for bit the boxes, labels and scores of the pixel path, at a size the codec pads too.

    from icm.data import to_tensor

    model = codec.get_model("dicm-lite0", 3)
    heads = codec.get_heads(model).eval()
    image = to_tensor(codec.read_rgb(next(p for p in sample_paths() if p.stem == "coffee")))[None]
    assert_senders_boxes_are_the_pixel_detectors(model, heads, (image, image[..., 3:250, 5:301]))


def test_the_file_draws_its_boxes_on_the_picture_its_detector_saw(run_cli, astronaut_file, tmp_path):
    # no --image: the shipped heads decode a picture for NanoDet-g from the file, and the
    # boxes are drawn on it; it resembles the photo (the decoder learned the teacher's input)
    import numpy as np
    from PIL import Image

    out = tmp_path / "seen.png"
    r = run_cli("analyze", astronaut_file, "--task", "detect", "--draw", out)
    assert r.code == 0, r.err
    with Image.open(out) as im:
        seen = np.asarray(im.convert("RGB")).astype(np.float64)
    photo = codec.read_rgb(next(p for p in sample_paths() if p.stem == "astronaut")).astype(np.float64)
    assert seen.shape == photo.shape == (512, 512, 3)
    # far closer to the photo than a flat grey is (boxes drawn over it included): measured 17.6 dB against 9.9
    mse = np.mean((seen - photo) ** 2)
    assert 10 * np.log10(255**2 / mse) > 15 and mse < 0.25 * np.mean((photo - photo.mean()) ** 2)


def test_the_weights_card_gives_the_box_figures_of_the_head_that_answers(tmp_path):
    from icm.train.export import write_card

    text = write_card(tmp_path / "weights.md").read_text()
    section = text[text.index("## Detection and segmentation heads"):]
    boxes = read_metadata(HEADS.read_bytes())["boxes"]["measured"]
    for point, m in boxes.items():  # the picture head's box mAP per quality, not the mask stage's own
        assert f"| {point} | {m['bpp']:.3f} | {100 * m['bitstream']['map']:.1f} | {100 * m['bitstream']['map_50']:.1f} |" in section
    pixels = boxes["q1"]["pixels"]
    assert f"| uncompressed | — | {100 * pixels['map']:.1f} | {100 * pixels['map_50']:.1f} |" in section
    assert (tmp_path / "weights.md").read_text() == (Path(__file__).parents[1] / "docs" / "weights.md").read_text()
