"""Users' files are safe: no output over an input, existing outputs kept unless
--force, atomic writes, every failure one line naming the file, batches go on
past a bad file, and conversions of the input are said."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from icm import bitstream, codec
from icm.bitstream import Header
from icm.errors import IcmError

from conftest import gradient_image


def _photo(tmp_path, name="photo.png", size=(48, 64)) -> "os.PathLike":
    p = tmp_path / name
    codec.save_image(gradient_image(*size), p)
    return p


def _one_line(r, *subs):
    assert r.code == 2, (r.code, r.out, r.err)
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("icm: error:"), r.err
    assert "Traceback" not in r.err
    for s in subs:
        assert s in r.err, r.err


def test_compress_then_decompress_keeps_the_original(run_cli, tmp_path):
    src = _photo(tmp_path)
    before = src.read_bytes()
    assert run_cli("compress", src, "-q", "1").code == 0
    r = run_cli("decompress", tmp_path / "photo.icm")
    assert r.code == 0, r.err
    assert src.read_bytes() == before
    with Image.open(tmp_path / "photo.decoded.png") as im:
        assert im.size == (64, 48)


def test_no_output_over_its_input_even_with_force(run_cli, tmp_path):
    src = _photo(tmp_path)
    before = src.read_bytes()
    for extra in ((), ("-f",)):
        _one_line(run_cli("compress", src, "-q", "1", "-o", src, *extra), "would overwrite its input")
        assert src.read_bytes() == before
    assert run_cli("compress", src, "-q", "1").code == 0
    icm_file = tmp_path / "photo.icm"
    kept = icm_file.read_bytes()
    _one_line(run_cli("decompress", icm_file, "-o", icm_file, "-f"), "photo.icm")
    assert icm_file.read_bytes() == kept
    twin = tmp_path / "twin.png"
    os.link(src, twin)  # another name of the same file is the same file
    _one_line(run_cli("compress", twin, "-q", "1", "-o", src, "-f"), "would overwrite its input")
    assert src.read_bytes() == before


def test_existing_outputs_are_kept_unless_force(run_cli, tmp_path):
    src = _photo(tmp_path)
    out = tmp_path / "photo.icm"
    out.write_bytes(b"precious")
    _one_line(run_cli("compress", src, "-q", "1"), "photo.icm: already exists; use --force")
    assert out.read_bytes() == b"precious"
    assert run_cli("compress", src, "-q", "1", "--force").code == 0
    assert bitstream.unpack(out.read_bytes()).header.width == 64
    dec = tmp_path / "photo.decoded.png"
    dec.write_bytes(b"mine")
    _one_line(run_cli("decompress", out), "already exists")
    assert dec.read_bytes() == b"mine"
    assert run_cli("decompress", out, "-f").code == 0
    assert Image.open(dec).size == (64, 48)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.decoded.png", "photo.icm", "photo.png"]


def test_two_inputs_with_one_output_name_are_refused_before_any_work(run_cli, tmp_path):
    a = _photo(tmp_path, "a.png")
    Image.open(a).save(tmp_path / "a.bmp")
    _one_line(run_cli("compress", a, tmp_path / "a.bmp", "-q", "1"), "would both be written to")
    assert not (tmp_path / "a.icm").exists()


@pytest.mark.parametrize("where", ["under-a-file", "missing-folder", "out-dir-under-a-file"])
def test_write_failures_are_one_line(run_cli, tmp_path, where):
    src = _photo(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = {"under-a-file": ("-o", blocker / "x.icm"), "missing-folder": ("-o", tmp_path / "no" / "x.icm"),
            "out-dir-under-a-file": ("--out-dir", blocker / "sub")}[where]
    _one_line(run_cli("compress", src, "-q", "1", *args))
    assert blocker.read_text() == "x"


def test_a_failed_write_leaves_no_partial_file_and_the_old_output(run_cli, tmp_path, monkeypatch):
    src = _photo(tmp_path)
    out = tmp_path / "photo.icm"
    out.write_bytes(b"old")

    def refuse(a, b):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    _one_line(run_cli("compress", src, "-q", "1", "-f"), "cannot write", "Permission denied")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.icm", "photo.png"]  # no .part left


def test_demo_out_dir_under_a_file(run_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line(run_cli("demo", "-m", "hyperprior", "--out-dir", blocker / "demo"), "cannot create folder")


def test_a_batch_goes_on_past_a_bad_file_and_names_it(run_cli, tmp_path):
    a, c = _photo(tmp_path, "a.png"), _photo(tmp_path, "c.png", (32, 40))
    bad = tmp_path / "b.png"
    bad.write_bytes(b"not an image")
    r = run_cli("compress", a, bad, c, "-q", "1")
    _one_line(r, "b.png")
    assert (tmp_path / "a.icm").is_file() and (tmp_path / "c.icm").is_file() and not (tmp_path / "b.icm").exists()
    (tmp_path / "b.icm").write_bytes(b"IC garbage")
    r = run_cli("info", tmp_path / "a.icm", tmp_path / "b.icm", tmp_path / "c.icm", "--json")
    _one_line(r, "b.icm")
    assert [line.split('"file": ')[1].split(",")[0] for line in r.out.splitlines()] == \
        [f'"{tmp_path / "a.icm"}"', f'"{tmp_path / "c.icm"}"']
    r = run_cli("decompress", tmp_path / "a.icm", tmp_path / "b.icm", tmp_path / "c.icm")
    _one_line(r, "b.icm")
    assert (tmp_path / "a.decoded.png").is_file() and (tmp_path / "c.decoded.png").is_file()


@pytest.mark.parametrize("q", ["0", "9", "-1"])
def test_quality_out_of_range_is_refused_for_every_value(run_cli, tmp_path, q):
    src = _photo(tmp_path)
    _one_line(run_cli("compress", src, "-q", q), f"-q {q}", "has qualities 1, 2, 3, 4, 5")
    assert not (tmp_path / "photo.icm").exists()


def test_a_file_of_a_model_without_weights_is_refused_from_the_header(run_cli, tmp_path, monkeypatch):
    from icm.models import model_info

    info = model_info("bai2022")  # registered, no shipped weights
    data = bitstream.pack(Header(info.model_id, 1, 224, 224), [b"\x00" * 8, b"\x00" * 4])
    path = tmp_path / "foreign.icm"
    path.write_bytes(data)

    def refuse(*a, **k):
        raise AssertionError("a network was built")

    monkeypatch.setattr(codec, "_shipped_model", refuse)
    for cmd in ("decompress", "analyze"):
        r = run_cli(cmd, path)
        _one_line(r, "foreign.icm", "no shipped weights for bai2022 q1")
        assert "pretrained" not in r.err


def test_decode_of_a_file_without_pixels_says_so_before_decoding(monkeypatch):
    from icm.models import model_info

    info = model_info("dicm-lite0")
    data = bitstream.pack(Header(info.model_id, 1, 64, 64), [b"\x00" * 8, b"\x00" * 8])
    monkeypatch.setattr(codec, "_shipped_model", lambda *a: (_ for _ in ()).throw(AssertionError("built")))
    with pytest.raises(IcmError, match="carries no pixel decoder") as e:
        codec.decode(data)
    assert "corrupted" not in str(e.value)


def test_draw_without_image_is_refused_before_analysis(run_cli, tmp_path, monkeypatch):
    from icm.models import model_info

    info = model_info("dicm-lite0")
    path = tmp_path / "d.icm"
    path.write_bytes(bitstream.pack(Header(info.model_id, 1, 64, 64), [b"\x00" * 8, b"\x00" * 8]))
    monkeypatch.setattr(codec, "analyze", lambda *a, **k: (_ for _ in ()).throw(AssertionError("analysed")))
    # heads that read features (the shipped ones decode a picture for their detector, which --draw can use)
    from icm.models import _registry

    monkeypatch.setattr(_registry, "heads_make_pictures", lambda name: False)
    _one_line(run_cli("analyze", path, "--task", "detect", "--draw", tmp_path / "o.png"), "--draw needs --image")


# -- inputs said as they are ---------------------------------------------------------------------------


def test_16_bit_png_is_scaled_not_clipped(run_cli, tmp_path):
    rgb8 = codec.to_uint8(gradient_image(48, 64))
    grey8 = rgb8[..., 1]
    p16, p8 = tmp_path / "deep.png", tmp_path / "flat.png"
    Image.fromarray(grey8.astype(np.uint16) * 257).save(p16)
    Image.fromarray(grey8, mode="L").save(p8)
    notes = []
    assert np.array_equal(codec.read_rgb(p16, notes)[..., 0], grey8)
    assert "16-bit samples scaled to 8 bits" in notes
    r = run_cli("compress", p16, p8, "-q", "1")
    assert r.code == 0 and "deep.png: 16-bit samples scaled to 8 bits" in r.err
    assert run_cli("decompress", tmp_path / "deep.icm", tmp_path / "flat.icm").code == 0

    def psnr(a, b):
        mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
        return 10 * np.log10(255.0**2 / mse)

    ref = np.repeat(grey8[..., None], 3, axis=2)
    deep = psnr(codec.read_rgb(tmp_path / "deep.decoded.png"), ref)
    flat = psnr(codec.read_rgb(tmp_path / "flat.decoded.png"), ref)
    assert abs(deep - flat) < 1.0 and deep > 20


def test_conversions_print_one_warning_naming_the_file(run_cli, tmp_path):
    rgb = codec.to_uint8(gradient_image(32, 40))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(rgb[..., 0], "L").save(tmp_path / "grey.png")
    Image.fromarray(rgb).save(tmp_path / "plain.png")
    r = run_cli("compress", *(tmp_path / n for n in ("alpha.png", "anim.gif", "grey.png", "plain.png")), "-q", "1")
    assert r.code == 0, r.err
    warnings = [line for line in r.err_lines if line.startswith("icm: warning:")]
    assert any("alpha.png: alpha channel dropped" in w for w in warnings)
    assert any("anim.gif: coded its first frame only (of 2)" in w for w in warnings)
    assert any("grey.png: greyscale coded as RGB" in w for w in warnings)
    assert not any("plain.png" in w for w in warnings)


def test_a_model_of_one_image_size_refuses_others(run_cli, tmp_path):
    big = _photo(tmp_path, "photo.png", (64, 64))
    Image.fromarray(codec.to_uint8(gradient_image(28, 28))).save(tmp_path / "small.png")
    r = run_cli("compress", big, tmp_path / "small.png", "-m", "bai2022-fmnist")
    errors = [line for line in r.err_lines if line.startswith("icm: error:")]
    assert r.code == 2 and len(errors) == 1 and "Traceback" not in r.err
    assert "photo.png is 64x64" in errors[0] and "codes 28x28 images" in errors[0]
    assert not (tmp_path / "photo.icm").exists() and (tmp_path / "small.icm").is_file()
    assert "small.png: colour dropped: bai2022-fmnist codes greyscale (luma)" in r.err
