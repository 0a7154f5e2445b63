"""Classical anchors (icm.eval.anchors), payload parsers (icm.eval.payload), colour path (icm.eval.colour).

Images are tiny crops of a real photo; every encoder runs on one thread.
"""

from __future__ import annotations

import json
import pickle
import struct
import sys

import numpy as np
import pytest

from icm.bitstream import Header, pack
from icm.metrics import psnr
from icm.errors import IcmError
from icm.eval import colour, payload
from icm.eval.anchors import ANCHORS, Anchor, Coded, code, get_anchor, list_anchors

NAMES = ["jpeg420", "jpeg444", "webp", "avif", "hevc", "vvc", "jxl"]
# PSNR floors at the second-highest default setting on a 32x48 crop of a
# textured photo; 4:2:0 codecs and JPEG XL (tuned for Butteraugli) sit lower.
PSNR_FLOOR = {"jpeg420": 34, "jpeg444": 36, "webp": 35, "avif": 36, "hevc": 38, "vvc": 35, "jxl": 32}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:132, 200:248])  # 32x48: face, hair, background


# --- registry and API -------------------------------------------------------------------------


def test_registry_names_and_attributes():
    assert list_anchors() == NAMES
    for name in NAMES:
        a = get_anchor(name)
        assert isinstance(a, Anchor) and a.name == name and a is ANCHORS[name]
        assert a.label and a.package and len(a.qualities) >= 8
        assert all(isinstance(q, int) for q in a.qualities)
        lo, hi = a.quality_range
        assert all(lo <= q <= hi for q in a.qualities)
        # ordered from low to high rate: ascending quality, descending QP
        step = np.diff(a.qualities)
        assert (step < 0).all() if a.quality_param == "qp" else (step > 0).all()
    assert get_anchor("vvc").label == "VVenC 4:2:0"
    for a in ANCHORS.values():  # sweeps ship anchors to worker processes
        assert pickle.loads(pickle.dumps(a)).settings() == a.settings()


def test_unknown_anchor_lists_known_ones():
    with pytest.raises(IcmError, match="unknown anchor 'bpg'.*jpeg420.*hevc.*jxl"):
        get_anchor("bpg")


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_rate_and_payload(name, photo):
    a = get_anchor(name)
    hi = code(name, photo, a.qualities[-2])
    lo = code(a, photo, a.qualities[0])
    for c in (hi, lo):
        assert isinstance(c, Coded)
        assert c.decoded.dtype == np.uint8 and c.decoded.shape == photo.shape
        assert 0 < c.payload_bytes < len(c.data)
        assert c.payload_bytes == a.payload_bytes(c.data) == payload.payload_bytes(c.data)
        assert payload.sniff(c.data) == a.fmt
        assert c.encode_s > 0 and c.decode_s > 0
        assert c.bpp == pytest.approx(8 * len(c.data) / photo.shape[0] / photo.shape[1])
    assert psnr(photo, hi.decoded) > PSNR_FLOOR[name]
    assert psnr(photo, hi.decoded) > psnr(photo, lo.decoded) + 5
    assert len(hi.data) > 2 * len(lo.data)
    # the decoder alone gives the same pixels; the codecs are deterministic
    np.testing.assert_array_equal(a.decode(hi.data, size=photo.shape[:2]), hi.decoded)
    assert a.encode(photo, a.qualities[-2]) == hi.data


@pytest.mark.parametrize("name", NAMES)
def test_settings_are_json(name):
    s = get_anchor(name).settings()
    json.dumps(s)
    assert s["name"] == name and s["threads"] == 1 and s["qualities"] == list(get_anchor(name).qualities)


def test_fair_settings_recorded():
    hevc = get_anchor("hevc").settings()["save"]
    assert hevc["chroma"] == 444 and hevc["quality"] == 50
    assert {"tune": "psnr", "x265:aq-mode": "0", "x265:psy-rd": "0", "x265:psy-rdoq": "0"}.items() <= hevc["enc_params"].items()
    avif = get_anchor("avif").settings()["save"]
    assert avif["subsampling"] == "4:4:4" and avif["speed"] == 4 and avif["advanced"] == {"tune": "psnr"}
    assert get_anchor("webp").settings()["save"]["method"] == 6
    assert get_anchor("jpeg420").settings()["save"]["subsampling"] == 2
    assert get_anchor("jpeg444").settings()["save"]["subsampling"] == 0
    args = " ".join(get_anchor("vvc").settings()["ffmpeg_args"])
    assert "-c:v libvvenc -preset medium -qpa 0 -threads 1" in args


def test_vvc_odd_size_is_padded_and_cropped(photo):
    img = np.ascontiguousarray(photo[:31, :47])
    c = code("vvc", img, 30)
    assert c.decoded.shape == img.shape and psnr(img, c.decoded) > 28
    assert get_anchor("vvc").decode(c.data).shape == (32, 48, 3)  # the coded picture has even sides


def test_hevc_444_keeps_colour_detail():
    # One-pixel colour stripes: 4:4:4 keeps them, 4:2:0 JPEG smears them.
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, ::2, 0] = 255
    img[:, 1::2, 2] = 255
    assert psnr(img, code("hevc", img, 17).decoded) > psnr(img, code("jpeg420", img, 95).decoded) + 5


def test_bad_input_is_an_icm_error(photo):
    with pytest.raises(IcmError, match=r"uint8 RGB images of shape \(H, W, 3\)"):
        code("jpeg420", photo.astype(np.float32), 50)
    with pytest.raises(IcmError, match=r"uint8 RGB"):
        code("webp", photo[..., 0], 50)
    with pytest.raises(IcmError, match=r"hevc: qp must be an integer in 0\.\.51"):
        get_anchor("hevc").encode(photo, 60)
    with pytest.raises(IcmError, match="quality must be an integer"):
        get_anchor("jxl").encode(photo, 2.5)


@pytest.mark.parametrize("name", NAMES)
def test_garbage_does_not_decode(name):
    with pytest.raises(IcmError, match=f"{name}: cannot decode 64 bytes"):
        get_anchor(name).decode(bytes(range(64)))


# --- missing optional codecs ------------------------------------------------------------------


@pytest.mark.parametrize("name, module, package", [
    ("jxl", "imagecodecs", "imagecodecs"),
    ("vvc", "imageio_ffmpeg", "imageio-ffmpeg"),
    ("hevc", "pillow_heif", "pillow-heif"),
])
def test_missing_package_names_it(monkeypatch, photo, name, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    a = get_anchor(name)
    with pytest.raises(IcmError, match=f"needs the '{package}' package: pip install {package}"):
        a.check()
    with pytest.raises(IcmError, match=package):
        code(name, photo, a.qualities[0])
    json.dumps(a.settings())  # settings never raise


# --- colour -----------------------------------------------------------------------------------


def test_colour_round_trip_within_one():
    rgb = np.random.default_rng(0).integers(0, 256, (37, 41, 3), dtype=np.uint8)
    ycc = colour.rgb_to_ycbcr(rgb)
    assert np.abs(colour.ycbcr_to_rgb(ycc).astype(int) - rgb).max() == 0
    for bits in (8, 10):
        rec = colour.ycbcr_to_rgb(colour.dequantise(colour.quantise(ycc, bits), bits))
        assert np.abs(rec.astype(int) - rgb).max() <= 1


def test_colour_matrix_is_bt601_full_range():
    ycc = colour.quantise(colour.rgb_to_ycbcr(np.array([[[255, 0, 0], [255, 255, 255], [0, 0, 0]]], np.uint8)), 8)
    # JFIF: red → (76, 85, 255); white → (255, 128, 128); black → (0, 128, 128)
    np.testing.assert_array_equal(ycc[0], [[76, 85, 255], [255, 128, 128], [0, 128, 128]])


def test_yuv420_pads_odd_sizes_and_round_trips(photo):
    img = np.ascontiguousarray(photo[:31, :47])
    y, cb, cr = colour.rgb_to_yuv420(img, 10)
    assert y.shape == (32, 48) and cb.shape == cr.shape == (16, 24) and y.dtype == np.uint16
    assert y.max() <= 1023
    raw = colour.planes_to_bytes((y, cb, cr))
    assert len(raw) == 2 * (32 * 48 + 2 * 16 * 24)
    rec = colour.yuv420_to_rgb(*colour.bytes_to_yuv420(raw, 32, 48), bits=10, size=(31, 47))
    assert rec.shape == img.shape and psnr(img, rec) > 33
    flat = np.full((8, 8, 3), (200, 30, 90), np.uint8)  # flat colour survives 4:2:0 exactly
    np.testing.assert_array_equal(colour.yuv420_to_rgb(*colour.rgb_to_yuv420(flat)), flat)


# --- payload parsers on hand-built files ------------------------------------------------------


def _seg(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def test_jpeg_payload_hand_built():
    sos = _seg(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
    # 12 bytes of scan: 8 bytes of data (with a stuffed FF 00) and a restart marker FF D0
    scan = bytes([0x11, 0x22, 0xFF, 0x00, 0x33]) + b"\xff\xd0" + bytes([0x44, 0x55, 0x66]) + b"\xff\xff"
    assert len(scan) == 12
    jpeg = b"\xff\xd8" + _seg(0xE0, b"JFIF\x00" + bytes(9)) + _seg(0xDB, bytes(65)) + sos + scan + b"\xff\xd9"
    # the two trailing 0xFF are fill bytes before EOI: container, like the restart marker
    assert payload.jpeg_payload(jpeg) == 8
    two_scans = jpeg[:-2] + sos + bytes([1, 2, 3]) + b"\xff\xd9"
    assert payload.jpeg_payload(two_scans) == 8 + 3
    assert payload.sniff(jpeg) == "jpeg"


@pytest.mark.parametrize("bad, message", [
    (b"\x89PNG\r\n\x1a\n", "not a JPEG"),
    (b"\xff\xd8" + _seg(0xDB, bytes(4))[:5], "declares"),
    (b"\xff\xd8" + _seg(0xDA, bytes(6)) + b"\x01\x02\x03", "scan data runs to the end"),
    (b"\xff\xd8" + _seg(0xE0, bytes(4)) + b"\xff\xd9", "no SOS"),
    (b"\xff\xd8" + _seg(0xE0, bytes(4)), "no EOI"),
])
def test_jpeg_payload_malformed(bad, message):
    with pytest.raises(ValueError, match=message):
        payload.jpeg_payload(bad)


def _chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def _riff(*chunks: bytes) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_webp_payload_hand_built():
    assert payload.webp_payload(_riff(_chunk(b"VP8 ", bytes(23)))) == 23  # odd: one pad byte
    extended = _riff(_chunk(b"VP8X", bytes(10)), _chunk(b"ICCP", bytes(7)), _chunk(b"VP8L", bytes(40)),
                     _chunk(b"EXIF", bytes(5)))
    assert payload.webp_payload(extended) == 40
    assert payload.sniff(extended) == "webp"
    with pytest.raises(ValueError, match="no VP8 or VP8L chunk"):
        payload.webp_payload(_riff(_chunk(b"VP8X", bytes(10))))
    with pytest.raises(ValueError, match="chunk b'VP8 ' at offset 12 declares 99 bytes"):
        payload.webp_payload(_riff(b"VP8 " + struct.pack("<I", 99) + bytes(10)))
    with pytest.raises(ValueError, match="not a WebP"):
        payload.webp_payload(b"RIFF\x04\x00\x00\x00AVI ")


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def test_isobmff_payload_hand_built():
    ftyp = _box(b"ftyp", b"heic" + bytes(4) + b"mif1heic")
    meta = _box(b"meta", bytes(4) + _box(b"hdlr", bytes(24)))
    assert payload.isobmff_payload(ftyp + meta + _box(b"mdat", bytes(1234))) == 1234
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 300) + bytes(300)  # 64-bit largesize
    assert payload.isobmff_payload(ftyp + meta + large) == 300
    to_end = struct.pack(">I4s", 0, b"mdat") + bytes(77)  # size 0: runs to the end of the file
    assert payload.isobmff_payload(ftyp + to_end) == 77
    assert payload.sniff(ftyp + to_end) == "isobmff"
    with pytest.raises(ValueError, match="no mdat box"):
        payload.isobmff_payload(ftyp + meta)
    with pytest.raises(ValueError, match=r"box b'mdat' at offset \d+ declares 1242 bytes"):
        payload.isobmff_payload(ftyp + _box(b"mdat", bytes(1234))[:-10])
    with pytest.raises(ValueError, match="no leading ftyp"):
        payload.isobmff_payload(meta)


def _nal(nal_type: int, body_len: int) -> bytes:
    return bytes([0x00, (nal_type << 3) | 1]) + bytes([0xAB]) * body_len


def test_annexb_vvc_payload_hand_built():
    sps, pps, idr, sei = _nal(15, 40), _nal(16, 9), _nal(8, 500), _nal(23, 6)
    trail = _nal(0, 30)
    stream = (b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps + b"\x00\x00\x00\x01" + idr
              + b"\x00\x00\x01" + sei + b"\x00\x00\x01" + trail + b"\x00\x00")  # trailing_zero_8bits
    nals = payload.annexb_nal_units(stream)
    assert [len(n) for n in nals] == [42, 11, 502, 8, 32]
    assert [payload.vvc_nal_type(n) for n in nals] == [15, 16, 8, 23, 0]
    assert payload.vvc_payload(stream) == 502 + 32
    assert payload.sniff(stream) == "vvc"
    with pytest.raises(ValueError, match="no VCL"):
        payload.vvc_payload(b"\x00\x00\x01" + sps)
    with pytest.raises(ValueError, match="not an Annex-B byte stream"):
        payload.vvc_payload(b"\x12\x34\x00\x00\x01" + idr)
    with pytest.raises(ValueError, match="forbidden_zero_bit"):
        payload.vvc_payload(b"\x00\x00\x01\x80\x41\x00")


def test_jxl_and_icm_payload_hand_built():
    assert payload.jxl_payload(b"\xff\x0a" + bytes(98)) == 98
    container = (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + _box(b"ftyp", b"jxl " + bytes(4) + b"jxl ")
                 + _box(b"jxlp", bytes(4) + b"\xff\x0a" + bytes(50)) + _box(b"jxlp", bytes(4) + bytes(20)))
    assert payload.jxl_payload(container) == 70
    assert payload.sniff(container) == "jxl"
    icm = pack(Header(model_id=1, quality=3, height=16, width=16), [bytes(10), bytes(25)])
    assert payload.icm_payload(icm) == 35 and payload.payload_bytes(icm) == 35
    with pytest.raises(ValueError, match="unknown image format"):
        payload.payload_bytes(b"GIF89a....")
    with pytest.raises(IcmError, match="checksum"):
        payload.icm_payload(icm[:-1] + bytes([icm[-1] ^ 1]))
