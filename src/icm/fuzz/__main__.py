"""``python -m icm.fuzz [TARGET…] [--seconds S | --minutes M] [--corpus DIR] [--coverage]``:
each target under Atheris for S seconds (or M minutes in all, split evenly, with a
coverage report), one process per target; ``http`` is the bounded fuzz of ``icm serve``
on loopback (:mod:`icm.fuzz.http`).  Exit 1 on a finding (its input is kept as
``DIR/<target>-crash-…``), 2 when Atheris is missing."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from . import ICM_TARGETS, TARGETS, seeds

HTTP = "http"
COVERED = ("icm/bitstream.py", "icm/preflight.py", "icm/limits.py", "icm/codec.py", "icm/entropy/", "icm/latent/",
           "icm/layers/", "icm/models/hyperprior.py", "icm/models/bai2022.py", "icm/models/dicm.py",
           "icm/models/redundancy.py", "icm/models/backbones.py", "icm/tasks/detection.py", "icm/tasks/results.py",
           "icm/serve/service.py", "icm/pool/containers.py", "icm/teachers/tfjs.py")
"""Where the coverage report counts lines: the parser, the decoders, the readers."""


def _worker(target: str, corpus: str, libfuzzer_args: list[str]) -> None:
    """Runs inside the child process: instrument the target's code, write its seeds, fuzz."""
    import atheris

    from . import check

    icm_side = target in ICM_TARGETS
    # coverage of what loads here (modules loaded before stay uninstrumented); an editable
    # install's import hook is not replaced (enable_loader_override=False), or nothing would be
    with atheris.instrument_imports(include=["icm"] if icm_side else None, enable_loader_override=False):
        if icm_side:  # icm's parser, decoders and service; torch and the rest run as they are
            from .. import bitstream, codec, preflight  # noqa: F401
            from ..serve import service  # noqa: F401
            from ..tasks import detection, results  # noqa: F401

            start = seeds(target)  # builds the target's models: their families' code loads here
            for s in start:
                check(target, s)  # and their detection heads, before the clock starts
        else:
            from PIL import Image, JpegImagePlugin, PngImagePlugin  # noqa: F401

            from ..pool import containers  # noqa: F401
            from ..teachers import tfjs  # noqa: F401

            start = seeds(target)
    folder = Path(corpus)
    for s in start:
        (folder / f"seed-{hashlib.sha1(s).hexdigest()[:12]}").write_bytes(s)
    print(f"icm.fuzz: {len(start)} seeds, corpus {len(os.listdir(folder))} files", file=sys.stderr, flush=True)

    def one(data: bytes) -> None:
        check(target, data)

    kw = {}
    if icm_side:
        from .mutate import mutate_icm

        kw["custom_mutator"] = lambda data, max_size, seed: mutate_icm(data, max_size, seed, atheris.Mutate)
    max_len = max(4096, 2 * max(len(s) for s in start))
    atheris.Setup([sys.argv[0], corpus, f"-max_len={max_len}", *libfuzzer_args], one, **kw)
    atheris.Fuzz()


def _replay(target: str, files: list[str]) -> None:
    """Feed ``files`` through ``target``'s contract (the coverage report's run)."""
    from . import check

    for f in files:
        check(target, Path(f).read_bytes())


def run_target(name: str, seconds: float, corpus: Path, rss_mb: int | None, timeout: int | None) -> dict:
    folder = corpus / name
    folder.mkdir(parents=True, exist_ok=True)
    icm_side = name in ICM_TARGETS
    # the .icm side's decodes may take what their header prices under the default limits
    # (30 s at most: twice that is the contract) and the memory it prices (2.7 GB at most)
    timeout = timeout or (70 if icm_side else 10)
    rss_mb = rss_mb or (6144 if icm_side else 2048)
    cmd = [sys.executable, "-m", "icm.fuzz", "--worker", name, str(folder), f"-max_total_time={int(seconds)}",
           f"-rss_limit_mb={rss_mb}", f"-timeout={timeout}", f"-artifact_prefix={corpus / (name + '-')}",
           "-print_final_stats=1"]
    t0 = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    log = r.stdout + r.stderr
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    rate = re.search(r"stat::average_exec_per_sec:\s*(\d+)", log)
    cov = re.findall(r"cov: (\d+)", log)
    before = re.search(r"icm.fuzz: (\d+) seeds, corpus (\d+) files", log)
    crash = re.search(r"Test unit written to (\S+)", log)
    found = (re.search(r"^[\w.]*(?:Error|Exception|Finding|Interrupt|Exit)\b: .*$", log, re.MULTILINE)
             or re.search(r"ERROR: libFuzzer: \S+", log))
    n = int(runs.group(1)) if runs else 0
    stats = {"target": name, "inputs": n, "wall_s": round(wall, 1), "per_s": round(n / max(wall, 1e-9)),
             "exec_per_s_libfuzzer": int(rate.group(1)) if rate else None, "edges": int(cov[-1]) if cov else None,
             "seeds": int(before.group(1)) if before else None, "corpus_before": int(before.group(2)) if before else None,
             "corpus_after": len(os.listdir(folder)), "ok": r.returncode == 0,
             "finding": crash.group(1) if crash else None, "kind": found.group(0) if found else None}
    print(f"{name}: {n} inputs in {wall:.0f} s ({stats['per_s']}/s), coverage {stats['edges'] or '?'} edges, corpus "
          f"{stats['corpus_before']} -> {stats['corpus_after']} files: {'ok' if r.returncode == 0 else 'FINDING'}",
          flush=True)
    if r.returncode != 0:  # the Python traceback where there is one, then where the input was kept
        at = log.find("=== Uncaught Python exception")
        lines = log[at:].splitlines()[:40] if at >= 0 else log.strip().splitlines()[-40:]
        print("\n".join(lines + ([crash.group(0)] if crash and at >= 0 else [])), file=sys.stderr)
    return stats


def run_http(seconds: float, corpus: Path) -> dict:
    from .http import fuzz

    r = fuzz(seconds=seconds, out=corpus)
    ok = not r["findings"]
    print(f"http: {r['requests']} requests in {r['seconds']:.0f} s ({r['requests'] / max(r['seconds'], 1e-9):.0f}/s, "
          f"server start {r['start_seconds']:.0f} s), statuses "
          f"{', '.join(f'{k}: {v}' for k, v in sorted(r['statuses'].items(), key=lambda kv: str(kv[0])))}: "
          f"{'ok' if ok else 'FINDING'}", flush=True)
    return {"target": HTTP, "inputs": r["requests"], "wall_s": round(r["seconds"], 1), "ok": ok,
            "statuses": {str(k): v for k, v in r["statuses"].items()}, "findings": r["findings"]}


def coverage_report(names: list[str], corpus: Path) -> dict:
    """Lines of :data:`COVERED` run by each target's seeds, then by its whole corpus
    (coverage.py, replaying the files through the target's contract)."""
    try:
        import coverage
    except ImportError:
        print("coverage report: needs coverage.py (pip install coverage); libFuzzer's edge counts are above",
              file=sys.stderr)
        return {}
    results = {}
    for which in ("seeds", "corpus"):
        data_file = corpus / f".coverage-{which}"
        data_file.unlink(missing_ok=True)
        for name in names:
            folder = corpus / name
            files = sorted(str(p) for p in folder.iterdir() if which == "corpus" or p.name.startswith("seed-"))
            lst = corpus / f".replay-{name}"
            lst.write_text("\n".join(files))
            code = ("import coverage, sys\n"
                    f"cov = coverage.Coverage(data_file={str(data_file)!r}, source_pkgs=['icm'], omit=['*/icm/fuzz/*'])\n"
                    "cov.load()\ncov.start()\n"
                    "from icm.fuzz.__main__ import _replay\n"
                    f"_replay({name!r}, open({str(lst)!r}).read().split())\n"
                    "cov.stop()\ncov.save()\n")
            subprocess.run([sys.executable, "-c", code], check=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            lst.unlink()
        import coverage

        cov = coverage.Coverage(data_file=str(data_file))
        cov.load()
        rows = {}
        for path in cov.get_data().measured_files():
            key = next((k for k in COVERED if k in path.replace(os.sep, "/")), None)
            if key is None:
                continue
            _, statements, _, missing, _ = cov.analysis2(path)
            if len(missing) == len(statements):
                continue  # not run by these targets
            label = path.replace(os.sep, "/").split("/icm/", 1)[-1]
            rows[label] = (len(statements) - len(missing), len(statements))
        results[which] = rows
    print("lines covered (coverage.py; replay of the seeds -> of the corpus after fuzzing):")
    for label in sorted(results["corpus"]):
        s = results["seeds"].get(label, (0, results["corpus"][label][1]))
        c = results["corpus"][label]
        print(f"  {label:34s} {s[0]:4d} -> {c[0]:4d} of {c[1]:4d} ({100 * c[0] / max(c[1], 1):.0f}%)")
    return {w: {k: list(v) for k, v in rows.items()} for w, rows in results.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m icm.fuzz", description=__doc__.split("\n")[0])
    every = [*TARGETS, HTTP]
    p.add_argument("targets", nargs="*", metavar="TARGET", help=f"default: all ({', '.join(every)})")
    p.add_argument("--seconds", type=float, default=30.0, help="per target (default 30)")
    p.add_argument("--minutes", type=float, default=None,
                   help="a campaign: M minutes in all, split evenly over the targets, then a coverage report")
    p.add_argument("--corpus", default="fuzz-corpus", help="corpus folder, one sub-folder per target")
    p.add_argument("--coverage", action="store_true", help="replay the corpus under coverage.py and report lines")
    p.add_argument("--replay", action="store_true", help="no fuzzing: only the coverage report of the corpus")
    p.add_argument("--report", metavar="FILE", help="write the numbers as JSON")
    p.add_argument("--rss-mb", type=int, default=None, help="memory limit of a target's process "
                                                           "(default 2048; the .icm side's: 6144)")
    p.add_argument("--timeout", type=int, default=None, help="seconds one input may take (default 10; "
                                                             "the .icm side's: 70, twice the priced limit + 10)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # the child: --worker TARGET CORPUS LIBFUZZER_ARGS…
        _worker(argv[1], argv[2], argv[3:])
        return 0
    args = p.parse_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("icm: error: fuzzing needs Atheris: pip install 'icm[fuzz]'", file=sys.stderr)
        return 2
    names = args.targets or every
    unknown = [n for n in names if n not in every]
    if unknown:
        print(f"icm: error: unknown fuzz target {unknown[0]!r}; known: {', '.join(every)}", file=sys.stderr)
        return 2
    if HTTP in names and importlib.util.find_spec("litserve") is None:
        if args.targets:
            print("icm: error: the http target needs icm serve: pip install 'icm[serve]'", file=sys.stderr)
            return 2
        print("http: skipped (icm serve needs the serve extra: pip install 'icm[serve]')", flush=True)
        names = [n for n in names if n != HTTP]
    seconds = args.seconds if args.minutes is None else 60 * args.minutes / len(names)
    corpus = Path(args.corpus)
    corpus.mkdir(parents=True, exist_ok=True)
    if args.replay:
        report = {"lines": coverage_report([n for n in names if n != HTTP], corpus)}
        if args.report:
            Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
        return 0
    t0 = time.monotonic()
    stats = []
    for name in names:
        if name == HTTP:
            stats.append(run_http(seconds, corpus))
        else:
            stats.append(run_target(name, seconds, corpus, args.rss_mb, args.timeout))
    total = time.monotonic() - t0
    icm_inputs = sum(s["inputs"] for s in stats if s["target"] in ICM_TARGETS)
    print(f"all: {sum(s['inputs'] for s in stats)} inputs in {total:.0f} s"
          + (f" ({icm_inputs} on the .icm side)" if icm_inputs else ""), flush=True)
    report = {"targets": stats, "wall_s": round(total, 1)}
    fuzzed = [s["target"] for s in stats if s["target"] != HTTP]
    if (args.coverage or args.minutes is not None) and fuzzed:
        report["lines"] = coverage_report(fuzzed, corpus)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if all(s["ok"] for s in stats) else 1


if __name__ == "__main__":
    sys.exit(main())
