"""The images bundled with icm: held-out sample photos and Fashion-MNIST test images."""

from __future__ import annotations

import json
import functools
from importlib import resources
from pathlib import Path


def sample_paths() -> list[Path]:
    """The bundled sample photos (held out from all training)."""
    root = resources.files("icm.samples")
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".png"))


def fashion_mnist_samples() -> list[tuple[Path, int, str]]:
    """The bundled Fashion-MNIST test images: ``(path, label, class name)``, one per class."""
    root = resources.files("icm.samples.fashion_mnist")
    meta = json.loads(root.joinpath("samples.json").read_text())["images"]
    return [(Path(str(root.joinpath(name))), m["label"], m["class"]) for name, m in sorted(meta.items())]


REPORTS = {  # report folder under docs/results -> (codec whose BD-rate is quoted, its metric, what it says)
    "photo-crops-classify": ("dicm-lite0", "agreement", "top-1 agreement, 50 held-out photo crops"),
    "synthetic-segment": ("dicm-lite0", "map", "box mAP, 200 held-out synthetic pictures"),
    "fashion-mnist-classify": ("bai2022-fmnist", "top1", "top-1 accuracy, 10,000 Fashion-MNIST test images"),
    "photos-vs-jpeg": ("hyperprior", "psnr", "PSNR, the six held-out test photos"),
}


@functools.lru_cache(maxsize=1)
def committed_reports() -> dict:
    """The figures the demo quotes from ``docs/results`` (bundled as ``icm/samples/reports.json``,
    made by :func:`summarise_reports` and checked against the reports by the tests)."""
    return json.loads(resources.files("icm.samples").joinpath("reports.json").read_text())


def summarise_reports(results: str | Path) -> dict:
    """What :func:`committed_reports` holds, computed from a ``docs/results`` folder."""
    results = Path(results)
    out = {}
    for folder, (codec_name, metric, what) in REPORTS.items():
        rep = json.loads((results / folder / "report.json").read_text())
        (group,) = rep["groups"]
        (bd,) = [b for b in group["bd"] if (b["codec"], b["rate"], b["metric"]) == (codec_name, "bpp", metric)]
        out[folder] = {"codec": codec_name, "reference": bd["reference"], "metric": metric, "what": what,
                       "bd_rate_pct": round(bd["bd_rate_pct"], 1), "note": bd.get("note", "")}
    sweep = json.loads((results / "photo-crops-classify" / "photo-crops--classify--dicm-lite0.json").read_text())
    from ..data import TEST_PHOTOS

    per = {}
    for im in sweep["images"]:
        if im["image"].split("#")[0] in TEST_PHOTOS:
            per.setdefault(im["image"], {})[str(im["quality"])] = [im["bytes"], int(im["agreement"])]
    out["photo-crops-classify"]["per_image"] = {"dicm-lite0": per}
    return out


def report_line(folder: str) -> str:
    """One line quoting a committed report's headline (the demo prints it)."""
    r = committed_reports()[folder]
    note = f"; {r['note']}" if r["note"] else ""
    return (f"committed report (docs/results/{folder}, {r['what']}): {r['codec']} BD-rate {r['bd_rate_pct']:+.1f}% "
            f"against {r['reference']}, whole files{note}")
