"""``icm eval``: rate–task sweeps, BD-rate tables, plots and reports.

    icm eval --dataset D --task T --codecs LIST [--qualities CODEC=Q,Q,...]...
             [--limit N] [--workers N] [--out DIR] [--cache DIR]
             [--report DIR] [--reference CODEC]
    icm eval --from DIR --report DIR [--reference CODEC]   # re-render from results
    icm eval --list                                          # codecs, datasets, tasks

:func:`add_eval_parser` registers the subcommand on the ``icm`` parser;
``python -m icm.eval.cli`` runs it on its own.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import IcmError

EXAMPLES = """\
examples:
  icm eval --dataset samples --task psnr --codecs hyperprior,jpeg,webp,hevc,vvc,avif,jxl --report out/
  icm eval --dataset photos --task ms-ssim --codecs jpeg,hevc --qualities jpeg=20,50,80 --workers 2
  icm eval --dataset ~/imagenet-val --limit 200 --task classify --codecs hyperprior,hevc --reference hevc
  icm eval --from icm-eval/ --report out/ --reference jpeg

  icm eval --dataset synthetic:val --task segment --codecs dicm-lite0,jpeg,hevc --report out/

datasets: samples, photos, photo-crops, labelme-crops, pool-crops[:SOURCE], fashion-mnist[:train|test], synthetic[:val], coco:ANNOTATIONS.json:IMAGEDIR,
          or an image folder (flat: unlabelled; class subfolders: labelled by sorted folder name)
tasks:    psnr, ms-ssim, classify (top-1/top-5 where labels are ImageNet classes, and top-1
          agreement with the uncompressed image), detect (box mAP), segment (mask mAP) on COCO-format
          datasets: the shipped dicm-lite0 heads, on the decoded latent for dicm models and on
          decoded pixels for every other codec; detect-agreement (box AP against the NanoDet
          teacher's boxes on the uncompressed photo); feature-snr (dB of the backbone's stage
          features against the uncompressed ones: what a file gives the network, not what it answers)
results:  one JSON per codec in --out (schema: icm.eval.sweep); per-image results are cached in
          --cache (default OUT/cache), so an interrupted sweep resumes without re-coding
"""


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` on an ``argparse`` sub-parser collection; returns its parser."""
    s = subparsers.add_parser(
        "eval", help="rate–task sweeps of codecs over a dataset; BD-rate tables, plots, reports",
        description="Code a dataset with codecs × qualities, measure a task, write results and a report.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--dataset", metavar="D",
                   help="samples, photos[:all], photo-crops, labelme-crops, voc-real, pool-crops[:SOURCE] (training data), fashion-mnist, synthetic:val, coco:ANN.json:DIR or a folder")
    s.add_argument("--task", default="psnr", metavar="T",
                   help="psnr (default), ms-ssim, classify, detect, segment, detect-agreement, feature-snr")
    s.add_argument("--detector", default=None, metavar="NAME",
                   help="detect/segment on pixels: dicm-lite0's heads (default) or nanodet (the teacher; detect only)")
    s.add_argument("--heads", default=None, metavar="FILE",
                   help="dicm-lite0 detection heads file to use instead of the shipped one")
    s.add_argument("--codecs", metavar="LIST", help="comma-separated model and anchor names (jpeg = jpeg420)")
    s.add_argument("--qualities", action="append", default=[], metavar="CODEC=Q,Q",
                   help="qualities of one codec (repeatable; default: shipped weights / the anchor's sweep)")
    s.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    s.add_argument("--workers", type=int, default=1, metavar="N", help="processes for the anchors (default 1)")
    s.add_argument("--out", default="icm-eval", metavar="DIR", help="result JSON files (default icm-eval)")
    s.add_argument("--cache", default=None, metavar="DIR", help="per-image result cache (default OUT/cache)")
    s.add_argument("--report", default=None, metavar="DIR", help="write report.md/.html/.json and plots here")
    s.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                   help="no sweep: render --report from the result files in DIR")
    s.add_argument("--reference", default="hevc", metavar="CODEC", help="BD reference (default hevc)")
    s.add_argument("--list", action="store_true", help="list codecs, datasets and tasks, then exit")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=run_eval)
    return s


def parse_qualities(items: list[str]) -> dict[str, list[int]]:
    """``["jpeg=10,50", "hevc=27"]`` → ``{"jpeg420": [10, 50], "hevc": [27]}``."""
    from .sweep import ALIASES

    out: dict[str, list[int]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        try:
            qs = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            qs = []
        if not sep or not name or not qs:
            raise IcmError(f"--qualities takes CODEC=Q1,Q2,... with integer qualities, not {item!r}")
        if name in out:
            raise IcmError(f"--qualities given twice for {name!r}")
        out[name] = qs
    return out


def _list() -> int:
    from ..models import has_weights, list_models, model_info
    from ..models._registry import heads_tasks
    from .datasets import KNOWN
    from .sweep import ALIASES, _anchors
    from .tasks import TASKS

    print("models:")
    for name in list_models():
        info = model_info(name)
        shipped = [q for q in info.qualities if has_weights(name, q)]
        tasks = info.tasks + heads_tasks(name)
        print(f"  {name:<18} qualities {list(info.qualities)}, shipped weights {shipped or 'none'}, "
              f"tasks from bitstream: {', '.join(tasks) or 'none'}")
    print("model options: NAME+refine or NAME+refine:N codes with N steps (default: the model's own, hyperprior 100, dicm-lite0 8) of encoder-side "
          "latent refinement (hyperprior, dicm-lite0); NAME+refine@TASK or NAME+refine:N@TASK refines for that "
          "task alone (dicm-lite0: all, the default, classify, detect, segment)")
    mod = _anchors()
    print("anchors:")
    for name in mod.list_anchors():
        a = mod.get_anchor(name)
        try:
            a.check()
            state = "available"
        except IcmError as e:
            state = f"unavailable: {e}"
        print(f"  {name:<18} {a.label}; qualities {list(a.qualities)}; {state}")
    print("aliases: " + ", ".join(f"{k} = {v}" for k, v in ALIASES.items()))
    print("datasets: " + ", ".join(KNOWN))
    print("tasks: " + ", ".join(TASKS))
    return 0


def run_eval(args) -> int:
    """The ``eval`` subcommand: 0 on success; :class:`IcmError` for bad input."""
    from pathlib import Path

    if args.list:
        return _list()
    reference = args.reference
    if args.from_dir is not None:
        if args.report is None:
            raise IcmError("--from re-renders a report: it needs --report DIR")
        if args.dataset or args.codecs:
            raise IcmError("--from renders existing results; drop --dataset/--codecs or drop --from")
        from .report import load_results, write_report

        summary = write_report(load_results(args.from_dir), args.report, reference)
        _print_summary(summary, args.report)
        return 0
    if not args.dataset or not args.codecs:
        raise IcmError("icm eval needs --dataset and --codecs (or --from DIR --report DIR); see icm eval --help")
    if args.workers < 1:
        raise IcmError(f"--workers must be at least 1, not {args.workers}")
    if args.limit is not None and args.limit < 1:
        raise IcmError(f"--limit must be at least 1, not {args.limit}")

    from .datasets import open_dataset
    from .sweep import ALIASES, resolve_codec, run_sweep
    from .tasks import get_task

    if args.heads:
        from ..codec import use_heads
        from .detect import DEFAULT_DETECTOR

        use_heads(DEFAULT_DETECTOR, args.heads)
    if args.detector and args.task not in ("detect", "segment"):
        raise IcmError(f"--detector is for --task detect or segment, not {args.task}")
    task = get_task(args.task, args.detector)
    names = [ALIASES.get(n.strip(), n.strip()) for n in args.codecs.split(",") if n.strip()]
    if not names:
        raise IcmError("--codecs is empty")
    qualities = parse_qualities(args.qualities)
    stray = sorted(set(qualities) - set(names))
    if stray:
        raise IcmError(f"--qualities names {', '.join(stray)}, which is not in --codecs")
    codecs = [resolve_codec(n, qualities.get(n)) for n in dict.fromkeys(names)]
    dataset = open_dataset(args.dataset, limit=args.limit)
    paths = run_sweep(codecs, dataset, task, args.out, cache_dir=args.cache, workers=args.workers,
                      progress=False if args.no_progress else None)
    import json

    for p in paths:
        r = json.loads(Path(p).read_text())
        m = r["primary_metric"]
        pts = sorted(r["points"], key=lambda q: q["bpp"])
        vals = [p[m] for p in pts if p.get(m) is not None]
        span = f"{pts[0]['bpp']:.3f}–{pts[-1]['bpp']:.3f} bpp" if pts else "no points"
        if vals:
            span += f", {m} {min(vals):.4g}–{max(vals):.4g}"
        print(f"{r['codec']:<12} {len(pts)} points, {span} → {p}")
    if args.report:
        from .report import load_results, write_report

        summary = write_report(load_results(paths), args.report, reference)
        _print_summary(summary, args.report)
    return 0


def _print_summary(summary: dict, report_dir) -> None:
    from .report import fmt_bd_metric, fmt_bd_rate

    for g in summary["groups"]:
        for e in g["bd"]:
            if e["rate"] == "bpp":
                print(f"{g['dataset']} / {g['task']}: {e['codec']:<12} vs {e['reference']}: "
                      f"BD-rate {fmt_bd_rate(e['bd_rate_pct'])}, BD-{e['metric']} {fmt_bd_metric(e['metric'], e['bd_metric'])}"
                      + (f" ({e['note']})" if e["note"] else ""))
    print(f"report: {report_dir}/report.md, report.html")


def main(argv: list[str] | None = None) -> int:
    """``python -m icm.eval.cli ARGS`` (same as ``icm eval ARGS``)."""
    from .._cliutil import run, top_parser

    parser, sub = top_parser()
    add_eval_parser(sub)
    return run(parser, ["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
