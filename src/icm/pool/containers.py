"""Small, strict readers of the archive formats the photo pool comes in.

* :func:`deb_members` — a Debian ``.deb`` (an ``ar`` archive) and the files of its
  ``data.tar.xz`` / ``.gz`` / ``.bz2`` / plain ``.tar`` (no ``dpkg`` needed);
* :func:`rcc_files` — a Qt binary resource archive (``.rcc``, format versions 1–3,
  zlib-compressed entries);
* :func:`read_pzl` — a Jigzo puzzle (``.pzl``): a text header, the texture map and
  the named images it carries (thumbnail, mask, the 1024² texture atlas).

Every reader takes untrusted bytes: any inconsistency (a length past the end, an
offset out of range, a loop in a directory tree, an entry that inflates beyond
:data:`MAX_ENTRY`) raises :class:`ContainerError` naming the problem, before any
large allocation.  Nothing else escapes them (the fuzz targets check that).
"""

from __future__ import annotations

import io
import lzma
import struct
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import IcmError

MAX_ENTRY = 64 << 20
"""Largest entry (bytes, once inflated) any reader hands out: far above any photo of the pool."""


class ContainerError(IcmError):
    """An archive of the photo pool is truncated, corrupted or not what it claims."""


# -- Debian packages -----------------------------------------------------------------------------


def ar_members(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """The ``(name, bytes)`` members of a Unix ``ar`` archive (the container of a ``.deb``)."""
    if not blob.startswith(b"!<arch>\n"):
        raise ContainerError("not an ar archive (a .deb starts with '!<arch>')")
    pos = 8
    while pos < len(blob):
        if pos + 60 > len(blob):
            raise ContainerError(f"ar member header at byte {pos} is truncated")
        head = blob[pos:pos + 60]
        if head[58:60] != b"`\n":
            raise ContainerError(f"ar member header at byte {pos} is corrupted")
        name = head[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(head[48:58].decode("ascii").strip())
        except ValueError:
            raise ContainerError(f"ar member {name!r}: size field is not a number") from None
        start = pos + 60
        if size < 0 or start + size > len(blob):
            raise ContainerError(f"ar member {name!r} runs past the end of the archive")
        yield name, blob[start:start + size]
        pos = start + size + (size & 1)  # members are 2-byte aligned


def deb_members(blob: bytes, wanted=None) -> Iterator[tuple[str, bytes]]:
    """The regular files of a ``.deb``'s data archive as ``(path, bytes)``, paths without
    the leading ``./`` (``usr/share/...``); ``wanted(path) -> bool`` picks which to read."""
    data = None
    for name, body in ar_members(blob):
        if name.startswith("data.tar"):
            data = (name, body)
            break
    if data is None:
        raise ContainerError("the .deb holds no data.tar member")
    name, body = data
    yield from tar_members(body, name, wanted)


def tar_members(body: bytes, name: str, wanted=None) -> Iterator[tuple[str, bytes]]:
    """The regular files of a tar archive (plain, gzip, bzip2 or xz) as ``(path, bytes)``,
    paths without a leading ``./`` or ``/``; ``wanted(path) -> bool`` picks which to read.
    ``name`` names the archive in errors."""
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                path = member.name[2:] if member.name.startswith("./") else member.name.lstrip("/")
                if ".." in path.split("/"):
                    raise ContainerError(f"{name}: member {member.name!r} leaves the archive")
                if wanted is not None and not wanted(path):
                    continue
                if member.size > MAX_ENTRY:
                    raise ContainerError(f"{name}: member {path!r} is {member.size} bytes (limit {MAX_ENTRY})")
                f = tar.extractfile(member)
                yield path, f.read() if f is not None else b""
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
        raise ContainerError(f"{name} is corrupted: {e}") from None


# -- Qt resource archives (.rcc) -------------------------------------------------------------------

_RCC_COMPRESSED = 0x01
_RCC_DIRECTORY = 0x02
_RCC_COMPRESSED_ZSTD = 0x04


def rcc_files(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """The files of a Qt ``.rcc`` archive as ``(path, bytes)``, depth first in the
    archive's order; zlib-compressed entries are inflated (zstd ones are refused).

    Layout (big-endian): ``qres``, version, then the offsets of the tree, the data and
    the names.  A tree node is 14 bytes (version 1) or 22 (version ≥ 2, with a
    modification time): name offset, flags, then either a child count and the index of
    the first child (directories) or a locale and a data offset (files).  A name is a
    16-bit length, a 32-bit hash and UTF-16 characters; a file's data is a 32-bit length
    and the bytes (compressed: a 32-bit inflated length, then a zlib stream).
    """
    if len(blob) < 20 or blob[:4] != b"qres":
        raise ContainerError("not a Qt resource archive (an .rcc starts with 'qres')")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    if version not in (1, 2, 3):
        raise ContainerError(f".rcc format version {version} is not known (1 to 3 are)")
    node_size = 14 if version == 1 else 22
    for what, off in (("tree", tree), ("data", data), ("names", names)):
        if off >= len(blob):
            raise ContainerError(f".rcc {what} offset {off} is past the end ({len(blob)} bytes)")
    n_nodes = (len(blob) - tree) // node_size

    def u32(at: int) -> int:
        if at < 0 or at + 4 > len(blob):
            raise ContainerError(f".rcc field at byte {at} is past the end")
        return struct.unpack_from(">I", blob, at)[0]

    def name_at(off: int) -> str:
        at = names + off
        if at + 6 > len(blob):
            raise ContainerError(f".rcc name at offset {off} is past the end")
        (length,) = struct.unpack_from(">H", blob, at)
        end = at + 6 + 2 * length
        if end > len(blob):
            raise ContainerError(f".rcc name at offset {off} runs past the end")
        name = blob[at + 6:end].decode("utf-16-be", "replace")
        if not name or "/" in name or name in (".", ".."):
            raise ContainerError(f".rcc entry name {name!r} is not a plain name")
        return name

    def node(i: int) -> tuple[int, int, int]:
        if not 0 <= i < n_nodes:
            raise ContainerError(f".rcc tree node {i} is out of range ({n_nodes} nodes fit)")
        at = tree + i * node_size
        name_off, flags = struct.unpack_from(">IH", blob, at)
        return at, name_off, flags

    seen: set[int] = set()
    stack: list[tuple[int, str]] = [(0, "")]
    while stack:
        i, prefix = stack.pop()
        if i in seen:
            raise ContainerError(f".rcc tree node {i} is reached twice (a loop)")
        seen.add(i)
        at, name_off, flags = node(i)
        path = prefix + name_at(name_off) if i else ""
        if flags & _RCC_DIRECTORY:
            count, first = struct.unpack_from(">II", blob, at + 6)
            if count > n_nodes or first + count > n_nodes:
                raise ContainerError(f".rcc directory {path or '/'!r} lists children past the tree")
            # pushed in reverse so the walk yields them in order
            stack.extend((first + k, path + "/") for k in reversed(range(count)))
            continue
        if i == 0:
            raise ContainerError(".rcc root node is not a directory")
        start = data + u32(at + 10)
        size = u32(start)
        body_at = start + 4
        if size > len(blob) - body_at:
            raise ContainerError(f".rcc entry {path!r} runs past the end")
        body = blob[body_at:body_at + size]
        if flags & _RCC_COMPRESSED_ZSTD:
            raise ContainerError(f".rcc entry {path!r} is zstd-compressed, which this reader does not inflate")
        if flags & _RCC_COMPRESSED:
            body = _inflate(body, path)
        yield path, body


def _inflate(body: bytes, path: str) -> bytes:
    """A ``qCompress`` block: the inflated length (32-bit big-endian), then a zlib stream."""
    if len(body) < 4:
        raise ContainerError(f".rcc entry {path!r}: compressed block is truncated")
    (expected,) = struct.unpack_from(">I", body, 0)
    if expected > MAX_ENTRY:
        raise ContainerError(f".rcc entry {path!r} declares {expected} bytes (limit {MAX_ENTRY})")
    d = zlib.decompressobj()
    try:
        out = d.decompress(body[4:], expected + 1)
    except zlib.error as e:
        raise ContainerError(f".rcc entry {path!r} is corrupted: {e}") from None
    if len(out) != expected or not d.eof:
        raise ContainerError(f".rcc entry {path!r} inflates to {len(out)} bytes, not the {expected} declared")
    return out


# -- Jigzo puzzles (.pzl) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Puzzle:
    """A Jigzo puzzle: its name, the picture's size inside the texture atlas (the
    ``image X Y W H`` line of the map), and its named images in file order."""

    name: str
    url: str
    image_box: tuple[int, int, int, int]
    images: tuple[tuple[str, bytes], ...]

    def atlas(self) -> bytes:
        """The texture atlas: the last JPEG image of the puzzle."""
        jpegs = [body for name, body in self.images if name.lower().endswith((".jpg", ".jpeg"))]
        if not jpegs:
            raise ContainerError(f".pzl {self.name!r} carries no JPEG image")
        return jpegs[-1]


def read_pzl(blob: bytes) -> Puzzle:
    """Parse a ``.pzl``: lines ``PzlF``, version, name, URL, map name, map length, then the
    map text (``crop…`` lines and one ``image X Y W H …`` line), then any number of
    ``name``/``length`` line pairs each followed by that many bytes."""
    pos = 0

    def line(what: str) -> str:
        nonlocal pos
        end = blob.find(b"\n", pos, pos + 4096)
        if end < 0:
            raise ContainerError(f".pzl {what} line is missing or too long (at byte {pos})")
        text = blob[pos:end].decode("utf-8", "replace").strip()
        pos = end + 1
        return text

    def length(what: str) -> int:
        text = line(what)
        if not (text.isascii() and text.isdigit()) or len(text) > 12:  # not "²": int() refuses it
            raise ContainerError(f".pzl {what} is not a length: {text[:40]!r}")
        n = int(text)
        if n > len(blob) - pos:
            raise ContainerError(f".pzl {what} ({n} bytes) runs past the end")
        return n

    if not blob.startswith(b"PzlF\n"):
        raise ContainerError("not a Jigzo puzzle (a .pzl starts with 'PzlF')")
    line("magic")
    version = line("version")
    if version != "0.1":
        raise ContainerError(f".pzl version {version[:20]!r} is not known (0.1 is)")
    name, url = line("name"), line("URL")
    line("map name")
    n = length("map length")
    map_text = blob[pos:pos + n].decode("utf-8", "replace")
    pos += n
    box = None
    for row in map_text.splitlines():
        parts = row.split()
        if parts[:1] == ["image"] and len(parts) >= 5:
            try:
                box = tuple(int(v) for v in parts[1:5])
            except ValueError:
                raise ContainerError(f".pzl image line is not numbers: {row[:60]!r}") from None
    if box is None:
        raise ContainerError(".pzl map has no 'image X Y W H' line")
    if min(box) < 0 or box[2] == 0 or box[3] == 0 or max(box) > 1 << 15:
        raise ContainerError(f".pzl image box {box} is not a picture")
    images = []
    while pos < len(blob):
        entry = line("image name")
        if not entry:
            break
        n = length(f"length of {entry!r}")
        images.append((entry, blob[pos:pos + n]))
        pos += n
    return Puzzle(name=name, url=url, image_box=box, images=tuple(images))


def pzl_photo(blob: bytes):
    """The photo of a ``.pzl`` as a PIL RGB image: the ``image`` box of its texture atlas."""
    from PIL import Image

    puzzle = read_pzl(blob)
    try:
        atlas = Image.open(io.BytesIO(puzzle.atlas()))
        atlas.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ContainerError(f".pzl {puzzle.name!r}: its atlas is not a readable JPEG ({e})") from None
    x, y, w, h = puzzle.image_box
    if x + w > atlas.width or y + h > atlas.height:
        raise ContainerError(f".pzl {puzzle.name!r}: image box {puzzle.image_box} leaves the "
                             f"{atlas.width}x{atlas.height} atlas")
    return atlas.convert("RGB").crop((x, y, x + w, y + h))
