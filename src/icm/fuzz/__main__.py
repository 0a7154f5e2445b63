"""``python -m icm.fuzz [TARGET…] [--seconds S] [--corpus DIR]``: each target under Atheris
for S seconds, one process per target; exit 1 on the first finding (its input is kept
as ``DIR/<target>-crash-…``), 2 when Atheris is missing."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from . import TARGETS, seeds


def _worker(target: str, corpus: str, libfuzzer_args: list[str]) -> None:
    """Runs inside the child process: instrument icm's parsers, then fuzz."""
    import atheris

    from . import check

    # coverage of what loads here: our readers and PIL's decoders (icm itself, and torch with
    # it, are loaded already and stay uninstrumented); an editable install's import hook is
    # not replaced (enable_loader_override=False), or nothing would be instrumented
    with atheris.instrument_imports(enable_loader_override=False):
        from ..pool import containers  # noqa: F401
        from ..teachers import tfjs  # noqa: F401
        from PIL import Image, JpegImagePlugin, PngImagePlugin  # noqa: F401

    def one(data: bytes) -> None:
        check(target, data)

    atheris.Setup([sys.argv[0], corpus, *libfuzzer_args], one)
    atheris.Fuzz()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m icm.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("targets", nargs="*", metavar="TARGET", help=f"default: all ({', '.join(TARGETS)})")
    p.add_argument("--seconds", type=float, default=30.0, help="per target (default 30)")
    p.add_argument("--corpus", default="fuzz-corpus", help="corpus folder, one sub-folder per target")
    p.add_argument("--rss-mb", type=int, default=2048, help="memory limit of a target's process")
    p.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
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
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"icm: error: unknown fuzz target {unknown[0]!r}; known: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        folder = Path(args.corpus) / name
        folder.mkdir(parents=True, exist_ok=True)
        start = seeds(name)
        for s in start:
            (folder / f"seed-{hashlib.sha1(s).hexdigest()[:12]}").write_bytes(s)
        max_len = max(4096, 2 * max(len(s) for s in start))
        before = len(os.listdir(folder))
        cmd = [sys.executable, "-m", "icm.fuzz", "--worker", name, str(folder),
               f"-max_total_time={int(args.seconds)}", f"-max_len={max_len}", f"-rss_limit_mb={args.rss_mb}", f"-timeout={args.timeout}",
               f"-artifact_prefix={Path(args.corpus) / (name + '-')}", "-print_final_stats=1"]
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall = time.monotonic() - t0
        log = r.stdout + r.stderr
        runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
        cov = re.findall(r"cov: (\d+)", log)
        n = int(runs.group(1)) if runs else 0
        print(f"{name}: {n} inputs in {wall:.0f} s ({n / max(wall, 1e-9):.0f}/s), coverage {cov[-1] if cov else '?'} "
              f"edges, corpus {before} -> {len(os.listdir(folder))} files: "
              f"{'ok' if r.returncode == 0 else 'FINDING'}", flush=True)
        if r.returncode != 0:
            failed += 1
            print("\n".join(log.strip().splitlines()[-40:]), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
