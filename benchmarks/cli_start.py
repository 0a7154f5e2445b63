#!/usr/bin/env python
"""How long the command line takes to answer what needs no network, in one run.

Four commands, each run as a fresh process (what a user or a script pays):

* ``python -c pass`` — the interpreter alone, the floor every command stands on;
* ``icm --help``;
* ``icm info FILE`` — a real ``.icm`` file, made first with ``icm compress``
  (hyperprior, a bundled sample photo, one thread);
* a header refusal — ``icm analyze`` of a file whose header declares
  65536x4096 pixels (refused with exit status 2 from its header alone).

The rounds are interleaved (one run of each command per round) so that a
change in the machine's load touches every command alike; the report gives
each command's median wall time and its ratio to ``python -c pass``.  Ratios,
not absolute times, are what this measures: the machine may be busy.

Usage::

    python benchmarks/cli_start.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _icm() -> list[str]:
    script = Path(sys.executable).with_name("icm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "icm.cli"]


def _files(tmp: Path, env: dict) -> tuple[Path, Path]:
    from importlib import resources

    from icm import bitstream
    from icm.models import model_info

    sample = resources.files("icm.samples").joinpath("coffee.png")
    good = tmp / "coffee.icm"
    subprocess.run([*_icm(), "compress", str(sample), "-m", "hyperprior", "-q", "1", "-o", str(good)],
                   env=env, check=True, capture_output=True)
    huge = tmp / "huge.icm"
    header = bitstream.Header(model_info("dicm-lite0").model_id, 1, 4096, 65536)
    huge.write_bytes(bitstream.pack(header, [bytes(16)]))
    return good, huge


def _time(cmd: list[str], env: dict, expect: int) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    dt = time.perf_counter() - t
    if p.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)}: exit status {p.returncode}, expected {expect}\n{p.stderr}")
    return dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="runs of each command (default 7)")
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        good, huge = _files(Path(tmp), env)
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], 0),
            "icm --help": ([*_icm(), "--help"], 0),
            "icm info FILE": ([*_icm(), "info", str(good)], 0),
            "header refusal (icm analyze, 65536x4096 declared)": ([*_icm(), "analyze", str(huge)], 2),
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, (cmd, expect) in commands.items():
                times[name].append(_time(cmd, env, expect))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    base = statistics.median(times["python -c pass"])
    print(f"{args.repeats} runs of each, interleaved; {os.cpu_count()} cores, 1-minute load {load:.2f} at the end")
    print(f"{'command':<52} {'median':>9} {'min':>9} {'x python':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<52} {med:>8.3f}s {min(ts):>8.3f}s {med / base:>8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
