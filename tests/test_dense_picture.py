"""The picture head (``icm.tasks.dense.PictureHead``): a decoder from the codec's features to
a picture, and the whole teacher on it; its trainer with a NanoDet of random weights."""

from __future__ import annotations

import pytest
import torch
from test_dense import dense_heads, rcnn_file, random_teacher, recipe  # noqa: F401  (fixtures)
from test_detection_cli import dicm_detection  # noqa: F401  (a fixture)
from test_detection import make_codec

from icm.tasks.detection import detect_from_bitstream

torch.set_num_threads(1)
LITE = [40, 112, 320]


def test_a_picture_head_runs_the_whole_teacher_on_the_picture_it_decodes(monkeypatch):
    from icm.tasks.dense import PictureHead, build_dense_head
    from icm.teachers.nanodet import NanoDet, normalise

    torch.manual_seed(5)
    teacher = NanoDet().eval()
    head = build_dense_head(LITE, kind="picture", refine=1, cut=24, decoder_width=8)
    assert isinstance(head, PictureHead) and head.reads_cut and head.mimics == "picture"
    assert head.arguments["kind"] == "picture" and head.arguments["decoder_width"] == 8
    head.init_from_teacher(teacher)
    assert head.teacher_parts() == [head.teacher]
    lite = [torch.randn(1, 40, 16, 12), torch.randn(1, 112, 8, 6), torch.randn(1, 320, 4, 3)]
    cut = torch.randn(1, 24, 32, 24)
    with torch.no_grad():
        picture = head.picture(lite, cut)
        assert picture.shape == (1, 3, 128, 96)
        mimicked, outs = head(lite, cut)
        # the picture (as the teacher's input) and the teacher's stages at strides 4, 8, 16 on it
        assert [tuple(m.shape[1:]) for m in mimicked] == [(3, 128, 96), (64, 32, 24), (128, 16, 12), (256, 8, 6)]
        assert torch.allclose(mimicked[0], normalise(picture))
        want = teacher(normalise(picture))
        for (ws, wd), (gl, gd) in zip(want, outs):  # exactly the teacher on that picture
            assert torch.allclose(ws, gl.sigmoid(), atol=1e-6) and torch.allclose(wd, gd, atol=1e-5)
        x = torch.rand(1, 3, 128, 96)  # a picture that is the original: the teacher's own answer
        monkeypatch.setattr(head, "picture", lambda stages, c: x)
        for (ws, wd), (gl, gd) in zip(teacher(normalise(x)), head(lite, cut)[1]):
            assert torch.allclose(ws, gl.sigmoid(), atol=1e-6) and torch.allclose(wd, gd, atol=1e-5)
        monkeypatch.undo()
        with pytest.raises(ValueError, match="reads the cut feature"):
            head(lite)
        with pytest.raises(ValueError, match="twice the stride-8 grid"):
            head(lite, torch.randn(1, 24, 16, 12))
    with pytest.raises(ValueError, match="give cut="):
        build_dense_head(LITE, kind="picture")
    with pytest.raises(ValueError, match="teacher's width"):
        build_dense_head(LITE, kind="picture", cut=24, width=64)


def test_normalise_gives_the_teachers_input():
    from icm.teachers.nanodet import MEAN_BGR, STD_BGR, normalise

    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 1.0  # pure red: the teacher's third (R) channel at 255
    y = normalise(x)
    assert torch.allclose(y[0, 2], torch.full((2, 2), (255.0 - MEAN_BGR[2]) / STD_BGR[2]))
    assert torch.allclose(y[0, 0], torch.full((2, 2), -MEAN_BGR[0] / STD_BGR[0]))


def test_a_picture_head_finds_the_same_boxes_from_every_path():
    from test_shapes_heads import assert_senders_boxes_are_the_pixel_detectors

    codec = make_codec()
    heads = dense_heads(codec, seed=3, kind="picture", refine=1, cut=codec.backbone.cut_channels,
                        decoder_width=8, width=128).eval()
    assert heads.dense_head.reads_cut
    with torch.no_grad():
        for o in heads.dense_head.teacher.head_outs:
            o.conv.bias[:80] = 3.0
    x = torch.rand(1, 3, 96, 128)
    assert_senders_boxes_are_the_pixel_detectors(codec, heads, (x, x[..., 3:90, 5:]))
    lat = detect_from_bitstream(codec, heads, codec.compress(x))[0]
    assert 0 < len(lat["boxes"]) <= 10 and lat["masks"].shape[-2:] == (96, 128)
    f = codec.decode_features(codec.decompress(codec.compress(x), pixels=False)["y_hat"])
    mine = heads.find_boxes(codec.stages(f), (96, 128), (96, 128), cut=f)[0]
    assert torch.equal(mine["boxes"], lat["boxes"]) and torch.equal(mine["scores"], lat["scores"])


def test_only_the_decoder_of_a_picture_head_learns(random_teacher, rcnn_file, tmp_path, monkeypatch):  # noqa: F811
    from icm.models import create_model
    from icm.tasks import dense
    from icm.teachers import distill
    from icm.train.dense import build_heads, export, train

    cfg = recipe(tmp_path, rcnn_file)
    cfg["dense"] = {"kind": "picture", "refine": 1, "cut": 24, "decoder_width": 8}
    cfg["loss"] = {"mimic": 1.0, "picture": 0.5, "cls": 0.0, "box": 0.0}
    codec = create_model("dicm-lite0", quality=2, pretrained=True)
    learning = {n.split(".")[1] for n, p in build_heads(cfg, codec).named_parameters() if p.requires_grad}
    assert learning == {"picture_in", "picture_body", "picture_up"}
    cfg["trainer"]["max_steps"] = 2
    seen = []
    real = dense.mimic_loss
    monkeypatch.setattr(dense, "mimic_loss", lambda s, t: seen.append([(a.shape, b.shape) for a, b in zip(s, t)])
                        or real(s, t))
    first = torch.load(train(cfg, max_steps=1, log=lambda s: None), weights_only=True)["dense"]
    last = torch.load(train(cfg, log=lambda s: None), weights_only=True)["dense"]  # resumed: one step more
    # per step the view itself (3 channels), then the teacher's stages at strides 4, 8 and 16 on it
    assert len(seen) == 4 and [[a[1] for a, _ in c] for c in seen[:2]] == [[3], [64, 128, 256]]
    assert all(a == b for c in seen for a, b in c)
    rows = [r.split(",") for r in (tmp_path / "run" / "log.csv").read_text().splitlines()]
    assert rows[0][-1] == "picture" and len(rows) == 3
    for r in rows[1:]:  # loss = mimic + 0.5 · picture (no class or box terms)
        assert float(r[2]) == pytest.approx(float(r[3]) + 0.5 * float(r[8]), abs=2e-5) and float(r[8]) > 0
    assert not torch.equal(last["picture_in.weight"], first["picture_in.weight"])
    assert torch.equal(last["teacher.stem.conv.weight"], distill._TEACHER.model.stem.conv.weight)
    path, meta = export(cfg, out=tmp_path / "picture.safetensors", measure=False)
    assert "all of NanoDet-g" in meta["boxes"]["teacher_parts"] and meta["boxes"]["head"].startswith("picture")
    taught = meta["boxes"]["taught_by"]  # what the nonzero loss terms taught: no class or box outputs here
    assert "input" in taught and "stages at strides 4, 8 and 16" in taught and "raw outputs" not in taught
    from icm.tasks.heads_file import load_heads

    back = load_heads(codec, "dicm-lite0", path=path)
    assert back.dense_head.arguments["kind"] == "picture"


# -- the picture a picture head decodes: drawn on by icm analyze --draw and the demo ----------------


def picture_heads(model):
    from icm.teachers.distill import coco_categories

    heads = dense_heads(model, seed=4, kind="picture", refine=1, cut=model.backbone.cut_channels, decoder_width=8,
                        width=128).eval()
    heads.categories = coco_categories()
    return heads


def test_the_detectors_picture_comes_from_the_file_and_only_from_picture_heads(tmp_path, monkeypatch):
    from test_detection_cli import tiny_heads

    from icm import bitstream, codec
    from icm.models import Compressed, _registry
    from icm.tasks.detection import detector_picture
    from icm.tasks.heads_file import save_heads

    model = make_codec()
    x = torch.rand(1, 3, 48, 60)
    data = codec.encode(model, x)[0]
    f = bitstream.unpack(data)
    comp = Compressed([f.sections], (48, 60))
    heads = picture_heads(model)
    pic = detector_picture(model, heads, comp)
    assert pic.shape == (1, 3, 48, 60) and float(pic.min()) >= 0 and float(pic.max()) <= 1
    # the picture the heads' detector ran on: the head's picture of the decoded cut feature, cropped
    cut = model.decode_features(model.decompress(comp, pixels=False)["y_hat"])
    with torch.no_grad():
        full = heads.dense_head.picture(model.stages(cut), cut)
    assert full.shape[-2:] == (48, 64) and torch.equal(pic, full[..., :48, :60].clamp(0, 1))
    with pytest.raises(ValueError, match="make no picture"):
        detector_picture(model, tiny_heads(model), comp)
    with pytest.raises(ValueError, match="another codec instance"):
        detector_picture(make_codec(), heads, comp)
    # which heads in use make pictures: read from the heads file's header
    path = save_heads(heads, tmp_path / "picture.safetensors", {"model": "dicm-lite0"})
    other = save_heads(tiny_heads(model), tmp_path / "rcnn.safetensors", {"model": "dicm-lite0"})
    monkeypatch.setenv("ICM_HEADS", f"dicm-lite0={path}")
    assert _registry.heads_make_pictures("dicm-lite0") and _registry.heads_tasks("dicm-lite0") == ("detect", "segment")
    monkeypatch.setenv("ICM_HEADS", f"dicm-lite0={other}")
    assert not _registry.heads_make_pictures("dicm-lite0")
    monkeypatch.setenv("ICM_HEADS", f"dicm-lite0={tmp_path / 'none.safetensors'}")
    assert not _registry.heads_make_pictures("dicm-lite0") and _registry.heads_tasks("dicm-lite0") == ()


def test_analyze_draws_on_the_picture_its_heads_decode(run_cli, dicm_detection, tmp_path, monkeypatch):  # noqa: F811
    import numpy as np
    from PIL import Image
    from test_detection_cli import _file, tiny_heads

    from icm import codec
    from icm.models import Compressed, _registry
    from icm.tasks.detection import detector_picture

    model, state = dicm_detection
    path = _file(model, tmp_path)
    state["heads"] = picture_heads(model)
    monkeypatch.setattr(_registry, "heads_make_pictures", lambda name: True)
    out = tmp_path / "drawn.png"
    r = run_cli("analyze", path, "--task", "detect", "--score-thresh", "1", "--draw", out)
    assert r.code == 0, r.err
    f = codec.read(path)
    want = codec.to_uint8(detector_picture(model, state["heads"], Compressed([f.sections], (48, 60))))
    with Image.open(out) as im:  # nothing scores 1: the picture itself, undrawn on
        assert np.array_equal(np.asarray(im.convert("RGB")), want)
    # heads that read features have no picture to draw on: the user must bring one
    state["heads"] = tiny_heads(model)
    monkeypatch.setattr(_registry, "heads_make_pictures", lambda name: False)
    r = run_cli("analyze", path, "--task", "detect", "--draw", out, "-f")
    assert r.code == 2 and "--draw needs --image PICTURE: dicm-lite0 files carry no pixels" in r.err
