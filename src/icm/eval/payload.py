"""Payload bytes: the coded data of an image file without its container.

Whole-file bytes are the rate every figure uses; payload bytes say how much
of a file is headers and boxes, which matters for small images and low rates.
What counts as payload, per format (each parser is strict and raises
:class:`ValueError` naming the problem on malformed input):

* JPEG — the entropy-coded segments: for every scan, the bytes from the end
  of its SOS header up to the next marker that is not a restart marker.
  Stuffed zero bytes (``FF 00``) count, restart markers (``FF D0``–``FF D7``)
  do not; tables (DQT, DHT), frame header, APPn segments are container.
* WebP — the payload of the ``VP8 `` or ``VP8L`` chunk(s) of the RIFF file
  (without the 8-byte chunk header and the pad byte).
* HEIF / AVIF (ISO-BMFF) — the payload of the top-level ``mdat`` box(es).
  For HEIF that is the length-prefixed HEVC NAL units of the image (VPS, SPS,
  PPS live in the ``hvcC`` box of ``meta``); for AVIF the AV1 OBUs.
* VVC (H.266 Annex-B byte stream) — the sizes of the VCL NAL units
  (``nal_unit_type`` 0–11: the coded slices), each counted with its 2-byte
  NAL header and without its start code.  Parameter sets, picture headers,
  APS (ALF / LMCS / scaling lists), SEI and access-unit delimiters are
  container.
* JPEG XL — the codestream without its 2-byte signature ``FF 0A``.  A bare
  codestream has no separable container, so the few bytes of its size header
  and image metadata count as payload; in the ISO-BMFF form the codestream is
  the payload of the ``jxlc`` box or of the ``jxlp`` boxes (without their
  4-byte part index).
* ``.icm`` — the coded sections of :func:`icm.bitstream.unpack`.
"""

from __future__ import annotations

import struct

__all__ = [
    "annexb_nal_units", "icm_payload", "isobmff_boxes", "isobmff_payload", "jpeg_payload",
    "jxl_payload", "payload_bytes", "sniff", "vvc_nal_type", "vvc_payload", "webp_payload",
]

_RST = range(0xD0, 0xD8)
_NO_LENGTH = {0x01, 0xD8, *_RST}  # TEM, SOI, RSTn: markers without a length field
VVC_VCL_TYPES = range(0, 12)
"""H.266 Table 5: ``nal_unit_type`` 0–11 are VCL (TRAIL … GDR and reserved VCL/IRAP types)."""


def jpeg_payload(data: bytes) -> int:
    """Bytes of entropy-coded scan data in a JPEG file, summed over scans (restart markers excluded)."""
    data = bytes(data)
    n = len(data)
    if n < 4 or data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file (no SOI marker)")
    pos, total, scans = 2, 0, 0
    while True:
        if pos >= n:
            raise ValueError("truncated JPEG: no EOI marker")
        if data[pos] != 0xFF:
            raise ValueError(f"malformed JPEG: expected a marker at offset {pos}, found 0x{data[pos]:02x}")
        while pos < n and data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= n:
            raise ValueError("truncated JPEG: file ends inside a marker")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            break
        if marker in _NO_LENGTH:
            continue
        if pos + 2 > n:
            raise ValueError(f"truncated JPEG: marker 0xff{marker:02x} has no length field")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > n:
            raise ValueError(f"malformed JPEG: segment 0xff{marker:02x} at offset {pos - 2} declares "
                             f"{length} bytes, {n - pos} left")
        pos += length
        if marker != 0xDA:  # SOS: entropy-coded data follows its header
            continue
        scans += 1
        while True:
            ff = data.find(b"\xff", pos)
            if ff < 0 or ff + 1 >= n:
                raise ValueError("truncated JPEG: scan data runs to the end of the file")
            nxt = data[ff + 1]
            if nxt == 0x00:  # stuffed byte: part of the coded data
                total += ff + 2 - pos
                pos = ff + 2
            elif nxt in _RST:
                total += ff - pos
                pos = ff + 2
            else:
                total += ff - pos
                pos = ff
                break
    if scans == 0:
        raise ValueError("malformed JPEG: no SOS (start of scan) marker")
    return total


def _riff_chunks(data: bytes):
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP file (no RIFF/WEBP header)")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = 8 + riff_size
    if riff_size < 4 or end > len(data):
        raise ValueError(f"malformed WebP: RIFF size {riff_size} does not fit the {len(data)}-byte file")
    pos = 12
    while pos < end:
        if pos + 8 > end:
            raise ValueError(f"truncated WebP: chunk header at offset {pos} runs past the RIFF end")
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        if pos + 8 + size > end:
            raise ValueError(f"truncated WebP: chunk {fourcc!r} at offset {pos} declares {size} bytes, "
                             f"{end - pos - 8} left")
        yield fourcc, size
        pos += 8 + size + (size & 1)


def webp_payload(data: bytes) -> int:
    """Payload bytes of the ``VP8 `` / ``VP8L`` chunks of a WebP file."""
    sizes = [size for fourcc, size in _riff_chunks(bytes(data)) if fourcc in (b"VP8 ", b"VP8L")]
    if not sizes:
        raise ValueError("malformed WebP: no VP8 or VP8L chunk")
    return sum(sizes)


def isobmff_boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield ``(type, payload_offset, payload_size)`` of the boxes in ``data[start:end]`` (one level)."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if pos + 8 > end:
            raise ValueError(f"truncated ISO-BMFF: box header at offset {pos} runs past the end")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise ValueError(f"truncated ISO-BMFF: box {kind!r} at offset {pos} has no 64-bit size")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"malformed ISO-BMFF: box {kind!r} at offset {pos} declares {size} bytes, "
                             f"{end - pos} left")
        yield kind, pos + header, size - header
        pos += size


def isobmff_payload(data: bytes) -> int:
    """Payload bytes of the top-level ``mdat`` box(es) of a HEIF / AVIF file."""
    data = bytes(data)
    if len(data) < 8 or data[4:8] != b"ftyp":
        raise ValueError("not an ISO-BMFF (HEIF/AVIF) file: no leading ftyp box")
    sizes = [size for kind, _, size in isobmff_boxes(data) if kind == b"mdat"]
    if not sizes:
        raise ValueError("malformed HEIF/AVIF: no mdat box")
    return sum(sizes)


def annexb_nal_units(data: bytes) -> list[bytes]:
    """Split an Annex-B byte stream into NAL units, without start codes.

    A NAL unit runs from after its ``00 00 01`` start code to the next start
    code; zero bytes before that (the ``zero_byte`` of a 4-byte start code,
    ``trailing_zero_8bits``) belong to the byte stream, not to the NAL unit,
    which never ends in a zero byte.
    """
    data = bytes(data)
    first = data.find(b"\x00\x00\x01")
    if first < 0 or data[:first].strip(b"\x00"):
        raise ValueError("not an Annex-B byte stream: it does not start with a 00 00 01 start code")
    nals, pos = [], first + 3
    while True:
        nxt = data.find(b"\x00\x00\x01", pos)
        nal = data[pos : len(data) if nxt < 0 else nxt].rstrip(b"\x00")
        if len(nal) < 2:
            raise ValueError(f"malformed Annex-B stream: empty or 1-byte NAL unit at offset {pos}")
        nals.append(nal)
        if nxt < 0:
            return nals
        pos = nxt + 3


def vvc_nal_type(nal: bytes) -> int:
    """``nal_unit_type`` from a 2-byte H.266 NAL unit header."""
    if nal[0] & 0x80:
        raise ValueError("malformed VVC NAL unit: forbidden_zero_bit is set")
    return nal[1] >> 3


def vvc_payload(data: bytes) -> int:
    """Bytes of the VCL NAL units (headers included, start codes not) of an H.266 byte stream."""
    total = sum(len(nal) for nal in annexb_nal_units(data) if vvc_nal_type(nal) in VVC_VCL_TYPES)
    if total == 0:
        raise ValueError("malformed VVC stream: no VCL (coded slice) NAL unit")
    return total


_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"


def jxl_payload(data: bytes) -> int:
    """Bytes of a JPEG XL codestream without its signature (bare or in the ISO-BMFF container)."""
    data = bytes(data)
    if data[:2] == b"\xff\x0a":
        if len(data) <= 2:
            raise ValueError("truncated JPEG XL codestream")
        return len(data) - 2
    if not data.startswith(_JXL_CONTAINER):
        raise ValueError("not a JPEG XL file (no FF 0A signature or JXL container box)")
    total, parts = 0, 0
    for kind, off, size in isobmff_boxes(data):
        if kind == b"jxlc":
            total += size
            parts += 1
        elif kind == b"jxlp":
            if size < 4:
                raise ValueError("malformed JPEG XL container: jxlp box without its part index")
            total += size - 4
            parts += 1
    if parts == 0 or total <= 2:
        raise ValueError("malformed JPEG XL container: no codestream (jxlc / jxlp) box")
    return total - 2


def icm_payload(data: bytes) -> int:
    """Bytes of the coded sections of an ``.icm`` file (raises :class:`icm.errors.BitstreamError`)."""
    from ..bitstream import unpack

    return sum(len(s) for s in unpack(data).sections)


_PARSERS = {
    "jpeg": jpeg_payload, "webp": webp_payload, "isobmff": isobmff_payload,
    "vvc": vvc_payload, "jxl": jxl_payload, "icm": icm_payload,
}


def sniff(data: bytes) -> str:
    """The format of ``data`` by its first bytes: one of ``jpeg``, ``webp``, ``isobmff``, ``vvc``, ``jxl``, ``icm``."""
    head = bytes(data[:16])
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"\xff\x0a" or head.startswith(_JXL_CONTAINER):
        return "jxl"
    if head[4:8] == b"ftyp":
        return "isobmff"
    if head[:2] == b"IC":
        return "icm"
    if head.lstrip(b"\x00")[:1] == b"\x01" and head.find(b"\x00\x00\x01") >= 0:
        return "vvc"
    raise ValueError(f"unknown image format (first bytes {head[:8].hex(' ')})")


def payload_bytes(data: bytes, fmt: str | None = None) -> int:
    """Payload bytes of ``data``; ``fmt`` as :func:`sniff` names it, sniffed when ``None``."""
    fmt = sniff(data) if fmt is None else fmt
    if fmt not in _PARSERS:
        raise ValueError(f"no payload parser for {fmt!r}; known: {', '.join(_PARSERS)}")
    return _PARSERS[fmt](data)
