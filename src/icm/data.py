"""Offline image data: the natural photos that install with our dependencies
(and Debian's ``opencv-doc``), split once and for all into

* ``train`` — codec training crops;
* ``val`` — monitoring during training (never used to pick weights);
* ``test`` — held out: every figure we publish for the codecs comes from these,
  and the demo's bundled samples are drawn from them.

A source is named ``"origin:name"``: ``skimage:rocket``, ``sklearn:china``,
``matplotlib:grace_hopper``, ``opencv:fruits.jpg``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
OPENCV_INSTALL = "apt-get install opencv-doc"

TEST_PHOTOS = (
    "skimage:astronaut",
    "skimage:coffee",
    "skimage:chelsea",
    "sklearn:china",
    "sklearn:flower",
    "matplotlib:grace_hopper",
)
VAL_PHOTOS = ("opencv:fruits.jpg", "opencv:baboon.jpg", "opencv:building.jpg", "opencv:home.jpg")
_SKIMAGE_TRAIN = (
    "rocket", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry", "retina",
    "camera", "coins", "grass", "gravel", "brick", "moon", "clock",
)
SKIMAGE_TRAIN_PHOTOS = tuple(f"skimage:{n}" for n in _SKIMAGE_TRAIN)
"""The training photos that install with pip (scikit-image): the same on every machine."""
# Synthetic drawings, calibration targets and text: not photos.
_OPENCV_SKIP = {
    "chessboard.png", "sudoku.png", "gradient.png", "imageTextN.png", "imageTextR.png", "notes.png",
    "digits.png", "ml.png", "cards.png", "opencv-logo.png", "opencv-logo-white.png", "LinuxLogo.jpg",
    "WindowsLogo.jpg", "mask.png", "box.png", "box_in_scene.png", "templ.png", "tmpl.png",
    "detect_blob.png", "ellipses.jpg", "pic1.png", "pic2.png", "pic3.png", "pic4.png", "pic5.png",
    "pic6.png", "text_defocus.jpg", "text_motion.jpg", "ela_modified.jpg", "aloeGT.png",
}


def load_photo(source: str) -> np.ndarray:
    """Load one offline photo as ``uint8`` RGB ``(H, W, 3)``."""
    origin, _, name = source.partition(":")
    if origin == "skimage":
        import skimage.data

        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo pairs
            img = img[0]
    elif origin == "sklearn":
        from sklearn.datasets import load_sample_image

        img = load_sample_image(f"{name}.jpg")
    elif origin == "matplotlib":
        import matplotlib.cbook

        from PIL import Image

        with matplotlib.cbook.get_sample_data(f"{name}.jpg") as f:
            img = np.asarray(Image.open(f).convert("RGB"))
    elif origin in ("opencv", "file"):
        from PIL import Image

        path = os.path.join(OPENCV_DATA, name) if origin == "opencv" else name
        img = np.asarray(Image.open(path).convert("RGB"))
    else:
        raise ValueError(f"unknown photo origin in {source!r}")
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def opencv_photos_available() -> bool:
    """Whether Debian's ``opencv-doc`` example photos are installed."""
    return os.path.isfile(os.path.join(OPENCV_DATA, "fruits.jpg"))


def photo_sources(split: str) -> tuple[str, ...]:
    """Sources of a split: ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        IcmError: ``train`` or ``val`` without Debian's ``opencv-doc`` (both splits
            draw on its photos; the command that installs it is in the message).
    """
    if split == "test":
        return TEST_PHOTOS
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}")
    if not opencv_photos_available():
        from .errors import IcmError

        raise IcmError(f"the {split} photos include Debian's opencv-doc examples ({OPENCV_DATA}), "
                       f"which are not installed: {OPENCV_INSTALL}")
    if split == "val":
        return VAL_PHOTOS
    names = sorted(
        os.path.basename(p)
        for p in glob.glob(os.path.join(OPENCV_DATA, "*"))
        if p.lower().endswith((".jpg", ".png"))
    )
    held = {s.split(":", 1)[1] for s in VAL_PHOTOS}
    opencv = [f"opencv:{n}" for n in names if n not in _OPENCV_SKIP and n not in held]
    return SKIMAGE_TRAIN_PHOTOS + tuple(opencv)


def recipe_photos(data: dict, split: str) -> tuple[str, ...]:
    """The photos a recipe's ``data`` section trains (``train``) or validates (``val``) on:
    its own list (``train_photos`` / ``val_photos``), else the split's."""
    return tuple(data.get(f"{split}_photos") or photo_sources(split))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, 3)`` → ``float32 (3, H, W)`` in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255.0)


class PhotoCrops(IterableDataset):
    """Endless random crops (with flips) of a list of photos, held in memory.

    Args:
        sources: photo sources (see :func:`load_photo`).
        size: crop side; photos smaller than this are skipped.
        seed: base seed; each worker derives its own stream.
        short_sides: if given, crop from copies of every photo resized (bicubic)
            to each of these short sides instead of from the photo as it is:
            the scales a network sees at evaluation (short side 256 before
            224² crops), not the photos' native ones.
    """

    def __init__(self, sources, size: int = 128, seed: int = 0, short_sides=None) -> None:
        self.size = size
        self.seed = seed
        photos = [load_photo(s) for s in sources]
        if short_sides:
            photos = [_resized(im, int(r), 0) for r in short_sides for im in photos]
        self.images = [im for im in photos if min(im.shape[:2]) >= size]
        if not self.images:
            raise ValueError(f"no photo is at least {size} pixels on each side")
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.weights = areas / areas.sum()  # sample in proportion to area

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng(self.seed + (info.id if info else 0))
        s = self.size
        while True:
            im = self.images[rng.choice(len(self.images), p=self.weights)]
            y = rng.integers(0, im.shape[0] - s + 1)
            x = rng.integers(0, im.shape[1] - s + 1)
            crop = im[y : y + s, x : x + s]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            yield to_tensor(crop)


class PhotoList(Dataset):
    """Whole photos (for validation), optionally centre-cropped to a multiple of ``multiple``."""

    def __init__(self, sources, max_side: int | None = 512) -> None:
        self.items = []
        for s in sources:
            im = load_photo(s)
            if max_side:
                im = im[:max_side, :max_side]
            self.items.append(to_tensor(im))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.items[i]


def _resized(img: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """Short side resized to ``resize`` (bicubic), neither side below ``crop``."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = resize / min(h, w)
    size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def centre_crop(img: np.ndarray, resize: int = 256, crop: int = 224) -> np.ndarray:
    """The ``crop``² centre crop after resizing the short side to ``resize`` (bicubic)."""
    im = _resized(img, resize, crop)
    h, w = im.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    return np.ascontiguousarray(im[top : top + crop, left : left + crop])


def five_crops(img: np.ndarray, resize: int = 256, crop: int = 224) -> list[np.ndarray]:
    """Centre and four corner ``crop``² crops after resizing the short side to ``resize``
    (bicubic), the usual ImageNet evaluation views."""
    im = _resized(img, resize, crop)
    h, w = im.shape[:2]
    tops = ((h - crop) // 2, 0, 0, h - crop, h - crop)
    lefts = ((w - crop) // 2, 0, w - crop, 0, w - crop)
    return [np.ascontiguousarray(im[t : t + crop, l : l + crop]) for t, l in zip(tops, lefts)]


class FiveCrops(Dataset):
    """:func:`five_crops` of every photo of ``sources``, as ``(3, crop, crop)`` tensors."""

    def __init__(self, sources, resize: int = 256, crop: int = 224) -> None:
        self.items = [to_tensor(c) for s in sources for c in five_crops(load_photo(s), resize, crop)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.items[i]
