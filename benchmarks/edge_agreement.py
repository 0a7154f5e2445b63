#!/usr/bin/env python
"""Does icm-edge write the files ``icm compress`` writes?  And where not, what does it cost?

Run in a Python with icm (for ``icm compress`` and decoding), pointing at an
``icm-edge`` installed elsewhere (a venv with ``pip install ./edge`` only)::

    python benchmarks/edge_agreement.py --icm-edge /tmp/edge-venv/bin/icm-edge --work /tmp/edge-agreement \\
        [--json docs/results/edge-agreement.json]

What it codes, with both senders (``icm --threads 1 compress`` and ``icm-edge compress``):

* the photo-crops (:func:`icm.eval.datasets.photo_crops`: the held-out test and val
  photos, five 224² crops each; the val photos are Debian's ``opencv-doc``) with
  ``dicm-lite0`` at every shipped quality;
* the bundled sample photos (:func:`icm.samples.sample_paths`) with ``hyperprior`` at
  every shipped quality.

Then it decodes every file of both with icm (one thread) and reports, per model
and quality: how many files are byte-identical; for ``dicm-lite0`` how often the
edge file's top-1 class is the torch file's; for ``hyperprior`` the PSNR of each
decoded file against its photo and the difference (edge − torch); the bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _icm() -> list[str]:
    script = Path(sys.executable).with_name("icm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "icm.cli"]


def _crops(folder: Path) -> list[Path]:
    """The photo-crops as PNG files (lossless: both senders read the same pixels)."""
    from PIL import Image

    from icm.eval.datasets import photo_crops

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in photo_crops():
        p = folder / (sample[0].replace(":", "-").replace("#", "-").replace("/", "-") + ".png")
        if not p.exists():
            Image.fromarray(sample[1]).save(p)
        paths.append(p)
    return paths


def _compress(argv: list[str], images: list[Path], model: str, quality: int, out: Path) -> float:
    t = time.perf_counter()
    p = subprocess.run([*argv, "compress", *map(str, images), "-m", model, "-q", str(quality),
                        "--out-dir", str(out), "-f"], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} compress failed:\n{p.stderr}")
    return time.perf_counter() - t


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _compare(model: str, quality: int, images: list[Path], edge_dir: Path, torch_dir: Path) -> dict:
    from icm import codec

    row = {"model": model, "quality": quality, "files": len(images), "identical": 0, "decoded": 0,
           "edge_bytes": 0, "torch_bytes": 0, "differing_symbols": []}
    if model == "dicm-lite0":
        row.update(top1_agree=0)
    else:
        row.update(psnr_edge=[], psnr_torch=[])
    for img in images:
        a = (edge_dir / (img.stem + ".icm")).read_bytes()
        b = (torch_dir / (img.stem + ".icm")).read_bytes()
        row["identical"] += a == b
        row["edge_bytes"] += len(a)
        row["torch_bytes"] += len(b)
        if model == "dicm-lite0":
            ours, theirs = codec.analyze(a), codec.analyze(b)
            row["decoded"] += 1
            row["top1_agree"] += int(ours["output"].argmax()) == int(theirs["output"].argmax())
            ya = codec.decode(a, pixels=False)["y_hat"]
            yb = codec.decode(b, pixels=False)["y_hat"]
        else:
            ours, theirs = codec.decode(a), codec.decode(b)
            row["decoded"] += 1
            ref = codec.read_rgb(img)
            row["psnr_edge"].append(_psnr(codec.to_uint8(ours["x_hat"]), ref))
            row["psnr_torch"].append(_psnr(codec.to_uint8(theirs["x_hat"]), ref))
            ya, yb = ours["y_hat"], theirs["y_hat"]
        if a != b:
            row["differing_symbols"].append(int((ya != yb).sum()))
    if model != "dicm-lite0":
        d = np.array(row["psnr_edge"]) - np.array(row["psnr_torch"])
        row["psnr_diff_mean"], row["psnr_diff_max_abs"] = float(d.mean()), float(np.abs(d).max())
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--icm-edge", required=True, help="the icm-edge command of a venv with pip install ./edge only")
    ap.add_argument("--work", type=Path, required=True, help="folder for the crops and the files")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = ap.parse_args(argv)

    from icm import threads
    from icm.models import has_weights, model_info
    from icm.samples import sample_paths

    threads.apply(1)
    crops = _crops(args.work / "crops")
    plan = [("dicm-lite0", q, crops) for q in model_info("dicm-lite0").qualities if has_weights("dicm-lite0", q)]
    plan += [("hyperprior", q, sample_paths()) for q in model_info("hyperprior").qualities
             if has_weights("hyperprior", q)]
    rows = []
    for model, q, images in plan:
        edge_dir, torch_dir = args.work / "edge" / f"{model}-q{q}", args.work / "torch" / f"{model}-q{q}"
        t_edge = _compress([args.icm_edge], images, model, q, edge_dir)
        t_torch = _compress([*_icm(), "--threads", "1"], images, model, q, torch_dir)
        row = _compare(model, q, images, edge_dir, torch_dir)
        row.update(edge_seconds=round(t_edge, 2), torch_seconds=round(t_torch, 2))
        rows.append(row)
        extra = (f"top-1 agree {row['top1_agree']}/{row['files']}" if model == "dicm-lite0" else
                 f"PSNR edge − torch mean {row['psnr_diff_mean']:+.4f} dB, max |·| {row['psnr_diff_max_abs']:.4f} dB")
        print(f"{model} q{q}: {row['identical']}/{row['files']} byte-identical, {row['decoded']} decoded, "
              f"{extra}, bytes edge/torch {row['edge_bytes']}/{row['torch_bytes']}, "
              f"differing symbols {row['differing_symbols']}", flush=True)
    for model in ("dicm-lite0", "hyperprior"):
        mine = [r for r in rows if r["model"] == model]
        same, n = sum(r["identical"] for r in mine), sum(r["files"] for r in mine)
        print(f"{model}: {same}/{n} files byte-identical ({100 * same / n:.1f}%)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
