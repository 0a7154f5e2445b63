"""The ``.icm`` container.

Layout (all integers are unsigned LEB128 varints unless noted)::

    offset  field
    0       magic  b"IC"                      2 bytes
    2       format version                    1 byte  (currently 1)
    3       model id                          varint  (registry id, 1..127)
    .       quality                           varint
    .       image height − 1                  varint
    .       image width − 1                   varint
    .       number of sections                varint
    .       length of each section but the    varint × (n − 1)
            last (which runs to the checksum)
    .       sections, back to back
    end−4   CRC-32 of everything before it    4 bytes, little endian

Padding is not stored: every model pads to a known multiple of its stride, so
the decoder derives it (and the latent shapes) from the image size.  For a
224×224 image with two sections of a few hundred bytes the header is
16 bytes including the checksum.

Parsing is strict and cheap: magic, version and checksum are checked first,
then every field is bounded against the bytes actually present and against
sane limits, before anything is allocated.  Every failure raises
:class:`icm.errors.BitstreamError` with a message that names the problem.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .errors import BitstreamError

MAGIC = b"IC"
VERSION = 1
MAX_SIDE = 1 << 16
"""Largest image side a file may declare."""
MAX_PIXELS = 1 << 28
"""Largest image area (268 Mpx) a file may declare."""
MAX_SECTIONS = 16
MAX_FILE_BYTES = 1 << 30
"""Largest file the reader accepts."""
_MIN_SIZE = len(MAGIC) + 1 + 5 + 4  # magic, version, 5 one-byte varints, CRC


@dataclass(frozen=True)
class Header:
    model_id: int
    quality: int
    height: int
    width: int


@dataclass(frozen=True)
class IcmFile:
    """A parsed ``.icm`` file."""

    header: Header
    sections: list[bytes]
    size: int  # whole-file bytes
    written_as: Header | None = None
    """The header as stored, where :func:`icm.codec.read` renumbered a retired model id."""

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file, header and checksum included."""
        return 8.0 * self.size / (self.header.height * self.header.width)

    @property
    def header_bytes(self) -> int:
        return self.size - sum(len(s) for s in self.sections)


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("varints are unsigned")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _get_varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    value = shift = 0
    for i in range(5):  # 35 bits is plenty for every field
        if pos >= end:
            raise BitstreamError(f"truncated .icm file: header ends inside the {what}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if i and byte == 0:
                raise BitstreamError(f"malformed .icm header: over-long encoding of the {what}")
            return value, pos
        shift += 7
    raise BitstreamError(f"malformed .icm header: the {what} field is too long")


def pack(header: Header, sections: list[bytes]) -> bytes:
    """Serialise a header and its coded sections into ``.icm`` bytes."""
    if not (1 <= header.height <= MAX_SIDE and 1 <= header.width <= MAX_SIDE):
        raise ValueError(f"image size {header.height}x{header.width} is outside 1..{MAX_SIDE}")
    if len(sections) > MAX_SECTIONS:
        raise ValueError(f"at most {MAX_SECTIONS} sections")
    out = bytearray(MAGIC)
    out.append(VERSION)
    for v in (header.model_id, header.quality, header.height - 1, header.width - 1, len(sections)):
        _put_varint(out, v)
    for s in sections[:-1]:
        _put_varint(out, len(s))
    for s in sections:
        out += s
    out += zlib.crc32(out).to_bytes(4, "little")
    return bytes(out)


def unpack(data: bytes) -> IcmFile:
    """Parse ``.icm`` bytes.

    Raises:
        BitstreamError: not an ``.icm`` file, unsupported version, truncated,
            corrupted (checksum), or declaring absurd sizes or lengths.
    """
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise BitstreamError("not an .icm file (bad magic bytes)")
    if len(data) < len(MAGIC) + 1:
        raise BitstreamError("truncated .icm file: no format version")
    version = data[len(MAGIC)]
    if version != VERSION:
        raise BitstreamError(f"unsupported .icm format version {version} (this icm reads version {VERSION})")
    if len(data) < _MIN_SIZE:
        raise BitstreamError(f"truncated .icm file: {len(data)} bytes is shorter than any valid file")
    end = len(data) - 4
    stored = int.from_bytes(data[end:], "little")
    if zlib.crc32(data[:end]) != stored:
        raise BitstreamError("corrupted or truncated .icm file: checksum mismatch")
    pos = len(MAGIC) + 1
    model_id, pos = _get_varint(data, pos, end, "model id")
    quality, pos = _get_varint(data, pos, end, "quality")
    h1, pos = _get_varint(data, pos, end, "image height")
    w1, pos = _get_varint(data, pos, end, "image width")
    height, width = h1 + 1, w1 + 1
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise BitstreamError(f"implausible image size {height}x{width} in .icm header")
    count, pos = _get_varint(data, pos, end, "section count")
    if count > MAX_SECTIONS:
        raise BitstreamError(f"implausible section count {count} in .icm header")
    lengths = []
    for i in range(count - 1):
        n, pos = _get_varint(data, pos, end, f"length of section {i}")
        lengths.append(n)
    remaining = end - pos
    if sum(lengths) > remaining:
        raise BitstreamError(f"section lengths ({sum(lengths)} bytes) run past the end of the file ({remaining} bytes left)")
    if count:
        lengths.append(remaining - sum(lengths))
    elif remaining:
        raise BitstreamError(f"{remaining} unexpected bytes after the header of a file with no sections")
    sections = []
    for n in lengths:
        sections.append(data[pos : pos + n])
        pos += n
    return IcmFile(Header(model_id, quality, height, width), sections, len(data))


def read_header(data: bytes) -> Header:
    return unpack(data).header
