"""The dense box head (``icm.tasks.dense``) inside the detection heads, its losses, and its
trainer (``icm.train.dense``) with a NanoDet of random weights standing in for the teacher."""

from __future__ import annotations

import math

import pytest
import torch
from test_detection import HEADS, make_codec

from icm.errors import IcmError
from icm.tasks.dense import DenseBoxHead, distillation_losses, mimic_loss
from icm.tasks.detection import CompressedDomainRCNN, detect_from_bitstream
from icm.tasks.heads_file import head_state, load_heads, save_heads
from icm.teachers.pseudo import COCO_IDS

torch.set_num_threads(1)


def test_outputs_have_the_teachers_layout():
    torch.manual_seed(0)
    head = DenseBoxHead([40, 112, 320], width=32)
    stages = [torch.randn(2, 40, 12, 16), torch.randn(2, 112, 6, 8), torch.randn(2, 320, 3, 4)]
    pyramid, outs = head(stages)
    assert [tuple(p.shape) for p in pyramid] == [(2, 32, 12, 16), (2, 32, 6, 8), (2, 32, 3, 4)]
    assert [tuple(o[0].shape) for o in outs] == [(2, 192, 80), (2, 48, 80), (2, 12, 80)]
    assert [tuple(o[1].shape) for o in outs] == [(2, 192, 44), (2, 48, 44), (2, 12, 44)]
    with pytest.raises(ValueError, match="3 stages"):
        DenseBoxHead([40, 112])


def test_decoding_places_a_box_from_its_cell_and_side_bins():
    head = DenseBoxHead([8, 8, 8], width=8, num_classes=5, score_thresh=0.3)
    grids = [(4, 4), (2, 2), (1, 1)]
    outs = []
    for gh, gw in grids:
        outs.append((torch.full((1, gh * gw, 5), -10.0), torch.zeros(1, gh * gw, 44)))
    cell = 1 * 4 + 2  # row 1, column 2 of the stride-8 grid: centre (20, 12)
    outs[0][0][0, cell, 3] = 5.0
    sides = torch.full((4, 11), -30.0)
    sides[:, 2] = 30.0  # every side 2 bins: 16 px
    sides[2, 2], sides[2, 3] = -30.0, 30.0  # the right side 3 bins: 24 px
    outs[0][1][0, cell] = sides.flatten()
    found = head.decode(outs, grids, [(30, 40)])[0]
    assert found["labels"].tolist() == [3]
    assert found["scores"][0] == pytest.approx(1 / (1 + math.exp(-5.0)), rel=1e-5)
    # (20 − 16, 12 − 16 → clipped to 0, 20 + 24, 12 + 16 → clipped to the height 30)
    assert found["boxes"][0].tolist() == pytest.approx([4.0, 0.0, 40.0, 28.0], abs=1e-3)


def test_losses_vanish_when_the_student_says_what_the_teacher_says():
    torch.manual_seed(0)
    t = [(torch.rand(2, 20, 80) * 0.9 + 0.05, torch.randn(2, 20, 44)) for _ in range(3)]
    same = [(torch.logit(s), d.clone()) for s, d in t]
    zero = distillation_losses(same, t)
    assert float(zero["cls"]) == pytest.approx(0.0, abs=1e-9)
    assert float(zero["box"]) == pytest.approx(0.0, abs=1e-6)
    other = distillation_losses([(torch.randn(2, 20, 80), torch.randn(2, 20, 44)) for _ in range(3)], t)
    assert float(other["cls"]) > 0.01 and float(other["box"]) > 0.01
    # no cell above box_from: no box loss, and no division by zero
    quiet = [(torch.full((1, 4, 80), 0.01), torch.randn(1, 4, 44))]
    assert float(distillation_losses([(torch.zeros(1, 4, 80), torch.zeros(1, 4, 44))], quiet)["box"]) == 0.0
    feats = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    assert float(mimic_loss(feats, feats)) == 0.0
    assert float(mimic_loss([torch.zeros_like(f) for f in feats], feats)) == pytest.approx(1.0, rel=1e-5)


def dense_heads(codec, seed: int = 1, **dense) -> CompressedDomainRCNN:
    torch.manual_seed(seed)
    kw = {**HEADS, "box_score_thresh": 0.05}
    return CompressedDomainRCNN(codec, num_classes=91, masks=True, mask_agnostic=True,
                                dense={"width": 16, "score_thresh": 0.2, "max_det": 10, "labels": list(COCO_IDS),
                                       **dense}, **kw)


@pytest.fixture(scope="module")
def codec():
    return make_codec()


def test_dense_heads_answer_in_coco_ids_from_pixels_latents_and_files(codec, tmp_path):
    from icm.models import Compressed

    heads = dense_heads(codec).eval()
    with torch.no_grad():  # make every cell confident, so that detections exist
        for o in heads.dense_head.head_outs:
            o[0].bias[:80] = 3.0
    x = torch.rand(1, 3, 96, 128)
    pix = heads.forward_pixels([x[0]])[0]
    assert 0 < len(pix["boxes"]) <= 10
    assert set(pix["labels"].tolist()) <= set(COCO_IDS)
    assert pix["masks"].shape == (len(pix["boxes"]), 1, 96, 128)
    assert float(pix["masks"].min()) >= 0 and float(pix["masks"].max()) <= 1
    assert (pix["boxes"][:, 2] <= 128).all() and (pix["boxes"][:, 3] <= 96).all()
    lat = detect_from_bitstream(codec, heads, codec.compress(x))[0]
    assert 0 < len(lat["boxes"]) and lat["masks"].shape[-2:] == (96, 128)
    y_hat = codec.decompress(codec.compress(x), pixels=False)["y_hat"]
    stages = codec.stages(codec.decode_features(y_hat))
    found = heads.find_boxes(stages, (96, 128), (96, 128))[0]
    assert torch.equal(found["boxes"], lat["boxes"]) and torch.equal(found["labels"], lat["labels"])
    # saved and loaded as it was: the architecture carries the dense head and its labels
    assert heads.architecture["dense"]["labels"] == list(COCO_IDS)
    path = save_heads(heads, tmp_path / "h.safetensors", {"model": "dicm-lite0"})
    back = load_heads(codec, "dicm-lite0", path=path)
    assert back.dense_head is not None and back.dense_head.arguments == heads.dense_head.arguments
    assert any(k.startswith("dense_head.") for k in head_state(back))
    again = detect_from_bitstream(codec, back, Compressed(codec.compress(x).strings, (96, 128)))[0]
    assert len(again["boxes"]) == len(lat["boxes"])
    assert torch.allclose(again["boxes"], lat["boxes"], atol=0.5)


def test_dense_labels_must_map_every_class(codec):
    with pytest.raises(ValueError, match="dense labels"):
        dense_heads(codec, labels=[1, 2, 3])
    with pytest.raises(ValueError, match="dense labels"):
        dense_heads(codec, labels=[0] + list(COCO_IDS[1:]))


# -- the trainer ---------------------------------------------------------------------------------


@pytest.fixture
def random_teacher(monkeypatch):
    """A NanoDet of random weights in place of the TF.js teacher (no download)."""
    from icm.teachers import distill
    from icm.teachers.nanodet import NanoDet, Teacher

    torch.manual_seed(7)
    monkeypatch.setattr(distill, "_TEACHER", Teacher(NanoDet()))


def recipe(tmp_path, heads_file, **trainer) -> dict:
    from icm.train.config import validate

    cfg = {"task": "dense",
           "model": {"name": "dicm-lite0", "quality": 2, "heads_init": str(heads_file), "paths": ["pixels", 2]},
           "dense": {"width": 128},
           "data": {"train_photos": ["skimage:astronaut", "skimage:coffee"], "size": 64, "short_side": [64, 96],
                    "stamps": 0.0, "batch_size": 1},
           "loss": {"mimic": 1.0, "cls": 1.0, "box": 1.0},
           "optim": {"lr": 1e-3, "warmup_steps": 2},
           "trainer": {"max_steps": 4, "ckpt_every": 1, "out_dir": str(tmp_path / "run"), "threads": 1,
                       "seed": 0, "resume": "last", **trainer}}
    return validate(cfg)


@pytest.fixture
def rcnn_file(tmp_path):
    """Heads without a dense head on the shipped codec, as heads_init."""
    from icm.models import create_model

    codec = create_model("dicm-lite0", quality=2, pretrained=True)
    torch.manual_seed(3)
    heads = CompressedDomainRCNN(codec, num_classes=91, masks=True, mask_agnostic=True, fpn_channels=16,
                                 representation_size=32, mask_layers=(8,))
    return save_heads(heads, tmp_path / "rcnn.safetensors", {"model": "dicm-lite0"})


def test_dense_training_learns_resumes_exactly_and_exports(random_teacher, rcnn_file, tmp_path):
    from icm.models import create_model
    from icm.train.dense import export, train

    straight = recipe(tmp_path / "a", rcnn_file)
    last = train(straight, log=lambda s: None)
    rows = (last.parent / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,path,loss") and len(rows) == 5
    assert [r.split(",")[1] for r in rows[1:]] == ["pixels", "2", "pixels", "2"]
    losses = [float(r.split(",")[2]) for r in rows[1:]]
    assert all(math.isfinite(v) and v > 0 for v in losses)
    a = torch.load(last, weights_only=True)
    assert a["step"] == 4
    # interrupted after 2 steps, resumed to 4: the same weights
    cut = recipe(tmp_path / "b", rcnn_file)
    train(cut, max_steps=2, log=lambda s: None)
    b = torch.load(train(recipe(tmp_path / "b", rcnn_file), log=lambda s: None), weights_only=True)
    assert b["step"] == 4
    for k, v in a["dense"].items():
        assert torch.equal(v, b["dense"][k]), k
    # the head started from the teacher's head and moved
    init = torch.load(last.parent / "last.pt", weights_only=True)["dense"]["head_outs.0.0.bias"]
    assert not torch.equal(init, torch.zeros_like(init))
    path, meta = export(straight, out=tmp_path / "dense.safetensors")
    assert meta["boxes"]["steps"] == 4 and "NanoDet-g" in meta["boxes"]["taught_by"]
    codec = create_model("dicm-lite0", quality=2, pretrained=True)
    heads = load_heads(codec, "dicm-lite0", path=path)
    assert heads.dense_head is not None
    assert torch.allclose(heads.dense_head.state_dict()["head_outs.0.0.bias"], a["dense"]["head_outs.0.0.bias"],
                          atol=1e-2)


def test_a_head_of_another_width_cannot_start_from_the_teacher(random_teacher, rcnn_file, tmp_path):
    from icm.train.dense import train

    cfg = recipe(tmp_path, rcnn_file)
    cfg["dense"]["width"] = 16
    with pytest.raises(IcmError, match="width, classes and bins must be the teacher's"):
        train(cfg, log=lambda s: None)


def test_dense_recipes_refuse_what_nothing_reads(tmp_path, rcnn_file):
    from icm.train.config import validate
    from icm.train.dense import build_heads

    cfg = recipe(tmp_path, rcnn_file)
    cfg["dense"]["widht"] = 8
    with pytest.raises(IcmError, match="did you mean 'width'"):
        validate(cfg)
    cfg = recipe(tmp_path, rcnn_file)
    cfg["model"]["heads_init"] = str(tmp_path / "missing.safetensors")
    from icm.models import create_model

    with pytest.raises(IcmError, match="heads_init not found"):
        build_heads(cfg, create_model("dicm-lite0", quality=2, pretrained=True))


# -- the stitched head ---------------------------------------------------------------------------


def test_a_stitched_head_runs_the_teachers_upper_network_exactly():
    from icm.tasks.dense import StitchedHead, build_dense_head
    from icm.teachers.nanodet import NanoDet

    torch.manual_seed(5)
    teacher = NanoDet().eval()
    head = build_dense_head([40, 112, 320], kind="stitch", refine=1)
    assert isinstance(head, StitchedHead) and head.arguments["kind"] == "stitch"
    head.init_from_teacher(teacher)
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        stages = teacher.backbone(x)
        want = teacher(x)
        got = head.outputs(head.pyramid_of(stages[0]))  # the teacher's own stride-8 stage in place of the adapter's
    for (ws, wd), (gl, gd) in zip(want, got):
        assert torch.allclose(ws, gl.sigmoid(), atol=1e-6) and torch.allclose(wd, gd, atol=1e-5)
    # what the adapter makes has the teacher's stride-8 stage's shape
    lite = [torch.randn(1, 40, 16, 12), torch.randn(1, 112, 8, 6), torch.randn(1, 320, 4, 3)]
    mimic, outs = head(lite)
    assert mimic[0].shape == stages[0].shape and [o[0].shape[1] for o in outs] == [192, 48, 12]
    with pytest.raises(ValueError, match="teacher's width"):
        build_dense_head([40, 112, 320], kind="stitch", width=64)
    with pytest.raises(ValueError, match="kind is 'dense', 'stitch' or 'picture'"):
        build_dense_head([40, 112, 320], kind="sparse")


def test_only_the_adapter_of_a_stitched_head_learns(random_teacher, rcnn_file, tmp_path):
    from icm.models import create_model
    from icm.train.dense import build_heads, train

    cfg = recipe(tmp_path, rcnn_file)
    cfg["dense"] = {"kind": "stitch", "refine": 1}
    codec = create_model("dicm-lite0", quality=2, pretrained=True)
    heads = build_heads(cfg, codec)
    learning = {n.split(".")[1] for n, p in heads.named_parameters() if p.requires_grad}
    assert learning == {"adapter"}
    cfg["dense"]["finetune"] = True
    learning = {n.split(".")[1] for n, p in build_heads(cfg, codec).named_parameters() if p.requires_grad}
    assert learning == {"adapter", "upper", "laterals", "head_convs", "head_outs"}
    cfg["dense"]["finetune"] = False
    cfg["trainer"]["max_steps"] = 2
    last = train(cfg, log=lambda s: None)
    state = torch.load(last, weights_only=True)["dense"]
    # a second phase starts from those weights, every part learning, with a fresh optimiser
    second = recipe(tmp_path / "ft", rcnn_file)
    second["dense"] = {"kind": "stitch", "refine": 1, "finetune": True}
    second["model"]["dense_init"] = str(last)
    second["trainer"]["max_steps"] = 1
    logged = []
    after = torch.load(train(second, log=logged.append), weights_only=True)["dense"]
    assert any("started from" in line for line in logged)
    assert not torch.equal(after["upper.1.inp.conv.weight"], state["upper.1.inp.conv.weight"])
    from icm.teachers import distill

    theirs = distill._TEACHER.model.stages[3].inp.conv.weight
    assert torch.equal(state["upper.1.inp.conv.weight"], theirs)  # frozen: still the teacher's
    # a third phase grows the adapter by the cut input: the old columns kept, the new ones learn
    third = recipe(tmp_path / "cut", rcnn_file)
    third["dense"] = {"kind": "stitch", "refine": 1, "finetune": True, "cut": 24}
    third["model"]["dense_init"] = str(last)
    third["trainer"]["max_steps"] = 1
    logged = []
    grown = torch.load(train(third, log=logged.append), weights_only=True)["dense"]
    assert any("grown by the cut input" in line for line in logged)
    first = grown["adapter.0.conv.weight"]
    assert first.shape[1] == state["adapter.0.conv.weight"].shape[1] + 64
    assert float(first[:, -64:].abs().max()) > 0  # zero at the start, moved by one step
    assert torch.allclose(first[:, :-64], state["adapter.0.conv.weight"], atol=1e-3)


def test_boxes_only_skips_the_masks_of_either_kind_of_heads(codec):
    from test_detection import make_heads

    x = torch.rand(1, 3, 96, 128)
    y_hat = codec.decompress(codec.compress(x), pixels=False)["y_hat"]
    dense = dense_heads(codec).eval()
    with torch.no_grad():
        for o in dense.dense_head.head_outs:
            o[0].bias[:80] = 3.0
    rcnn = make_heads(codec, masks=True).eval()
    for heads in (dense, rcnn):
        with torch.no_grad():
            both = heads.forward_latent(y_hat, (96, 128))[0]
            boxes = heads.forward_latent(y_hat, (96, 128), masks=False)[0]
            pix = heads.forward_pixels([x[0]], masks=False)[0]
        assert "masks" in both and "masks" not in boxes and "masks" not in pix
        assert torch.equal(both["boxes"], boxes["boxes"])
        assert heads.detector.roi_heads.has_mask()  # the mask branch is back afterwards


# -- the stitched head with the cut input ------------------------------------------------------------


def test_a_stitched_head_grown_by_the_cut_input_answers_as_before_until_it_learns():
    from icm.tasks.dense import StitchedHead, build_dense_head

    torch.manual_seed(7)
    plain = build_dense_head([40, 112, 320], kind="stitch", refine=1)
    grown = build_dense_head([40, 112, 320], kind="stitch", refine=1, cut=24)
    assert isinstance(grown, StitchedHead) and grown.reads_cut and not plain.reads_cut
    assert grown.arguments["cut"] == 24 and "cut" not in plain.arguments
    lite = [torch.randn(1, 40, 16, 12), torch.randn(1, 112, 8, 6), torch.randn(1, 320, 4, 3)]
    cut = torch.randn(1, 24, 32, 24)
    with pytest.raises(ValueError, match="reads the cut feature"):
        grown(lite)
    assert grown.load_grown(plain.state_dict()) == ["cut_in.conv.weight", "cut_in.conv.bias"]
    with torch.no_grad():
        (a_plain,), outs_plain = plain(lite)
        (a_grown,), outs_grown = grown(lite, cut)
        assert torch.allclose(a_plain, a_grown, atol=1e-6)
        for (lp, sp), (lg, sg) in zip(outs_plain, outs_grown):
            assert torch.allclose(lp, lg, atol=1e-5) and torch.allclose(sp, sg, atol=1e-5)
        # once its columns are not zero, the cut feature changes the answer
        grown.adapter[0].conv.weight[:, -1] = 0.5
        assert not torch.allclose(grown(lite, cut)[0][0], a_plain, atol=1e-3)
        with pytest.raises(ValueError, match="stride-8 grid"):
            grown(lite, torch.randn(1, 24, 16, 24))
    deeper = build_dense_head([40, 112, 320], kind="stitch", refine=2, cut=24)
    with pytest.raises(ValueError, match="lacks"):
        deeper.load_grown(plain.state_dict())
    with pytest.raises(ValueError, match="cut input"):
        plain.load_grown(plain.state_dict())


@pytest.mark.parametrize("enter", [8, 4])
def test_heads_reading_the_cut_feature_find_the_same_boxes_from_every_path(codec, enter):
    from test_shapes_heads import assert_senders_boxes_are_the_pixel_detectors

    torch.manual_seed(3)
    heads = CompressedDomainRCNN(codec, num_classes=91, masks=True, mask_agnostic=True,
                                 dense={"kind": "stitch", "refine": 1, "cut": codec.backbone.cut_channels,
                                        "enter": enter, "score_thresh": 0.2, "max_det": 10,
                                        "labels": list(COCO_IDS)},
                                 **{**HEADS, "box_score_thresh": 0.05}).eval()
    assert heads.dense_head.reads_cut
    with torch.no_grad():
        for o in heads.dense_head.head_outs:
            o.conv.bias[:80] = 3.0
    x = torch.rand(1, 3, 96, 128)
    # the pixel path and find_boxes on the sender's stages and cut feature: bit for bit
    assert_senders_boxes_are_the_pixel_detectors(codec, heads, (x, x[..., 3:90, 5:]))
    lat = detect_from_bitstream(codec, heads, codec.compress(x))[0]
    assert 0 < len(lat["boxes"]) <= 10 and lat["masks"].shape[-2:] == (96, 128)
    y_hat = codec.decompress(codec.compress(x), pixels=False)["y_hat"]
    f = codec.decode_features(y_hat)
    mine = heads.find_boxes(codec.stages(f), (96, 128), (96, 128), cut=f)[0]
    assert torch.equal(mine["boxes"], lat["boxes"]) and torch.equal(mine["scores"], lat["scores"])
    with pytest.raises(ValueError, match="reads the cut feature"):
        heads.find_boxes(codec.stages(f), (96, 128), (96, 128))


# -- the stitched head that enters the teacher at stride 4 ---------------------------------------------


def test_a_head_entering_at_stride_4_runs_the_teachers_stages_from_the_first_one():
    from icm.tasks.dense import build_dense_head
    from icm.teachers.nanodet import NanoDet

    torch.manual_seed(11)
    teacher = NanoDet().eval()
    head = build_dense_head([40, 112, 320], kind="stitch", refine=1, cut=24, enter=4)
    assert head.reads_cut and head.arguments["enter"] == 4 and len(head.upper) == 3
    head.init_from_teacher(teacher)
    assert torch.equal(head.upper[0].inp.conv.weight, teacher.stages[1].inp.conv.weight)
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        s4 = teacher.backbone(x, first=0)
        assert [tuple(f.shape[1:]) for f in s4] == [(64, 32, 24), (128, 16, 12), (256, 8, 6), (512, 4, 3)]
        want = teacher(x)
        got = head.outputs(head.pyramid_of(s4[0]))  # the teacher's own stride-4 stage in place of the adapter's
        for (ws, wd), (gl, gd) in zip(want, got):
            assert torch.allclose(ws, gl.sigmoid(), atol=1e-6) and torch.allclose(wd, gd, atol=1e-5)
        lite = [torch.randn(1, 40, 16, 12), torch.randn(1, 112, 8, 6), torch.randn(1, 320, 4, 3)]
        (a,), outs = head(lite, torch.randn(1, 24, 32, 24))
        assert a.shape == s4[0].shape and [o[0].shape[1] for o in outs] == [192, 48, 12]
        with pytest.raises(ValueError, match="reads the cut feature"):
            head(lite)
        with pytest.raises(ValueError, match="twice the stride-8 grid"):
            head(lite, torch.randn(1, 24, 16, 12))
    with pytest.raises(ValueError, match="give cut="):
        build_dense_head([40, 112, 320], kind="stitch", enter=4)
    with pytest.raises(ValueError, match="stride 4 or 8"):
        build_dense_head([40, 112, 320], kind="stitch", cut=24, enter=16)
    with pytest.raises(ValueError, match="enters at stride 8"):
        head.load_grown(head.state_dict())


def test_a_head_entering_at_stride_4_learns_the_teachers_stride_4_stage(random_teacher, rcnn_file, tmp_path,
                                                                        monkeypatch):
    from icm.tasks import dense
    from icm.train.dense import train

    cfg = recipe(tmp_path, rcnn_file)
    cfg["dense"] = {"kind": "stitch", "refine": 1, "cut": 24, "enter": 4}
    cfg["trainer"]["max_steps"] = 1
    seen = []
    real = dense.mimic_loss
    monkeypatch.setattr(dense, "mimic_loss", lambda s, t: seen.append((s[0].shape, t[0].shape)) or real(s, t))
    last = torch.load(train(cfg, log=lambda s: None), weights_only=True)["dense"]
    assert seen and seen[0][0] == seen[0][1] and seen[0][1][1] == 64  # compared with the stride-4 stage
    from icm.teachers import distill

    assert torch.equal(last["upper.0.inp.conv.weight"], distill._TEACHER.model.stages[1].inp.conv.weight)
    assert "cut_in.conv.weight" not in last


def test_the_teachers_parts_can_learn_at_a_fraction_of_the_adapters_rate(random_teacher, rcnn_file, tmp_path):
    from icm.models import create_model
    from icm.train.dense import build_heads, param_groups, train

    cfg = recipe(tmp_path, rcnn_file)
    cfg["dense"] = {"kind": "stitch", "refine": 1, "finetune": True}
    cfg["optim"]["upper_lr_scale"] = 0.1
    head = build_heads(cfg, create_model("dicm-lite0", quality=2, pretrained=True)).dense_head
    fast, slow = param_groups(head, cfg["optim"])
    assert (fast["lr_scale"], slow["lr_scale"]) == (1.0, 0.1)
    assert {id(p) for p in fast["params"]} == {id(p) for p in head.adapter.parameters()}
    assert len(slow["params"]) == sum(1 for m in head.teacher_parts() for _ in m.parameters())
    cfg["trainer"]["max_steps"] = 1
    groups = torch.load(train(cfg, log=lambda s: None), weights_only=True)["optim"]["param_groups"]
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"]) and groups[0]["lr"] > 0
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1]
    with pytest.raises(IcmError, match="in \\(0, 1\\]"):
        param_groups(head, {"upper_lr_scale": 2.0})
    cfg["dense"]["finetune"] = False  # nothing of the teacher learns: a rate for it is a mistake
    frozen = build_heads(cfg, create_model("dicm-lite0", quality=2, pretrained=True)).dense_head
    with pytest.raises(IcmError, match="finetune: true"):
        param_groups(frozen, cfg["optim"])
    assert len(param_groups(frozen, {})) == 1


def test_heads_are_measured_on_seeded_views_of_the_val_photos(random_teacher, rcnn_file, tmp_path):
    from icm.teachers import distill
    from icm.train.dense import main, measure_views

    with torch.no_grad():  # a teacher that sees something everywhere: every view has boxes
        for o in distill._TEACHER.model.head_outs:
            o.conv.bias[:80] = 3.0
    cfg = recipe(tmp_path, rcnn_file)
    with pytest.raises(IcmError, match="val_photos"):
        measure_views(cfg, [rcnn_file], views=1, qualities=(1,))
    cfg["data"]["val_photos"] = ["skimage:chelsea"]
    first = measure_views(cfg, [rcnn_file], views=2, qualities=(1, 2))
    again = measure_views(cfg, [rcnn_file], views=2, qualities=(1, 2))
    assert first == again and first["views"] == 2 and first["boxes"] > 0
    row = first[str(rcnn_file)]
    assert set(row) == {"q1", "q2", "pixels"} and 0 < row["q1"]["bpp"] < row["q2"]["bpp"]
    assert all(0.0 <= row[k]["map_50"] <= 1.0 for k in row)
    cfg_file = tmp_path / "r.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(recipe(tmp_path, rcnn_file)))
    with pytest.raises(SystemExit) as e:  # the command says what is missing, no traceback
        main(["views", str(cfg_file), str(rcnn_file), "--views", "1", "--qualities", "1"])
    assert e.value.code == 2
