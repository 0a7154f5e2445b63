"""The .icm container: round trip, overhead, and every malformed-file case."""

from __future__ import annotations

import zlib

import pytest
import torch

import icm
from icm import bitstream, codec
from icm.bitstream import MAX_SECTIONS, Header, IcmFile, pack, unpack
from icm.errors import BitstreamError

from conftest import TINY, gradient_image


def _varint(v: int) -> bytes:
    out = bytearray()
    bitstream._put_varint(out, v)
    return bytes(out)


def _with_crc(body: bytes) -> bytes:
    """Append a valid CRC-32: hostile files that pass the checksum."""
    return body + zlib.crc32(body).to_bytes(4, "little")


def _raw(model_id=2, quality=1, h1=63, w1=63, lengths=(3, 2), sections=None, version=1,
         count=None, fields: bytes | None = None) -> bytes:
    """Hand-built file body with a valid CRC; every field overridable."""
    body = bytearray(b"IC")
    body.append(version)
    if fields is None:
        for v in (model_id, quality, h1, w1, len(lengths) if count is None else count):
            body += _varint(v)
        for n in lengths[:-1]:  # the last section's length is implied
            body += _varint(n)
    else:
        body += fields
    if sections is None:
        sections = [b"\xab" * n for n in lengths]
    for s in sections:
        body += s
    return _with_crc(bytes(body))


@pytest.fixture(scope="module")
def tiny_file() -> bytes:
    torch.manual_seed(0)
    model = icm.create_model(TINY, quality=1, pretrained=False)
    return codec.encode(model, gradient_image(70, 91))[0]


def _raises(data: bytes, substring: str):
    with pytest.raises(BitstreamError) as e:
        unpack(data)
    assert substring in str(e.value), str(e.value)
    assert isinstance(e.value, icm.IcmError)
    return e.value


# -- round trip and overhead -------------------------------------------------------------


@pytest.mark.parametrize(
    "header, sections",
    [
        (Header(1, 1, 224, 224), [b"a" * 300, b"b" * 20]),
        (Header(2, 1, 1, 1), [b"", b""]),
        (Header(127, 300, 65536, 4096), [b"x" * 20000]),
        (Header(1, 4, 17, 31), []),
        (Header(5, 0, 1000, 3), [bytes(range(256))] * MAX_SECTIONS),
    ],
)
def test_pack_unpack_round_trip(header, sections):
    data = pack(header, sections)
    f = unpack(data)
    assert f.header == header
    assert f.sections == sections
    assert f.size == len(data)
    assert bitstream.read_header(data) == header
    assert unpack(bytearray(data)).header == header  # any bytes-like


def test_header_overhead_224():
    f = unpack(pack(Header(1, 1, 224, 224), [b"y" * 300, b"z" * 20]))
    assert f.header_bytes == f.size - 320
    assert f.header_bytes <= 16, f"header + checksum take {f.header_bytes} bytes"


def test_bpp_counts_the_whole_file():
    data = pack(Header(1, 1, 224, 224), [b"y" * 300, b"z" * 20])
    f = unpack(data)
    assert f.bpp == pytest.approx(8 * len(data) / (224 * 224))
    assert f.bpp > 8 * 320 / (224 * 224)


def test_real_file_parses(tiny_file):
    f = unpack(tiny_file)
    assert f.header == Header(2, 1, 70, 91)
    assert len(f.sections) == 2
    assert f.size == len(tiny_file)


def test_pack_rejects_bad_values():
    with pytest.raises(ValueError, match="outside"):
        pack(Header(1, 1, 0, 10), [])
    with pytest.raises(ValueError, match="outside"):
        pack(Header(1, 1, 10, 70000), [])
    with pytest.raises(ValueError, match="sections"):
        pack(Header(1, 1, 10, 10), [b""] * (MAX_SECTIONS + 1))
    with pytest.raises(ValueError, match="unsigned"):
        pack(Header(-1, 1, 10, 10), [])


# -- foreign, version, truncation, corruption ------------------------------------------------


PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"


@pytest.mark.parametrize("data", [PNG_BYTES, b"", b"I", b"CI\x01", b"GIF89a" + b"\x00" * 20, b"\xff\xd8\xff\xe0" * 8],
                         ids=["png", "empty", "one-byte", "swapped-magic", "gif", "jpeg"])
def test_foreign_bytes(data):
    _raises(data, "not an .icm file")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unsupported_version(tiny_file, version):
    data = tiny_file[:2] + bytes([version]) + tiny_file[3:]
    err = _raises(data, f"unsupported .icm format version {version}")
    assert "version 1" in str(err)


def test_unsupported_version_even_with_valid_crc(tiny_file):
    body = tiny_file[:2] + b"\x07" + tiny_file[3:-4]
    _raises(_with_crc(body), "unsupported .icm format version 7")


def test_truncated_at_every_position(tiny_file):
    n = len(tiny_file)
    assert n > 20
    for cut in range(2, n):
        err = _raises(tiny_file[:cut], "truncated")
        assert "truncated" in str(err)


@pytest.mark.parametrize("cut, message", [
    (2, "no format version"),
    (3, "shorter than any valid file"),
    (11, "shorter than any valid file"),
    (12, "checksum mismatch"),
    (-1, "checksum mismatch"),
    (-4, "checksum mismatch"),
    (-5, "checksum mismatch"),
])
def test_truncated_messages(tiny_file, cut, message):
    _raises(tiny_file[:cut], message)


def _flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[pos] ^= 1 << bit
    return bytes(b)


@pytest.mark.parametrize("pos", [3, 4, 5, 6, 8])
def test_bit_flip_in_header(tiny_file, pos):
    _raises(_flip(tiny_file, pos, 3), "checksum mismatch")


def test_bit_flip_in_payload(tiny_file):
    f = unpack(tiny_file)
    start = f.header_bytes - 4  # first payload byte
    for pos in range(start, len(tiny_file) - 4):
        for bit in (0, 7):
            _raises(_flip(tiny_file, pos, bit), "checksum mismatch")


def test_bit_flip_in_checksum(tiny_file):
    _raises(_flip(tiny_file, len(tiny_file) - 1, 5), "checksum mismatch")


def test_appended_garbage(tiny_file):
    _raises(tiny_file + b"\x00", "checksum mismatch")


# -- hostile files with a valid CRC ------------------------------------------------------------


@pytest.mark.parametrize("h1, w1", [(69999, 99), (99, 69999), (65536, 0), (2**34, 2**34), (40000, 40000)])
def test_implausible_image_size(h1, w1):
    _raises(_raw(h1=h1, w1=w1), "implausible image size")


def test_largest_plausible_size_parses():
    f = unpack(_raw(h1=65535, w1=4095))
    assert (f.header.height, f.header.width) == (65536, 4096)


@pytest.mark.parametrize("lengths, sections", [
    ((100, 2), [b"\x00" * 5]),
    ((5, 2), [b"\x00" * 4]),
    ((2**30, 1), [b"\x00"]),
])
def test_section_lengths_past_the_end(lengths, sections):
    _raises(_raw(lengths=lengths, sections=sections), "run past the end")


def test_trailing_bytes():
    _raises(_raw(count=0, lengths=(), sections=[b"\x99" * 7]), "7 unexpected bytes after the header")


@pytest.mark.parametrize("count", [MAX_SECTIONS + 1, 1000, 2**30])
def test_too_many_sections(count):
    _raises(_raw(count=count, lengths=(), sections=[b"\x00" * 40]), "implausible section count")


def test_section_count_past_header():
    # declares 3 sections but the file ends inside the length fields
    _raises(_raw(count=3, lengths=(1, 9), sections=[]), "header ends inside the length of section 1")


def test_overlong_varint_zero_continuation():
    # 0x81 0x00 encodes 1 with a superfluous zero byte
    fields = b"\x82\x00" + _varint(1) + _varint(63) + _varint(63) + _varint(0)
    _raises(_raw(fields=fields, sections=[]), "over-long encoding of the model id")


def test_overlong_varint_too_many_bytes():
    fields = _varint(2) + _varint(1) + b"\xff" * 6 + b"\x01" + _varint(63) + _varint(0)
    _raises(_raw(fields=fields, sections=[]), "the image height field is too long")


def test_varint_running_into_the_checksum():
    # the width varint never terminates before the CRC
    fields = _varint(2) + _varint(1) + _varint(63) + b"\x80\x80"
    _raises(_raw(fields=fields, sections=[], lengths=()), "header ends inside the image width")


def test_varint_encodings_are_canonical():
    for v in (0, 1, 127, 128, 300, 16383, 16384, 2**35 - 1):
        enc = _varint(v)
        assert bitstream._get_varint(enc, 0, len(enc), "x") == (v, len(enc))
    assert _varint(127) == b"\x7f" and _varint(128) == b"\x80\x01"


# -- semantic checks in codec.decode ------------------------------------------------------------


def _decode_raises(data: bytes, substring: str, tiny_model=None):
    with pytest.raises(BitstreamError) as e:
        codec.decode(data, model=tiny_model)
    assert substring in str(e.value), str(e.value)


@pytest.mark.parametrize("model_id", [0, 99, 127, 5000])
def test_unknown_model_id(model_id):
    _decode_raises(pack(Header(model_id, 1, 64, 64), [b"", b""]), f"unknown model id {model_id}")


@pytest.mark.parametrize("name, quality", [(TINY, 2), (TINY, 0), ("hyperprior", 9)])
def test_quality_not_in_model(name, quality):
    model_id = icm.models.model_info(name).model_id
    _decode_raises(pack(Header(model_id, quality, 64, 64), [b"", b""]), f"has no quality {quality}")


@pytest.mark.parametrize("n", [0, 1, 3, MAX_SECTIONS])
def test_wrong_number_of_sections(tiny_model, n):
    data = pack(Header(2, 1, 64, 64), [b""] * n)
    _decode_raises(data, f"files have 2 sections, this one has {n}", tiny_model)


def test_section_of_partial_words(tiny_model):
    data = pack(Header(2, 1, 64, 64), [b"\x00" * 4, b"\x00" * 5])
    _decode_raises(data, "corrupted .icm payload", tiny_model)


@pytest.mark.parametrize("y, z", [
    (b"\x12\x34\x56\x78" * 3, b"\xff\xff\xff\xff" * 2),
    (b"\xff" * 8, b"\x00" * 4),
], ids=["pattern", "ones-zeros"])
def test_garbage_payload_with_valid_crc(tiny_model, y, z):
    # A hostile file: valid header and CRC, sections that no encoder wrote.
    data = pack(Header(2, 1, 64, 64), [y, z])
    _decode_raises(data, "corrupted .icm payload", tiny_model)


def test_valid_file_decodes_through_codec(tiny_file, tiny_model):
    out = codec.decode(tiny_file, model=tiny_model)
    assert isinstance(out["file"], IcmFile)
    assert out["x_hat"].shape == (1, 3, 70, 91)
    # an already-parsed file is accepted too
    again = codec.decode(out["file"], model=tiny_model, pixels=False)
    assert torch.equal(again["y_hat"], out["y_hat"]) and "x_hat" not in again


def test_codec_read_errors(tmp_path):
    with pytest.raises(icm.IcmError, match="no such file"):
        codec.read(tmp_path / "missing.icm")
    with pytest.raises(icm.IcmError, match="is a directory"):
        codec.read(tmp_path)
    p = tmp_path / "f.icm"
    p.write_bytes(PNG_BYTES)
    with pytest.raises(BitstreamError, match="not an .icm file"):
        codec.read(p)
