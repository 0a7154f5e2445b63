"""The synthetic-shapes heads of ``dicm-lite0`` (a test fixture, ``tests/data/``; once the
shipped heads): one ``.icm`` file answers classify, detect and segment through ``icm
analyze``, and the heads find the objects of synthetic images they never saw."""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from icm import codec
from icm.models._registry import read_metadata
from icm.tasks.annotations import CocoDetection, rle_to_mask
from icm.tasks.metrics import CocoMAP
from icm.tasks.synthetic import CLASSES, ensure_synthetic

from conftest import SHAPES_HEADS as HEADS

pytestmark = pytest.mark.usefixtures("shapes_heads")


@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    """Eight synthetic images of a split no recipe uses (another seed and split name)."""
    root = tmp_path_factory.mktemp("unseen")
    return root, CocoDetection(ensure_synthetic(root, 8, seed=12345, size=(160, 160), split_name="unseen"), masks=True)


def test_heads_metadata_says_how_they_were_trained():
    meta = read_metadata(HEADS.read_bytes())
    assert meta["model"] == "dicm-lite0" and meta["task"] == "segment" and int(meta["steps"]) > 0
    assert meta["recipe"]["data"]["kind"] == "synthetic" and meta["categories"] == {
        str(i + 1): n for i, n in enumerate(CLASSES)}
    best = meta["measured"]["q6"]
    assert 0.0 < best["bitstream"]["map"] <= 1.0 and 0.0 < best["pixels"]["map"] <= 1.0


def test_one_file_gives_a_class_boxes_and_masks_without_pixels(run_cli, unseen, tmp_path):
    root, ds = unseen
    model = codec.get_model("dicm-lite0", 6)
    metric = CocoMAP(("bbox", "segm"))
    for i in range(len(ds)):
        image, t = ds[i]
        path = tmp_path / f"{i}.icm"
        path.write_bytes(codec.encode(model, torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0])
        r = run_cli("analyze", path, "--task", "segment", "--json", "--score-thresh", "0.05")
        assert r.code == 0, r.err
        dets = json.loads(r.out)["detections"]
        pred = {"boxes": torch.tensor([d["box"] for d in dets]).reshape(-1, 4),
                "labels": torch.tensor([d["index"] for d in dets], dtype=torch.int64),
                "scores": torch.tensor([d["score"] for d in dets]),
                "masks": torch.from_numpy(np.stack([rle_to_mask(d["mask"]) for d in dets])
                                          if dets else np.zeros((0, 160, 160), np.uint8))[:, None].float()}
        metric.update([pred], [{k: t[k] for k in ("boxes", "labels", "iscrowd", "masks")}])
    got = metric.compute()
    # The held-out split measured 0.58 box / 0.48 mask mAP at quality 6; eight images are noisy.
    assert got["map"] > 0.45 and got["map_50"] > 0.65 and got["mask_map"] > 0.35, got  # measured 0.59, 0.80, 0.48

    r = run_cli("analyze", path, "--task", "classify", "--json")  # the same file serves classification
    assert r.code == 0, r.err
    top = json.loads(r.out)
    assert top["task"] == "classify" and isinstance(top["top5"][0]["label"], str)


def test_find_boxes_from_the_senders_stages_are_the_pixel_detectors(unseen):
    # Refinement's sender finds its boxes from the backbone stages it computes anyway:
    # bit for bit the boxes, labels and scores of the pixel path, at a size the codec pads too.
    root, ds = unseen
    model = codec.get_model("dicm-lite0", 3)
    heads = codec.get_heads(model).eval()
    image = torch.from_numpy(ds[0][0]).permute(2, 0, 1)[None].float() / 255
    assert_senders_boxes_are_the_pixel_detectors(model, heads, (image, image[..., 3:150, 5:]))


def assert_senders_boxes_are_the_pixel_detectors(model, heads, images) -> None:
    """:meth:`find_boxes` on the backbone stages of each padded picture gives, bit for bit,
    the boxes, labels and scores of the pixel path; at least one box in all."""
    found = 0
    with torch.no_grad():
        for x in images:
            padded = model.pad(x)
            cut = model.backbone.head(padded)
            mine = heads.find_boxes(model.backbone.tail(cut), tuple(padded.shape[-2:]), tuple(x.shape[-2:]), cut=cut)[0]
            ref = heads.forward_pixels(x)[0]
            assert all(torch.equal(mine[k], ref[k]) for k in ("boxes", "labels", "scores"))
            found += len(ref["boxes"])
    assert found > 0
