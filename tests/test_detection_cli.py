"""Detection and instance segmentation from ``dicm`` bitstreams, end to end: the training
recipe (``icm.train.detection``) and its configs, shipped heads (``save_heads`` /
``load_heads``), ``icm analyze --task detect|segment`` and ``icm eval --task detect|segment``.

Codecs and heads are narrow and random; images are 64² or smaller; one CPU thread.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gradient_image, make_tiny_model, tiny_voc
from PIL import Image

from icm import bitstream, codec
from icm.errors import IcmError
from icm.eval import datasets, sweep
from icm.eval import detect as eval_detect
from icm.eval import tasks as eval_tasks
from icm.models import Compressed, _registry, create_model
from icm.tasks.annotations import (
    VOC_CLASSES,
    make_target,
    masks_to_boxes,
    rle_to_mask,
    to_coco_json,
)
from icm.tasks.detection import CompressedDomainRCNN, detect_from_bitstream
from icm.tasks.heads_file import head_state, load_heads, save_heads
from icm.tasks.synthetic import CLASSES
from icm.train import detection as train_detection
from icm.train.run import build, load_config, run

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "detection"
SMALL = {"dicm-lite0": dict(re_dims=(16,), re_depths=(), dims=(24, 48, 48), M=48, N=16, hyper_dim=32, hyper_heads=2,
                            filter_size=(8, 8), pretrained_backbone=False),
         "dicm": dict(re_dims=(16, 16, 16, 16), dims=(256, 32, 32), M=32, N=16, hyper_dim=32, hyper_heads=2,
                      filter_size=(8, 8))}
HEADS = dict(fpn_channels=16, representation_size=32, mask_layers=(8, 8), rpn_pre_nms_top_n_train=100,
             rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
             box_batch_size_per_image=32, rpn_batch_size_per_image=32)
CATEGORIES = {i + 1: n for i, n in enumerate(CLASSES)}


def tiny_codec(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("dicm-lite0", quality=4, pretrained=False, **SMALL["dicm-lite0"]).eval()
    with torch.no_grad():  # a busy latent, as trained models have
        model.g_a[-1].weight.mul_(30.0)  # the block transform's projection
    return model


def tiny_heads(model, masks: bool = True, seed: int = 1, **kw) -> CompressedDomainRCNN:
    torch.manual_seed(seed)
    heads = CompressedDomainRCNN(model, len(CLASSES) + 1, masks=masks,
                                 **{**HEADS, "box_score_thresh": 0.0, "box_detections_per_img": 4, **kw})
    heads.categories = dict(CATEGORIES)
    return heads.eval()


def tiny_recipe(root: Path, out: Path, task: str = "segment") -> dict:
    return {"task": task, "path": "latent",
            "model": {"name": "dicm-lite0", "quality": 4, "kwargs": SMALL["dicm-lite0"]},
            "heads": {k: list(v) if isinstance(v, tuple) else v for k, v in HEADS.items()},
            "data": {"kind": "synthetic", "root": str(root), "train_images": 6, "val_images": 2, "size": 64,
                     "seed": 0, "batch_size": 2},
            "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0},
            "trainer": {"max_steps": 2, "val_every": 2, "out_dir": str(out), "threads": 1,
                        "log_every_n_steps": 1, "enable_progress_bar": False, "num_sanity_val_steps": 0}}


# -- training ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-step run of the tiny segment recipe: ``(recipe, last checkpoint)``."""
    tmp = tmp_path_factory.mktemp("det")
    cfg = tiny_recipe(tmp / "synthetic", tmp / "run")
    return cfg, run(copy.deepcopy(cfg))


def test_a_tiny_recipe_lowers_the_loss_and_logs_val_map(trained, tmp_path):
    cfg, last = trained
    _, module, train_loader, val_loader = build(copy.deepcopy(cfg))
    assert isinstance(module, train_detection.DetectionModule) and module.heads.masks
    assert module.heads.categories == CATEGORIES and module.heads.architecture["num_classes"] == 7
    assert not any(p.requires_grad for p in module.heads.codec.parameters())
    images, targets = next(iter(train_loader))
    assert len(images) == 2 and images[0].shape == (3, 64, 64) and targets[0]["masks"].shape[-2:] == (64, 64)
    heads = module.heads.train()
    opt = torch.optim.Adam(heads.trainable_parameters(), lr=1e-3)
    history = []
    for _ in range(10):
        torch.manual_seed(0)  # the same RPN / RoI sampling every step
        loss = sum(module.losses(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.9 * history[0], history

    assert last.is_file()
    saved = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert saved.keys() == {f"heads.{k}" for k in head_state(module.heads)}  # heads only, not the frozen codec
    (csv,) = (Path(cfg["trainer"]["out_dir"]) / "logs").glob("*/metrics.csv")
    header, *rows = csv.read_text().splitlines()
    cols = header.split(",")
    assert {"train/loss", "train/loss_mask", "val/loss", "val/map", "val/mask_map"} <= set(cols)
    train_rows = [r for r in rows if r.split(",")[cols.index("train/loss")]]
    assert len(train_rows) == 2  # one row per step
    val = [r.split(",") for r in rows if r.split(",")[cols.index("val/map")]]
    assert len(val) == 1 and 0.0 <= float(val[0][cols.index("val/map")]) <= 1.0


def test_mixed_path_alternates_pixels_and_latent_and_validates_on_the_latent(trained, monkeypatch):
    cfg, _ = trained
    _, module, train_loader, _ = build({**copy.deepcopy(cfg), "path": "mixed"})
    images, targets = next(iter(train_loader))
    used = []
    heads = module.heads.train()
    monkeypatch.setattr(heads, "forward_pixels", lambda *a, **k: used.append("pixels") or {"l": torch.ones(())})
    monkeypatch.setattr(heads, "forward_latent", lambda *a, **k: used.append("latent") or {"l": torch.ones(())})
    monkeypatch.setattr(train_detection.DetectionModule, "log_dict", lambda *a, **k: None)
    monkeypatch.setattr(train_detection.DetectionModule, "log", lambda *a, **k: None)
    for step in range(4):
        monkeypatch.setattr(train_detection.DetectionModule, "global_step", property(lambda self, s=step: s))
        module.training_step((images, targets), step)
    assert used == ["pixels", "latent", "pixels", "latent"]
    used.clear()
    module.losses(images, targets)  # validation loss
    module.detect(images)
    assert used == ["latent", "latent"]
    with pytest.raises(IcmError, match="path must be one of"):
        train_detection.DetectionModule(module.heads, "both")


def test_latent_steps_cycle_through_codec_states_and_validate_on_the_home_codec(trained, monkeypatch):
    cfg, _ = trained
    _, module, train_loader, _ = build({**copy.deepcopy(cfg), "path": "mixed"})
    codec_ = module.heads.codec
    home = {k: v.clone() for k, v in codec_.state_dict().items() if not k.startswith("backbone.")}
    others = [{k: v + float(i + 1) if v.is_floating_point() else v for k, v in home.items()} for i in range(2)]
    module = train_detection.DetectionModule(module.heads, "mixed", latent_states=others)
    images, targets = next(iter(train_loader))
    seen = []
    probe = lambda: round(float(codec_.g_s[0].weight.flatten()[0] - home["g_s.0.weight"].flatten()[0]), 4)
    heads = module.heads.train()
    monkeypatch.setattr(heads, "forward_pixels", lambda *a, **k: seen.append(("pixels", probe())) or {"l": torch.ones(())})
    monkeypatch.setattr(heads, "forward_latent", lambda *a, **k: seen.append(("latent", probe())) or {"l": torch.ones(())})
    monkeypatch.setattr(train_detection.DetectionModule, "log_dict", lambda *a, **k: None)
    monkeypatch.setattr(train_detection.DetectionModule, "log", lambda *a, **k: None)
    for step in range(6):
        monkeypatch.setattr(train_detection.DetectionModule, "global_step", property(lambda self, s=step: s))
        module.training_step((images, targets), step)
    assert [k for k, _ in seen] == ["pixels", "latent"] * 3
    assert [d for k, d in seen if k == "latent"] == [1.0, 2.0, 1.0]  # states 0, 1, 0
    seen.clear()
    module.losses(images, targets)  # validation: the codec the heads were built on
    module.detect(images)
    assert seen == [("latent", 0.0), ("latent", 0.0)]


def test_heads_init_starts_from_a_detection_checkpoint(trained):
    cfg, last = trained
    saved = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    _, fresh, _, _ = build(copy.deepcopy(cfg))
    _, started, _, _ = build({**copy.deepcopy(cfg), "model": {**cfg["model"], "heads_init": str(last)}})
    got, other = head_state(started.heads), head_state(fresh.heads)
    assert all(torch.equal(got[k], saved[f"heads.{k}"]) for k in got)
    assert any(not torch.equal(got[k], other[k]) for k in got)  # the fresh heads differ


def test_latent_used_for_training_is_the_decoded_bitstream_latent():
    model = tiny_codec()
    x = gradient_image(40, 56)
    y_hat, sizes = train_detection.encode_latent(model, [x[0]])
    assert sizes == [(40, 56)]
    assert torch.equal(y_hat, model(x)["y_hat"])
    f = bitstream.unpack(codec.encode(model, x)[0])
    assert torch.equal(y_hat, model.decompress(Compressed([f.sections], (40, 56)), pixels=False)["y_hat"])


def test_export_writes_heads_only_with_measured_map(trained, tmp_path):
    cfg, last = trained
    path, meta = train_detection.export(copy.deepcopy(cfg), ckpt=last, out=tmp_path / "dicm-lite0-rcnn.safetensors")
    m = meta["measured"]["q4"]
    assert m["images"] == 2 and m["bpp"] > 0
    for part in ("bitstream", "pixels"):
        assert set(m[part]) == {"map", "map_50", "mask_map", "mask_map_50"}
    assert (meta["model"], meta["task"], meta["steps"]) == ("dicm-lite0", "segment", 2)
    heads = load_heads(tiny_codec(), "dicm-lite0", path=path)
    assert heads.masks and heads.categories == CATEGORIES
    assert heads.metadata["measured"] == meta["measured"] and heads.metadata["recipe"]["task"] == "segment"


# -- configs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fixtures")
    from icm.tasks.synthetic import ensure_synthetic

    ann = ensure_synthetic(tmp / "coco", 2, size=(64, 64), split_name="train")
    return {"synthetic": tmp / "synthetic", "coco": ann, "voc": tiny_voc(tmp / "voc")}


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.yaml") if "teacher" not in p.stem),
                         ids=lambda p: p.stem)
def test_configs_parse_and_build_on_tiny_fixtures(path, fixtures, tmp_path):
    """Recipes of annotated data (the teacher's recipes: tests/test_detect_eval.py)."""
    cfg = load_config(path)
    text = path.read_text()
    assert text.startswith("#") and cfg["task"] in ("detect", "segment") and cfg["path"] in train_detection.PATHS
    if "resnet50" in path.stem:
        assert "SEEDS.md section B" in text and cfg["trainer"]["strategy"] == "ddp"
    else:
        extra = {k: v for k, v in cfg["model"].items() if k not in ("name", "quality", "pretrained")}
        assert {k: cfg["model"][k] for k in ("name", "quality", "pretrained")} == {
            "name": "dicm-lite0", "quality": 3, "pretrained": True}  # the heads' codec (then its smallest files)
        assert set(extra) <= {"latent_qualities", "heads_init"}, extra
        assert all(q in (1, 2, 3, 4, 5, 6) for q in extra.get("latent_qualities", []))
        assert cfg["heads"]["fpn_channels"] == 64 and cfg["heads"]["representation_size"] == 256
        assert cfg["data"]["size"] == 160 and cfg["data"]["batch_size"] == 4
    kind = cfg["data"]["kind"]
    want = copy.deepcopy(cfg)
    # tiny stand-ins: a random narrow codec, and data of the same format
    cfg["model"] = {"name": cfg["model"]["name"], "quality": 4, "kwargs": SMALL[cfg["model"]["name"]]}
    cfg["trainer"] = {"out_dir": str(tmp_path / "run"), "max_steps": 10}
    if kind == "synthetic":
        cfg["data"].update(root=str(fixtures["synthetic"]), train_images=2, val_images=1, size=64)
    elif kind == "coco":
        cfg["data"].update(annotations=str(fixtures["coco"]), images=None, val_annotations=str(fixtures["coco"]),
                           val_images=None, workers=0)
    else:
        cfg["data"].update(root=[str(fixtures["voc"])], val_root=str(fixtures["voc"]), workers=0)
    _, module, train_loader, val_loader = build(cfg)
    heads = module.heads
    assert heads.masks == (want["task"] == "segment") and module.path == want["path"]
    assert heads.architecture["fpn_channels"] == want["heads"]["fpn_channels"]
    assert heads.architecture["num_classes"] == {"synthetic": 7, "coco": 7, "voc": len(VOC_CLASSES) + 1}[kind]
    if "mask_layers" in want["heads"]:
        assert heads.architecture["mask_layers"] == want["heads"]["mask_layers"]
    opt = module.configure_optimizers()["optimizer"]
    assert type(opt).__name__.lower() == want["optim"]["name"]
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(want["optim"]["lr"])
    images, targets = next(iter(train_loader))
    assert len(images) == min(want["data"]["batch_size"], len(train_loader.dataset)) and val_loader is not None


# -- shipped heads -------------------------------------------------------------------------------


def test_save_load_heads_round_trip_is_strict_and_exact(tmp_path, monkeypatch):
    model = tiny_codec()
    heads = tiny_heads(model)
    path = save_heads(heads, tmp_path / "dicm-lite0-rcnn.safetensors", {"model": "dicm-lite0", "steps": 7})
    from safetensors.torch import load_file

    stored = load_file(path)
    assert stored.keys() == head_state(heads).keys()
    assert not any(k.startswith(("latent_backbone.", "detector.backbone.body.")) for k in stored)
    assert all(v.dtype == torch.float16 for v in stored.values())

    other = tiny_codec(seed=5)
    loaded = load_heads(other, "dicm-lite0", path=path)
    assert loaded.codec is other and loaded.categories == CATEGORIES and loaded.metadata["steps"] == 7
    assert loaded.architecture == heads.architecture and not loaded.training
    for k, v in head_state(heads).items():
        assert torch.equal(head_state(loaded)[k], v.half().float()), k
    assert not any(p.requires_grad for p in other.parameters())

    # the shipped location, through importlib.resources, and what `icm models` reads from it
    monkeypatch.setattr(resources, "files", lambda package: tmp_path)
    assert load_heads(other, "dicm-lite0") is not None and load_heads(other, "dicm") is None
    assert _registry.heads_tasks("dicm-lite0") == ("detect", "segment") and _registry.heads_tasks("dicm") == ()

    with pytest.raises(IcmError, match="holds heads for dicm-lite0, not dicm"):
        load_heads(other, "dicm", path=path)
    with pytest.raises(IcmError, match="not found"):
        load_heads(other, "dicm-lite0", path=tmp_path / "missing.safetensors")
    narrow = save_heads(tiny_heads(model, fpn_channels=8), tmp_path / "narrow.safetensors", {"model": "dicm-lite0"})
    state = load_file(narrow)
    state["extra.weight"] = torch.zeros(1)
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "extra.safetensors"), metadata={"icm": json.dumps({"architecture": heads.architecture})})
    with pytest.raises(IcmError, match="does not fit the detection heads"):
        load_heads(other, "dicm-lite0", path=tmp_path / "extra.safetensors")


# -- icm analyze ---------------------------------------------------------------------------------


@pytest.fixture
def dicm_detection(monkeypatch):
    """``codec.get_model`` and ``codec.get_heads`` give a tiny dicm-lite0 q4 with random heads."""
    model = tiny_codec()
    model.model_name, model.quality = "dicm-lite0", 4
    state = {"heads": tiny_heads(model)}
    real = codec.get_model
    monkeypatch.setattr(codec, "get_model", lambda name, q: model if (name, q) == ("dicm-lite0", 4) else real(name, q))
    monkeypatch.setattr(codec, "get_heads", lambda m: state["heads"] if m is model else None)
    return model, state


def _file(model, tmp_path, h=48, w=60) -> Path:
    path = tmp_path / "a.icm"
    path.write_bytes(codec.encode(model, gradient_image(h, w))[0])
    return path


def test_analyze_detect_and_segment_json(run_cli, dicm_detection, tmp_path):
    model, state = dicm_detection
    path = _file(model, tmp_path)
    f = codec.read(path)
    r = run_cli("analyze", path, "--task", "detect", "--json", "--score-thresh", "0")
    assert r.code == 0, r.err
    row = json.loads(r.out)
    assert list(row) == ["file", "model", "quality", "bytes", "bpp", "task", "detections"]
    assert (row["model"], row["quality"], row["task"], row["bytes"]) == ("dicm-lite0", 4, "detect", path.stat().st_size)
    assert row["bpp"] == pytest.approx(8 * path.stat().st_size / (48 * 60), abs=1e-6)
    want = detect_from_bitstream(model, state["heads"], Compressed([f.sections], (48, 60)))[0]
    dets = row["detections"]
    assert len(dets) == len(want["scores"]) == 4
    for d in dets:
        assert list(d) == ["label", "index", "score", "box"] and d["label"] == CATEGORIES[d["index"]]
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 <= x1 <= 60 and 0 <= y0 <= y1 <= 48
    assert sorted(d["score"] for d in dets) == pytest.approx(sorted(want["scores"].tolist()), abs=1e-4)

    r = run_cli("analyze", path, path, "--task", "segment", "--json", "--score-thresh", "0")
    assert r.code == 0, r.err
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert len(rows) == 2 and rows[0]["task"] == "segment"
    for d in rows[0]["detections"]:
        mask = rle_to_mask(d["mask"])
        assert mask.shape == (48, 60) and isinstance(d["mask"]["counts"], str) and set(np.unique(mask)) <= {0, 1}
    assert [d["box"] for d in rows[0]["detections"]] == [d["box"] for d in dets]

    r = run_cli("analyze", path, "--task", "detect", "--score-thresh", "1.0")
    assert r.code == 0 and "0 detections" in r.out and "dicm-lite0 q4, 60x48" in r.out
    r = run_cli("analyze", path, "--task", "detect", "--score-thresh", "0")
    assert len(r.out.strip().splitlines()) == 5 and CATEGORIES[dets[0]["index"]] in r.out.splitlines()[1]


def test_analyze_draw_over_the_users_picture(run_cli, dicm_detection, tmp_path):
    model, _ = dicm_detection
    path = _file(model, tmp_path)
    picture = tmp_path / "a.png"
    codec.save_image(gradient_image(48, 60), picture)
    out = tmp_path / "drawn.png"
    r = run_cli("analyze", path, "--task", "segment", "--score-thresh", "0", "--draw", out, "--image", picture)
    assert r.code == 0, r.err
    with Image.open(out) as im:
        assert im.size == (60, 48) and im.mode == "RGB"
        assert not np.array_equal(np.asarray(im), codec.read_rgb(picture))  # something was drawn

    codec.save_image(gradient_image(40, 60), tmp_path / "small.png")
    drawn = out.read_bytes()
    for args, message in [
        (("--draw", out, "-f"), "--draw needs --image PICTURE: dicm-lite0 files carry no pixels"),
        (("--draw", out, "--image", picture), "drawn.png: already exists; use --force"),
        (("--draw", picture, "--image", picture, "-f"), "would overwrite its input"),
        (("--draw", out, "-f", "--image", tmp_path / "small.png"), "is 60x40, the file codes 60x48"),
        (("--image", picture), "--image is the picture to draw on"),
        (("--draw", out, "-f", "--image", tmp_path / "nope.png"), "no such file"),
    ]:
        r = run_cli("analyze", path, "--task", "detect", *args)
        assert r.code == 2 and len(r.err_lines) == 1 and message in r.err, (args, r.err)
    assert out.read_bytes() == drawn  # no failed call touched the earlier drawing
    r = run_cli("analyze", path, "--task", "detect", "--draw", out, "--image", picture, "-f")
    assert r.code == 0, r.err


def test_analyze_errors_exit_2_with_one_line(run_cli, dicm_detection, tmp_path, monkeypatch):
    model, state = dicm_detection
    path = _file(model, tmp_path)
    state["heads"] = tiny_heads(model, masks=False)
    r = run_cli("analyze", path, "--task", "segment")
    assert r.code == 2 and len(r.err_lines) == 1 and "detect boxes only" in r.err
    state["heads"] = None
    r = run_cli("analyze", path, "--task", "detect")
    assert r.code == 2 and r.err_lines == [f"icm: error: {path}: no shipped detection heads for dicm-lite0"]
    r = run_cli("analyze", tmp_path / "missing.icm", "--task", "detect")
    assert r.code == 2 and len(r.err_lines) == 1 and "no such file" in r.err
    r = run_cli("analyze", path, "--task", "detect", "--score-thresh", "2")
    assert r.code == 2 and "--score-thresh" in r.err
    r = run_cli("analyze", path, "--task", "classify", "--json")  # unchanged
    assert r.code == 0 and len(json.loads(r.out)["top5"]) == 5

    tiny = make_tiny_model()
    monkeypatch.setattr(codec, "get_model", lambda name, q: tiny)
    other = tmp_path / "b.icm"
    other.write_bytes(codec.encode(tiny, gradient_image(16, 16))[0])
    r = run_cli("analyze", other, "--task", "detect")
    assert r.code == 2 and len(r.err_lines) == 1 and "has no analysis tasks" in r.err


def test_models_lists_detection_tasks_where_heads_ship(run_cli, monkeypatch):
    monkeypatch.setattr(_registry, "heads_tasks", lambda name: ("detect", "segment") if name == "dicm-lite0" else ())
    rows = {r["name"]: r for r in map(json.loads, run_cli("models", "--json").out.splitlines())}
    assert rows["dicm-lite0"]["tasks"] == ["classify", "detect", "segment"] and rows["dicm"]["tasks"] == ["classify"]


# -- icm eval ------------------------------------------------------------------------------------


class Oracle:
    """Stands in for detection heads: the ground truth of each image (known by its size), boxes shifted by ``shift``."""

    masks, training = True, False
    categories = CATEGORIES

    def __init__(self, truth: dict, shift: float = 0.0) -> None:
        self.truth, self.shift = truth, shift

    def eval(self):
        return self

    def _out(self, size) -> dict:
        t = self.truth[tuple(size)]
        n = len(t["labels"])
        return {"boxes": t["boxes"] + self.shift, "labels": t["labels"], "scores": torch.linspace(0.9, 0.8, n),
                "masks": t["masks"][:, None].float()}

    def forward_pixels(self, images, masks=None):
        return [self._out(x.shape[-2:]) for x in images]

    def forward_latent(self, y_hat, image_size, masks=None):
        return [self._out(image_size)]


@pytest.fixture
def coco_set(tmp_path):
    """Two pictures of different sizes with rectangles and a disc, in COCO format."""
    truth, records = {}, []
    for i, (h, w, objs) in enumerate([(48, 64, [(2, (4, 6, 30, 40)), (5, (34, 10, 60, 30))]), (40, 56, [(1, None)])]):
        img = codec.to_uint8(gradient_image(h, w))
        masks = np.zeros((len(objs), h, w), np.uint8)
        for k, (label, box) in enumerate(objs):
            if box is None:
                yy, xx = np.mgrid[:h, :w]
                masks[k] = (yy - 20) ** 2 + (xx - 28) ** 2 <= 12**2
            else:
                masks[k, box[1]:box[3], box[0]:box[2]] = 1
            img[masks[k] == 1] = (200, 30 * k, 90)
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        target = make_target(i + 1, masks_to_boxes(masks), [o[0] for o in objs], masks)
        truth[(h, w)] = target
        records.append(({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w}, target))
    (tmp_path / "ann.json").write_text(json.dumps(to_coco_json(records, CLASSES)))
    return datasets.open_dataset(f"coco:{tmp_path / 'ann.json'}:{tmp_path}"), truth


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_eval_map_is_one_for_a_perfect_detector_on_latents_and_pixels(task, coco_set, dicm_detection, monkeypatch,
                                                                      tmp_path):
    from test_eval import FakeAnchorModule, Identity

    ds, truth = coco_set
    model, state = dicm_detection
    state["heads"] = Oracle(truth)
    monkeypatch.setattr(eval_detect, "reference_detector", lambda family: Oracle(truth))
    monkeypatch.setattr(sweep, "_anchors", lambda: FakeAnchorModule(Identity("identity", "identity", (0,))))
    ours = sweep.resolve_codec("dicm-lite0", [4])
    ours.tasks = ("classify", "detect", "segment")  # as where heads ship
    t = eval_tasks.get_task(task)
    paths = sweep.run_sweep([ours, sweep.resolve_codec("identity")], ds, t, tmp_path / "out", progress=False)
    r_ours, r_id = (json.loads(p.read_text()) for p in paths)
    for r in (r_ours, r_id):
        (p,) = r["points"]
        assert r["primary_metric"] == ("map" if task == "detect" else "mask_map")
        assert p["map"] == pytest.approx(1.0) and p["map_50"] == pytest.approx(1.0)
        if task == "segment":
            assert p["mask_map"] == pytest.approx(1.0) and r["uncompressed"]["mask_map"] == pytest.approx(1.0)
        assert r["uncompressed"]["map"] == pytest.approx(1.0) and len(r["images"]) == 2
        pred = r["images"][0]["pred"]
        assert pred["labels"] == [2, 5] and ("masks" in pred) == (task == "segment")
    assert "analyze_s_median" in r_ours["points"][0] and "decode_s_median" in r_id["points"][0]
    if task == "segment":
        mask = rle_to_mask({"size": [48, 64], "counts": r_ours["images"][0]["pred"]["masks"][0]})
        assert np.array_equal(mask, truth[(48, 64)]["masks"][0].numpy())

    # boxes 12 px off: mAP drops (another output folder, so another cache)
    state["heads"] = Oracle(truth, shift=12.0)
    (path,) = sweep.run_sweep([ours], ds, eval_tasks.get_task("detect"), tmp_path / "shifted", progress=False)
    assert json.loads(path.read_text())["points"][0]["map"] < 0.5


def test_eval_detect_needs_annotations_and_known_classes(coco_set, tmp_path, monkeypatch, capsys):
    ds, truth = coco_set
    oracle = Oracle(truth)
    monkeypatch.setattr(eval_detect, "reference_detector", lambda family: oracle)
    folder = tmp_path / "flat"
    folder.mkdir()
    codec.save_image(gradient_image(16, 16), folder / "x.png")
    from icm.eval import cli as eval_cli

    assert eval_cli.main(["--dataset", str(folder), "--codecs", "jpeg", "--task", "detect", "--out",
                          str(tmp_path / "o")]) == 2
    assert "needs annotated images" in capsys.readouterr().err
    oracle.categories = {1: "cat"}
    with pytest.raises(IcmError, match="category 1 is 'disc' in the dataset, 'cat' for the detector"):
        eval_tasks.get_task("detect").setup(ds)


def test_synthetic_val_dataset_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "SYNTHETIC_VAL", {**datasets.SYNTHETIC_VAL, "num_images": 2, "size": (32, 40)})
    ds = datasets.open_dataset("synthetic:val")
    assert (ds.name, ds.slug, len(ds)) == ("synthetic:val", "synthetic-val", 2)
    assert [c["name"] for c in ds.coco["categories"]] == list(CLASSES) and ds.coco["info"]["split"] == "val"
    ann = tmp_path / "icm" / "synthetic" / "instances_val.json"
    stamp = ann.stat().st_mtime_ns
    (image_id, image, label), _ = list(datasets.open_dataset("synthetic"))
    assert image.shape == (32, 40, 3) and ann.stat().st_mtime_ns == stamp
    with pytest.raises(IcmError, match="one split, val"):
        datasets.open_dataset("synthetic:train")
