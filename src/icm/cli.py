"""The ``icm`` command line.

Exit status: 0 on success, 2 on bad input or usage (one line on stderr, no
traceback) and for a command whose pip extra is not installed (:mod:`icm.extras`),
130 when interrupted.

Parsing the command line imports no torch: ``icm --help``, ``icm models``, ``icm info``
and every refusal decided from a file's header (:mod:`icm.preflight`) answer without
it; a command imports :mod:`icm.codec` (torch) when it has work for a model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ._cliutil import (
    _error,
    _non_negative,
    _positive,
    _print_answer_lines,
    _quality,
    _warn,
    top_parser,
)
from ._cliutil import run as _run
from .errors import IcmError
from .tasks import DETECTION_TASKS, REPORT_SCORE, TASK_NAMES


def _progress(items, desc: str, total: int | None = None):
    from tqdm import tqdm

    # Shown on a terminal only, and only when there is more than one item.
    n = total if total is not None else len(items)
    return tqdm(items, desc=desc, total=n, disable=None if n > 1 else True, leave=False, file=sys.stderr)


def _bar(items, desc: str):
    """``items`` with a progress bar where there are several (for one, tqdm is not imported)."""
    return _progress(items, desc) if len(items) > 1 else items


def _codec():
    """:mod:`icm.codec`, imported once a command has work for a model (torch loads here, and
    gets the thread count :func:`icm._cliutil.run` decided)."""
    from . import codec, threads

    threads.apply_pending()
    return codec


def _each(items, desc: str, run) -> int:
    """:func:`_each_plain` with a progress bar."""
    return _each_plain(_bar(items, desc), run)


def _each_plain(items, run) -> int:
    """``run(item)`` for every item; a failure is reported (naming the item) and the
    rest still run, as gzip and cp do. Returns the exit status: 2 if any failed."""
    failed = 0
    for item in items:
        try:
            run(item)
        except IcmError as e:
            _error(item, e)
            failed += 1
    return 2 if failed else 0


def _image_format(dest: Path) -> str:
    from PIL import Image

    fmt = Image.registered_extensions().get(dest.suffix.lower())
    if fmt is None:
        raise IcmError(f"{dest}: unknown image format {dest.suffix or '(no extension)'}; use .png")
    return fmt





def _cmd_models(args) -> int:
    from .models import list_models
    from .models._registry import model_row

    rows = [model_row(name) for name in list_models()]  # tasks: detection heads ship apart from the codec
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    cells = [(r["name"], ",".join(map(str, r["qualities"])), ",".join(map(str, r["weights"])) or "-",
              "yes" if r["pixels"] else "no", ",".join(r["tasks"]) or "-", r["description"]) for r in rows]
    head = ("model", "qualities", "weights", "pixels", "tasks", "description")
    widths = [max(len(c[i]) for c in [head, *cells]) + 2 for i in range(len(head) - 1)]
    for c in [head, *cells]:
        print("".join(f"{v:<{w}}" for v, w in zip(c, widths)) + c[-1])
    print("\nIn every model a higher quality means more bits and more fidelity; "
          "`icm compress` uses the highest shipped one unless -q says otherwise.")
    return 0


def _cmd_compress(args) -> int:
    from .files import check_output, prepare_dir, write_atomic

    if args.output and len(args.images) > 1:
        raise IcmError("-o/--output takes a single input image; use --out-dir for several")
    quality = _quality(args.model, args.quality)
    refine = args.refine
    if args.refine_for and not refine:
        raise IcmError("--refine-for names the task that --refine N keeps; give --refine N as well")
    if args.out_dir:
        prepare_dir(args.out_dir)
    dests = {}
    for path in args.images:
        dest = Path(args.output) if args.output else Path(args.out_dir or Path(path).parent) / (Path(path).stem + ".icm")
        if dest in dests.values():
            other = next(p for p, d in dests.items() if d == dest)
            raise IcmError(f"{path} and {other} would both be written to {dest}; use --out-dir or rename one")
        dests[path] = dest
    codec = _codec()  # the options are sound: torch from here on
    model = codec.get_model(args.model, quality)
    codec.check_refine(model, refine, args.refine_for)
    # With --refine the bar counts refinement steps, so one large image shows progress too.
    bar = _progress(range(len(args.images) * refine), "refine") if refine else None
    step = (lambda _: bar.update()) if bar is not None else None
    grey_model = getattr(model, "in_channels", 3) == 1

    def one(path):
        dest = check_output(dests[path], args.images, args.force)
        notes = []
        x = codec.load_image(path, notes)
        native = getattr(model, "input_size", None)
        if native is not None and tuple(x.shape[-2:]) != tuple(native):
            raise IcmError(f"{model.model_name} codes {native[1]}x{native[0]} images (what it was trained on); "
                           f"{path} is {x.shape[-1]}x{x.shape[-2]}: resize it first")
        if grey_model:
            notes = [n for n in notes if n != "greyscale coded as RGB"]
            if not _looks_grey(x):
                notes.append(f"colour dropped: {model.model_name} codes greyscale (luma)")
        for n in notes:
            _warn(path, n)
        data = codec.encode(model, x, refine=refine, callback=step, task=args.refine_for)[0]
        write_atomic(dest, data)
        h, w = x.shape[-2:]
        print(f"{dest}: {model.model_name} q{model.quality}, {w}x{h}, {len(data)} bytes, "
              f"{8 * len(data) / (h * w):.4f} bpp")

    try:
        # with --refine the bar counts refinement steps instead of files
        return _each_plain(args.images, one) if refine else _each(args.images, "compress", one)
    finally:
        if bar is not None:
            bar.close()


def _looks_grey(x) -> bool:
    return bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())


def decoded_name(path: str | os.PathLike) -> Path:
    """``decompress``'s default output: ``NAME.decoded.png`` beside ``NAME.icm`` (never the
    name of the image the file was made from)."""
    p = Path(path)
    return p.with_name(p.stem + ".decoded.png")


def _cmd_decompress(args) -> int:
    from . import preflight
    from .files import check_output, write_atomic
    from .models import model_info_by_id

    if args.output and len(args.files) > 1:
        raise IcmError("-o/--output takes a single input file")
    if args.output:
        _image_format(Path(args.output))
    limits = _limits(args)

    def one(path):
        dest = check_output(Path(args.output) if args.output else decoded_name(path), args.files, args.force)
        f = preflight.read(path)
        info = model_info_by_id(f.header.model_id)
        if info is not None and not info.pixel_decoder:
            raise IcmError(f"{path}: model {info.name!r} carries no pixel decoder; use `icm analyze` instead")
        preflight.check_decode(f, pixels=True, limits=limits)  # from the header alone: no torch yet
        codec = _codec()
        out = codec.decode(f, pixels=True, limits=limits)
        from PIL import Image

        fmt = _image_format(dest)
        write_atomic(dest, lambda tmp: Image.fromarray(codec.to_uint8(out["x_hat"])).save(tmp, format=fmt))
        print(f"{dest}: {f.header.width}x{f.header.height}")

    return _each(args.files, "decompress", one)


def _analyzed(files, task, failures: list, limits=None):
    """``(path, file, analyze result)`` for each file that analyses; each failure is
    reported (naming the file) and appended to ``failures``, and the rest still run.
    A file its header refuses is refused before torch is imported."""
    from . import preflight

    for path in _bar(files, "analyze"):
        try:
            f = preflight.read(path)
            preflight.check_analyze(f, task, limits=limits)
            res = _codec().analyze(f, task=task, limits=limits)
        except IcmError as e:
            _error(path, e)
            failures.append(path)
            continue
        yield path, f, res


def _cmd_analyze(args) -> int:
    if args.task in DETECTION_TASKS:
        return _analyze_detections(args)
    if args.draw or args.image:
        raise IcmError("--draw and --image go with --task detect or --task segment")
    if args.top < 1:
        raise IcmError(f"--top must be at least 1, not {args.top}")
    failures = []
    for path, f, res in _analyzed(args.files, args.task, failures, _limits(args)):
        from .tasks.results import analysis_row, top_classes

        model = res["model"]
        top = top_classes(res["output"][0], getattr(model, "class_names", None), args.top)
        if args.json:
            print(_json({"file": str(path), **analysis_row(f, model.model_name, res["task"]), f"top{args.top}": top}))
        else:
            print(f"{path}: {model.model_name} q{f.header.quality}, {f.header.width}x{f.header.height}, "
                  f"{f.size} bytes, {f.bpp:.4f} bpp")
            _print_answer_lines({"top": top})
    return 2 if failures else 0


def _analyze_detections(args) -> int:
    from . import preflight

    if not 0.0 <= args.score_thresh <= 1.0:
        raise IcmError(f"--score-thresh must be within [0, 1], not {args.score_thresh}")
    if args.draw and len(args.files) > 1:
        raise IcmError("--draw takes a single .icm file")
    if args.image and not args.draw:
        raise IcmError("--image is the picture to draw on: it goes with --draw OUT.png")
    draw_format = None
    if args.draw:  # everything the drawing needs is checked before any analysis
        from .files import check_output
        from .models import model_info_by_id
        from .models._registry import heads_make_pictures

        info = model_info_by_id(preflight.read(args.files[0]).header.model_id)
        if args.image is None and info is not None and not info.pixel_decoder and not heads_make_pictures(info.name):
            raise IcmError(f"--draw needs --image PICTURE: {info.name} files carry no pixels")
        draw_format = _image_format(Path(args.draw))
        check_output(args.draw, [*args.files, *([args.image] if args.image else [])], args.force)
    failures = []
    limits = _limits(args)
    for path, f, res in _analyzed(args.files, args.task, failures, limits):
        from .tasks.results import analysis_row, draw, to_records

        model, heads = res["model"], res["heads"]
        dets = to_records(res["output"][0], heads.categories, args.score_thresh, masks=args.task == "segment")
        if args.json:
            print(_json({"file": str(path), **analysis_row(f, model.model_name, args.task), "detections": dets}))
        else:
            print(f"{path}: {model.model_name} q{f.header.quality}, {f.header.width}x{f.header.height}, "
                  f"{f.size} bytes, {f.bpp:.4f} bpp, {len(dets)} detection{'s' if len(dets) != 1 else ''}"
                  f" scoring {args.score_thresh:g} or more")
            _print_answer_lines({"detections": dets})
        if args.draw:
            from PIL import Image

            from .files import write_atomic

            picture = Image.fromarray(draw(_picture_for(args.image, f, model, _codec(), heads), dets))
            write_atomic(args.draw, lambda tmp: picture.save(tmp, format=draw_format))
    return 2 if failures else 0


def _picture_for(image, f, model, codec, heads=None):
    """The picture to draw on: the user's (of the coded size), pixels decoded for drawing only,
    or, for a model without a pixel decoder, the picture its detection heads decode."""
    size = (f.header.height, f.header.width)
    if image is None:
        if getattr(model, "has_pixel_decoder", False):
            return codec.to_uint8(codec.decode(f, model=model, pixels=True, max_pixels=0)["x_hat"])  # analysed already
        if heads is not None and hasattr(getattr(heads, "dense_head", None), "picture"):
            from .models import Compressed
            from .tasks.detection import detector_picture

            return codec.to_uint8(detector_picture(model, heads, Compressed([f.sections], size)))
        raise IcmError(f"--draw needs --image PICTURE: {model.model_name} files carry no pixels")
    picture = codec.read_rgb(image)
    if picture.shape[:2] != size:
        raise IcmError(f"--image {image} is {picture.shape[1]}x{picture.shape[0]}, "
                       f"the file codes {size[1]}x{size[0]}")
    return picture


def _cmd_info(args) -> int:
    from . import preflight
    from .models import model_info_by_id

    def one(path):
        f = preflight.read(path)
        info = model_info_by_id(f.header.model_id)
        row = {
            "file": str(path),
            "model": info.name if info else f"unknown (id {f.header.model_id})",
            "quality": f.header.quality,
            "height": f.header.height,
            "width": f.header.width,
            "bytes": f.size,
            "header_bytes": f.header_bytes,
            "sections": [len(s) for s in f.sections],
            "bpp": round(f.bpp, 6),
        }
        old = ""
        if f.written_as is not None:
            row["written_as"] = {"model_id": f.written_as.model_id, "quality": f.written_as.quality}
            old = f" (written as model id {f.written_as.model_id} q{f.written_as.quality}, before a renumbering)"
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{path}: {row['model']} q{row['quality']}{old}, {row['width']}x{row['height']}, "
                  f"{row['bytes']} bytes ({row['header_bytes']} header), {row['bpp']:.4f} bpp")

    return _each_plain(args.files, one)


def _cmd_demo(args) -> int:
    from .demo import run_demo

    if args.quality is not None and args.model is not None:
        _quality(args.model, args.quality)
    return run_demo(out_dir=args.out_dir, quality=args.quality, model_name=args.model)


def _cmd_export_onnx(args) -> int:
    from . import export_onnx
    from .files import prepare_dir

    if args.all == (args.model is not None):
        raise IcmError("name a MODEL (with -q), or give --all for every shipped quality")
    if args.all and args.quality is not None:
        raise IcmError("-q goes with a MODEL; --all exports every shipped quality")
    if args.all:
        todo = export_onnx.shipped()
    else:
        if args.model not in export_onnx.EXPORTABLE:
            raise IcmError(f"icm export-onnx exports {', '.join(export_onnx.EXPORTABLE)}, not {args.model!r}")
        todo = [(args.model, _quality(args.model, args.quality))]
    out = prepare_dir(args.out_dir)
    for name, q in todo:  # every refusal before any work
        for f in export_onnx.outputs(name, q):
            if (out / f).exists() and not args.force:
                raise IcmError(f"{out / f}: already exists; use --force to overwrite it")
    for name, q in todo:
        written = export_onnx.export(name, q, out)
        size = sum(p.stat().st_size for p in written)
        print(f"{out}: {name} q{q}, {len(written)} files, {size / 1e6:.2f} MB")
    return 0


def _cmd_train(args) -> int:
    from .train.run import load_config, run

    if args.dry_run:
        from .train.dryrun import main_dry_run

        return main_dry_run(args.config, steps=args.steps, as_json=args.json)
    cfg = load_config(args.config)
    if args.out_dir:
        cfg["trainer"]["out_dir"] = args.out_dir
    last = run(cfg, max_steps=args.max_steps)
    print(f"last checkpoint: {last}")
    return 0


def _limit_options(s) -> None:
    from .limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SECONDS

    s.add_argument("--max-pixels", type=_non_negative, default=None, metavar="P",
                   help=f"refuse files whose header declares more than P pixels, before decoding anything "
                        f"(default {DEFAULT_MAX_PIXELS}, 3840x2160; 0: no limit)")
    s.add_argument("--max-seconds", type=float, default=None, metavar="S",
                   help=f"refuse files whose decode the header prices above S CPU seconds "
                        f"(default {DEFAULT_MAX_SECONDS:g}; memory is limited to half this machine's)")


def _limits(args):
    """The decode limits the command's options ask for (icm.limits)."""
    from .limits import Limits, resolve

    if args.max_seconds is not None and not args.max_seconds > 0:
        raise IcmError(f"--max-seconds must be > 0, not {args.max_seconds}")
    limits = Limits() if args.max_seconds is None else Limits(max_seconds=args.max_seconds)
    return resolve(limits, args.max_pixels)


def _json(row: dict) -> str:
    """One JSON line; never NaN or Infinity (not JSON), which the codec refuses before this."""
    return json.dumps(row, allow_nan=False)


def build_parser() -> argparse.ArgumentParser:
    p, sub = top_parser()

    s = sub.add_parser("models", help="list model families, qualities and shipped weights")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=_cmd_models)

    s = sub.add_parser("compress", help="code images into .icm files")
    s.add_argument("images", nargs="+", metavar="IMAGE")
    s.add_argument("-m", "--model", default="hyperprior")
    s.add_argument("-q", "--quality", type=int, default=None, help="quality level: higher means more bits and more fidelity in every model "
                   "(default: the highest shipped, the largest files; see icm models)")
    s.add_argument("--refine", type=_non_negative, default=0, metavar="N",
                   help="spend N gradient steps per image refining the latents for a smaller file at the "
                        "same quality: pixel fidelity for hyperprior, the receiver's tasks for dicm-lite0 "
                        "(a good start: 100 for hyperprior, 8 for dicm-lite0; default 0: off). The file "
                        "decodes as usual.")
    s.add_argument("--refine-for", choices=("all",) + TASK_NAMES, default=None, metavar="TASK",
                   help="dicm: the receiver's tasks that --refine keeps: all (default: classify, detect and "
                        "segment from one file), or classify, detect or segment alone (detection runs the "
                        "shipped heads on the picture at the sender)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("-o", "--output", metavar="FILE", help="output file (one input only)")
    g.add_argument("--out-dir", metavar="DIR", help="write DIR/<name>.icm for every input")
    s.add_argument("-f", "--force", action="store_true",
                   help="overwrite existing outputs (an input is never overwritten)")
    s.set_defaults(func=_cmd_compress)

    s = sub.add_parser("decompress", help="decode .icm files back to pixels")
    s.add_argument("files", nargs="+", metavar="FILE.icm")
    s.add_argument("-o", "--output", metavar="IMAGE",
                   help="output image (one input only; default NAME.decoded.png beside NAME.icm, so the "
                        "image the file was made from is never replaced)")
    s.add_argument("-f", "--force", action="store_true",
                   help="overwrite existing outputs (an input is never overwritten)")
    _limit_options(s)
    s.set_defaults(func=_cmd_decompress)

    s = sub.add_parser("analyze", help="task results (classification, detection, instance segmentation) "
                                       "straight from .icm files, no pixels")
    s.add_argument("files", nargs="+", metavar="FILE.icm")
    s.add_argument("--task", default="classify", choices=TASK_NAMES)
    s.add_argument("--json", action="store_true",
                   help='one JSON object per line: {"file", "model", "quality", "bytes", "bpp", "task", "top5"}; '
                        'detect/segment: "detections": [{"label", "index", "score", "box", ("mask": COCO RLE)}]')
    s.add_argument("--top", type=int, default=5, metavar="K", help="classes to report (default 5; JSON key topK)")
    s.add_argument("--score-thresh", type=float, default=REPORT_SCORE, metavar="S",
                   help=f"detect/segment: report detections scoring at least S (default {REPORT_SCORE})")
    s.add_argument("--draw", metavar="OUT.png", help="detect/segment: draw boxes, labels and masks into OUT.png")
    s.add_argument("--image", metavar="PICTURE", help="the picture to draw on (the file has no pixels; "
                                                       "it must have the coded size)")
    s.add_argument("-f", "--force", action="store_true", help="overwrite an existing --draw output")
    _limit_options(s)
    s.set_defaults(func=_cmd_analyze)

    s = sub.add_parser("info", help="model, quality, size, bytes and bpp of .icm files")
    s.add_argument("files", nargs="+", metavar="FILE.icm")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("demo", help="the shipped models, machine path first: one file that classifies, detects "
                                    "and segments; dicm-lite0 against JPEG and HEVC on 30 held-out crops; "
                                    "Fashion-MNIST classes from the bitstream; photos beside JPEG")
    s.add_argument("--out-dir", default="icm-demo", metavar="DIR")
    s.add_argument("-m", "--model", default=None, choices=("hyperprior", "bai2022-fmnist", "dicm-lite0"),
                   help="only this model's demo (default: every model with shipped weights)")
    s.add_argument("-q", "--quality", type=int, default=None, help="only this quality (default: all shipped)")
    s.set_defaults(func=_cmd_demo)

    from .eval.cli import add_eval_parser
    from .pool.cli import add_data_parser
    from .serve.cli import add_serve_parsers

    add_eval_parser(sub)
    add_data_parser(sub)
    add_serve_parsers(sub, _positive, _non_negative)

    s = sub.add_parser("export-onnx", help="write the sender of a shipped model as ONNX graphs and integer tables "
                                           "(what icm-edge runs; needs the onnx extra)")
    s.add_argument("model", nargs="?", metavar="MODEL", help="hyperprior, bai2022-fmnist or dicm-lite0")
    s.add_argument("-q", "--quality", type=int, default=None, help="default: the highest shipped")
    s.add_argument("--all", action="store_true", help="every shipped quality of every model that exports")
    s.add_argument("-o", "--out-dir", required=True, metavar="DIR", help="folder of the senders (created if absent)")
    s.add_argument("-f", "--force", action="store_true", help="overwrite the senders already in DIR")
    s.set_defaults(func=_cmd_export_onnx)

    s = sub.add_parser("train", help="train a model from a YAML recipe (see configs/)")
    s.add_argument("config", metavar="CONFIG")
    s.add_argument("--max-steps", type=int, default=None)
    s.add_argument("--out-dir", default=None)
    s.add_argument("--dry-run", action="store_true",
                   help="build the recipe, run a few steps in one process and print parameters per part, a step's "
                        "time and peak memory, and the projected time per epoch and schedule; trains nothing")
    s.add_argument("--steps", type=_positive, default=3, metavar="N",
                   help="steps of --dry-run, the first a warm-up (default 3)")
    s.add_argument("--json", action="store_true", help="--dry-run's figures as one JSON object")
    s.set_defaults(func=_cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
