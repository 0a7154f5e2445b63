"""What data buys: plain-file agreement of runs that differ only in their training photos.

``python -m icm.train.scaling RECIPE... --out docs/results/scaling-q2.json --plot docs/dicm-scaling.png``
(``--from-json`` to plot runs measured before, ``--control-json`` to draw control runs beside
them, ``--plot-steps`` / ``--plot-title`` for runs of another length or recipe; ``--rate-plot``
draws every run's agreement against bpp instead, ``--line-json``'s runs joined)

For every recipe (a ``dicm`` stage-4 run with ``trainer.keep_checkpoints``), the step
with the lowest validation loss (the val photos only: never a test photo) is picked
from its ``logs/*/metrics.csv``; its checkpoint is rounded as export rounds it, and
real ``.icm`` files are coded and classified from the bitstream on

* ``test-crops`` (the 30 photo-crops of the test photos) and ``labelme-crops``: held
  out, never trained or tuned on; ``photo-crops`` (those 30 and the 20 of the val
  photos, which picked the step) for comparison with earlier figures; and
* ``train-crops``: the five 224² crops of 20 of the run's own training photos
  (a fixed choice: the first 20 by a hash of their names),

each as top-1 agreement with the uncompressed network and whole-file bpp.  The plot
shows agreement against the number of training photos, train and held out side by side.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
from pathlib import Path

import numpy as np
import torch


def best_step(run_dir: Path) -> tuple[int, float, list[tuple[int, float]]]:
    """(step, validation loss) of the lowest validation loss in a run's CSV logs, and the
    whole validation curve."""
    curve = {}
    for f in sorted(glob.glob(str(run_dir / "logs" / "*" / "metrics.csv"))):
        with open(f) as fh:
            for row in csv.DictReader(fh):
                v = row.get("val/loss")
                if v not in (None, ""):
                    curve[int(row["step"]) + 1] = float(v)
    if not curve:
        raise SystemExit(f"{run_dir}: no validation loss logged yet")
    step = min(curve, key=curve.get)
    return step, curve[step], sorted(curve.items())


def _checkpoint(run_dir: Path, step: int) -> Path:
    found = [p for p in glob.glob(str(run_dir / "checkpoints" / "step-step=*.ckpt"))
             if abs(int(Path(p).stem.split("=")[-1].split("-")[0].split(".")[0]) - step) <= 1]
    if not found:
        raise SystemExit(f"{run_dir}: no checkpoint kept at step {step} (trainer.keep_checkpoints)")
    return Path(found[0])


def load_run_model(cfg: dict, ckpt: Path):
    from ..models import create_model
    from .export import load_checkpoint, refresh_tables, round_to_half

    name, quality = cfg["model"]["name"], int(cfg["model"]["quality"])
    model = create_model(name, quality=quality, pretrained=False, **cfg["model"].get("kwargs", {}))
    model.model_name, model.quality = name, quality
    load_checkpoint(model, str(ckpt))
    round_to_half(model, skip=tuple(getattr(model, "unshipped_parts", ())))
    refresh_tables(model)
    return model.eval()


def coded(model, images) -> list[tuple[float, float]]:
    """For each image: (1.0 where the class read from its real ``.icm`` file is the
    uncompressed network's, else 0.0; the file's whole-file bpp)."""
    from .. import codec
    from ..data import to_tensor

    out = []
    for img in images:
        x = to_tensor(img)[None]
        data = codec.encode(model, x)[0]
        with torch.no_grad():
            ref = int(model.classify_pixels(x).argmax(1))
        got = int(codec.analyze(data, model=model, task="classify")["output"].argmax(1))
        out.append((float(got == ref), 8 * len(data) / (img.shape[0] * img.shape[1])))
    return out


def summary(results: list[tuple[float, float]]) -> dict:
    """Top-1 agreement and mean whole-file bpp of :func:`coded` results."""
    return {"images": len(results), "agreement": float(np.mean([a for a, _ in results])),
            "bpp": float(np.mean([b for _, b in results]))}


def agreement(model, images) -> dict:
    """Top-1 agreement of real files with the uncompressed network, and mean whole-file bpp."""
    return summary(coded(model, images))


def train_crops(photos: tuple[str, ...], n: int = 20):
    from ..data import five_crops, load_photo

    chosen = sorted(photos, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:n]
    return [c for s in chosen for c in five_crops(load_photo(s))], chosen


def kept_steps(run_dir: Path) -> list[int]:
    return sorted(int(Path(p).stem.split("=")[-1]) for p in glob.glob(str(run_dir / "checkpoints" / "step-step=*.ckpt")))


def measure(recipe: str, step: int | None = None) -> dict:
    """Figures of a recipe's run at ``step`` (default: its lowest validation loss)."""
    from ..data import recipe_photos
    from ..eval.datasets import labelme_crops, photo_crops
    from .config import load_config

    cfg = load_config(recipe)
    run_dir = Path(cfg["trainer"]["out_dir"])
    best, best_val, curve = best_step(run_dir)
    if step is None:
        step, val = best, best_val
    else:
        val = dict(curve).get(step)
    model = load_run_model(cfg, _checkpoint(run_dir, step))
    photos = recipe_photos(cfg["data"], "train")
    train, chosen = train_crops(photos)
    from ..data import TEST_PHOTOS

    crops = list(photo_crops())
    per_crop = coded(model, [s.image for s in crops])  # test-crops are a subset: coded once
    test = [r for s, r in zip(crops, per_crop) if s.image_id.split("#")[0] in TEST_PHOTOS]
    out = {"recipe": recipe, "train_photos": len(photos), "train_sets": cfg["data"].get("train_photos"),
           "step": step, "best_step": best, "val_loss": val, "val_curve": curve,
           "photo-crops": summary(per_crop),
           "test-crops": summary(test),
           "labelme-crops": agreement(model, [s.image for s in labelme_crops()]),
           "train-crops": {**agreement(model, train), "photos": chosen}}
    return out


def _series(rows: list[dict], key: str, max_step: int):
    """Per run (by training photos): photos, mean over kept steps up to ``max_step``, the
    distances to its lowest and highest, and the value at the step of lowest val loss."""
    runs = sorted({r["recipe"] for r in rows}, key=lambda k: next(r["train_photos"] for r in rows if r["recipe"] == k))
    n, mean, lo, hi, best = [], [], [], [], []
    for k in runs:
        mine = [r for r in rows if r["recipe"] == k and r["step"] <= max_step]
        vals = [100 * r[key]["agreement"] for r in mine]
        n.append(mine[0]["train_photos"])
        mean.append(float(np.mean(vals)))
        lo.append(mean[-1] - min(vals))
        hi.append(max(vals) - mean[-1])
        best.append(next((100 * r[key]["agreement"] for r in mine if r["step"] == r["best_step"]), np.nan))
    return n, mean, lo, hi, best


def _lowest_val_loss(rows: list[dict]) -> tuple[list[int], list[float]]:
    """Per run (by training photos): the lowest val loss of its curve."""
    best = {}
    for r in rows:
        best[r["train_photos"]] = min(v for _, v in r["val_curve"])
    return sorted(best), [best[n] for n in sorted(best)]


def plot(rows: list[dict], path: str, max_step: int = 1500, title: str = "dicm-lite0 q2 (λ 10)",
         control: list[dict] = (), control_label: str = "without CutMix") -> None:
    """Agreement against training photos: for each run the mean over its kept steps up to
    ``max_step`` (the schedule is the same in every run up to there), with the range as a
    bar, and the step of lowest validation loss as a marker.  ``control``: other runs of the
    same sizes drawn in open markers (a recipe without one change)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, colour, label in (("train-crops", "tab:grey", "train-crops (trained on)"),
                               ("test-crops", "tab:blue", "test-crops (held out)"),
                               ("labelme-crops", "tab:green", "labelme-crops (held out)")):
        n, mean, lo, hi, best = _series(rows, key, max_step)
        ax.errorbar(n, mean, yerr=[lo, hi], fmt="o-" if key != "train-crops" else "o--", color=colour, capsize=3,
                    label=label)
        ax.plot(n, best, "*", color=colour, markersize=9)
        if control:
            n, mean, lo, hi, _ = _series(list(control), key, max_step)
            ax.errorbar(n, mean, yerr=[lo, hi], fmt="o:", color=colour, mfc="white", capsize=3, alpha=0.8)
    ax.plot([], [], "*", color="k", label="at the step of lowest val loss")
    if control:
        ax.plot([], [], "o:", color="k", mfc="white", label=control_label)
    # the val photos' loss (20 crops, continuous: the steadiest of these signals) on its own axis
    right = ax.twinx()
    for runs, style in ((rows, "s-"), (list(control), "s:")):
        if runs:
            n, val = _lowest_val_loss(runs)
            right.plot(n, val, style, color="k", mfc="white" if style == "s:" else "k", markersize=4, alpha=0.6)
    right.set_ylabel("lowest val loss (squares; λ·bpp + KL)")
    ax.plot([], [], "s-", color="k", markersize=4, alpha=0.6, label="lowest val loss (right axis)")
    ax.set_xlabel("training photos (train split + wallpapers + a share of the pool)")
    ax.set_ylabel("top-1 agreement from plain .icm files (%)")
    ax.set_title(f"{title}: mean and range over steps 500–{max_step}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def picked(rows: list[dict]) -> list[dict]:
    """Per recipe, its row at the step its validation loss picked (rows of other steps left out),
    in the order the recipes first appear."""
    out: dict[str, dict] = {}
    for r in rows:
        if r["step"] == r["best_step"]:
            out.setdefault(r["recipe"], r)
    return list(out.values())


TARGETS = ((0.20, 55.0), (0.35, 75.0))
"""The low-rate targets: (at most this bpp, at least this top-1 agreement in %)."""


def plot_rate(rows: list[dict], path: str, line: list[dict] = (), line_label: str = "shipped",
              title: str = "plain files of every recipe measured") -> None:
    """Agreement against whole-file bpp on the photo-crops and the labelme-crops, one point per
    run at the step its val loss picked (:func:`picked`), ``line``'s runs joined in bpp order,
    and :data:`TARGETS` shaded (where a point must fall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
    joined = picked(list(line))
    shown = {r["recipe"] for r in joined}
    others = [r for r in picked(list(rows)) if r["recipe"] not in shown]
    for ax, key in zip(axes, ("photo-crops", "labelme-crops")):
        for bpp, agree in TARGETS:
            ax.fill_between([0, bpp], agree, 100, color="tab:green", alpha=0.08, lw=0)
            ax.plot([bpp, bpp, 0], [100, agree, agree], color="tab:green", lw=0.8, alpha=0.6)
        ax.plot([r[key]["bpp"] for r in others], [100 * r[key]["agreement"] for r in others], "o", color="tab:grey",
                alpha=0.8, label="other recipes (step picked by val loss)")
        for r in others:
            name = "/".join(Path(r["recipe"]).with_suffix("").parts[-2:]).replace("lite0s8-", "")
            ax.annotate(name, (r[key]["bpp"], 100 * r[key]["agreement"]),
                        fontsize=5.5, alpha=0.7, xytext=(3, 2), textcoords="offset points")
        ref = sorted(joined, key=lambda r: r[key]["bpp"])
        if ref:
            ax.plot([r[key]["bpp"] for r in ref], [100 * r[key]["agreement"] for r in ref], "o-", color="k",
                    label=line_label)
        n = (ref or others)[0][key]["images"] if (ref or others) else 0
        ax.set_title(f"{key} ({n} crops, held out)", fontsize=9)
        ax.set_xlabel("whole-file bpp")
        ax.set_xlim(0.08, 0.5)
        ax.set_ylim(20, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 agreement with the uncompressed network (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    targets = ", ".join(f"≥ {a:.0f}% at ≤ {b:.2f} bpp" for b, a in TARGETS)
    fig.suptitle(f"{title}; shaded: the targets ({targets})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="*")
    p.add_argument("--out", required=True, help="JSON of every run's figures")
    p.add_argument("--plot", default=None, help="PNG: agreement against training photos")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", choices=("best", "all"), default="best",
                   help="best: the step of lowest validation loss; all: every kept checkpoint")
    p.add_argument("--from-json", nargs="*", default=(), help="earlier --out files to merge (and plot)")
    p.add_argument("--plot-title", default="dicm-lite0 q2 (λ 10)", help="what the plot's runs are")
    p.add_argument("--plot-steps", type=int, default=1500, help="the plot averages kept steps up to this one")
    p.add_argument("--control-json", nargs="*", default=(),
                   help="--out files of control runs, drawn in open markers beside the others")
    p.add_argument("--control-label", default="without CutMix", help="what the control runs leave out")
    p.add_argument("--rate-plot", default=None,
                   help="PNG: agreement against bpp of every run at its picked step, the targets shaded")
    p.add_argument("--line-json", nargs="*", default=(), help="--out files of the runs --rate-plot joins by a line")
    p.add_argument("--line-label", default="shipped", help="what the joined runs are")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [r for f in args.from_json for r in json.loads(Path(f).read_text())]
    for r in args.recipes:
        from .config import load_config

        steps = [None] if args.steps == "best" else kept_steps(Path(load_config(r)["trainer"]["out_dir"]))
        for step in steps:
            rows.append(measure(r, step))
            m = rows[-1]
            print(f"{r}: {m['train_photos']} photos, step {m['step']} (val {m['val_loss']:.3f}): "
              + ", ".join(f"{k} {100 * m[k]['agreement']:.0f}% at {m[k]['bpp']:.3f} bpp"
                          for k in ("train-crops", "test-crops", "photo-crops", "labelme-crops")), flush=True)
            Path(args.out).write_text(json.dumps(rows, indent=1))
    Path(args.out).write_text(json.dumps(rows, indent=1))
    if args.plot:
        control = [r for f in args.control_json for r in json.loads(Path(f).read_text())]
        plot(rows, args.plot, args.plot_steps, args.plot_title, control, args.control_label)
    if args.rate_plot:
        line = [r for f in args.line_json for r in json.loads(Path(f).read_text())]
        plot_rate(rows, args.rate_plot, line, args.line_label)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
