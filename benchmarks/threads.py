#!/usr/bin/env python
"""icm's thread policy idle and beside one busy process, in one run.

Two pieces of small-tensor work that collapse when threads are oversubscribed:

* **refine** — ``codec.encode(dicm-lite0 q2, one 224² photo crop, refine=STEPS)``
  (what ``icm compress --refine`` runs per image);
* **analyze** — ``codec.analyze`` of that crop's plain ``.icm`` file
  (``icm analyze``: entropy decoding, feature decoder, the classifier's tail).

Each is timed in a fresh worker process (model loaded and warmed up first;
the median of ``--repeats`` runs) under these conditions:

1. *idle*, with icm's default policy (``icm.threads.apply()``, what the CLI does);
2. *busy*, the same policy, beside one busy process: a PyTorch matrix-product
   loop at PyTorch's own default thread count (one thread per core), started
   two seconds before the worker;
3. *busy, one thread per core forced* (PyTorch's default, what icm did before
   the policy), with a time limit: the collapse the policy avoids.

The report gives each median, the threads the worker ran with and the
busy/idle ratio that the policy must keep within 2x.  Times are medians; these
machines are noisy.

Usage::

    python benchmarks/threads.py [--steps 20] [--repeats 3] [--out docs/results/threads-benchmark.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

WORKER = r"""
import json, statistics, sys, time
import torch
from icm import codec, threads
from icm.data import five_crops, load_photo, to_tensor

steps, repeats, forced = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
n = threads.apply(forced or None)
model = codec.get_model("dicm-lite0", 2)
x = to_tensor(five_crops(load_photo("skimage:coffee"))[0])[None]
codec.encode(model, x, refine=2)  # warm-up
data = codec.encode(model, x)[0]
codec.analyze(data)
out = {"threads": n, "refine_s": [], "analyze_s": []}
for _ in range(repeats):
    t = time.perf_counter(); codec.encode(model, x, refine=steps); out["refine_s"].append(time.perf_counter() - t)
for _ in range(10 * repeats):
    t = time.perf_counter(); codec.analyze(data); out["analyze_s"].append(time.perf_counter() - t)
out["refine_s"] = statistics.median(out["refine_s"]); out["analyze_s"] = statistics.median(out["analyze_s"])
print(json.dumps(out))
"""

BUSY = r"""
import time, torch
a = torch.randn(512, 512)
while True:
    a @ a
"""


def _env() -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "ICM_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(k, None)  # the policy decides, as for a user who set nothing
    return env


def run_worker(steps: int, repeats: int, forced: int = 0, limit: float = 600.0) -> dict | None:
    try:
        p = subprocess.run([sys.executable, "-c", WORKER, str(steps), str(repeats), str(forced)],
                           capture_output=True, text=True, timeout=limit, env=_env())
    except subprocess.TimeoutExpired:
        return None
    if p.returncode:
        raise SystemExit(f"worker failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def beside_busy(fn):
    busy = subprocess.Popen([sys.executable, "-c", BUSY], env=_env())
    try:
        time.sleep(2.0)
        return fn()
    finally:
        busy.kill()
        busy.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--forced-limit", type=float, default=120.0,
                    help="seconds the forced-threads worker may take beside the busy process")
    ap.add_argument("--settle", type=float, default=240.0,
                    help="seconds to wait at most for the 1-minute load average to fall below 0.5 first")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settle = time.monotonic() + args.settle  # let the 1-minute load average fall back before "idle"
    while os.getloadavg()[0] >= 0.5 and time.monotonic() < settle:
        time.sleep(5)
    idle = run_worker(args.steps, args.repeats)
    busy = beside_busy(lambda: run_worker(args.steps, args.repeats))
    forced = beside_busy(lambda: run_worker(args.steps, args.repeats, forced=cores, limit=args.forced_limit))

    def cell(r, key):
        return f"> {args.forced_limit:.0f} s (stopped)" if r is None else f"{1000 * r[key]:.0f} ms"

    def ratio(r, key):
        return "—" if r is None else f"{r[key] / idle[key]:.2f}×"

    lines = [
        "# Threads: idle and beside one busy process",
        "",
        f"`python benchmarks/threads.py --steps {args.steps} --repeats {args.repeats}`, "
        f"{datetime.date.today().isoformat()}, {platform.platform()}, {cores} cores. "
        "Medians; the busy process is a PyTorch matrix-product loop at PyTorch's default threads.",
        "",
        f"| condition | threads | refine ({args.steps} steps, one 224² crop) | ÷ idle | analyze (one file) | ÷ idle |",
        "|---|---|---|---|---|---|",
    ]
    for name, r, threads in (("idle, icm's default policy", idle, idle["threads"]),
                             ("beside one busy process, icm's default policy", busy, busy["threads"]),
                             ("beside one busy process, one thread per core forced", forced, cores)):
        lines.append(f"| {name} | {threads} | {cell(r, 'refine_s')} | {ratio(r, 'refine_s')} "
                     f"| {cell(r, 'analyze_s')} | {ratio(r, 'analyze_s')} |")
    worst = max(busy["refine_s"] / idle["refine_s"], busy["analyze_s"] / idle["analyze_s"])
    lines += ["", f"Busy / idle with the default policy: at most {worst:.2f}× "
              f"({'within' if worst <= 2 else 'ABOVE'} the 2× the policy is held to)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0 if worst <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
