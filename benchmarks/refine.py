#!/usr/bin/env python
"""Encoder-side refinement of ``dicm-lite0``: its cost per crop before and after, in one run,
and the sweep that chose the new setting.

``cost`` (default) times, crop by crop and alternating, on the held-out photo crops
(``icm eval``'s ``photo-crops``: never trained or tuned on):

* **before** — the setting the project shipped first: 100 Adam steps at step size
  0.02, temperature 0.52 → 0.02, the classification objective alone
  (``--refine-for classify``);
* **after** — today's default, the model's ``refine_steps`` (8) steps of the joint
  objective (class distribution + detection stage features, the shipped heads
  finding the boxes), refining a batch one image at a time;
* **after, batched** — the same on all crops at once in one chunk (what a GPU would
  do; on a CPU it is slower per crop);
* **plain** — no refinement, for scale.

It reports each one's median seconds per crop, the ratio before/after, and for each
the mean bits per pixel of the real files (header included) and the top-1 agreement
of the decoded class with the uncompressed network's.

``tune`` sweeps steps and step size on crops of the *training* photos (never the
held-out ones) and reports the mean real cost ``λ·bpp + KL`` of the coded files,
their rate and agreement: how ``refine_steps``, ``refine_tau`` and ``refine_lr`` were chosen.

Usage::

    python benchmarks/refine.py [cost] [--quality 3] [--crops 20] [--out docs/results/refine-benchmark.md]
    python benchmarks/refine.py tune [--quality 3] [--crops 16] [--steps 5 10 20] [--lrs 0.02 0.05 0.1]

Run it with nothing else busy; it sets one thread (``--threads``).  Times are medians;
these machines are noisy.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from icm import codec
from icm.data import five_crops, load_photo, photo_sources, to_tensor
from icm.eval.datasets import photo_crops
from icm.refine import DEFAULT_TAU, default_steps


def held_out_crops(n: int) -> torch.Tensor:
    """The first ``n`` photo-crops, spread over the photos (every fifth crop first)."""
    items = list(photo_crops())
    order = [i for k in range(5) for i in range(k, len(items), 5)][:n]
    return torch.stack([to_tensor(items[i][1]) for i in order])


def training_crops(n: int) -> torch.Tensor:
    """``n`` 224² crops of the training photos: centre crops first, then corners."""
    sources = photo_sources("train")
    out = []
    for k in (4, 0, 3, 1, 2):  # five_crops: four corners, then the centre at index 4
        for s in sources:
            out.append(to_tensor(five_crops(load_photo(s))[k]))
            if len(out) == n:
                return torch.stack(out)
    return torch.stack(out)


def measure(model, files: list[bytes], x: torch.Tensor) -> dict:
    """Mean bpp of the files, top-1 agreement and mean real cost ``λ·bpp + KL``."""
    with torch.no_grad():
        log_p = F.log_softmax(model.classify_pixels(x), dim=1)
    bpp, agree, cost = [], [], []
    for i, f in enumerate(files):
        logits = codec.analyze(f, model=model)["output"]
        log_q = F.log_softmax(logits, dim=1)
        b = 8 * len(f) / (x.shape[-2] * x.shape[-1])
        kl = float((log_p[i].exp() * (log_p[i] - log_q[0])).sum())
        bpp.append(b)
        agree.append(int(logits.argmax(1)) == int(log_p[i].argmax()))
        cost.append(model.lmbda * b + kl)
    return {"bpp": float(np.mean(bpp)), "agree": float(np.mean(agree)), "cost": float(np.mean(cost))}


def _one_by_one(encode, x: torch.Tensor) -> tuple[list[bytes], list[float]]:
    files, times = [], []
    for i in range(x.shape[0]):
        t = time.perf_counter()
        files.append(encode(x[i: i + 1])[0])
        times.append(time.perf_counter() - t)
    return files, times


def cost(args) -> str:
    model = codec.get_model("dicm-lite0", args.quality)
    x = held_out_crops(args.crops)
    codec.encode(model, x[:1], refine=1)  # load the shipped heads and warm up
    steps = default_steps(model)
    settings = {
        "before: 100 steps, step 0.02, temperature 0.52 → 0.02, classify only": lambda v: _with(
            model, lambda: codec.encode(model, v, refine=100, task="classify"), refine_lr=0.02, refine_tau=DEFAULT_TAU),
        f"after: {steps} steps, step {model.refine_lr}, temperature {model.refine_tau[0]} → {model.refine_tau[1]}, "
        "all tasks": lambda v: codec.encode(model, v, refine=steps),
        "plain (no refinement)": lambda v: codec.encode(model, v),
    }
    files = {k: [] for k in settings}
    times = {k: [] for k in settings}
    for i in range(x.shape[0]):  # alternate the settings crop by crop: drift hits all alike
        for k, enc in settings.items():
            t = time.perf_counter()
            files[k].append(enc(x[i: i + 1])[0])
            times[k].append(time.perf_counter() - t)
    batched = f"after, the {x.shape[0]} crops in one chunk"
    from icm.refine import refine_latents
    from icm.tasks.refine import joint_objective

    objective = functools.partial(joint_objective, model=model, heads=codec.get_heads(model))
    t = time.perf_counter()
    y, _ = refine_latents(model, x, steps=steps, objective=objective, chunk=x.shape[0])
    batched_s = (time.perf_counter() - t) / x.shape[0]
    after = next(k for k in settings if k.startswith("after"))
    before = next(k for k in settings if k.startswith("before"))
    ratio = statistics.median(times[before]) / statistics.median(times[after])
    lines = [
        "# Encoder-side refinement: cost per crop, before and after",
        "",
        f"`python benchmarks/refine.py cost --quality {args.quality} --crops {args.crops}` on "
        f"{datetime.date.today().isoformat()}, {platform.machine()} CPU, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}; dicm-lite0 quality {args.quality}; the first {x.shape[0]} held-out "
        "photo-crops (every photo's five crops in turn); settings alternate crop by crop.",
        "",
        "| setting | median s per crop | mean bpp (whole files) | top-1 agreement |",
        "| --- | --- | --- | --- |",
    ]
    for k in settings:
        m = measure(model, files[k], x)
        lines.append(f"| {k} | {statistics.median(times[k]):.3f} | {m['bpp']:.3f} | {m['agree']:.0%} |")
    lines.append(f"| {batched} (latents only, not coded) | {batched_s:.3f} (mean) | – | – |")
    lines += ["", f"**before / after: {ratio:.1f}×** cheaper per crop (medians)."]
    return "\n".join(lines) + "\n"


def _with(model, fn, **attrs):
    """``fn()`` with the model's attributes ``attrs`` set for the call."""
    old = {k: getattr(model, k) for k in attrs}
    for k, v in attrs.items():
        setattr(model, k, v)
    try:
        return fn()
    finally:
        for k, v in old.items():
            setattr(model, k, v)


def tune(args) -> str:
    model = codec.get_model("dicm-lite0", args.quality)
    x = training_crops(args.crops)
    codec.encode(model, x[:1], refine=1)
    lines = [
        "# Encoder-side refinement: steps and step size",
        "",
        f"`python benchmarks/refine.py tune --quality {args.quality} --crops {args.crops}` on "
        f"{datetime.date.today().isoformat()}, {platform.machine()} CPU, {torch.get_num_threads()} thread(s); "
        f"{x.shape[0]} crops of the training photos; the joint objective (all tasks); cost = mean λ·bpp + KL "
        f"of the coded files (λ = {model.lmbda}).",
        "",
        "| steps | step size | mean cost | mean bpp | top-1 agreement | median s per crop |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    files, times = _one_by_one(lambda v: codec.encode(model, v), x)
    m = measure(model, files, x)
    lines.append(f"| 0 | – | {m['cost']:.3f} | {m['bpp']:.3f} | {m['agree']:.0%} | {statistics.median(times):.3f} |")
    print(lines[-1], flush=True)
    for steps in args.steps:
        for lr in args.lrs:
            files, times = _one_by_one(
                lambda v: _with(model, lambda: codec.encode(model, v, refine=steps), refine_lr=lr), x)
            m = measure(model, files, x)
            lines.append(f"| {steps} | {lr} | {m['cost']:.3f} | {m['bpp']:.3f} | {m['agree']:.0%} | "
                         f"{statistics.median(times):.3f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", nargs="?", choices=("cost", "tune"), default="cost")
    p.add_argument("--quality", type=int, default=3)
    p.add_argument("--crops", type=int, default=None, help="crops (default: cost 20, tune 16)")
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    args.crops = args.crops or (20 if args.mode == "cost" else 16)
    torch.set_num_threads(args.threads)
    report = (cost if args.mode == "cost" else tune)(args)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
