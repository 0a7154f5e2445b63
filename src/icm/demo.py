"""``icm demo``: the shipped codecs on bundled and held-out images, machine path first.

Sections, each timed (``icm demo`` runs every family with shipped weights; ``-m``
one; ``-q`` one quality):

1. **One file, three tasks** (``dicm-lite0`` with its detection heads): two
   bundled photos of the test split (:data:`DEMO_PHOTOS`, never trained or tuned
   on) are each coded once; the receiver reads the ImageNet class, the boxes and
   the masks (COCO's classes) from that file; heads whose boxes come from a
   picture head (:class:`icm.tasks.dense.PictureHead`) decode a picture for their
   detector from the file's features, others make no pixel
   (``dicm-objects.png``: the sender's picture | what the receiver found, drawn on
   its detector's picture or a blank canvas | the same over the sender's picture,
   for the reader), at quality 3 unless ``-q`` names one.
2. **dicm-lite0 against JPEG and HEVC at equal size**: the 30 crops of the
   six held-out test photos (centre and four corners, the test-photo part of
   the ``photo-crops`` report) at four shipped qualities (the lowest, the
   highest and two evenly between; ``-q`` one); each crop's JPEG 4:2:0
   and HEVC 4:4:4 files are the largest not larger than ours.  Top-1 agreement
   with EfficientNet-Lite0 on the uncompressed crop, read from the bitstream
   for icm and from the decoded pixels for the anchors, with ✓/✗ per coding,
   and each of icm's own figures checked against the committed report
   (``reports.json``, bundled).  ``dicm.png``: six crops, a text card per
   quality (bytes and the three answers; no pixels exist at the receiver),
   and the rate–agreement plot of the 30 crops.
3. **bai2022-fmnist**: one Fashion-MNIST test image per class at every shipped
   quality, the class read from the bitstream and the picture decoded for a
   person (``fashion_mnist.png``, with headers and byte counts).
4. **hyperprior** at a mid quality (the middle shipped one, or ``-q``) on the
   bundled photos beside the JPEG of the same size or just smaller
   (``side_by_side.png``, showing the quality the table shows).
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
from .metrics import psnr
from .pictures import (
    enlarge,
    rate_agreement_plot,
    side_by_side,
    text_block,
    with_header,
)
from .samples import (
    committed_reports,
    fashion_mnist_samples,
    report_line,
    sample_paths,
    summarise_reports,
)
from .tasks import REPORT_SCORE


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


DEMOS = ("dicm-lite0", "bai2022-fmnist", "hyperprior")  # the order the demo runs them in
SHOWN_CROPS = 6  # crops drawn in dicm.png (of the 30 measured)


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


class _Sections:
    """Numbered, timed sections: a header line before each, its wall time after."""

    def __init__(self, total: int):
        self.total, self.n, self.times, self.t0 = total, 0, [], time.perf_counter()

    def run(self, title: str, fn, *args) -> None:
        self.n += 1
        print(f"\n== {self.n}/{self.total} {title} ==")
        t = time.perf_counter()
        fn(*args)
        self.times.append(time.perf_counter() - t)
        print(f"-- section {self.n} took {self.times[-1]:.1f} s")

    def summary(self) -> str:
        parts = ", ".join(f"{t:.0f} s" for t in self.times)
        return f"icm demo: done in {time.perf_counter() - self.t0:.0f} s (sections: {parts})"


def run_demo(out_dir: str = "icm-demo", quality: int | None = None, model_name: str | None = None) -> int:
    """Run the demo of ``model_name`` (one of :data:`DEMOS`), or of every one with shipped weights."""
    from .models import has_weights, model_info

    if model_name is None:
        names = [n for n in DEMOS if any(has_weights(n, q) for q in model_info(n).qualities)]
        if not names:
            raise IcmError("no shipped weights for any demo model")
    elif model_name in DEMOS:
        names = [model_name]
    else:
        raise IcmError(f"no demo for model {model_name!r}; demos: {', '.join(DEMOS)}")
    for name in names:
        _shipped(name, quality)  # -q checked for every family before any work
    if "dicm-lite0" in names:  # compares with the HEVC anchor (pillow-heif, in the 'eval' extra)
        from .extras import require

        require("icm demo", "eval", "pillow_heif", why="for dicm-lite0 (its HEVC anchor)",
                hint="" if model_name else "icm demo -m hyperprior and -m bai2022-fmnist run without it")
    _writable_dir(out_dir)
    import torch

    plan = []
    if "dicm-lite0" in names:
        from .codec import get_heads, get_model

        shipped = _shipped("dicm-lite0", quality)
        q_tasks = shipped[-1] if quality is not None or DEMO_QUALITY not in shipped else DEMO_QUALITY
        if get_heads(get_model("dicm-lite0", q_tasks)) is not None:
            plan.append(("one dicm-lite0 file -> class, boxes and masks", _one_file_three_tasks,
                         out_dir, "dicm-lite0", q_tasks))
        plan.append(("dicm-lite0 against JPEG and HEVC at equal file size (30 held-out crops)", dicm_demo,
                     out_dir, quality, "dicm-lite0"))
    if "bai2022-fmnist" in names:
        plan.append(("bai2022-fmnist: the class from the bitstream, then pixels", fashion_mnist_demo,
                     out_dir, quality, "bai2022-fmnist"))
    if "hyperprior" in names:
        plan.append(("hyperprior against JPEG at the same file size", photo_demo, out_dir, quality, "hyperprior"))
    print(f"icm demo: {', '.join(names)}, writing into {out_dir}/, torch on {torch.get_num_threads()} "
          "thread(s) (icm --threads N to change)")
    sections = _Sections(len(plan))
    for title, fn, *args in plan:
        sections.run(title, fn, *args)
    print("\n" + sections.summary())
    return 0


# -- 1. one file, three tasks -------------------------------------------------------------------------


DEMO_PHOTOS = ("astronaut", "coffee")
"""Bundled photos of section 1 (the test split's: no codec or head trained or was tuned on them)."""
DEMO_SCORE = REPORT_SCORE
"""Detections at or above this score are printed and drawn (``icm analyze``'s default)."""
DEMO_QUALITY = 3
"""Section 1's quality unless ``-q`` names one (about 0.4 bpp on the two photos)."""


def _detector_picture(model, heads, data: bytes, image: np.ndarray) -> tuple[np.ndarray, str]:
    """What the receiver's detector looked at, to draw its answers on: the picture a picture
    head decodes from the file, or a blank of the image's size where the heads read features."""
    if not hasattr(getattr(heads, "dense_head", None), "picture"):
        return np.full_like(image, 235), "no pixels"
    from . import bitstream
    from .codec import to_uint8
    from .models import Compressed
    from .tasks.detection import detector_picture

    f = bitstream.unpack(data)
    return to_uint8(detector_picture(model, heads, Compressed([f.sections], image.shape[:2]))), "on its detector's picture"


def _one_file_three_tasks(out_dir: str, model_name: str, quality: int, photos=DEMO_PHOTOS) -> list[dict]:
    """Bundled held-out photos, each coded once: the ImageNet class, the boxes and the
    instance masks all come from that one file (the boxes from a picture the heads decode
    where they are a picture head, else without making a pixel).  Returns, per
    photo, ``{"photo", "bytes", "bpp", "class", "objects": [(label, score)]}``."""
    from . import codec
    from .data import to_tensor
    from .eval.tasks import imagenet_class_names
    from .samples import sample_paths
    from .tasks.results import draw, to_records

    out = Path(out_dir)
    model = codec.get_model(model_name, quality)
    heads = codec.get_heads(model)
    task = "segment" if heads.masks else "detect"
    names = imagenet_class_names()
    paths = {p.stem: p for p in sample_paths()}
    learned = heads.metadata.get("taught_by", "its training data")
    boxes = heads.metadata.get("boxes")
    if boxes:  # boxes from a dense head (icm.tasks.dense); masks as the rest of the card says
        kind = heads.architecture.get("dense", {}).get("kind")
        how = {"stitch": "NanoDet-g's own upper network behind an adapter that learned",
               "picture": "NanoDet-g whole, on a picture that a decoder of the file's features learned to make"
               }.get(kind, "a dense head that learned")
        learned = f"boxes: {how} from {boxes['taught_by']}" + (
            "; masks: class-agnostic, from photographic Tux Paint stamps' alpha" if heads.masks else "")
    print(f"{model_name} q{quality} with its shipped heads ({len(heads.categories or {})} classes; {learned}), on {len(photos)} bundled photos of the test split (never trained or tuned on): each is "
          "coded once, and the receiver reads three answers from that file" + (
              " (its detector on a picture decoded from the file's features)" if hasattr(heads.dense_head, "picture")
              else " without making a pixel"))
    rows, found = [], []
    for stem in photos:
        image = codec.read_rgb(paths[stem])
        data = codec.encode(model, to_tensor(image)[None])[0]
        path = out / f"{stem}-{model_name}-q{quality}.icm"
        path.write_bytes(data)
        top = int(codec.analyze(data, task="classify")["output"].argmax(1))
        det = codec.analyze(data, task=task)
        records = to_records(det["output"][0], det["heads"].categories, DEMO_SCORE, masks=task == "segment")
        bpp = 8 * len(data) / (image.shape[0] * image.shape[1])
        objects = [(r["label"], r["score"]) for r in records]
        found.append({"photo": stem, "bytes": len(data), "bpp": bpp, "class": names[top].split(",")[0],
                      "objects": objects})
        print(f"{path.name}: {len(data)} bytes ({bpp:.3f} bpp, whole file)")
        print(f"  classify: ImageNet top-1 {names[top].split(',')[0]!r}")
        listed = ", ".join(f"{label} {score:.2f}" for label, score in objects) or "nothing"
        boxes = f"{len(records)} box{'es' if len(records) != 1 else ''}"
        print(f"  {task}: objects found: {listed} ({boxes}{' with masks' if task == 'segment' else ''}, "
              f"score >= {DEMO_SCORE})")
        seen, note = _detector_picture(model, det["heads"], data, image)
        rows.append([
            with_header(image, [f"{stem}: the picture at the sender", "(not sent)"]),
            with_header(draw(seen, records), [f"the receiver, from {len(data)} bytes:",
                                               f"{len(records)} object{'' if len(records) == 1 else 's'}, {note}"]),
            with_header(draw(image, records), ["the same answers over the picture", "(for the reader)"]),
        ])
    png = out / "dicm-objects.png"
    side_by_side(rows, png)
    print(f"wrote {png}")
    return found


# -- 2. dicm-lite0 against JPEG and HEVC -----------------------------------------------------------------


def held_out_crops() -> list[tuple[str, np.ndarray]]:
    """The 30 crops of the held-out test photos, ids and pixels as in the ``photo-crops`` report."""
    from .data import TEST_PHOTOS, five_crops, load_photo

    return [(f"{s}#{k}", c) for s in TEST_PHOTOS for k, c in enumerate(five_crops(load_photo(s)))]


def classify_crops(model_name: str, qualities: list[int], crops, anchors=("jpeg420", "hevc"),
                   out: Path | None = None) -> list[dict]:
    """Each crop coded at each quality, classified from the bitstream, and (``anchors``) beside
    the anchors' largest files not larger than ours, classified from their decoded pixels.

    Returns one record per crop: ``{"image", "reference" (top-1 on the uncompressed crop),
    "icm": {q: {"bytes", "top1"}}, ANCHOR: {q: {"bytes", "top1", "setting"}}}``.
    """
    from . import codec
    from .data import to_tensor
    from .eval.anchors import get_anchor
    from .eval.tasks import classify_pixels

    settings = {"jpeg420": range(1, 96), "hevc": range(51, 9, -1)}  # from the smallest file to the largest
    coders = {a: get_anchor(a) for a in anchors}
    records, start = [], {}  # each anchor's answer for the first quality, where the next crop starts
    for cid, crop in crops:
        rec = {"image": cid, "reference": classify_pixels(crop)[0], "icm": {}, **{a: {} for a in anchors}}
        made, hints = {a: {} for a in anchors}, dict(start)
        for q in qualities:
            data = codec.encode(codec.get_model(model_name, q), to_tensor(crop)[None])[0]
            if out is not None:
                (out / f"{cid.split(':')[-1].replace('#', '-')}-{model_name}-q{q}.icm").write_bytes(data)
            top1 = int(codec.analyze(data, task="classify")["output"].argmax())
            rec["icm"][q] = {"bytes": len(data), "top1": top1}
            for a in anchors:
                def enc(v, a=a):
                    if v not in made[a]:
                        made[a][v] = coders[a].encode(crop, v)
                    return made[a][v]

                hint = _predict_index(list(settings[a]), made[a], len(data), hints.get(a))
                v, adata = _largest_at_most(enc, settings[a], len(data), hint=hint)
                hints[a] = list(settings[a]).index(v)  # the next quality starts from here
                if q == qualities[0]:
                    start[a] = hints[a]
                rec[a][q] = {"bytes": len(adata), "setting": v,
                             "top1": classify_pixels(coders[a].decode(adata))[0]}
        records.append(rec)
    return records


def _predict_index(settings: list, made: dict, target: int, default: int | None) -> int | None:
    """Where in ``settings`` a file of ``target`` bytes should lie, from the files already made
    for this picture (log-size is near linear in a codec's quality setting); ``default``
    until two are made."""
    known = sorted((settings.index(v), math.log(max(1, len(d)))) for v, d in made.items())
    if len(known) < 2:
        return default
    t = math.log(max(1, target))
    (i0, s0), (i1, s1) = known[0], known[-1]
    for a, b in zip(known, known[1:]):  # the bracketing pair, else the ends for extrapolation
        if a[1] <= t <= b[1]:
            (i0, s0), (i1, s1) = a, b
            break
    if s1 == s0:
        return default
    return int(round(i0 + (t - s0) * (i1 - i0) / (s1 - s0)))


def _agreement(records: list[dict], codec_name: str, q: int) -> tuple[int, float]:
    """``(crops agreeing with the uncompressed network, mean whole-file bpp)`` at quality ``q``."""
    hits = sum(r[codec_name][q]["top1"] == r["reference"] for r in records)
    bpp = float(np.mean([8 * r[codec_name][q]["bytes"] / 224**2 for r in records]))
    return hits, bpp


DICM_DEMO_QUALITIES = 4  # columns of the dicm-lite0 table: the shipped qualities, or this many of them


def demo_qualities(shipped: list[int]) -> list[int]:
    """The qualities the dicm-lite0 table shows: all of ``shipped`` up to
    :data:`DICM_DEMO_QUALITIES`, else the lowest, the highest and evenly between."""
    n = DICM_DEMO_QUALITIES
    if len(shipped) <= n:
        return list(shipped)
    return sorted({shipped[round(i * (len(shipped) - 1) / (n - 1))] for i in range(n)})


def dicm_demo(out_dir: str, quality: int | None, model_name: str = "dicm-lite0") -> None:
    """Features coded per crop and classified at the receiver without pixels, beside JPEG and HEVC."""
    from .eval.tasks import imagenet_class_names

    qualities = _shipped(model_name, quality)
    qualities = demo_qualities(qualities) if quality is None else qualities
    out = Path(out_dir)
    names = imagenet_class_names()
    short = lambda i: names[i].split(",")[0][:16]
    crops = held_out_crops()
    n = len(crops)
    print(f"{model_name} q{','.join(map(str, qualities))} on the {n} crops (224x224: centre and four corners) of "
          "the six held-out test photos. Agreement: the ImageNet top-1 read from the bitstream (no pixels) is "
          "EfficientNet-Lite0's on the uncompressed crop. JPEG 4:2:0 and HEVC 4:4:4: the largest file not "
          "larger than ours, classified from its decoded pixels.")
    records = classify_crops(model_name, qualities, crops, out=out)
    head = "".join(f"| q{q}: icm JPEG HEVC " for q in qualities)
    print(f"\n{'crop':<26}{'uncompressed says':<18}{head}")
    for r in records:
        ok = {(c, q): "✓" if r[c][q]["top1"] == r["reference"] else "✗" for c in ("icm", "jpeg420", "hevc")
              for q in qualities}
        cells = "".join(f"|{'':5}{ok['icm', q]:>3} {ok['jpeg420', q]:>4} {ok['hevc', q]:>4} " for q in qualities)
        print(f"{r['image']:<26}{short(r['reference']):<18}{cells}")
    print(f"\n{'q':>2} | {'icm bytes':>9} {'bpp':>6} {'agree':>6} | {'JPEG bpp':>8} {'agree':>6} | "
          f"{'HEVC bpp':>8} {'agree':>6}")
    curves = {c: [] for c in ("icm", "jpeg420", "hevc")}
    for q in qualities:
        cells = []
        for c in curves:
            hits, bpp = _agreement(records, c, q)
            curves[c].append((bpp, hits / n))
            cells.append((hits, bpp))
        mean_bytes = np.mean([r["icm"][q]["bytes"] for r in records])
        (ih, ib), (jh, jb), (hh, hb) = cells
        print(f"{q:>2} | {mean_bytes:>9.0f} {ib:>6.3f} {ih:>3}/{n} | {jb:>8.3f} {jh:>3}/{n} | {hb:>8.3f} {hh:>3}/{n}")
        larger = [name for name, b in (("JPEG", jb), ("HEVC", hb)) if b > ib]
        if larger:  # no setting of theirs codes a file that small: their smallest is shown
            print(f"   q{q}: {' and '.join(larger)} cannot code these crops as small as icm; their smallest files are shown")
    print(_check_against_report(records, model_name, qualities))
    print(report_line("photo-crops-classify"))
    png = out / "dicm.png"
    _dicm_picture(records, crops, qualities, curves, short, png)
    print(f"wrote {png} and the .icm files to {out}/")


def _check_against_report(records: list[dict], model_name: str, qualities: list[int]) -> str:
    """One line: whether this run's icm files and answers are the committed report's, crop by crop."""
    per_image = committed_reports()["photo-crops-classify"]["per_image"][model_name]
    diff = [(r["image"], q) for r in records for q in qualities
            if per_image.get(r["image"], {}).get(str(q)) != [r["icm"][q]["bytes"], int(r["icm"][q]["top1"] == r["reference"])]]
    if not diff:
        return (f"icm's {len(records) * len(qualities)} files above have the very bytes and answers of the committed "
                "report (docs/results/photo-crops-classify) for these crops")
    img, q = diff[0]
    return (f"note: {len(diff)} of icm's {len(records) * len(qualities)} codings differ from the committed report "
            f"(first: {img} q{q}); this installation codes or classifies differently")


def _dicm_picture(records, crops, qualities, curves, short, path: Path) -> None:
    shown = [i for i, (cid, _) in enumerate(crops) if cid.endswith("#0")][:SHOWN_CROPS]
    rows = []
    for i in shown:
        r, (cid, crop) = records[i], crops[i]
        row = [with_header(crop, [cid.split(":")[-1], "sender's crop (not sent)", f"uncompressed: {short(r['reference'])}"])]
        for q in qualities:
            lines, marks = [f"q{q}: icm {r['icm'][q]['bytes']} B, no pixels"], [None]
            for c, label in (("icm", "icm"), ("jpeg420", "JPEG"), ("hevc", "HEVC")):
                lines.append(f"{label} {r[c][q]['bytes']} B: {short(r[c][q]['top1'])}")
                marks.append(r[c][q]["top1"] == r["reference"])
            row.append(text_block(lines, 215, marks=marks))
        rows.append(row)
    plot = rate_agreement_plot(curves, len(records))
    if plot is not None:
        rows[0].append(plot)
    side_by_side(rows, path)


# -- 3. bai2022-fmnist -----------------------------------------------------------------------------------


def fashion_mnist_demo(out_dir: str, quality: int | None, model_name: str = "bai2022-fmnist") -> None:
    """compress → analyze (no pixels) → decompress on the bundled Fashion-MNIST images."""
    from . import codec

    qualities = _shipped(model_name, quality)
    out = Path(out_dir)
    samples = fashion_mnist_samples()
    print(f"{model_name} at qualities {qualities} on {len(samples)} Fashion-MNIST test images (held out from "
          "training, one per class): the class from the bitstream, then the pixels for a person")
    print(f"{'image':<16}{'class':<13}" + "".join(f"| q{q}: {'bytes':>5} {'predicted':<13}{'PSNR':>6} " for q in qualities))
    scale = 5
    tile = 28 * scale
    rows = [[text_block(["original", "(its class)"], tile)]
            + [text_block([f"q{q} decoded", "(class read from bits)"], tile) for q in qualities]]
    right, total = {q: 0 for q in qualities}, {q: 0 for q in qualities}
    for path, label, name in samples:
        x = codec.load_image(path)
        ref = codec.to_uint8(x)[..., 0]
        line = f"{path.stem:<16}{name:<13}"
        row = [with_header(enlarge(ref, scale), [name, "(test image)"])]
        for q in qualities:
            model = codec.get_model(model_name, q)
            data = codec.encode(model, x)[0]
            (out / f"{path.stem}-q{q}.icm").write_bytes(data)
            pred = int(codec.analyze(data, task="classify")["output"].argmax(dim=1))
            rec = codec.to_uint8(codec.decode(data)["x_hat"])
            ok = pred == label
            right[q] += ok
            total[q] += len(data)
            line += f"| {len(data):>8} {model.class_names[pred][:11]:<11} {'✓' if ok else '✗'}{psnr(ref, rec):>6.2f} "
            row.append(with_header(enlarge(rec, scale), [model.class_names[pred], f"{len(data)} B, {psnr(ref, rec):.1f} dB"],
                                    marks=[ok, None]))
        print(line)
        rows.append(row)
    print("\n" + "; ".join(f"q{q}: {right[q]}/{len(samples)} right, {8 * total[q] / len(samples):.0f} bits per image "
                            "(whole file)" for q in qualities))
    print(report_line("fashion-mnist-classify"))
    png = out / "fashion_mnist.png"
    side_by_side(rows, png)
    print(f"wrote {png} and the .icm files to {out}/")


# -- 4. hyperprior ---------------------------------------------------------------------------------------


def photo_demo(out_dir: str, quality: int | None, model_name: str = "hyperprior") -> None:
    """The photo demo: ``model_name`` at one mid quality beside JPEG at the same file size."""
    from . import codec

    shipped = _shipped(model_name, quality)
    q = shipped[len(shipped) // 2]
    out = Path(out_dir)
    samples = sample_paths()
    model = codec.get_model(model_name, q)
    print(f"{model_name} q{q} (the middle of its shipped qualities {_shipped(model_name, None)}; -q picks another) "
          f"on {len(samples)} bundled photos (held out from training), beside the JPEG 4:2:0 file of the same size "
          "or just smaller")
    print(f"{'image':<14}{'bytes':>8}{'bpp':>8}{'PSNR':>8}  |{'JPEG q':>7}{'bytes':>8}{'bpp':>8}{'PSNR':>8}{'ΔPSNR':>8}")
    rows, gains = [], []
    for path in samples:
        x = codec.load_image(path)
        ref = codec.to_uint8(x)
        h, w = ref.shape[:2]
        data = codec.encode(model, x)[0]
        (out / f"{path.stem}-q{q}.icm").write_bytes(data)
        rec = codec.to_uint8(codec.decode(data)["x_hat"])
        ours = psnr(ref, rec)
        jq, jdata = jpeg_at_size(ref, len(data))
        jrec = _decode_jpeg(jdata)
        theirs = psnr(ref, jrec)
        gains.append(ours - theirs)
        print(f"{path.stem:<14}{len(data):>8}{8 * len(data) / (h * w):>8.3f}{ours:>8.2f}  |"
              f"{jq:>7}{len(jdata):>8}{8 * len(jdata) / (h * w):>8.3f}{theirs:>8.2f}{ours - theirs:>+8.2f}")
        rows.append([
            with_header(ref, [f"{path.stem}: original"]),
            with_header(rec, [f"icm {model_name} q{q}: {len(data)} B, {ours:.2f} dB"], marks=[ours >= theirs]),
            with_header(jrec, [f"JPEG 4:2:0 q{jq}: {len(jdata)} B, {theirs:.2f} dB"], marks=[theirs >= ours]),
        ])
    png = out / "side_by_side.png"
    side_by_side(rows, png)
    print(f"\nmedian PSNR gain over JPEG at the same or smaller size, q{q}: {np.median(gains):+.2f} dB")
    print(report_line("photos-vs-jpeg"))
    print(f"wrote {png} and the .icm files to {out}/")


def _largest_at_most(encode, qualities, target: int, hint: int | None = None) -> tuple[int, bytes]:
    """``(q, data)`` of the largest file not above ``target`` bytes, searching ``qualities``
    ordered from the smallest file to the largest (the smallest file if none fits).

    With ``hint`` (an index near the answer, e.g. the previous target's) the search
    gallops out from it before bisecting, so a good hint costs a few encodings."""
    qualities = list(qualities)
    sizes: dict[int, bytes] = {}

    def fits(i: int) -> bool:
        if i not in sizes:
            sizes[i] = encode(qualities[i])
        return len(sizes[i]) <= target

    lo, hi = -1, len(qualities)  # fits(lo) (or none), not fits(hi) (or past the end)
    if hint is not None and 0 <= hint < len(qualities):
        step = 1
        if fits(hint):
            lo = hint
            while lo + step < hi and fits(lo + step):
                lo, step = lo + step, step * 2
            hi = min(hi, lo + step)
        else:
            hi = hint
            while hi - step > lo and not fits(hi - step):
                hi, step = hi - step, step * 2
            lo = max(lo, hi - step)
            if lo >= 0 and not fits(lo):
                lo = -1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    if lo < 0:
        fits(0)
        return qualities[0], sizes[0]
    return qualities[lo], sizes[lo]


if __name__ == "__main__":  # python -m icm.demo --reports docs/results: refresh the bundled figures
    import json

    if sys.argv[1:2] != ["--reports"] or len(sys.argv) != 3:
        sys.exit("usage: python -m icm.demo --reports docs/results")
    dest = Path(str(resources.files("icm.samples").joinpath("reports.json")))
    dest.write_text(json.dumps(summarise_reports(sys.argv[2]), indent=1, sort_keys=True) + "\n")
    print(f"wrote {dest}")
