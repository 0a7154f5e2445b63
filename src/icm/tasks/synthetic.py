"""A seeded synthetic multi-object set for detection and instance segmentation.

Shapes of six classes (:data:`CLASSES`, labels 1..6) with random sizes
(12–80 px across), rotations, solid or textured fills, drawn one over the
other on a procedural texture or a crop of an offline training photo (the
scikit-image photos of the training split, which install with pip, so the set
is the same on every machine; never the val/test photos). Written in
COCO format with compressed-RLE masks::

    out_dir/instances_<split>.json
    out_dir/images/<split>_000000.png, …        (file_name is relative to out_dir)

so ``CocoDetection(make_synthetic(out_dir, 100))`` reads it back.

Exactness: every shape is rasterised at 1× by testing pixel centres (no
antialiasing) and painted where its mask says, so the image, the masks and
the boxes agree to the pixel. Later objects cover earlier ones; an object's
mask is its visible pixels, and a new object is only placed if every object
keeps at least 30% of its full area and 40 pixels visible (so nothing is
painted that is not annotated). Boxes are the tight boxes of the visible masks
(``x1 = max column + 1``, see :mod:`icm.tasks.annotations`). Image ``i`` of a
split depends only on ``(seed, split_name, i)``: same arguments, same bytes.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from icm.errors import IcmError
from icm.tasks.annotations import make_target, masks_to_boxes, to_coco_json

CLASSES = ("disc", "square", "triangle", "star", "ring", "ellipse")  # label = index + 1
DIAMETER = (12.0, 80.0)
MIN_VISIBLE_FRACTION = 0.3
MIN_VISIBLE_PIXELS = 40
PHOTO_BACKGROUND_P = 0.5
_TEXTURES = ("noise", "gradient", "stripes", "checker")
# Left out of the photo backgrounds: 26 near-identical chessboard calibration frames
# (opencv left01…right14, 40% of the train photos) and photos full of unlabelled
# discs that would teach "disc" to be background.
_NOT_BACKGROUND = re.compile(r"opencv:(left|right)\d\d\.jpg|skimage:coins|opencv:smarties\.png")
_FILLS = ("solid", "solid", "solid", "stripes", "checker", "gradient", "noise")


# ------------------------------------------------------------------ shapes


def _inside_convex(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Pixel centres ``(u, v)`` inside the convex polygon ``verts (K, 2)`` (counter-clockwise)."""
    inside = np.ones(u.shape, bool)
    for (ax, ay), (bx, by) in zip(verts, np.roll(verts, -1, axis=0)):
        inside &= (bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0
    return inside


def _polygon(n: int, radius: float, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def shape_mask(kind: str, u: np.ndarray, v: np.ndarray, radius: float, aspect: float) -> np.ndarray:
    """Membership of pixel centres in a shape centred at the origin, in its own rotated frame.

    Args:
        kind: one of :data:`CLASSES`.
        u, v: pixel-centre coordinates relative to the centre, rotated by the shape's angle.
        radius: half the shape's extent in pixels.
        aspect: ellipse minor/major ratio, or ring inner/outer radius ratio, in (0, 1).

    Returns:
        bool array of ``u``'s shape.
    """
    r2 = u * u + v * v
    if kind == "disc":
        return r2 <= radius**2
    if kind == "ring":
        return (r2 <= radius**2) & (r2 >= (aspect * radius) ** 2)
    if kind == "ellipse":
        return (u / radius) ** 2 + (v / (aspect * radius)) ** 2 <= 1
    if kind == "square":
        return _inside_convex(u, v, _polygon(4, radius, np.pi / 4))
    if kind == "triangle":
        return _inside_convex(u, v, _polygon(3, radius, np.pi / 2))
    if kind == "star":  # inner pentagon ∪ five spikes, each convex
        outer, inner = _polygon(5, radius, np.pi / 2), _polygon(5, 0.42 * radius, np.pi / 2 + np.pi / 5)
        inside = _inside_convex(u, v, inner)
        for k in range(5):
            inside |= _inside_convex(u, v, np.stack([inner[k - 1], outer[k], inner[k]]))
        return inside
    raise ValueError(f"unknown shape {kind!r}; expected one of {CLASSES}")


# ------------------------------------------------------------------- paint


def _two_colours(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(2, 3)).astype(np.float32)


def _pattern(kind: str, ys: np.ndarray, xs: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """RGB float pattern ``(h, w, 3)`` in [0, 255] over pixel coordinates ``ys (h, 1)``, ``xs (1, w)``."""
    c = _two_colours(rng)
    phi = rng.uniform(0, np.pi)
    along = xs * np.cos(phi) + ys * np.sin(phi)
    if kind == "solid":
        t = np.zeros_like(along)
    elif kind == "stripes":
        t = (np.floor(along / rng.uniform(2, 0.2 * scale + 3)) % 2).astype(np.float32)
    elif kind == "checker":
        p = rng.uniform(3, 0.15 * scale + 4)
        t = ((np.floor(xs / p) + np.floor(ys / p)) % 2).astype(np.float32)
    elif kind == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif kind == "noise":  # blobs: coarse noise, upsampled, plus grain
        h, w = along.shape
        cells = rng.random((max(2, h // 8), max(2, w // 8)), dtype=np.float32)
        t = np.asarray(Image.fromarray(cells).resize((w, h), Image.BILINEAR))
        t = np.clip(t + rng.normal(0, 0.08, size=t.shape).astype(np.float32), 0, 1)
    else:
        raise ValueError(kind)
    return c[0] + t[..., None] * (c[1] - c[0])


@functools.cache
def _photo(source: str) -> np.ndarray:
    from icm.data import load_photo

    return load_photo(source)


@functools.lru_cache(maxsize=1)
def _photo_list() -> tuple[str, ...]:
    from icm.data import SKIMAGE_TRAIN_PHOTOS

    return tuple(s for s in SKIMAGE_TRAIN_PHOTOS if not _NOT_BACKGROUND.fullmatch(s))


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    """``uint8 (h, w, 3)`` background and its description (``photo:<source>`` or ``texture:<kind>``)."""
    photos = _photo_list()
    if photos and rng.random() < PHOTO_BACKGROUND_P:
        source = photos[rng.integers(len(photos))]
        photo = _photo(source)
        ph, pw = photo.shape[:2]
        ch = min(ph, pw * h / w) * rng.uniform(0.35, 1.0)  # crop of the target aspect, then resize
        cw = ch * w / h
        y0, x0 = rng.uniform(0, ph - ch), rng.uniform(0, pw - cw)
        img = Image.fromarray(photo).resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return np.array(img), f"photo:{source}"
    kind = _TEXTURES[rng.integers(len(_TEXTURES))]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    img = _pattern(kind, ys[:, :1], xs[:1], rng, scale=float(min(h, w))) * rng.uniform(0.5, 1.0)
    img = img + rng.normal(0, rng.uniform(0, 12), size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), f"texture:{kind}"


# ------------------------------------------------------------------ images


def render(rng: np.random.Generator, size: tuple[int, int], min_objects: int, max_objects: int):
    """One synthetic image.

    Returns:
        ``(image uint8 (H, W, 3), masks uint8 (N, H, W) of visible pixels, labels int64 (N,)
        in 1..len(CLASSES), background description)``. ``N`` aims at
        ``rng.integers(min_objects, max_objects + 1)``; a very small image may fit fewer.
    """
    h, w = size
    image, background = _background(rng, h, w)
    target = int(rng.integers(min_objects, max_objects + 1))
    rows, cols = np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5
    visible: list[np.ndarray] = []
    full_areas: list[int] = []
    labels: list[int] = []
    for _ in range(40 * max(target, 1)):
        if len(labels) >= target:
            break
        label = int(rng.integers(len(CLASSES))) + 1
        radius = rng.uniform(*DIAMETER) / 2
        angle, aspect = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.7)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        fill = _FILLS[rng.integers(len(_FILLS))]
        # full shape on a window that may stick out of the image, so its full area is known
        y0, x0 = int(np.floor(cy - radius)) - 1, int(np.floor(cx - radius)) - 1
        y1, x1 = int(np.ceil(cy + radius)) + 2, int(np.ceil(cx + radius)) + 2
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
        local = shape_mask(CLASSES[label - 1], u, v, radius, aspect)
        full = int(local.sum())
        mask = np.zeros((h, w), bool)
        iy0, ix0, iy1, ix1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        if iy1 <= iy0 or ix1 <= ix0:
            continue
        mask[iy0:iy1, ix0:ix1] = local[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
        if not _enough(int(mask.sum()), full):
            continue
        left = [vis & ~mask for vis in visible]
        if not all(_enough(int(m.sum()), a) for m, a in zip(left, full_areas)):
            continue
        fill_rgb = _pattern(fill, rows[iy0:iy1, None], cols[None, ix0:ix1], rng, scale=2 * radius)
        window = image[iy0:iy1, ix0:ix1]
        sel = mask[iy0:iy1, ix0:ix1]
        window[sel] = np.clip(np.rint(fill_rgb[sel]), 0, 255).astype(np.uint8)
        visible = [*left, mask]
        full_areas.append(full)
        labels.append(label)
    masks = np.stack(visible).astype(np.uint8) if visible else np.zeros((0, h, w), np.uint8)
    return image, masks, np.asarray(labels, np.int64), background


def _enough(visible: int, full: int) -> bool:
    return visible >= MIN_VISIBLE_PIXELS and visible >= MIN_VISIBLE_FRACTION * full


def make_synthetic(out_dir, num_images: int, seed: int = 0, size: tuple[int, int] = (160, 160),
                   min_objects: int = 1, max_objects: int = 5, split_name: str = "train",
                   progress: bool = False) -> Path:
    """Generate ``num_images`` images and their COCO annotations under ``out_dir``.

    Args:
        out_dir: created if missing; see the module docstring for the layout.
        num_images: number of images.
        seed: base seed; image ``i`` uses ``numpy.random.default_rng([seed, crc32(split_name), i])``,
            so splits with the same seed differ.
        size: ``(height, width)`` in pixels.
        min_objects, max_objects: objects per image, drawn uniformly (inclusive).
        split_name: names the JSON and the image files.
        progress: show a tqdm bar.

    Returns:
        Path of ``out_dir/instances_<split_name>.json``.
    """
    h, w = (int(s) for s in size)
    if num_images < 0 or h < 16 or w < 16 or not 0 <= min_objects <= max_objects:
        raise IcmError(f"bad arguments: num_images={num_images}, size={size}, "
                         f"objects={min_objects}..{max_objects}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    split_key = zlib.crc32(split_name.encode())

    def items():
        for i in range(num_images):
            rng = np.random.default_rng([seed, split_key, i])
            image, masks, labels, background = render(rng, (h, w), min_objects, max_objects)
            file_name = f"images/{split_name}_{i:06d}.png"
            Image.fromarray(image).save(out / file_name, format="PNG")
            info = {"id": i + 1, "file_name": file_name, "height": h, "width": w, "background": background}
            yield info, make_target(i + 1, masks_to_boxes(masks), labels, masks)

    records = items()
    if progress:
        from tqdm import tqdm

        records = tqdm(records, total=num_images, desc=f"synthetic {split_name}", unit="img")
    data = to_coco_json(records, CLASSES)
    data["info"] = {"description": "icm synthetic shapes", "seed": seed, "split": split_name,
                    "size": [h, w], "objects": [min_objects, max_objects]}
    path = out / f"instances_{split_name}.json"
    path.write_text(json.dumps(data))
    return path


def ensure_synthetic(out_dir, num_images: int, seed: int = 0, size: tuple[int, int] = (160, 160),
                     split_name: str = "train", min_objects: int = 1, max_objects: int = 5,
                     progress: bool = False) -> Path:
    """:func:`make_synthetic` unless ``out_dir`` already holds this very split.

    The split is reused when ``instances_<split_name>.json`` records the same seed,
    size and object counts, lists ``num_images`` images and every image file
    exists; otherwise it is generated again (same arguments, same bytes).
    """
    path = Path(out_dir) / f"instances_{split_name}.json"
    h, w = (int(s) for s in size)
    want = {"seed": seed, "split": split_name, "size": [h, w], "objects": [min_objects, max_objects]}
    try:
        data = json.loads(path.read_text())
        info = data.get("info", {})
        same = ({k: info.get(k) for k in want} == want and len(data["images"]) == num_images
                and all((path.parent / im["file_name"]).is_file() for im in data["images"]))
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if same:
        return path
    return make_synthetic(out_dir, num_images, seed, (h, w), min_objects, max_objects, split_name, progress)


def main(argv: list[str] | None = None) -> int:
    """``python -m icm.tasks.synthetic OUT --images N --seed S --size 160 [--split train]``."""
    p = argparse.ArgumentParser(prog="python -m icm.tasks.synthetic", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--images", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs="+", default=[160], metavar="PX",
                   help="side, or height and width (default 160)")
    p.add_argument("--min-objects", type=int, default=1)
    p.add_argument("--max-objects", type=int, default=5)
    p.add_argument("--split", default="train", help="split name (default train)")
    args = p.parse_args(argv)
    if len(args.size) > 2:
        p.error("--size takes one or two numbers")
    size = (args.size[0], args.size[-1])
    try:
        path = make_synthetic(args.out, args.images, args.seed, size, args.min_objects,
                              args.max_objects, args.split, progress=True)
    except IcmError as e:
        p.error(str(e))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
