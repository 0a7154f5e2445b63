#!/usr/bin/env python
"""Encode time per 224² crop: ``icm-edge compress`` against ``icm compress``, cold start included.

Both are run as fresh processes, at one thread each (``icm --threads 1``; icm-edge's
default), on 224² crops of the bundled sample photos (:func:`icm.data.five_crops`:
20 crops), in one run on one machine:

* **one crop per process** — what a device pays to code a picture when it wakes:
  interpreter, imports, model loading and the encode;
* **20 crops per process** — the same start-up shared by a batch: its time per crop.

Rounds are interleaved (one run of each sender per round) so that a change in the
machine's load touches both alike; the report gives medians and their ratio
edge / icm.  Ratios, not absolute times, are what this measures.

Usage (in a Python with icm; icm-edge from a venv with ``pip install ./edge`` only)::

    python benchmarks/edge_encode.py --icm-edge /tmp/edge-venv/bin/icm-edge [--model dicm-lite0] [-q 3] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _icm() -> list[str]:
    script = Path(sys.executable).with_name("icm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "icm.cli"]


def _crops(folder: Path) -> list[Path]:
    from PIL import Image

    from icm.data import five_crops
    from icm.images import read_rgb
    from icm.samples import sample_paths

    out = []
    for p in sample_paths():
        for k, crop in enumerate(five_crops(read_rgb(p))):
            dest = folder / f"{p.stem}-{k}.png"
            Image.fromarray(crop).save(dest)
            out.append(dest)
    return out


def _timed(argv: list[str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} … failed:\n{p.stderr}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--icm-edge", required=True, help="the icm-edge command of a venv with pip install ./edge only")
    ap.add_argument("-m", "--model", default="dicm-lite0")
    ap.add_argument("-q", "--quality", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7, help="runs of each sender per measure (default 7)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        crops = _crops(tmp)
        senders = {"icm-edge": [args.icm_edge], "icm": [*_icm(), "--threads", "1"]}
        opts = ["-m", args.model, "-q", str(args.quality), "-f"]
        one = {k: [] for k in senders}
        batch = {k: [] for k in senders}
        for r in range(args.rounds):
            crop = crops[r % len(crops)]
            for name, cmd in senders.items():
                one[name].append(_timed([*cmd, "compress", str(crop), *opts, "-o", str(tmp / f"{name}.icm")]))
            for name, cmd in senders.items():
                out = tmp / name
                out.mkdir(exist_ok=True)
                batch[name].append(_timed([*cmd, "compress", *map(str, crops), *opts, "--out-dir", str(out)])
                                   / len(crops))
    print(f"{args.model} q{args.quality}, 224x224 crops, one thread, median of {args.rounds} interleaved rounds")
    for label, runs in (("one crop per process", one), (f"{len(crops)} crops per process, per crop", batch)):
        e, t = statistics.median(runs["icm-edge"]), statistics.median(runs["icm"])
        print(f"  {label:<34} icm-edge {e * 1000:8.1f} ms   icm {t * 1000:8.1f} ms   ratio {e / t:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
