"""Regenerate the cross-version golden files: ``python tests/golden/regenerate.py``.

Codes small crops of the bundled samples with every family's shipped weights
(two qualities each) and writes the ``.icm`` files and ``manifest.json`` beside
this script: the SHA-256 of each file, of its decoded latent (bit-exact on every
supported PyTorch, thread count and batch size) and the reference outputs that
are *not* bit-exact (pixels, logits), checked within stated tolerances by
``tests/test_golden_files.py``.

Files whose manifest entry has ``written_as`` were written by an earlier icm
under a retired model id (``icm.models._registry.current_id``); they cannot be
made again, so regenerating keeps them and their entries as they are.

Regenerating is an explicit act: do it only when the format, a shipped weight
file or the decoder changes on purpose, and say so in the commit.  The test
then compares every later PyTorch against the one named in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent

# (model, quality, bundled sample, crop box (top, left, height, width) or None)
CASES = (
    ("hyperprior", 1, "astronaut.png", (96, 200, 48, 64)),
    ("hyperprior", 5, "astronaut.png", (96, 200, 48, 64)),
    ("bai2022-fmnist", 6, "fashion_mnist/9-ankle-boot.png", None),
    ("bai2022-fmnist", 9, "fashion_mnist/0-t-shirt-top.png", None),
    ("dicm-lite0", 1, "coffee.png", (120, 160, 64, 64)),
    # 3 and 6: the twins of the files written under retired ids 7 and 8
    ("dicm-lite0", 3, "coffee.png", (120, 160, 64, 64)),
    ("dicm-lite0", 6, "coffee.png", (120, 160, 64, 64)),
    ("dicm-lite0-s8", 1, "coffee.png", (120, 160, 64, 64)),
    ("dicm-lite0-s8", 4, "coffee.png", (120, 160, 64, 64)),
    ("dicm-lite0-s8-cutmix", 1, "coffee.png", (120, 160, 64, 64)),
    ("dicm-lite0-s8-cutmix", 3, "coffee.png", (120, 160, 64, 64)),
)


def sample_image(name: str, box) -> torch.Tensor:
    """A bundled sample (optionally cropped) as ``(1, 3, H, W)`` in [0, 1]."""
    from icm import codec

    path = resources.files("icm.samples").joinpath(name)
    with resources.as_file(path) as p:
        x = codec.load_image(p)
    if box is not None:
        t, l, h, w = box
        x = x[..., t : t + h, l : l + w]
    return x.contiguous()


def sha256_tensor(t: torch.Tensor) -> str:
    a = t.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(str(tuple(a.shape)).encode() + a.astype("<f4").tobytes()).hexdigest()


def file_name(model: str, quality: int) -> str:
    return f"{model}-q{quality}.icm"


def reference_png(fname: str) -> str:
    return fname.removesuffix(".icm") + ".ref.png"


def decode_outputs(data: bytes, fname: str | None = None) -> dict:
    """What the golden test compares for one file; with ``fname``, the reference
    decode (8-bit pixels) is written beside it as a PNG."""
    from PIL import Image

    from icm import codec

    out = codec.decode(data, pixels=False)
    info = codec.model_info(out["model"].model_name)
    entry = {"y_hat_sha256": sha256_tensor(out["y_hat"]), "y_hat_shape": list(out["y_hat"].shape)}
    if info.pixel_decoder:
        pixels = codec.to_uint8(codec.decode(data)["x_hat"])
        entry["pixels_sha256"] = hashlib.sha256(pixels.tobytes()).hexdigest()
        if fname is not None:
            Image.fromarray(pixels).save(HERE / reference_png(fname))
    if info.tasks:
        logits = codec.analyze(data, task="classify")["output"][0].detach().float()
        entry["logits"] = [round(float(v), 6) for v in logits]
    return entry


def main() -> int:
    from icm import codec

    torch.set_num_threads(1)
    manifest = {"torch": torch.__version__, "numpy": np.__version__, "files": {}}
    kept = json.loads((HERE / "manifest.json").read_text())["files"] if (HERE / "manifest.json").is_file() else {}
    manifest["files"].update({k: v for k, v in kept.items() if "written_as" in v})
    for name, quality, sample, box in CASES:
        model = codec.get_model(name, quality)
        data = codec.encode(model, sample_image(sample, box))[0]
        fname = file_name(name, quality)
        (HERE / fname).write_bytes(data)
        entry = {"model": name, "quality": quality, "sample": sample, "box": box, "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest(), **decode_outputs(data, fname)}
        manifest["files"][fname] = entry
        print(f"{fname}: {len(data)} bytes")
    files = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest["files"].items())
    head = json.dumps({k: v for k, v in manifest.items() if k != "files"})[:-1]
    (HERE / "manifest.json").write_text(f"{head}, \"files\": {{\n{files}\n}}}}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
