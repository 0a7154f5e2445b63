"""Writers of the archive formats :mod:`icm.pool.containers` reads: Qt ``.rcc``, Jigzo
``.pzl``, ``ar`` / ``.deb``.  The tests build their fixtures with them and the fuzz
targets their seed corpus (:mod:`icm.fuzz`); nothing in the pull path uses them."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib

from PIL import Image


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _qt_hash(name: str) -> int:
    h = 0
    for ch in name:
        h = (h << 4) + ord(ch)
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


class Zipped:
    """An .rcc file entry stored compressed (qCompress: u32 inflated length + zlib)."""

    def __init__(self, body: bytes, declared: int | None = None):
        self.body, self.declared = body, len(body) if declared is None else declared


def make_rcc(tree: dict, version: int = 3) -> bytes:
    """A Qt resource archive of ``tree`` ({name: bytes | Zipped | dict}): nodes breadth first,
    children of a directory contiguous, as rcc writes them."""
    node_size = 14 if version == 1 else 22
    nodes: list[tuple] = [("dir", 0, tree)]
    layout: dict[int, tuple[int, int]] = {}
    names, name_off, blobs = bytearray(), {}, bytearray()
    queue = [0]
    while queue:
        i = queue.pop(0)
        items = list(nodes[i][2].items())
        layout[i] = (len(items), len(nodes))
        for name, val in items:
            if name not in name_off:
                name_off[name] = len(names)
                names += struct.pack(">HI", len(name), _qt_hash(name)) + name.encode("utf-16-be")
            if isinstance(val, dict):
                nodes.append(("dir", name_off[name], val))
                queue.append(len(nodes) - 1)
            else:
                flags = 0
                if isinstance(val, Zipped):
                    block, flags = struct.pack(">I", val.declared) + zlib.compress(val.body), 1
                else:
                    block = val
                nodes.append(("file", name_off[name], flags, len(blobs)))
                blobs += struct.pack(">I", len(block)) + block
    head = 24 if version >= 3 else 20
    tree_at = head
    data_at = tree_at + node_size * len(nodes)
    names_at = data_at + len(blobs)
    out = bytearray(b"qres" + struct.pack(">IIII", version, tree_at, data_at, names_at))
    if version >= 3:
        out += struct.pack(">I", 0)  # flags
    for i, n in enumerate(nodes):
        if n[0] == "dir":
            count, first = layout[i]
            rec = struct.pack(">IHII", n[1], 2, count, first)
        else:
            rec = struct.pack(">IHHHI", n[1], n[2], 0, 0, n[3])
        if version >= 2:
            rec += struct.pack(">Q", 1_700_000_000_000)
        assert len(rec) == node_size
        out += rec
    out += blobs + names
    return bytes(out)


def make_pzl(atlas: bytes | None, box=(0, 0, 200, 150), name="windmill", map_text: str | None = None,
             magic=b"PzlF", version=b"0.1", with_thumb=True) -> bytes:
    """A puzzle: header lines, the texture map, then name/length/bytes entries (thumbnail,
    mask, atlas)."""
    if map_text is None:
        x, y, w, h = box
        map_text = "crop 0 0 64 64 0 0\ncrop 64 0 64 64 1 0\n" + f"image {x} {y} {w} {h} 1 1\n"
    m = map_text.encode()
    out = b"\n".join([magic, version, name.encode(), b"http://jigzo.example/", b"map.txt",
                      str(len(m)).encode()]) + b"\n" + m
    entries = [("thumb.jpg", _encoded(Image.new("RGB", (64, 48), (90, 120, 150)), "JPEG"))] if with_thumb else []
    entries.append(("mask.png", _encoded(Image.new("L", (64, 64), 255), "PNG")))
    if atlas is not None:
        entries.append(("atlas.jpg", atlas))
    for ename, body in entries:
        out += ename.encode() + b"\n" + str(len(body)).encode() + b"\n" + body
    return out


def make_ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, body in members:
        head = f"{name:<16}{'1700000000':<12}{'0':<6}{'0':<6}{'100644':<8}{len(body):<10}`\n".encode()
        assert len(head) == 60
        out += head + body + (b"\n" if len(body) % 2 else b"")
    return out


def make_tar_xz(files: dict[str, bytes], dirs=()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for path, body in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(body)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(body))
        link = tarfile.TarInfo("./usr/share/doc/pkg/link")
        link.type, link.linkname = tarfile.SYMTYPE, "copyright"
        tar.addfile(link)
    return buf.getvalue()


def make_deb(files: dict[str, bytes], data_member: bytes | None = None) -> bytes:
    """A .deb: debian-binary, control.tar.xz, data.tar.xz with ``./usr/share/...`` files."""
    control = make_tar_xz({"./control": b"Package: pkg\nVersion: 1\n"}, dirs=("./",))
    dirs = sorted({"./" + "/".join(p.split("/")[:k]) for p in files for k in range(1, p.count("/") + 1)})
    body = make_tar_xz({"./" + p: b for p, b in files.items()}, dirs=["./", *dirs]) \
        if data_member is None else data_member
    return make_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", control), ("data.tar.xz", body)])
