"""Turn a training checkpoint into shipped weights: ``icm/weights/<name>-q<Q>.safetensors``.

Float tensors are stored in float16 (half the bytes; the codec is then
*defined* by the rounded weights).  The integer coding tables are rebuilt
from the rounded weights and stored beside them, so every machine decodes
with the very same integers.  Metadata (recipe, data, steps, measured
figures) goes into the safetensors header under the key ``"icm"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..entropy._tables import TableModule


def round_to_half(model: torch.nn.Module) -> None:
    """Round every float parameter and buffer of ``model`` to float16 precision, in place."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point() and t.dtype == torch.float32:
                t.copy_(t.half().float())


def refresh_tables(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, TableModule):
            m.coding_tables()


def load_checkpoint(model: torch.nn.Module, path: str) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    return {"global_step": int(ckpt.get("global_step", 0))}


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict) -> Path:
    """Write ``model`` (already rounded, tables fresh) with ``metadata``."""
    from safetensors.torch import save_file

    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if v.dtype == torch.float32 else v
    path = Path(path)
    save_file(state, str(path), metadata={"icm": json.dumps(metadata, sort_keys=True)})
    return path


def measure_on_photos(model, sources) -> dict:
    """Whole-file bpp and RGB PSNR of ``model`` on photos (real ``.icm`` files)."""
    import numpy as np

    from .. import codec
    from ..data import load_photo
    from ..demo import psnr

    bpps, psnrs = [], []
    for src in sources:
        img = load_photo(src)
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
        data = codec.encode(model, x)[0]
        rec = codec.to_uint8(codec.decode(data, model=model)["x_hat"])
        bpps.append(8 * len(data) / (img.shape[0] * img.shape[1]))
        psnrs.append(psnr(img, rec))
    return {"images": list(sources), "bpp_mean": float(np.mean(bpps)), "psnr_mean_db": float(np.mean(psnrs)),
            "bpp": bpps, "psnr_db": psnrs}


def main(argv=None) -> int:
    """``python -m icm.train.export CONFIG [--ckpt PATH] [--steps-before N]``."""
    import argparse
    import platform

    from ..data import TEST_PHOTOS, photo_sources
    from ..models import create_model
    from .run import load_config

    p = argparse.ArgumentParser(description="export a trained checkpoint as shipped weights")
    p.add_argument("config", nargs="?")
    p.add_argument("--card", default=None, help="only write the weights card (Markdown) to this path")
    p.add_argument("--ckpt", default=None, help="default: <out_dir>/checkpoints/last.ckpt of the config")
    p.add_argument("--steps-before", type=int, default=0, help="steps of the run this one was initialised from")
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "weights"))
    args = p.parse_args(argv)
    if args.card:
        print(write_card(args.card))
        return 0
    cfg = load_config(args.config)
    name, quality = cfg["model"]["name"], int(cfg["model"]["quality"])
    ckpt = args.ckpt or str(Path(cfg["trainer"]["out_dir"]) / "checkpoints" / "last.ckpt")
    model = create_model(name, quality=quality, pretrained=False, **cfg["model"].get("kwargs", {}))
    info = load_checkpoint(model, ckpt)
    round_to_half(model)
    refresh_tables(model)
    model.eval()
    train = photo_sources("train")
    meta = {
        "model": name,
        "quality": quality,
        "lambda": getattr(model, "lmbda", None),
        "loss": "bpp + lambda * 255^2 * MSE (pixels in [0, 1])",
        "architecture": {k: getattr(model, k) for k in ("N", "M") if hasattr(model, k)},
        "data": {"train_split": "icm.data photo_sources('train')", "num_photos": len(train),
                 "crop": cfg["data"].get("crop"), "batch_size": cfg["data"].get("batch_size")},
        "recipe": cfg,
        "steps": info["global_step"],
        "steps_total_including_init": info["global_step"] + args.steps_before,
        "trained_on": f"CPU ({platform.machine()}), {cfg['trainer'].get('threads', 'all')} thread(s)",
        "weights_dtype": "float16 (coding tables int32, built from the rounded weights)",
        "measured_on_held_out_photos": measure_on_photos(model, TEST_PHOTOS),
    }
    out = save_weights(model, Path(args.out_dir) / f"{name}-q{quality}.safetensors", meta)
    m = meta["measured_on_held_out_photos"]
    print(f"{out}: {out.stat().st_size} bytes, steps {info['global_step']}, "
          f"held-out bpp {m['bpp_mean']:.4f}, PSNR {m['psnr_mean_db']:.2f} dB")
    return 0


def write_card(path: str | Path) -> Path:
    """Render the metadata of every shipped weight file into a Markdown page."""
    from ..models import has_weights, list_models, model_info
    from ..models._registry import read_weights

    lines = ["# Shipped weights", "",
             "Generated from the metadata inside each `.safetensors` file by",
             "`python -m icm.train.export --card docs/weights.md`; figures are whole-file bpp and",
             "RGB PSNR on the held-out photos (`icm.data.TEST_PHOTOS`), never used for training.", "",
             "| model | q | λ | steps (total) | init | trained on | size | held-out bpp | held-out PSNR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in list_models():
        for q in model_info(name).qualities:
            if not has_weights(name, q):
                continue
            _, meta = read_weights(name, q)
            m = meta.get("measured_on_held_out_photos", {})
            from importlib import resources

            size = resources.files("icm.weights").joinpath(f"{name}-q{q}.safetensors").stat().st_size
            init = meta.get("recipe", {}).get("model", {}).get("init") or "scratch"
            lines.append(f"| {name} | {q} | {meta.get('lambda')} | {meta.get('steps')} ({meta.get('steps_total_including_init')}) "
                         f"| {init} | {meta.get('trained_on')} | {size / 1e6:.2f} MB | {m.get('bpp_mean', float('nan')):.4f} "
                         f"| {m.get('psnr_mean_db', float('nan')):.2f} dB |")
    lines += ["", "Recipes: `configs/hyperprior/q*.yaml` (each file's comment says how it was trained).",
              "Training data: `icm.data.photo_sources('train')` — scikit-image samples and Debian",
              "`opencv-doc` example photos, random 128×128 crops with horizontal flips.", ""]
    path = Path(path)
    path.write_text("\n".join(lines))
    return path


if __name__ == "__main__":
    raise SystemExit(main())
