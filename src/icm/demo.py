"""``icm demo``: the shipped codecs on bundled images.

Photos (``hyperprior``): for every sample and every shipped quality, code to
a real ``.icm`` file, decode it, measure PSNR, then find the JPEG (Pillow,
4:2:0) whose whole file is as large as ours or just smaller and measure it
too.  Prints a table and writes a side-by-side PNG (original | icm | JPEG).

Fashion-MNIST (``bai2022-fmnist``): one held-out test image per class is
coded at every shipped quality; the class is read straight from the
bitstream (entropy decoding + Transformer, no pixel decoder) and the picture
is then decompressed for a person.  Prints a table and writes a grid PNG
(original with its class | reconstruction at each quality with the class
read from the bitstream, ``(!)`` where it is wrong).

Features (``dicm-lite0``): the centre 224² crop of each bundled photo is
coded at every shipped quality; the ImageNet top-5 is read from the
bitstream (entropy decoding → feature decoder → EfficientNet-Lite0 tail; no
pixels exist anywhere) and set beside the uncompressed network's answer and
what the same network says on JPEG and HEVC pictures of the same size or
just smaller.  Prints a table and writes a PNG of the crops with the labels.
Each crop is also coded once at the lowest quality with encoder-side
refinement (``icm compress --refine``), the same weights and decoder.
Where detection heads ship, two seeded synthetic pictures of shapes are then
each coded once, and that one file gives the ImageNet class, the shapes and
their masks (``dicm-shapes.png``: the picture | the masks drawn over it).
"""

from __future__ import annotations

import io
import math
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import IcmError


def sample_paths() -> list[Path]:
    """The bundled sample photos (held out from all training)."""
    root = resources.files("icm.samples")
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".png"))


def fashion_mnist_samples() -> list[tuple[Path, int, str]]:
    """The bundled Fashion-MNIST test images: ``(path, label, class name)``, one per class."""
    import json

    root = resources.files("icm.samples.fashion_mnist")
    meta = json.loads(root.joinpath("samples.json").read_text())["images"]
    return [(Path(str(root.joinpath(name))), m["label"], m["class"]) for name, m in sorted(meta.items())]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two ``uint8`` images."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def jpeg_bytes(img: np.ndarray, quality: int, subsampling: int = 2) -> bytes:
    """Pillow JPEG at ``quality``; ``subsampling`` 2 is 4:2:0, 0 is 4:4:4."""
    from PIL import Image

    buf = io.BytesIO()
    # optimize: per-image Huffman tables, as the eval anchor uses (the fairer JPEG).
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=subsampling, optimize=True)
    return buf.getvalue()


def jpeg_at_size(img: np.ndarray, target: int) -> tuple[int, bytes]:
    """The highest JPEG quality whose file is at most ``target`` bytes (quality 1 if none)."""
    return _largest_at_most(lambda q: jpeg_bytes(img, q), range(1, 101), target)


def _decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    box = draw.textbbox((0, 0), text)
    draw.rectangle((0, 0, box[2] + 8, box[3] + 8), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255))
    return np.asarray(im)


def _side_by_side(rows: list[list[np.ndarray]], path: Path, gap: int = 6) -> None:
    from PIL import Image

    heights = [max(p.shape[0] for p in r) for r in rows]
    widths = [sum(p.shape[1] for p in r) + gap * (len(r) - 1) for r in rows]
    canvas = np.full((sum(heights) + gap * (len(rows) - 1), max(widths), 3), 255, dtype=np.uint8)
    y = 0
    for r, h in zip(rows, heights):
        x = 0
        for p in r:
            canvas[y : y + p.shape[0], x : x + p.shape[1]] = p
            x += p.shape[1] + gap
        y += h + gap
    Image.fromarray(canvas).save(path)


def _shipped(model_name: str, quality: int | None) -> list[int]:
    from .models import has_weights, model_info

    info = model_info(model_name)
    qualities = [q for q in info.qualities if has_weights(model_name, q)]
    if quality is not None:
        if quality not in qualities:
            raise IcmError(f"no shipped {model_name} weights at quality {quality}; shipped: {qualities}")
        qualities = [quality]
    if not qualities:
        raise IcmError(f"no shipped weights for {model_name}")
    return qualities


DEMOS = ("hyperprior", "bai2022-fmnist", "dicm-lite0")
DEMO_REFINE = 100  # refinement steps of the demo's refined dicm coding (icm compress --refine)


def _writable_dir(out_dir: str) -> None:
    """Create ``out_dir``; :class:`IcmError` before any work if files cannot be written there."""
    import tempfile

    from .files import prepare_dir

    out = prepare_dir(out_dir)
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise IcmError(f"cannot write in {out}: {e.strerror or e}") from None


def run_demo(out_dir: str = "icm-demo", quality: int | None = None, model_name: str | None = None) -> int:
    """Run the demo of ``model_name`` (one of :data:`DEMOS`), or of every one with shipped weights."""
    from .models import has_weights, model_info

    if model_name is None:
        names = [n for n in DEMOS if any(has_weights(n, q) for q in model_info(n).qualities)]
    elif model_name in DEMOS:
        names = [model_name]
    else:
        raise IcmError(f"no demo for model {model_name!r}; demos: {', '.join(DEMOS)}")
    if "dicm-lite0" in names:  # compares with the HEVC anchor (pillow-heif, in the 'eval' extra)
        from .extras import require

        require("icm demo", "eval", "pillow_heif", why="for dicm-lite0 (its HEVC anchor)",
                hint="" if model_name else "icm demo -m hyperprior and -m bai2022-fmnist run without it")
    _writable_dir(out_dir)
    for i, name in enumerate(names):
        if i:
            print()
        {"hyperprior": photo_demo, "bai2022-fmnist": fashion_mnist_demo, "dicm-lite0": dicm_demo}[name](
            out_dir, quality, name)
    return 0


def fashion_mnist_demo(out_dir: str, quality: int | None, model_name: str = "bai2022-fmnist") -> None:
    """compress → analyze (no pixels) → decompress on the bundled Fashion-MNIST images."""
    from . import codec

    qualities = _shipped(model_name, quality)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = fashion_mnist_samples()
    print(f"icm demo: {model_name} at qualities {qualities} on {len(samples)} Fashion-MNIST test images "
          "(held out from training): class from the bitstream, then pixels")
    print(f"{'image':<16}{'class':<13}" + "".join(f"| q{q}: {'bytes':>5} {'predicted':<13}{'PSNR':>6} " for q in qualities))
    rows, right, total = [], {q: 0 for q in qualities}, {q: 0 for q in qualities}
    scale = 4
    for path, label, name in samples:
        x = codec.load_image(path)
        ref = codec.to_uint8(x)[..., 0]
        line = f"{path.stem:<16}{name:<13}"
        row = [_label(_big(ref, scale), name.split("/")[0][:12])]
        for q in qualities:
            model = codec.get_model(model_name, q)
            data = codec.encode(model, x)[0]
            (out / f"{path.stem}-q{q}.icm").write_bytes(data)
            logits = codec.analyze(data, task="classify")["output"]
            pred = int(logits.argmax(dim=1))
            rec = codec.to_uint8(codec.decode(data)["x_hat"])
            ok = pred == label
            right[q] += ok
            total[q] += len(data)
            line += f"| {len(data):>8} {model.class_names[pred][:11]:<11} {'✓' if ok else '✗'}{psnr(ref, rec):>6.2f} "
            guess = model.class_names[pred].split("/")[0][:9]
            row.append(_label(_big(rec, scale), f"q{q}: {guess}{'' if ok else ' (!)'}"))
        print(line)
        rows.append(row)
    print("\n" + "; ".join(f"q{q}: {right[q]}/{len(samples)} right, {8 * total[q] / len(samples):.0f} bits per image "
                            "(whole file)" for q in qualities))
    png = out / "fashion_mnist.png"
    _side_by_side(rows, png)
    print(f"wrote {png} and the .icm files to {out}/")


def _big(grey: np.ndarray, scale: int) -> np.ndarray:
    """A greyscale picture as RGB, enlarged ``scale``× (nearest) so a person can see it."""
    return np.repeat(np.repeat(np.repeat(grey[..., None], 3, axis=2), scale, axis=0), scale, axis=1)


def photo_demo(out_dir: str, quality: int | None, model_name: str = "hyperprior") -> None:
    """The photo demo: ``model_name`` beside JPEG at the same file size."""
    from . import codec

    qualities = _shipped(model_name, quality)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = sample_paths()
    print(f"icm demo: {model_name} at qualities {qualities} on {len(samples)} bundled photos (held out from training)")
    print(f"{'image':<14}{'q':>2}{'bytes':>8}{'bpp':>8}{'PSNR':>8}  |{'JPEG q':>7}{'bytes':>8}{'bpp':>8}{'PSNR':>8}{'ΔPSNR':>8}")
    rows, gains = [], []
    show_q = qualities[0]
    for path in samples:
        x = codec.load_image(path)
        ref = codec.to_uint8(x)
        h, w = ref.shape[:2]
        for q in qualities:
            model = codec.get_model(model_name, q)
            data = codec.encode(model, x)[0]
            (out / f"{path.stem}-q{q}.icm").write_bytes(data)
            rec = codec.to_uint8(codec.decode(data)["x_hat"])
            ours = psnr(ref, rec)
            jq, jdata = jpeg_at_size(ref, len(data))
            jrec = _decode_jpeg(jdata)
            theirs = psnr(ref, jrec)
            gains.append(ours - theirs)
            print(f"{path.stem:<14}{q:>2}{len(data):>8}{8 * len(data) / (h * w):>8.3f}{ours:>8.2f}  |"
                  f"{jq:>7}{len(jdata):>8}{8 * len(jdata) / (h * w):>8.3f}{theirs:>8.2f}{ours - theirs:>+8.2f}")
            if q == show_q:
                rows.append([
                    _label(ref, f"{path.stem}: original"),
                    _label(rec, f"icm {model_name} q{q}: {len(data)} B, {ours:.2f} dB"),
                    _label(jrec, f"JPEG 4:2:0 q{jq}: {len(jdata)} B, {theirs:.2f} dB"),
                ])
    png = out / "side_by_side.png"
    _side_by_side(rows, png)
    print(f"\nmedian PSNR gain over JPEG at the same or smaller size: {np.median(gains):+.2f} dB")
    print(f"wrote {png} and the .icm files to {out}/", file=sys.stdout)


def _largest_at_most(encode, qualities, target: int) -> tuple[int, bytes]:
    """``(q, data)`` of the largest file not above ``target`` bytes, by bisection over
    ``qualities`` ordered from the smallest file to the largest (the smallest file if
    none fits)."""
    qualities = list(qualities)
    lo, hi, best = 0, len(qualities) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        data = encode(qualities[mid])
        if len(data) <= target:
            best, lo = (qualities[mid], data), mid + 1
        else:
            hi = mid - 1
    return best if best is not None else (qualities[0], encode(qualities[0]))


def dicm_demo(out_dir: str, quality: int | None, model_name: str = "dicm-lite0") -> None:
    """One bitstream of features per photo crop, classified at the receiver without pixels."""
    import torch

    from . import codec
    from .data import centre_crop, to_tensor
    from .eval.anchors import get_anchor
    from .eval.tasks import classify_pixels, imagenet_class_names

    qualities = _shipped(model_name, quality)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = imagenet_class_names()
    jpeg, hevc = get_anchor("jpeg420"), get_anchor("hevc")
    crops = [(p.stem, centre_crop(codec.read_rgb(p))) for p in sample_paths()]
    short = lambda i: names[i].split(",")[0][:18]  # noqa: E731
    print(f"icm demo: {model_name} at qualities {qualities} on the centre 224x224 crop of {len(crops)} bundled "
          "photos: ImageNet classes straight from the bitstream (no pixels), beside EfficientNet-Lite0 on the "
          "uncompressed crop and on JPEG / HEVC files of the same size or smaller")
    print(f"{'image':<13}{'uncompressed':<20}{'q':>2}{'bytes':>7}{'bpp':>7}  {'from the bitstream':<20}"
          f"| {'JPEG':>5} {'top-1':<19}| {'HEVC':>5} {'top-1':<19}")
    rows, agree = [], {"icm": 0, "jpeg": 0, "hevc": 0}
    n = refined = 0
    for stem, crop in crops:
        ref = classify_pixels(crop)[0]
        row = [_label(crop, f"{stem}: {short(ref)}")]
        for q in qualities:
            model = codec.get_model(model_name, q)
            data = codec.encode(model, to_tensor(crop)[None])[0]
            (out / f"{stem}-{model_name}-q{q}.icm").write_bytes(data)
            probs = torch.softmax(codec.analyze(data, task="classify")["output"], dim=1)[0]
            top5 = probs.topk(5)
            ours = int(top5.indices[0])
            jq, jdata = _largest_at_most(lambda v: jpeg.encode(crop, v), range(1, 96), len(data))
            hq, hdata = _largest_at_most(lambda v: hevc.encode(crop, v), range(51, 9, -1), len(data))
            jp, hp = classify_pixels(jpeg.decode(jdata))[0], classify_pixels(hevc.decode(hdata))[0]
            agree["icm"] += ours == ref
            agree["jpeg"] += jp == ref
            agree["hevc"] += hp == ref
            n += 1
            mark = lambda p: "=" if p == ref else "x"  # noqa: E731
            print(f"{stem:<13}{short(ref):<20}{q:>2}{len(data):>7}{8 * len(data) / 224**2:>7.3f}  "
                  f"{mark(ours)} {short(ours):<18}| {len(jdata):>5} {mark(jp)} {short(jp):<17}| "
                  f"{len(hdata):>5} {mark(hp)} {short(hp):<17}")
            others = ", ".join(f"{short(int(i))} {float(p):.2f}" for p, i in zip(top5.values[1:], top5.indices[1:]))
            print(f"{'':<35}top-5: {short(ours)} {float(top5.values[0]):.2f}, {others}")
            row.append(_label(_grey_card(crop), f"q{q} {len(data)} B: {short(ours)}"))
        # The lowest quality once more, refined at the sender (icm compress --refine): the
        # encoder checks what the receiver will conclude; same weights, same decoder.
        q = qualities[-1]
        t0 = time.perf_counter()
        data = codec.encode(codec.get_model(model_name, q), to_tensor(crop)[None], refine=DEMO_REFINE)[0]
        secs = time.perf_counter() - t0
        (out / f"{stem}-{model_name}-q{q}-refined.icm").write_bytes(data)
        ours = int(codec.analyze(data, task="classify")["output"].argmax())
        refined += ours == ref
        print(f"{'':<33}{q:>2}{len(data):>7}{8 * len(data) / 224**2:>7.3f}  {'=' if ours == ref else 'x'} "
              f"{short(ours):<18}| refined at the sender: --refine {DEMO_REFINE}, {secs:.1f} s")
        rows.append(row)
    print(f"\nagreement with the uncompressed network over {n} codings: icm {agree['icm']}/{n}, "
          f"JPEG {agree['jpeg']}/{n}, HEVC {agree['hevc']}/{n} (same or smaller files); "
          f"icm q{qualities[-1]} refined at the sender: {refined}/{len(crops)}")
    png = out / "dicm.png"
    _side_by_side(rows, png)
    print(f"wrote {png} and the .icm files to {out}/")
    if codec.get_heads(codec.get_model(model_name, qualities[0])) is not None:
        _one_file_three_tasks(out, model_name, qualities[0])


def _one_file_three_tasks(out: Path, model_name: str, quality: int, count: int = 2) -> None:
    """Seeded synthetic pictures (held out from the heads' training), each coded once:
    the ImageNet class, the detections and the instance masks all come from that one file."""
    import torch

    from . import codec
    from .data import to_tensor
    from .eval.tasks import imagenet_class_names
    from .tasks.results import draw, to_records
    from .tasks.synthetic import CLASSES, render

    model = codec.get_model(model_name, quality)
    names = imagenet_class_names()
    rng = np.random.default_rng(2024)
    print(f"\none .icm file, three tasks ({model_name} q{quality} and its shipped detection heads, on "
          f"{count} synthetic pictures of shapes the heads never saw): classify, detect, segment, no pixels")
    rows = []
    for i in range(count):
        image, masks, labels, _ = render(rng, (160, 224), 2, 5)
        data = codec.encode(model, to_tensor(image)[None])[0]
        path = out / f"shapes-{i}-{model_name}-q{quality}.icm"
        path.write_bytes(data)
        top = int(codec.analyze(data, task="classify")["output"].argmax(1))
        seg = codec.analyze(data, task="segment")
        records = to_records(seg["output"][0], seg["heads"].categories, 0.5, masks=True)
        truth = ", ".join(sorted(CLASSES[int(k) - 1] for k in labels))
        found = ", ".join(sorted(r["label"] for r in records)) or "nothing"
        print(f"{path.name}: {len(data)} bytes ({8 * len(data) / image[..., 0].size:.3f} bpp); ImageNet top-1 "
              f"{names[top].split(',')[0]!r}; shapes found: {found} (drawn: {truth})")
        rows.append([_label(image, "picture"),
                     _label(draw(_grey_card(image), records), f"{len(data)} bytes, {len(records)} shapes")])
    png = out / "dicm-shapes.png"
    _side_by_side(rows, png)
    print(f"wrote {png}")


def _grey_card(crop: np.ndarray) -> np.ndarray:
    """A dimmed copy of the crop: the receiver never sees these pixels, only features."""
    return (crop.astype(np.float32) * 0.35 + 255 * 0.65).astype(np.uint8)
