"""A structure-aware mutator of ``.icm`` files (libFuzzer's custom mutator, through Atheris).

Plain byte mutations of an ``.icm`` file almost never get past its CRC-32, so a
byte-level fuzzer only ever exercises the checksum test.  :func:`mutate_icm` instead
parses the container (ignoring the stored checksum), changes one thing, and writes it
back with a valid checksum::

    data ─ parse ─> header fields + sections ─ mutate one ─> re-pack ─ CRC-32 ─> data'

What it changes, each with a fixed probability:

* the bytes of one section (libFuzzer's own byte mutations, on that section alone;
  most of them kept to whole 32-bit words, as the range coder's streams are);
* the section list (drop, duplicate, swap, truncate, join, add an empty one);
* one header field (model id among the registry's ids, retired ones included, and
  foreign ones; quality; height and width, mostly small, sometimes the format's limits
  or past them; the version byte);
* the framing itself (a section count or length that lies, an over-long varint).

A fifth of the time, and whenever the input is not a container at all, it falls back
to plain byte mutation of the whole file (half of those re-stamped with a valid CRC),
so the parser's own refusals stay under test.  ``byte_mutate(data, max_size)`` is
``atheris.Mutate`` under the fuzzer and :func:`simple_byte_mutate` elsewhere (the HTTP
fuzz, tests).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

from .. import bitstream

ByteMutator = Callable[[bytes, int], bytes]

_SMALL_SIDES = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 28, 31, 32, 33, 63, 64, 65, 127, 128, 129)
_LARGE_SIDES = (255, 256, 257, 1023, 1024, 2048, 4095, 4096, 8192, 65535, 65536, 65537, 1 << 20, (1 << 35) - 1)


def varint(value: int) -> bytes:
    out = bytearray()
    bitstream._put_varint(out, value)
    return bytes(out)


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC-32, as the container stores it."""
    return body + zlib.crc32(body).to_bytes(4, "little")


def split(data: bytes) -> tuple[list[int], list[bytes]] | None:
    """``([version, model id, quality, height, width], sections)`` of a container, its
    stored checksum ignored; ``None`` where the bytes are no valid container."""
    if len(data) < 4 or data[:2] != bitstream.MAGIC:
        return None
    try:
        f = bitstream.unpack(with_crc(data[:-4]))
    except bitstream.BitstreamError:
        return None
    h = f.header
    return [data[2], h.model_id, h.quality, h.height, h.width], list(f.sections)


def join(fields: list[int], sections: list[bytes], count: int | None = None,
         lengths: list[int] | None = None, overlong: int = -1) -> bytes:
    """Container bytes with a valid checksum from raw field values (no limit enforced:
    a side of 0 or past the format's limit is written as given, as a hostile writer
    would).  ``count`` and ``lengths`` override the true section count and lengths;
    ``overlong`` names a varint (0: model id … 4: section count) to write over-long."""
    version, model_id, quality, height, width = fields
    out = bytearray(bitstream.MAGIC)
    out.append(version & 0xFF)
    values = [model_id, quality, max(height - 1, 0), max(width - 1, 0), len(sections) if count is None else count]
    for i, v in enumerate(values):
        enc = varint(v)
        if i == overlong:
            enc = bytes(b | 0x80 for b in enc) + b"\x00"
        out += enc
    sizes = [len(s) for s in sections[:-1]] if lengths is None else lengths
    for n in sizes:
        out += varint(n)
    for s in sections:
        out += s
    return with_crc(bytes(out))


def simple_byte_mutate(data: bytes, max_size: int, rng: random.Random | None = None) -> bytes:
    """A few of libFuzzer's byte mutations, in Python (where Atheris' ``Mutate`` is not at hand)."""
    rng = rng or random.Random()
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # set a byte to an interesting value
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:  # insert random bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and b:  # erase a run
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 8)]
        elif op == 4 and b:  # copy a run elsewhere
            i, j = rng.randrange(len(b)), rng.randrange(len(b))
            b[j:j] = b[i : i + rng.randint(1, 16)]
        elif op == 5 and b:  # truncate
            del b[rng.randrange(len(b)) :]
    return bytes(b[:max_size])


def _side(rng: random.Random) -> int:
    if rng.random() < 0.9:
        return rng.choice(_SMALL_SIDES) if rng.random() < 0.6 else rng.randint(1, 160)
    return rng.choice(_LARGE_SIDES) + rng.choice((0, 0, -1, 1))


def _model_id(rng: random.Random) -> int:
    from ..models._spec import _BY_ID, _RETIRED

    known = sorted({*_BY_ID, *_RETIRED})
    return rng.choice(known) if rng.random() < 0.8 else rng.choice((0, 127, 128, 255, 16383, 16384, rng.randrange(200)))


def mutate_icm(data: bytes, max_size: int, seed: int, byte_mutate: ByteMutator | None = None) -> bytes:
    """One structure-aware mutation of ``data`` (see the module's docstring)."""
    rng = random.Random(seed)
    byte_mutate = byte_mutate or (lambda d, n: simple_byte_mutate(d, n, rng))
    parts = split(data)
    if parts is None or rng.random() < 0.2:
        out = byte_mutate(data, max_size)
        if rng.random() < 0.5 and len(out) > 4 and out[:2] == bitstream.MAGIC:
            out = with_crc(out[:-4])  # a damaged header that still passes the checksum
        return out[:max_size]
    fields, sections = parts
    count = lengths = None
    overlong = -1
    r = rng.random()
    if r < 0.55 and sections:  # the bytes of one section
        i = rng.randrange(len(sections))
        room = max(max_size - (len(data) - len(sections[i])), 1)
        was = sections[i]
        sections[i] = byte_mutate(was, room)
        if len(was) % 4 == 0 and len(sections[i]) % 4 and rng.random() < 0.7:
            # coded streams are whole 32-bit words: keep most mutations decodable that far
            n = len(sections[i])
            sections[i] = sections[i][: n - n % 4] if rng.random() < 0.5 else sections[i] + bytes(4 - n % 4)
    elif r < 0.67:  # the section list
        op = rng.randrange(6)
        if op == 0 and sections:
            sections.pop(rng.randrange(len(sections)))
        elif op == 1 and sections and len(sections) < bitstream.MAX_SECTIONS:
            i = rng.randrange(len(sections))
            sections.insert(i, sections[i])
        elif op == 2 and len(sections) > 1:
            i, j = rng.sample(range(len(sections)), 2)
            sections[i], sections[j] = sections[j], sections[i]
        elif op == 3 and sections:
            i = rng.randrange(len(sections))
            sections[i] = sections[i][: rng.randrange(len(sections[i]) + 1)]
        elif op == 4 and len(sections) > 1:
            i = rng.randrange(len(sections) - 1)
            sections[i : i + 2] = [sections[i] + sections[i + 1]]
        elif len(sections) < bitstream.MAX_SECTIONS:
            sections.insert(rng.randrange(len(sections) + 1), b"")
    elif r < 0.92:  # one header field
        k = rng.choices((0, 1, 2, 3, 4), weights=(1, 4, 5, 6, 6))[0]
        if k == 0:
            fields[0] = rng.choice((0, 2, 0xFF))
        elif k == 1:
            fields[1] = _model_id(rng)
        elif k == 2:
            fields[2] = rng.randrange(16) if rng.random() < 0.9 else rng.choice((127, 128, 1 << 20))
        else:
            fields[k] = _side(rng)
            if rng.random() < 0.3:  # both sides, keeping the aspect of a photo or not
                fields[7 - k] = _side(rng)
    else:  # the framing
        op = rng.randrange(3)
        if op == 0:
            count = max(len(sections) + rng.choice((-2, -1, 1, 2, bitstream.MAX_SECTIONS)), 0)
        elif op == 1 and len(sections) > 1:
            lengths = [len(s) for s in sections[:-1]]
            i = rng.randrange(len(lengths))
            lengths[i] = max(lengths[i] + rng.choice((-1, 1, 4096, 1 << 30)), 0)
        else:
            overlong = rng.randrange(5)
    return join(fields, sections, count, lengths, overlong)[:max_size]
