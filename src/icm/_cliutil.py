"""What every ``icm`` command shares: its error lines, option types, and the run of a parsed
command under the exit-status contract (:mod:`icm.cli`)."""

from __future__ import annotations

import argparse
import sys

from .errors import IcmError


def _error(path, e: Exception) -> None:
    """One ``icm: error:`` line naming the file."""
    msg = str(e)
    print(f"icm: error: {msg if str(path) in msg else f'{path}: {msg}'}", file=sys.stderr)


def _warn(path, what: str) -> None:
    print(f"icm: warning: {path}: {what}", file=sys.stderr)


def _print_answer_lines(row: dict) -> None:
    """The indented lines ``icm analyze`` (and ``icm send``) print under a file's line: its
    classes, or its detections."""
    for d in row.get("detections", ()):
        print(f"  {d['label']:<14} {d['score']:.3f}  [{', '.join(f'{v:.1f}' for v in d['box'])}]")
    for key, top in row.items():
        if key.startswith("top"):
            for rank, t in enumerate(top, 1):
                print(f"  {rank}. {t['label']}  {t['prob']:.4f}")


def _quality(model_name: str, quality: int | None) -> int:
    """The quality to code with, validated before any work (the default: the highest
    shipped); whether weights ship for it is said by :func:`icm.codec.get_model`."""
    from .models import has_weights, model_info

    info = model_info(model_name)
    if quality is None:
        shipped = [q for q in info.qualities if has_weights(model_name, q)]
        return max(shipped or info.qualities)
    if quality not in info.qualities:
        raise IcmError(f"-q {quality}: model {model_name!r} has qualities "
                       f"{', '.join(map(str, info.qualities))}")
    return quality


def _positive(text: str) -> int:
    n = _non_negative(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {n}")
    return n


def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {n}")
    return n


def top_parser() -> tuple[argparse.ArgumentParser, object]:
    """The ``icm`` parser with its global options, and its sub-parser group."""
    from . import __version__

    p = argparse.ArgumentParser(prog="icm", description="Image coding for machines.")
    p.add_argument("--version", action="version", version=f"icm {__version__}")
    p.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="CPU threads for torch (default: OMP_NUM_THREADS if set, else the cores "
                        "the 1-minute load average leaves free, at least 1)")
    return p, p.add_subparsers(dest="command", metavar="COMMAND", required=True)


_COMPUTES = ("compress", "decompress", "analyze", "demo", "eval")  # train: its recipe's trainer.threads
# torch only once the options and each file's header pass (icm.cli._codec gives it the threads)
_TORCH_LATE = ("compress", "decompress", "analyze", "info", "models")


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run its command: 0, or 2 with one ``icm: error:`` line."""
    args = parser.parse_args(argv)
    from . import extras

    try:
        extras.check_command(args.command)  # icm eval / train need their extra: say so before any work
        if args.command in _COMPUTES or args.threads:
            from . import threads

            # no oversubscription beside other busy processes; given to torch when it is imported
            threads.apply(args.threads, defer=args.command in _TORCH_LATE)
        return int(args.func(args) or 0)
    except IcmError as e:
        print(f"icm: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        missing = extras.explain(e, args.command)  # an optional module of an extra: name the extra
        if missing is None:
            raise
        print(f"icm: error: {missing}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("icm: interrupted (icm eval caches finished results: run it again to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
