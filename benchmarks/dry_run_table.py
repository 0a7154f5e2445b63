"""The ``--dry-run`` table of every paper recipe, written into docs/training.md.

    python benchmarks/dry_run_table.py                 # runs `icm train R --dry-run --json` for each
    python benchmarks/dry_run_table.py --from DIR      # or reads DIR/<family>_<recipe>.json made so

Each dry run goes in its own process (a fresh peak-memory count), one after the other.
The table replaces what lies between the two marker lines in docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER = ["bai2022/imagenet-step1", "bai2022/imagenet-step2-q1", "bai2022/imagenet-step2-q2",
         "bai2022/imagenet-step2-q3", "dicm/resnet50-stage1", "dicm/resnet50-stage2", "dicm/resnet50-stage3",
         "dicm/resnet50-stage4", "detection/resnet50-voc-detect", "detection/resnet50-coco-segment"]
BEGIN, END = "<!-- dry-run table: benchmarks/dry_run_table.py -->", "<!-- end of dry-run table -->"


def measure(recipe: str, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "icm.cli", "train", str(ROOT / "configs" / f"{recipe}.yaml"),
                          "--dry-run", "--json", "--steps", str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gib(b) -> str:
    return "–" if b is None else f"{b / 2**30:.1f}"


def _dur(s: float) -> str:
    from icm.train.dryrun import _duration

    return _duration(s)


def table(reports: dict[str, dict]) -> str:
    head = ("| recipe | parameters (trained) | batch × devices | step on this CPU | data / batch | "
            "step's peak memory, GiB (process) | steps / epoch | epoch | schedule |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for name in PAPER:
        r = reports[name]
        rows.append(
            f"| `{name}` | {r['parameters'] / 1e6:.1f} M ({r['trained'] / 1e6:.1f} M) | "
            f"{r['batch_per_device']} × {r['devices'] * r['nodes']} | {_dur(r['step_s'])} | {_dur(r['data_s'])} | "
            f"{_gib(r['step_peak_bytes'])} ({_gib(r['process_peak_bytes'])}) | {r.get('steps_per_epoch', 0):,} | "
            f"{_dur(r['epoch_s']) if 'epoch_s' in r else '–'} | {_dur(r['schedule_s'])} |")
    first = reports[PAPER[0]]
    notes = sorted({n for r in reports.values() for n in r["notes"] if "precision" in n})
    foot = (f"\nMeasured by `icm train CONFIG --dry-run` on {first['device']}, {platform.machine()}, one process, "
            "stand-in data in each recipe's layout, random weights; epoch and schedule projected for the "
            "recipe's devices as if each ran a step as fast as this CPU.")
    if notes:
        foot += " bai2022: " + notes[0].replace("precision ", "") + "."
    return "\n".join([head, *rows]) + "\n" + foot


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="src", default=None, help="read <family>_<recipe>.json files from this folder")
    p.add_argument("--doc", default=str(ROOT / "docs" / "training.md"))
    args = p.parse_args()
    reports = {}
    for name in PAPER:
        if args.src:
            reports[name] = json.loads((Path(args.src) / f"{name.replace('/', '_')}.json").read_text())
        else:
            reports[name] = measure(name, 2 if name.startswith("bai2022") else 3)
        print(f"{name}: step {reports[name]['step_s']:.1f} s", file=sys.stderr)
    doc = Path(args.doc)
    text = doc.read_text()
    i, j = text.index(BEGIN), text.index(END)
    doc.write_text(text[: i + len(BEGIN)] + "\n" + table(reports) + "\n" + text[j:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
