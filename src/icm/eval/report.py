"""Reports from sweep results: Markdown, the same content as HTML, PNG plots,
and ``report.json`` with every BD and speed number the pages show.

Every number comes from the result JSON files of :mod:`icm.eval.sweep`:
results are grouped by (dataset, task); each group gets

* rate–metric plots of every codec on one axis, against whole-file bpp and
  against payload bpp (no container, header or checksum) — in bits per image
  instead when every image of the group has the same size (Fashion-MNIST) —
  and a third panel zoomed on the models when their curves sit in a corner
  (ending below 40% of the rate axis and spanning under 25% of the metric's);
* a table of BD-rate and BD-metric of every codec against the reference
  (:func:`icm.eval.bd.bd_rate` / :func:`~icm.eval.bd.bd_metric`, pchip, over
  the overlapping range of the primary metric), with a warning where the
  overlap is thin (under half of either curve's metric range) or missing;
  points whose metric does not beat a cheaper point of the same curve are
  left out of BD (and said so), since the interpolation needs a strictly
  increasing metric;
* median encode, decode, task-on-pixels and analyze-from-bitstream times per
  image, so "decode + task on pixels" stands beside "task from bitstream";
* each codec's points.
"""

from __future__ import annotations

import html
import json
import math
import os
import statistics
import warnings
from pathlib import Path

from ..errors import IcmError
from ..tasks import DETECTION_TASKS
from . import bd
from .sweep import ALIASES, REFERENCE, SCHEMA_VERSION

THIN_OVERLAP = 0.5
_POOLED = {"map", "map_50", "mask_map", "mask_map_50"}
_PERCENT = {"top1", "top5", "agreement"} | _POOLED
_NAMES = {
    "psnr": "PSNR (dB)",
    "ms_ssim": "MS-SSIM",
    "ms_ssim_db": "MS-SSIM (dB)",
    "top1": "top-1 accuracy (%)",
    "top5": "top-5 accuracy (%)",
    "agreement": "top-1 agreement with the uncompressed image (%)",
    "map": "box mAP@[.5:.95] (%)",
    "map_50": "box AP@.5 (%)",
    "mask_map": "mask mAP@[.5:.95] (%)",
    "mask_map_50": "mask AP@.5 (%)",
}
_RATES = {"bpp": "whole file", "payload_bpp": "payload"}


def load_results(source) -> list[dict]:
    """Result dicts from a directory (its ``*.json`` result files) or a list of paths."""
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.is_dir():
            raise IcmError(f"{source} is not a directory of icm eval results")
        paths = sorted(root.glob("*.json"))
    else:
        paths = [Path(p) for p in source]
    results = []
    for p in paths:
        try:
            r = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IcmError(f"cannot read {p} as JSON ({e.__class__.__name__})") from None
        if not isinstance(r, dict) or "points" not in r or "codec" not in r:
            continue  # report.json and other files that are not results
        if r.get("schema") != SCHEMA_VERSION:
            raise IcmError(f"{p} has result schema {r.get('schema')}, this icm reads {SCHEMA_VERSION}")
        r["_path"] = str(p)
        results.append(r)
    if not results:
        raise IcmError(f"no icm eval result files in {source}")
    return results


def _curve(result: dict, rate: str, metric: str) -> tuple[list[float], list[float]]:
    pts = sorted((p[rate], p[metric]) for p in result["points"]
                 if p.get(rate) is not None and p.get(metric) is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def bd_curve(result: dict, rate: str, metric: str) -> tuple[list[float], list[float], int]:
    """The points BD is computed on: sorted by rate, keeping only points whose
    metric beats every cheaper point (Bjøntegaard interpolation needs a
    strictly increasing metric; accuracies often plateau).

    Returns:
        ``(rates, metrics, number of points dropped)``.
    """
    rates, metrics = _curve(result, rate, metric)
    keep_r, keep_m = [], []
    for r, m in zip(rates, metrics):
        if not keep_m or m > keep_m[-1]:
            keep_r.append(r)
            keep_m.append(m)
    return keep_r, keep_m, len(rates) - len(keep_r)


def bd_entry(ref: dict, test: dict, rate: str, metric: str) -> dict:
    """BD-rate (%) and BD-metric of ``test`` against ``ref``, with the overlap and a note."""
    r0, m0, d0 = bd_curve(ref, rate, metric)
    r1, m1, d1 = bd_curve(test, rate, metric)
    out = {"codec": test["codec"], "reference": ref["codec"], "rate": rate, "metric": metric,
           "bd_rate_pct": None, "bd_metric": None, "overlap": None, "note": "", "dropped_points": d0 + d1}
    if len(r0) < 2 or len(r1) < 2:
        out["note"] = "needs at least 2 points on each curve"
        return out
    ov = min(bd.overlap(m0, m1), bd.overlap(m1, m0))
    out["overlap"] = ov
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report says it in words instead
            rate_pct = bd.bd_rate(r0, m0, r1, m1)
            metric_d = bd.bd_metric(r0, m0, r1, m1)
    except (ValueError, ZeroDivisionError, IndexError) as e:
        out["note"] = f"BD not computable ({e})"
        return out
    out["bd_rate_pct"] = None if math.isnan(rate_pct) else rate_pct
    out["bd_metric"] = None if math.isnan(metric_d) else metric_d
    if ov <= 0 or out["bd_rate_pct"] is None:
        out["note"] = "curves do not overlap in metric: no BD"
    elif ov < THIN_OVERLAP:
        out["note"] = f"thin overlap: {100 * ov:.0f}% of a curve's {metric} range"
    if d0 + d1:
        dropped = f"{d0 + d1} point(s) with no {metric} gain over a cheaper point left out"
        out["note"] = f"{out['note']}; {dropped}" if out["note"] else dropped
    return out


def speed_entry(result: dict) -> dict:
    """Medians over every (quality, image) row of the result, seconds per image."""
    rows = result["images"]

    def med(values):
        values = [v for v in values if v is not None]
        return float(statistics.median(values)) if values else None

    dec = med(r.get("decode_s") for r in rows)
    task = med(r.get("task_s") for r in rows)
    both = med(r["decode_s"] + r["task_s"] for r in rows if r.get("decode_s") is not None and r.get("task_s") is not None)
    return {"codec": result["codec"], "encode_s_median": med(r.get("encode_s") for r in rows),
            "decode_s_median": dec, "task_s_median": task,
            "decode_task_s_median": both, "analyze_s_median": med(r.get("analyze_s") for r in rows)}


# -- formatting -----------------------------------------------------------------

def fmt_metric(metric: str, v) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}" if metric in _PERCENT else f"{v:.3f}" if metric == "ms_ssim" else f"{v:.2f}"


def fmt_bd_rate(v) -> str:
    return "n/a" if v is None else f"{v:+.2f}%"


def fmt_bd_metric(metric: str, v) -> str:
    if v is None:
        return "n/a"
    if metric in _PERCENT:
        return f"{100 * v:+.2f} pp"
    return f"{v:+.4f}" if metric == "ms_ssim" else f"{v:+.3f} dB"


def _ms(v) -> str:
    return "–" if v is None else f"{1000 * v:.1f}"


def _slug(text: str) -> str:
    s = "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-")
    return s[-60:] or "results"


# -- plots ---------------------------------------------------------------------

def fixed_pixels(group: list[dict]) -> int | None:
    """Pixels per image when every image of every result in ``group`` has one size, else ``None``."""
    sizes = {(row.get("height"), row.get("width")) for r in group for row in r.get("images", [])}
    if len(sizes) != 1:
        return None
    h, w = sizes.pop()
    return h * w if h and w else None


# A zoomed panel is added when the models' rates end below ZOOM_RATE of the rate
# axis and their metric spans under ZOOM_METRIC of the metric axis.
ZOOM_RATE, ZOOM_METRIC = 0.4, 0.25


def zoom_window(group: list[dict], metric: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Whole-file rate and metric limits around the models' curves, or ``None`` when they
    already fill enough of the plot (or there is no model or no anchor)."""
    models = [_curve(r, "bpp", metric) for r in group if r["kind"] == "model"]
    others = [_curve(r, "bpp", metric) for r in group if r["kind"] != "model"]
    mx = [x for xs, _ in models for x in xs]
    my = [y for _, ys in models for y in ys]
    if not mx or not any(xs for xs, _ in others):
        return None
    all_x = [x for xs, _ in models + others for x in xs]
    all_y = [y for _, ys in models + others for y in ys]
    y_span = max(all_y) - min(all_y)
    if max(mx) >= ZOOM_RATE * max(all_x) or (y_span > 0 and max(my) - min(my) >= ZOOM_METRIC * y_span):
        return None
    x0, x1 = 0.0, 1.6 * max(mx)
    inside = [y for xs, ys in models + others for x, y in zip(xs, ys) if x <= x1]
    lo, hi = min(inside), max(inside)
    pad = 0.08 * (hi - lo) if hi > lo else 0.5
    return (x0, x1), (lo - pad, hi + pad)


def plot_group(group: list[dict], metric: str, reference: str, path: Path, title: str) -> None:
    """One PNG: metric against whole-file and against payload rate (bpp, or bits per image
    when all images have one size), plus a third panel zoomed on the models' rates when the
    anchors' high-rate points would otherwise squeeze the models into a corner."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, Agg by default

    scale = 100 if metric in _PERCENT else 1
    pixels = fixed_pixels(group)
    zoom = zoom_window(group, metric)
    panels = [(rate, None) for rate in _RATES] + ([("bpp", zoom)] if zoom else [])
    k = pixels or 1  # bits per image instead of per pixel when every image has one size
    fig = Figure(figsize=(5.5 * len(panels), 4.6))
    for ax, (rate, window) in zip(fig.subplots(1, len(panels)), panels):
        for r in group:
            x, y = _curve(r, rate, metric)
            if not x:
                continue
            style = "o-" if r["kind"] == "model" else ".--"
            lw = 2.2 if r["codec"] == reference else 1.3
            ax.plot([v * k for v in x], [v * scale for v in y], style, lw=lw,
                    label=r["label"] + (" (ref.)" if r["codec"] == reference else ""))
        unit = "bits per image" if pixels else "bits per pixel"
        ax.set_xlabel(f"{unit} ({_RATES[rate]}{', zoomed on the models' if window else ''})")
        ax.set_ylabel(_NAMES.get(metric, metric))
        if window:
            (x0, x1), (y0, y1) = window
            ax.set_xlim(x0 * k, x1 * k)
            ax.set_ylim(y0 * scale, y1 * scale)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- the document, rendered twice ----------------------------------------------

def _md(blocks) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "warn":
            out.append(f"> **Warning:** {b[1]}")
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})")
        elif kind == "table":
            head, rows = b[1], b[2]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)


def _html(blocks, title: str) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           "td:first-child,th:first-child{text-align:left}.warn{background:#fff4d6;padding:6px 10px;"
           "border-left:4px solid #e0a800}img{max-width:100%}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif kind == "warn":
            out.append(f"<p class='warn'><b>Warning:</b> {e(b[1])}</p>")
        elif kind == "img":
            out.append(f"<p><img src='{e(b[1])}' alt='{e(b[2])}'></p>")
        elif kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in b[2]]
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


ALSO_BD = {"mask_map": ("map",)}
"""Metrics that get their own BD table beside a primary one (segmentation: box mAP too)."""


def _bd_blocks(group: list[dict], reference: str, metric: str, entry: dict) -> list[tuple]:
    """The BD table of one metric against ``reference`` (its entries go into ``entry["bd"]``)."""
    blocks = [("h3", f"BD-rate and BD-{metric} against {reference}")]
    ref = next((r for r in group if r["codec"] == reference), None)
    if ref is None:
        return blocks + [("warn", f"the reference {reference!r} is not among these results; "
                                  "no BD table (choose one with --reference)")]
    table, notes = [], []
    for r in group:
        if r is ref:
            continue
        e_file = bd_entry(ref, r, "bpp", metric)
        e_pay = bd_entry(ref, r, "payload_bpp", metric)
        entry["bd"] += [e_file, e_pay]
        table.append([r["label"] + f" ({r['codec']})", fmt_bd_rate(e_file["bd_rate_pct"]),
                      fmt_bd_metric(metric, e_file["bd_metric"]), fmt_bd_rate(e_pay["bd_rate_pct"]),
                      fmt_bd_metric(metric, e_pay["bd_metric"]),
                      "n/a" if e_file["overlap"] is None else f"{100 * e_file['overlap']:.0f}%"])
        if e_file["note"] and e_file["note"] == e_pay["note"]:
            notes.append(f"{r['codec']}: {e_file['note']}")
        else:
            notes += [f"{r['codec']} ({_RATES[e['rate']]} bpp): {e['note']}" for e in (e_file, e_pay) if e["note"]]
    blocks.append(("p", f"Negative BD-rate: fewer bits than {ref['label']} for the same "
                        f"{_NAMES.get(metric, metric)}; BD-{metric}: difference at the same rate. "
                        "pchip interpolation over the overlapping range; points that do not beat a "
                        "cheaper point of their own curve are left out."))
    blocks.append(("table", ["codec", "BD-rate (file)", f"BD-{metric} (file)", "BD-rate (payload)",
                             f"BD-{metric} (payload)", "overlap"], table))
    return blocks + [("warn", n_) for n_ in dict.fromkeys(notes)]


def write_report(results: list[dict], out_dir: str | os.PathLike, reference: str = REFERENCE) -> dict:
    """Write ``report.md``, ``report.html``, ``report.json`` and the PNG plots into ``out_dir``.

    Args:
        results: result dicts (:func:`load_results`).
        reference: codec the BD numbers are measured against (aliases allowed).

    Returns:
        The content of ``report.json``: per group, the BD and speed entries and the plot files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = ALIASES.get(reference, reference)
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["task"]), []).append(r)
    sources = sorted({r.get("_path", "") for r in results} - {""})
    blocks = [("h1", "icm eval report"),
              ("p", "Every number and curve below is read from the sweep result files"
                    + (f" ({', '.join(Path(s).name for s in sources)})" if sources else "")
                    + "; rates are means over images of bits per pixel, counting the whole file or only the "
                      "coded payload; times are medians per image in milliseconds.")]
    summary = {"reference": reference, "groups": []}
    for (dataset, task), group in groups.items():
        seen = {}
        for r in group:
            if r["codec"] in seen:
                raise IcmError(f"two results for codec {r['codec']!r} on {dataset} / {task}: "
                               f"{seen[r['codec']]} and {r.get('_path')}")
            seen[r["codec"]] = r.get("_path")
        group.sort(key=lambda r: (r["kind"] != "model", r["codec"]))
        metrics = list(dict.fromkeys(m for r in group for m in r["metrics"]))
        primary = group[0]["primary_metric"]
        n = max(r["n_images"] for r in group)
        slug = _slug(f"{dataset}-{task}")
        entry = {"dataset": dataset, "task": task, "primary_metric": primary, "n_images": n,
                 "codecs": [r["codec"] for r in group], "plots": [], "bd": [], "speed": []}
        blocks += [("h2", f"{dataset} — {task}"),
                   ("p", f"{n} image{'s' if n != 1 else ''}; codecs: {', '.join(r['label'] + ' (' + r['codec'] + ')' for r in group)}.")]
        unc = next((r["uncompressed"] for r in group if r.get("uncompressed")), None)
        if unc:
            network = "detector" if task in DETECTION_TASKS else "classifier"
            blocks.append(("p", f"The {network} on the uncompressed images: "
                           + ", ".join(f"{_NAMES.get(k, k)} {fmt_metric(k, v)}" for k, v in unc.items()) + "."))
        if len({r["n_images"] for r in group}) > 1:
            blocks.append(("warn", "the codecs were measured on different numbers of images: "
                           + ", ".join(f"{r['codec']} {r['n_images']}" for r in group)))
        blocks.append(("h3", "Rate–metric curves"))
        for m in metrics:
            png = f"{slug}-{_slug(m)}.png"
            over = "over" if m in _POOLED else "mean over"  # mAP pools the detections of all images
            plot_group(group, m, reference, out / png, f"{dataset} — {_NAMES.get(m, m)}, {over} {n} image{'s' if n != 1 else ''}")
            entry["plots"].append(png)
            blocks.append(("img", png, f"{_NAMES.get(m, m)} against bpp"))

        for metric in [primary, *(m for m in ALSO_BD.get(primary, ()) if m in metrics)]:
            blocks += _bd_blocks(group, reference, metric, entry)

        blocks.append(("h3", "Speed (median ms per image)"))
        speed_rows = []
        for r in group:
            s = speed_entry(r)
            entry["speed"].append(s)
            speed_rows.append([r["codec"], _ms(s["encode_s_median"]), _ms(s["decode_s_median"]),
                               _ms(s["task_s_median"]), _ms(s["decode_task_s_median"]), _ms(s["analyze_s_median"])])
        blocks.append(("table", ["codec", "encode", "decode to pixels", "task on pixels",
                                 "decode + task on pixels", "task from bitstream"], speed_rows))
        machines = sorted({r.get("machine", "?") for r in group})
        blocks.append(("p", f"Measured on {'; '.join(machines)}. Times from one sweep compare; across machines they do not."))

        blocks.append(("h3", "Points"))
        pixels = fixed_pixels(group)
        for r in group:
            per_image = ["bits/image", "payload bits/image"] if pixels else []
            head = ["quality", "bpp", "payload bpp", *per_image, *(_NAMES.get(m, m) for m in r["metrics"]),
                    "encode ms", "decode ms" if any("decode_s_median" in p for p in r["points"]) else "analyze ms"]
            rows = [[p["quality"], f"{p['bpp']:.4f}", f"{p['payload_bpp']:.4f}",
                     *([f"{p['bpp'] * pixels:.1f}", f"{p['payload_bpp'] * pixels:.1f}"] if pixels else []),
                     *(fmt_metric(m, p.get(m)) for m in r["metrics"]), _ms(p.get("encode_s_median")),
                     _ms(p.get("decode_s_median", p.get("analyze_s_median")))] for p in r["points"]]
            blocks += [("p", f"{r['label']} ({r['codec']}), settings: {json.dumps(r['settings'], sort_keys=True)}"),
                       ("table", head, rows)]
        summary["groups"].append(entry)

    (out / "report.md").write_text(_md(blocks))
    (out / "report.html").write_text(_html(blocks, "icm eval report"))
    (out / "report.json").write_text(json.dumps(summary, indent=1))
    return summary
