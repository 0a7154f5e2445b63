"""The ``icm`` command line: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import icm
from icm import bitstream, codec
from icm.bitstream import Header

from conftest import TINY, gradient_image, make_tiny_model, requires_weights, shipped_qualities


@pytest.fixture
def tiny_get_model(monkeypatch):
    """Make ``codec.get_model`` serve the seeded tiny model (it has no shipped weights)."""
    real = codec.get_model
    model = make_tiny_model()

    def fake(name, quality):
        if name == TINY and quality == 1:
            return model
        return real(name, quality)

    monkeypatch.setattr(codec, "get_model", fake)
    return model


@pytest.fixture
def tiny_icm(tmp_path, tiny_model) -> tuple:
    """A valid .icm file of a 70x91 image, written with hyperprior-tiny."""
    data = codec.encode(tiny_model, gradient_image(70, 91))[0]
    path = tmp_path / "valid.icm"
    path.write_bytes(data)
    return path, data


def _png(path, h=37, w=53):
    arr = codec.to_uint8(gradient_image(h, w))
    Image.fromarray(arr).save(path)
    return path


def _assert_one_line_error(r, *substrings):
    assert r.code == 2, (r.code, r.out, r.err)
    lines = r.err_lines
    assert len(lines) == 1, r.err
    assert lines[0].startswith("icm: error:"), lines[0]
    assert "Traceback" not in r.err
    for s in substrings:
        assert s in lines[0], lines[0]


# -- models ----------------------------------------------------------------------------


def test_models_lists_families(run_cli):
    r = run_cli("models")
    assert r.code == 0
    assert r.err == ""
    table, _, footer = r.out.partition("\n\n")
    lines = table.splitlines()
    assert lines[0].startswith("model")
    names = [line.split()[0] for line in lines[1:]]
    assert "hyperprior" in names and TINY in names
    assert "higher quality means more bits" in footer


def test_models_json(run_cli):
    r = run_cli("models", "--json")
    assert r.code == 0
    rows = {d["name"]: d for d in map(json.loads, r.out.splitlines())}
    assert rows["hyperprior"]["id"] == 1
    assert rows["hyperprior"]["qualities"] == [1, 2, 3, 4, 5]
    assert rows["hyperprior"]["weights"] == shipped_qualities("hyperprior")
    assert rows[TINY]["weights"] == []


def test_version(run_cli):
    r = run_cli("--version")
    assert r.code == 0
    assert icm.__version__ in r.out


# -- info ------------------------------------------------------------------------------------


def test_info_valid_file(run_cli, tiny_icm):
    path, data = tiny_icm
    r = run_cli("info", path)
    assert r.code == 0, r.err
    assert r.err == ""
    assert f"{len(data)} bytes" in r.out
    assert f"{8 * len(data) / (70 * 91):.4f} bpp" in r.out
    assert "hyperprior-tiny q1" in r.out and "91x70" in r.out


def test_info_json(run_cli, tiny_icm):
    path, data = tiny_icm
    r = run_cli("info", "--json", path)
    assert r.code == 0
    row = json.loads(r.out)
    assert row["bytes"] == len(data)
    assert row["model"] == TINY and row["quality"] == 1
    assert (row["height"], row["width"]) == (70, 91)
    assert row["bpp"] == pytest.approx(8 * len(data) / (70 * 91), abs=1e-6)
    assert row["header_bytes"] + sum(row["sections"]) == len(data)


def test_info_unknown_model_id_still_reports(run_cli, tmp_path):
    p = tmp_path / "future.icm"
    p.write_bytes(bitstream.pack(Header(99, 1, 10, 10), [b"abcd"]))
    r = run_cli("info", p)
    assert r.code == 0
    assert "unknown (id 99)" in r.out


# -- decompress -------------------------------------------------------------------------


def test_decompress_writes_png_of_right_size(run_cli, tiny_icm, tiny_get_model, tmp_path):
    path, data = tiny_icm
    out = tmp_path / "out.png"
    r = run_cli("decompress", path, "-o", out)
    assert r.code == 0, r.err
    with Image.open(out) as im:
        assert im.size == (91, 70) and im.mode == "RGB"
        arr = np.asarray(im)
    expected = codec.to_uint8(codec.decode(data, model=tiny_get_model)["x_hat"])
    assert np.array_equal(arr, expected)
    assert f"{out}: 91x70" in r.out


def test_decompress_default_output_name(run_cli, tiny_icm, tiny_get_model):
    path, _ = tiny_icm
    r = run_cli("decompress", path)
    assert r.code == 0, r.err
    assert not path.with_suffix(".png").exists()  # the name of the image the file came from stays free
    with Image.open(path.with_name(path.stem + ".decoded.png")) as im:
        assert im.size == (91, 70)


def test_decompress_to_unwritable_destination(run_cli, tiny_icm, tiny_get_model, tmp_path):
    path, _ = tiny_icm
    _assert_one_line_error(run_cli("decompress", path, "-o", tmp_path / "no-dir" / "x.png"), "cannot write")


def test_decompress_without_shipped_weights_is_one_line(run_cli, tmp_path):
    # a valid hyperprior-tiny file; without a model passed in, decoding needs shipped weights (tiny has none)
    torch.manual_seed(0)
    m = icm.create_model(TINY, quality=1, pretrained=False)
    p = tmp_path / "t.icm"
    p.write_bytes(codec.encode(m, gradient_image(17, 31))[0])
    _assert_one_line_error(run_cli("decompress", p), "no shipped weights")


# -- compress ---------------------------------------------------------------------------------


def test_compress_writes_valid_file(run_cli, tiny_get_model, tmp_path):
    src = _png(tmp_path / "img.png")
    r = run_cli("compress", "-m", TINY, src)
    assert r.code == 0, r.err
    out = tmp_path / "img.icm"
    f = bitstream.unpack(out.read_bytes())
    assert (f.header.height, f.header.width) == (37, 53)
    assert f.header.model_id == icm.models.model_info(TINY).model_id
    assert f"{f.size} bytes" in r.out
    # and the CLI decodes it again
    r = run_cli("decompress", out, "-o", tmp_path / "back.png")
    assert r.code == 0, r.err
    with Image.open(tmp_path / "back.png") as im:
        assert im.size == (53, 37)


def test_compress_out_dir_several_inputs(run_cli, tiny_get_model, tmp_path):
    a, b = _png(tmp_path / "a.png", 20, 30), _png(tmp_path / "b.png", 9, 5)
    r = run_cli("compress", "-m", TINY, "-q", "1", "--out-dir", tmp_path / "o", a, b)
    assert r.code == 0, r.err
    assert bitstream.unpack((tmp_path / "o" / "a.icm").read_bytes()).header.width == 30
    assert bitstream.unpack((tmp_path / "o" / "b.icm").read_bytes()).header.height == 9


def test_compress_missing_file(run_cli, tiny_get_model, tmp_path):
    _assert_one_line_error(run_cli("compress", "-m", TINY, tmp_path / "missing.png"), "no such file")


def test_compress_text_file_named_png(run_cli, tiny_get_model, tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image\n")
    _assert_one_line_error(run_cli("compress", "-m", TINY, p), "cannot read")


def test_compress_directory(run_cli, tiny_get_model, tmp_path):
    d = tmp_path / "adir.png"
    d.mkdir()
    _assert_one_line_error(run_cli("compress", "-m", TINY, d), "directory")


def test_compress_truncated_png(run_cli, tiny_get_model, tmp_path):
    p = _png(tmp_path / "cut.png", 64, 64)
    p.write_bytes(p.read_bytes()[:80])
    _assert_one_line_error(run_cli("compress", "-m", TINY, p), "cannot read")


def _png_header_only(path, w, h):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_compress_decompression_bomb_png(run_cli, tiny_get_model, tmp_path):
    # A 40-byte PNG that declares 20000x20000 pixels: Pillow refuses it with
    # DecompressionBombError, which must become a one-line error like any bad image.
    p = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    _assert_one_line_error(run_cli("compress", "-m", TINY, p), "bomb.png")


def test_compress_unknown_model(run_cli, tmp_path):
    src = _png(tmp_path / "img.png")
    _assert_one_line_error(run_cli("compress", "-m", "nope", src), "unknown model 'nope'")


def test_compress_without_weights_is_one_line(run_cli, tmp_path):
    src = _png(tmp_path / "img.png")
    _assert_one_line_error(run_cli("compress", "-m", TINY, src), "no shipped weights")


def test_compress_output_with_two_inputs(run_cli, tiny_get_model, tmp_path):
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png")
    _assert_one_line_error(run_cli("compress", "-m", TINY, "-o", tmp_path / "x.icm", a, b), "single input")
    assert not (tmp_path / "x.icm").exists()


def test_decompress_output_with_two_inputs(run_cli, tiny_icm, tmp_path):
    path, _ = tiny_icm
    _assert_one_line_error(run_cli("decompress", "-o", tmp_path / "x.png", path, path), "single input")


# -- bad .icm files -----------------------------------------------------------------------------


def _bad_files(tmp_path, data: bytes) -> dict:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    files = {
        "truncated-header": data[:7],
        "truncated-payload": data[:-6],
        "corrupted": bytes(flipped),
        "empty": b"",
        "png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 30,
    }
    # hostile size: height 70000 with a valid checksum
    body = bytearray(b"IC\x01")
    for v in (2, 1, 69999, 63, 0):
        bitstream._put_varint(body, v)
    files["hostile-size"] = bytes(body) + zlib.crc32(body).to_bytes(4, "little")
    out = {}
    for name, content in files.items():
        p = tmp_path / f"{name}.icm"
        p.write_bytes(content)
        out[name] = p
    return out


BAD = ["truncated-header", "truncated-payload", "corrupted", "empty", "png", "hostile-size"]
MESSAGES = {
    "truncated-header": "truncated",
    "truncated-payload": "checksum mismatch",
    "corrupted": "checksum mismatch",
    "empty": "not an .icm file",
    "png": "not an .icm file",
    "hostile-size": "implausible image size",
}


@pytest.mark.parametrize("command", ["info", "decompress"])
@pytest.mark.parametrize("which", BAD)
def test_bad_files_exit_2(run_cli, tiny_icm, tiny_get_model, tmp_path, command, which):
    _, data = tiny_icm
    files = _bad_files(tmp_path, data)
    _assert_one_line_error(run_cli(command, files[which]), MESSAGES[which])
    assert not files[which].with_suffix(".png").exists()


@pytest.mark.parametrize("command", ["info", "decompress"])
def test_missing_and_directory_icm(run_cli, tmp_path, command):
    _assert_one_line_error(run_cli(command, tmp_path / "nothing.icm"), "no such file")
    _assert_one_line_error(run_cli(command, tmp_path), "directory")


def test_decompress_hostile_payload_with_valid_crc(run_cli, tiny_get_model, tmp_path):
    p = tmp_path / "hostile.icm"
    p.write_bytes(bitstream.pack(Header(2, 1, 64, 64), [b"\x12\x34\x56\x78" * 3, b"\xff" * 8]))
    _assert_one_line_error(run_cli("decompress", p), "corrupted .icm payload")


def test_decompress_unknown_model_id(run_cli, tmp_path):
    p = tmp_path / "future.icm"
    p.write_bytes(bitstream.pack(Header(99, 1, 10, 10), [b"", b""]))
    _assert_one_line_error(run_cli("decompress", p), "unknown model id 99")


# -- usage errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["frobnicate"], [], ["compress"], ["info"], ["compress", "--quality", "x", "a.png"]])
def test_usage_errors_exit_2(run_cli, argv):
    r = run_cli(*argv)
    assert r.code == 2
    assert "usage:" in r.err
    assert "Traceback" not in r.err


# -- a real process ---------------------------------------------------------------------


def test_subprocess_info_on_corrupted_file(run_cli_subprocess, tiny_icm, tmp_path):
    _, data = tiny_icm
    bad = bytearray(data)
    bad[-7] ^= 0x01
    p = tmp_path / "corrupted.icm"
    p.write_bytes(bytes(bad))
    r = run_cli_subprocess("info", p)
    assert r.code == 2, (r.out, r.err)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, r.err
    assert lines[0].startswith("icm: error:") and "checksum mismatch" in lines[0]
    assert "Traceback" not in r.err
    assert r.out == ""


def test_subprocess_info_on_valid_file(run_cli_subprocess, tiny_icm):
    path, data = tiny_icm
    r = run_cli_subprocess("info", "--json", path)
    assert r.code == 0, r.err
    assert json.loads(r.out)["bytes"] == len(data)


# -- with shipped weights ------------------------------------------------------------------------


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


@requires_weights
def test_compress_decompress_sample_photo(run_cli, tmp_path):
    from icm.samples import sample_paths

    q = shipped_qualities("hyperprior")[0]
    src = sample_paths()[0]
    r = run_cli("compress", "-q", q, "-o", tmp_path / "s.icm", src)
    assert r.code == 0, r.err
    f = codec.read(tmp_path / "s.icm")
    with Image.open(src) as im:
        ref = np.asarray(im.convert("RGB"))
    assert (f.header.height, f.header.width) == ref.shape[:2]
    assert f.header.quality == q and f.header.model_id == 1
    assert 0 < f.bpp < 8
    r = run_cli("decompress", tmp_path / "s.icm", "-o", tmp_path / "s.png")
    assert r.code == 0, r.err
    with Image.open(tmp_path / "s.png") as im:
        rec = np.asarray(im.convert("RGB"))
    assert rec.shape == ref.shape
    assert _psnr(ref, rec) > 22.0


@requires_weights
def test_demo(run_cli, tmp_path):
    """The whole demo: machine path first, every section timed, pictures written, and
    every figure it quotes or measures agreeing with the committed reports."""
    from icm import codec
    from icm.demo import committed_reports, demo_qualities, held_out_crops
    from icm.samples import sample_paths

    out = tmp_path / "demo"
    r = run_cli("demo", "--out-dir", out)
    assert r.code == 0, r.err
    fmnist = shipped_qualities("bai2022-fmnist")
    features = demo_qualities(shipped_qualities("dicm-lite0"))
    hyper = shipped_qualities("hyperprior")
    titles = re.findall(r"^== (\d+)/(\d+) (.+) ==$", r.out, flags=re.M)
    took = re.findall(r"^-- section (\d+) took ([\d.]+) s$", r.out, flags=re.M)
    assert len(titles) == len(took) == int(titles[0][1]) and [t[0] for t in took] == [t[0] for t in titles]
    assert re.search(r"^icm demo: done in \d+ s \(sections: ", r.out, flags=re.M)
    order = [t[2].split()[0] for t in titles]
    expected = (["one", "dicm-lite0"] if features else []) + (["bai2022-fmnist:"] if fmnist else []) + ["hyperprior"]
    assert order == expected, order  # the machine path leads

    # hyperprior: one mid quality, the same in the table and the picture
    q = hyper[len(hyper) // 2]
    stems = {p.stem for p in sample_paths()}
    assert sorted(p.name for p in out.glob("*.icm") if p.stem.rsplit("-q", 1)[0] in stems) == sorted(
        f"{s}-q{q}.icm" for s in stems)
    assert f"median PSNR gain over JPEG at the same or smaller size, q{q}:" in r.out
    assert (out / "side_by_side.png").is_file()
    reports = committed_reports()
    assert f"hyperprior BD-rate {reports['photos-vs-jpeg']['bd_rate_pct']:+.1f}% against jpeg420" in r.out
    if fmnist:
        assert len(list(out.glob("[0-9]-*-q*.icm"))) == 10 * len(fmnist)
    if features:
        n = len(held_out_crops())
        assert n == 30
        coded = sorted(out.glob("*-dicm-lite0-q*.icm"))
        photos = _demo_photo_files(out)
        assert len(coded) == n * len(features) + len(photos)
        for path in set(coded) - set(photos):
            f = codec.read(path)
            assert (f.header.height, f.header.width) == (224, 224)
        rows = re.findall(r"^ ?(\d) \|\s+\d+\s+([\d.]+)\s+(\d+)/30 \|\s+([\d.]+)\s+(\d+)/30 \|\s+([\d.]+)\s+(\d+)/30$",
                          r.out, flags=re.M)
        assert [int(x[0]) for x in rows] == features, r.out
        for q, ib, ih, jb, jh, hb, hh in rows:  # the anchors' files are never larger than ours, unless they say so
            for name, b in (("JPEG", jb), ("HEVC", hb)):
                assert float(b) <= float(ib) or re.search(
                    rf"^   q{q}: .*{name}.* cannot code these crops as small as icm", r.out, flags=re.M), (q, name, b, ib)
        # every icm file and answer is the committed photo-crops report's, crop by crop
        assert "have the very bytes and answers of the committed report" in r.out, r.out
        assert f"dicm-lite0 BD-rate {reports['photo-crops-classify']['bd_rate_pct']:+.1f}% against hevc" in r.out
        assert (out / "dicm.png").is_file()
    if photos := _demo_photo_files(out):
        # one file, three tasks, on two held-out photos: what the heads find there
        assert (out / "dicm-objects.png").is_file() and len(photos) == 2
        lines = re.findall(r"^  (?:detect|segment): objects found: (.*) \((\d+) box(?:es)?", r.out, flags=re.M)
        assert len(lines) == 2, r.out
        found = [[(m[0], float(m[1])) for m in re.findall(r"([a-z ]+) (\d\.\d\d)(?:, |$)", listed)]
                 for listed, _ in lines]
        assert [len(f) for f in found] == [int(k) for _, k in lines]
        assert "person" in {label for label, _ in found[0]}, r.out  # the astronaut
        from icm.tasks import REPORT_SCORE

        assert all(score >= REPORT_SCORE for f in found for _, score in f)  # what the demo says it reports
        assert "cup" in {label for label, _ in found[1]}, r.out  # the coffee
        for path, side in zip(photos, ((512, 512), (400, 600))):
            f = codec.read(path)
            assert (f.header.height, f.header.width) == side


def _demo_photo_files(out: Path) -> list[Path]:
    """Section 1's files: one per photo (section 2's crops are named photo-k-model-qN)."""
    return [p for stem in ("astronaut", "coffee") for p in sorted(out.glob(f"{stem}-dicm-lite0-q*.icm"))]


def test_bundled_report_figures_are_the_committed_reports():
    """What the demo quotes (icm/samples/reports.json) is what docs/results says; refresh with
    ``python -m icm.demo --reports docs/results``."""
    from icm.demo import committed_reports, summarise_reports

    docs = Path(__file__).resolve().parents[1] / "docs" / "results"
    assert committed_reports() == json.loads(json.dumps(summarise_reports(docs)))
    per = committed_reports()["photo-crops-classify"]["per_image"]["dicm-lite0"]
    shipped = [str(q) for q in shipped_qualities("dicm-lite0")]
    assert len(per) == 30 and all(sorted(v) == shipped for v in per.values())


def test_demo_without_weights_is_one_line(run_cli, tmp_path):
    if shipped_qualities("hyperprior"):
        pytest.skip("weights are shipped; the no-weights path is not reachable")
    _assert_one_line_error(run_cli("demo", "--out-dir", tmp_path / "d"), "no shipped weights")


def test_the_demo_table_shows_the_lowest_the_highest_and_evenly_between():
    from icm.demo import demo_qualities

    assert demo_qualities([1, 2, 3, 4, 5, 6]) == [1, 3, 4, 6]
    assert demo_qualities([2, 5]) == [2, 5]
    assert demo_qualities(list(range(1, 10))) == [1, 4, 6, 9]


def test_largest_at_most_matches_a_linear_scan():
    """The demo's equal-size search (bisection, galloping from a hint) finds the largest file
    not above the target, whatever the hint, and the smallest one if none fits."""
    import random

    from icm.demo import _largest_at_most

    rng = random.Random(0)
    for _ in range(2000):
        n = rng.randint(1, 40)
        sizes = sorted(rng.randint(1, 500) for _ in range(n))
        target = rng.randint(0, 520)
        hint = rng.choice([None, *range(-1, n + 1)])
        q, data = _largest_at_most(lambda i: b"x" * sizes[i], range(n), target, hint)
        fit = [i for i in range(n) if sizes[i] <= target]
        assert len(data) == sizes[q] == sizes[fit[-1] if fit else 0], (sizes, target, hint, q)
