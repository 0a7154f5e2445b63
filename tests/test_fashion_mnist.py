"""Fashion-MNIST end to end: greyscale anchors, classification in Fashion-MNIST's
label space (pixel baseline and from our latent), bits-per-image reports and
the ``bai2022-fmnist`` demo."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icm import codec
from icm.errors import IcmError
from icm.eval import datasets, report, sweep, tasks
from icm.models import create_model

from conftest import shipped_qualities
from test_eval import FakeAnchorModule, FakeJpeg, _idx

HAS_ANCHOR_LIBS = all(importlib.util.find_spec(m) for m in ("pillow_heif", "imagecodecs"))


@pytest.fixture(scope="module")
def fmnist_test(tmp_path_factory) -> datasets.Dataset:
    """Six 28×28 test images in Fashion-MNIST's idx layout (two per class 0–2)."""
    root = tmp_path_factory.mktemp("fm")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 40, size=(6, 28, 28)).astype(np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 4 + 3 * c : 24, 8:20] = 200
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))
    return datasets.fashion_mnist("test", root=root)


def _small_fmnist_model(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("bai2022-fmnist", quality=1, pretrained=False, dim=24, depth=3, heads=2).eval()
    model.model_name, model.quality = "bai2022-fmnist", 1
    with torch.no_grad():  # busy latents, so the bitstream carries symbols
        model.g_a[-1].weight.mul_(10.0)
    return model


@pytest.fixture
def pixel_classifier(monkeypatch):
    """The shipped pixel classifier replaced by a small seeded one (same interface)."""
    model = _small_fmnist_model(seed=3)
    monkeypatch.setattr(tasks, "fashion_mnist_classifier", lambda: model)
    return model


def _predict(model, grey: np.ndarray) -> int:
    with torch.no_grad():
        return int(model.classify_pixels(torch.from_numpy(grey.astype(np.float32) / 255)[None, None]).argmax())


# -- anchors code greyscale as greyscale ---------------------------------------------------


@pytest.mark.skipif(not HAS_ANCHOR_LIBS, reason="anchor libraries (pip install '.[anchors]') not installed")
def test_greyscale_images_are_coded_as_one_channel():
    import pillow_heif

    from icm.eval.anchors import code, get_anchor, is_grey

    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (28, 28, 1), dtype=np.uint8), 3, axis=2)
    colour = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    assert is_grey(grey) and not is_grey(colour)

    def channels(name, data) -> int:
        if name in ("jpeg420", "jpeg444", "avif", "webp"):
            return len(Image.open(io.BytesIO(data)).getbands())
        if name == "hevc":
            return len(pillow_heif.open_heif(io.BytesIO(data)).mode)  # "L" or "RGB"
        import imagecodecs

        arr = imagecodecs.jpegxl_decode(data)
        return 1 if arr.ndim == 2 else arr.shape[2]

    for name, q in (("jpeg420", 50), ("jpeg444", 50), ("avif", 50), ("hevc", 30), ("jxl", 50), ("webp", 50)):
        anchor = get_anchor(name)
        g, c = code(anchor, grey, q), code(anchor, colour, q)
        assert g.decoded.shape == (28, 28, 3), name
        assert is_grey(g.decoded) or not anchor.monochrome, name  # WebP's 4:2:0 colour need not stay grey
        assert channels(name, g.data) == (1 if anchor.monochrome else 3), name
        assert channels(name, c.data) == 3 and not is_grey(c.decoded), name
        assert anchor.settings()["greyscale_input"] == ("one channel" if anchor.monochrome else "coded as colour")
        assert tasks.psnr(grey, g.decoded) > 20, name
    assert not get_anchor("webp").monochrome and get_anchor("jpeg420").monochrome


# -- classification in Fashion-MNIST's label space -----------------------------------------


def test_classify_anchor_pixels_with_the_fashion_mnist_classifier(monkeypatch, pixel_classifier, fmnist_test, tmp_path):
    jpeg = FakeJpeg("jpeg420", "JPEG (fake)", (20, 90))
    monkeypatch.setattr(sweep, "_anchors", lambda: FakeAnchorModule(jpeg))
    task = tasks.get_task("classify")
    (path,) = sweep.run_sweep([sweep.resolve_codec("jpeg420")], fmnist_test, task, tmp_path / "o", progress=False)
    assert task.space == "fashion-mnist" and task.metrics == ("top1", "top5", "agreement")
    r = json.loads(path.read_text())
    assert r["primary_metric"] == "top1" and r["task_settings"]["labels"] == "fashion-mnist"
    samples = list(fmnist_test)
    for row in r["images"]:
        s = next(s for s in samples if s.image_id == row["image"])
        decoded = jpeg.decode(jpeg.encode(s.image, row["quality"]))
        pred = _predict(pixel_classifier, decoded[..., 0])  # the JPEG decodes to grey: luma = any channel
        assert row["pred_top5"][0] == pred and row["top1"] == float(pred == s.label)
        assert row["reference_top1"] == _predict(pixel_classifier, s.image[..., 0])
        assert "imagenet_label" not in row
    clean = np.mean([_predict(pixel_classifier, s.image[..., 0]) == s.label for s in samples])
    assert r["uncompressed"]["top1"] == pytest.approx(clean)
    for p in r["points"]:
        rows = [x for x in r["images"] if x["quality"] == p["quality"]]
        assert p["top1"] == pytest.approx(np.mean([x["top1"] for x in rows]))


def test_classify_from_our_latent_counts_against_the_labels(monkeypatch, pixel_classifier, fmnist_test, tmp_path):
    model = _small_fmnist_model()
    monkeypatch.setattr(codec, "get_model", lambda name, q: model)
    c = sweep.resolve_codec("bai2022-fmnist", [1])
    (path,) = sweep.run_sweep([c], fmnist_test, tasks.get_task("classify"), tmp_path / "o", progress=False)
    r = json.loads(path.read_text())
    for row, s in zip(r["images"], fmnist_test):
        data = codec.encode(model, torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 255)[0]
        pred = int(codec.analyze(data, model=model)["output"].argmax())
        assert row["bytes"] == len(data) and row["pred_top5"][0] == pred
        assert row["top1"] == float(pred == s.label) and "analyze_s" in row and "decode_s" not in row

    # A latent classifier with other classes is refused, not scored against the wrong labels.
    other = _small_fmnist_model()
    other.class_names = tuple(f"c{i}" for i in range(10))
    monkeypatch.setattr(codec, "get_model", lambda name, q: other)
    with pytest.raises(IcmError, match="does not classify Fashion-MNIST's classes"):
        sweep.run_sweep([sweep.resolve_codec("bai2022-fmnist", [1])], fmnist_test, tasks.get_task("classify"),
                        tmp_path / "o2", progress=False)


def test_psnr_of_a_greyscale_model_compares_grey_with_grey(monkeypatch, fmnist_test, tmp_path):
    model = _small_fmnist_model()
    monkeypatch.setattr(codec, "get_model", lambda name, q: model)
    (path,) = sweep.run_sweep([sweep.resolve_codec("bai2022-fmnist", [1])], fmnist_test, tasks.get_task("psnr"),
                              tmp_path / "o", progress=False)
    row = json.loads(path.read_text())["images"][0]
    s = next(iter(fmnist_test))
    data = codec.encode(model, torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 255)[0]
    rec = codec.to_uint8(codec.decode(data, model=model)["x_hat"])
    assert rec.ndim == 2
    assert row["psnr"] == pytest.approx(tasks.psnr(s.image[..., 0], rec))


def test_report_speaks_bits_per_image_for_one_image_size(monkeypatch, pixel_classifier, fmnist_test, tmp_path):
    jpeg = FakeJpeg("jpeg420", "JPEG (fake)", (20, 50, 90))
    monkeypatch.setattr(sweep, "_anchors", lambda: FakeAnchorModule(jpeg))
    paths = sweep.run_sweep([sweep.resolve_codec("jpeg420")], fmnist_test, tasks.get_task("classify"),
                            tmp_path / "o", progress=False)
    results = report.load_results(paths)
    assert report.fixed_pixels(results) == 28 * 28
    report.write_report(results, tmp_path / "rep", reference="jpeg")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| bits/image | payload bits/image |" in md
    p = results[0]["points"][0]
    assert f"| {p['bpp'] * 784:.1f} | {p['payload_bpp'] * 784:.1f} |" in md
    results[0]["images"][0]["height"] = 30  # mixed sizes: bpp only
    assert report.fixed_pixels(results) is None


def test_missing_pixel_classifier_is_a_clear_error(monkeypatch):
    from importlib import resources

    monkeypatch.setattr(tasks, "FASHION_MNIST_WEIGHTS", "no-such-file.safetensors")
    tasks.fashion_mnist_classifier.cache_clear()
    try:
        with pytest.raises(IcmError, match="Fashion-MNIST pixel classifier"):
            tasks.fashion_mnist_classifier()
    finally:
        tasks.fashion_mnist_classifier.cache_clear()
    assert resources.files("icm.weights").is_dir()


def _pixel_classifier_shipped() -> bool:
    from importlib import resources

    return resources.files("icm.weights").joinpath(tasks.FASHION_MNIST_WEIGHTS).is_file()


@pytest.mark.skipif(not _pixel_classifier_shipped(), reason="no shipped Fashion-MNIST pixel classifier")
def test_shipped_pixel_classifier_is_accurate_on_the_bundled_test_images():
    from icm.samples import fashion_mnist_samples

    model = tasks.fashion_mnist_classifier()
    assert sum(p.requires_grad for p in model.parameters()) > 0
    samples = fashion_mnist_samples()
    right = sum(tasks.classify_fashion_mnist(np.asarray(Image.open(p).convert("RGB")))[0] == label
                for p, label, _ in samples)
    assert right >= 8, right  # ten held-out test images, one per class


# -- the demo --------------------------------------------------------------------------------


def test_bundled_fashion_mnist_samples():
    from icm.samples import fashion_mnist_samples

    samples = fashion_mnist_samples()
    assert [label for _, label, _ in samples] == list(range(10))
    for path, label, name in samples:
        with Image.open(path) as im:
            assert im.size == (28, 28) and im.mode == "L"
        assert name == datasets.FASHION_MNIST_CLASSES[label]


@pytest.mark.skipif(not shipped_qualities("bai2022-fmnist"), reason="no shipped bai2022-fmnist weights")
def test_fashion_mnist_demo(run_cli, tmp_path):
    r = run_cli("demo", "--model", "bai2022-fmnist", "--out-dir", tmp_path)
    assert r.code == 0, r.err
    qs = shipped_qualities("bai2022-fmnist")
    assert len(list(tmp_path.glob("*.icm"))) == 10 * len(qs)
    with Image.open(tmp_path / "fashion_mnist.png") as im:
        assert im.size[0] >= 112 * (1 + len(qs)) and im.size[1] >= 112 * 10
    right = {int(q): int(n) for q, n in re.findall(r"q(\d+): (\d+)/10 right", r.out)}
    assert set(right) == set(qs), r.out
    assert right[max(qs)] >= 7, r.out  # the best quality classifies most of ten held-out images from the bitstream


def test_demo_model_choice_errors(run_cli, tmp_path):
    r = run_cli("demo", "--model", "dicm", "--out-dir", tmp_path)
    assert r.code == 2 and "invalid choice" in r.err
    if not shipped_qualities("bai2022-fmnist"):
        r = run_cli("demo", "--model", "bai2022-fmnist", "--out-dir", tmp_path)
        assert r.code == 2 and "no shipped weights" in r.err
