"""Rate–PSNR of the shipped ``hyperprior`` on the held-out photos, beside
Pillow JPEG and pillow-heif HEVC 4:4:4, with Bjøntegaard deltas.

    python -m icm.eval.photo_rd --out docs/results/hyperprior

writes ``hyperprior.json`` (every point of every image), ``hyperprior.md``
(the BD table, numbers read from the JSON) and ``hyperprior.png`` (the curves).
Every rate counts whole files, headers included.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
from pathlib import Path

import numpy as np
import torch

from ..data import TEST_PHOTOS, load_photo
from ..demo import jpeg_bytes, psnr
from .anchors import HEVC_PARAMS, get_anchor  # noqa: F401  (HEVC_PARAMS: kept importable)
from .bd import bd_metric, bd_rate

JPEG_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
HEVC_QPS = (22, 26, 30, 34, 38, 42, 46)


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def hevc_bytes(img: np.ndarray, qp: int) -> bytes:
    """HEVC 4:4:4 through pillow-heif with the fair settings of DESIGN.md (:class:`icm.eval.anchors.HEVC`)."""
    return get_anchor("hevc").encode(img, qp)


def _hevc_decode(data: bytes) -> np.ndarray:
    return get_anchor("hevc").decode(data)


def measure(sources=TEST_PHOTOS, model_name: str = "hyperprior") -> dict:
    from tqdm import tqdm

    from .. import codec
    from ..models import has_weights, model_info

    qualities = [q for q in model_info(model_name).qualities if has_weights(model_name, q)]
    codecs: dict[str, dict] = {model_name: {}, "jpeg420": {}, "jpeg444": {}, "hevc444": {}}
    for src in tqdm(sources, desc="photos"):
        img = load_photo(src)
        h, w = img.shape[:2]
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255

        def add(name, setting, data, rec):
            codecs[name].setdefault(str(setting), []).append(
                {"image": src, "bytes": len(data), "bpp": 8 * len(data) / (h * w), "psnr": psnr(img, rec)}
            )

        for q in qualities:
            model = codec.get_model(model_name, q)
            data = codec.encode(model, x)[0]
            add(model_name, q, data, codec.to_uint8(codec.decode(data, model=model)["x_hat"]))
        for q in JPEG_QUALITIES:
            d = jpeg_bytes(img, q, subsampling=2)
            add("jpeg420", q, d, _decode(d))
            d = jpeg_bytes(img, q, subsampling=0)
            add("jpeg444", q, d, _decode(d))
        for qp in HEVC_QPS:
            d = hevc_bytes(img, qp)
            add("hevc444", qp, d, _hevc_decode(d))
    curves = {}
    for name, settings in codecs.items():
        pts = [(np.mean([r["bpp"] for r in rows]), np.mean([r["psnr"] for r in rows]), s) for s, rows in settings.items()]
        pts.sort()
        curves[name] = {"setting": [p[2] for p in pts], "bpp": [p[0] for p in pts], "psnr": [p[1] for p in pts]}
    return {"images": list(sources), "codecs": codecs, "curves": curves,
            "machine": platform.platform(), "torch": torch.__version__}


def bd_table(result: dict, reference: str) -> list[dict]:
    ref = result["curves"][reference]
    rows = []
    for name, c in result["curves"].items():
        if name == reference:
            continue
        rows.append({
            "codec": name,
            "reference": reference,
            "bd_rate_pct": bd_rate(ref["bpp"], ref["psnr"], c["bpp"], c["psnr"]),
            "bd_psnr_db": bd_metric(ref["bpp"], ref["psnr"], c["bpp"], c["psnr"]),
        })
    return rows


def write_report(result: dict, out: Path, model_name: str = "hyperprior") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    result["bd"] = {ref: bd_table(result, ref) for ref in ("jpeg420", "hevc444")}
    (out / f"{model_name}.json").write_text(json.dumps(result, indent=1))
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for name, c in result["curves"].items():
        ax.plot(c["bpp"], c["psnr"], "o-" if name == model_name else ".--", label=name)
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel("PSNR (dB, RGB)")
    ax.set_xlim(0, 2.0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{len(result['images'])} held-out photos, mean over images")
    fig.tight_layout()
    fig.savefig(out / f"{model_name}.png", dpi=120)
    lines = [f"# {model_name}: rate–PSNR on held-out photos", "",
             f"Images: {', '.join(result['images'])} (never used for training).",
             "Rates count whole files (headers included); curves are means over images.", "",
             f"![rate-PSNR]({model_name}.png)", "", "| codec | reference | BD-rate | BD-PSNR |", "|---|---|---|---|"]
    for ref, rows in result["bd"].items():
        for r in rows:
            lines.append(f"| {r['codec']} | {r['reference']} | {r['bd_rate_pct']:+.1f}% | {r['bd_psnr_db']:+.2f} dB |")
    lines += ["", f"| {model_name} quality | bpp | PSNR |", "|---|---|---|"]
    c = result["curves"][model_name]
    for s, b, p in zip(c["setting"], c["bpp"], c["psnr"]):
        lines.append(f"| {s} | {b:.4f} | {p:.2f} |")
    lines += ["", f"Machine: {result['machine']}, torch {result['torch']}.",
              "Produced by `python -m icm.eval.photo_rd --out docs/results`."]
    (out / f"{model_name}.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/results")
    p.add_argument("--model", default="hyperprior")
    args = p.parse_args(argv)
    result = measure(model_name=args.model)
    write_report(result, Path(args.out), args.model)
    for ref, rows in result["bd"].items():
        for r in rows:
            print(f"{r['codec']:>12} vs {ref:<8} BD-rate {r['bd_rate_pct']:+7.1f}%  BD-PSNR {r['bd_psnr_db']:+.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
