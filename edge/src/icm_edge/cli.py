"""The ``icm-edge`` command line: ``icm compress`` and ``icm send`` on a device without PyTorch.

Exit status: 0 on success; 2 on bad input or usage, with one ``icm-edge: error:`` line
on stderr naming what is wrong (a failing file does not stop the others); 130 when
interrupted.  Outputs follow ``icm``'s rules: never over an input, an existing output
kept unless ``-f``, written under a temporary name and renamed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import IcmError

PROG = "icm-edge"


def _error(path, e: Exception) -> None:
    msg = str(e)
    print(f"{PROG}: error: {msg if str(path) in msg else f'{path}: {msg}'}", file=sys.stderr)


def _warn(path, what: str) -> None:
    print(f"{PROG}: warning: {path}: {what}", file=sys.stderr)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {n}")
    return n


def _each(items, run) -> int:
    """``run(item)`` for every item; a failure is reported and the rest still run."""
    failed = 0
    for item in items:
        try:
            run(item)
        except IcmError as e:
            _error(item, e)
            failed += 1
    return 2 if failed else 0


def _looks_grey(rgb) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def read_image(path, sender, warn=_warn):
    """``uint8`` RGB of ``path`` as ``icm compress`` reads it, its notes said as warnings."""
    from .images import read_rgb

    notes: list[str] = []
    rgb = read_rgb(path, notes)
    native = sender.input_size
    if native is not None and rgb.shape[:2] != tuple(native):
        raise IcmError(f"{sender.model} codes {native[1]}x{native[0]} images (what it was trained on); "
                       f"{path} is {rgb.shape[1]}x{rgb.shape[0]}: resize it first")
    if sender.in_channels == 1:
        notes = [n for n in notes if n != "greyscale coded as RGB"]
        if not _looks_grey(rgb):
            notes.append(f"colour dropped: {sender.model} codes greyscale (luma)")
    for n in notes:
        warn(path, n)
    return rgb


def _cmd_compress(args) -> int:
    from .files import check_output, prepare_dir, write_atomic
    from .sender import check_quality, sender

    if args.output and len(args.images) > 1:
        raise IcmError("-o/--output takes a single input image; use --out-dir for several")
    quality = check_quality(args.model, args.quality)
    if args.out_dir:
        prepare_dir(args.out_dir)
    dests: dict[str, Path] = {}
    for path in args.images:
        dest = Path(args.output) if args.output else Path(args.out_dir or Path(path).parent) / (Path(path).stem + ".icm")
        if dest in dests.values():
            other = next(p for p, d in dests.items() if d == dest)
            raise IcmError(f"{path} and {other} would both be written to {dest}; use --out-dir or rename one")
        dests[path] = dest
    s = sender(args.model, quality, args.threads)

    def one(path):
        dest = check_output(dests[path], args.images, args.force)
        rgb = read_image(path, s)
        data = s.encode(rgb)
        write_atomic(dest, data)
        h, w = rgb.shape[:2]
        print(f"{dest}: {s.model} q{s.quality}, {w}x{h}, {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp")

    return _each(args.images, one)


def _read_token(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip().splitlines()
    except OSError as e:
        raise IcmError(f"cannot read --token-file {path}: {e.strerror or e}") from None
    if not token or not token[0].strip():
        raise IcmError(f"--token-file {path} is empty")
    return token[0].strip()


def _cmd_send(args) -> int:
    from .client import Client
    from .sender import check_quality, sender

    client = Client(args.url, token=_read_token(args.token_file), timeout=args.timeout)

    def one(path):
        p = Path(path)
        if p.suffix.lower() == ".icm":
            try:
                data = p.read_bytes()
            except FileNotFoundError:
                raise IcmError(f"no such file: {p}") from None
            except IsADirectoryError:
                raise IcmError(f"{p} is a directory, not an .icm file") from None
        else:  # an image: coded here first
            s = sender(args.model, check_quality(args.model, args.quality), args.threads)
            data = s.encode(read_image(p, s))
        _print_answer(path, client.analyze(data, task=args.task, top=args.top), args.json)

    return _each(args.files, one)


def _print_answer(path, row: dict, as_json: bool) -> None:
    """What ``icm send`` prints: one JSON line, or a line per file and its classes or detections."""
    if as_json:
        print(json.dumps({"file": str(path), **row}, allow_nan=False))
        return
    head = f"{path}: {row['model']} q{row['quality']}, {row['bytes']} bytes, {row['bpp']:.4f} bpp"
    if "detections" in row:
        n = len(row["detections"])
        head += f", {n} detection{'s' if n != 1 else ''}"
    print(head)
    for d in row.get("detections", ()):
        print(f"  {d['label']:<14} {d['score']:.3f}  [{', '.join(f'{v:.1f}' for v in d['box'])}]")
    for key, top in row.items():
        if key.startswith("top"):
            for rank, t in enumerate(top, 1):
                print(f"  {rank}. {t['label']}  {t['prob']:.4f}")
    sys.stdout.flush()


def _cmd_models(args) -> int:
    from .sender import available

    for name, qs in available().items():
        print(f"{name:<16} qualities {','.join(map(str, qs))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog=PROG, description="The sender of icm (image coding for machines) without "
                                                      "PyTorch: images in, .icm files out, any icm decodes them.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument("--threads", type=_positive, default=1, metavar="N",
                   help="onnxruntime threads (default 1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("compress", help="code images into .icm files (as icm compress)")
    s.add_argument("images", nargs="+", metavar="IMAGE")
    s.add_argument("-m", "--model", default="hyperprior", help="default hyperprior (icm-edge models lists them)")
    s.add_argument("-q", "--quality", type=int, default=None,
                   help="quality level: higher means more bits and more fidelity (default: the highest)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("-o", "--output", metavar="FILE", help="output file (one input only)")
    g.add_argument("--out-dir", metavar="DIR", help="write DIR/<name>.icm for every input")
    s.add_argument("-f", "--force", action="store_true",
                   help="overwrite existing outputs (an input is never overwritten)")
    s.set_defaults(func=_cmd_compress)

    s = sub.add_parser("send", help="send .icm files (or images, compressed here first) to an icm serve and "
                                    "print its answers as icm analyze does")
    s.add_argument("url", metavar="URL", help="the server, e.g. http://127.0.0.1:8000")
    s.add_argument("files", nargs="+", metavar="FILE", help=".icm files, sent as they are, or images")
    s.add_argument("--task", default=None, choices=("classify", "detect", "segment"),
                   help="default: the model's first task")
    s.add_argument("--top", type=_positive, default=None, metavar="K")
    s.add_argument("--json", action="store_true", help="one JSON object per line, as icm analyze --json")
    s.add_argument("--token-file", metavar="FILE")
    s.add_argument("-m", "--model", default="dicm-lite0", help="model that compresses images (default dicm-lite0)")
    s.add_argument("-q", "--quality", type=int, default=None, help="quality that compresses images")
    s.add_argument("--timeout", type=float, default=60.0, metavar="S")
    s.set_defaults(func=_cmd_send)

    s = sub.add_parser("models", help="the models and qualities this icm-edge codes")
    s.set_defaults(func=_cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except IcmError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
