"""Detection training data labelled by the teacher as it is drawn.

Fixed pseudo-labels (:mod:`icm.teachers.pseudo`) give one answer per picture; the heads
learn better from many views of few pictures, each labelled for what it shows.
:class:`TeacherCrops` draws a random view of a training photo — rescaled, cropped,
mirrored and, for a share of them, with a photographic Tux Paint stamp pasted on
(:func:`icm.data.composite_stamp`) — and asks the NanoDet teacher
(:class:`icm.teachers.nanodet.Teacher`) what it sees there.  Its boxes above the score
threshold are the target, labelled with their COCO 2017 ids (1…90 with gaps), so heads
trained on it answer in COCO's names.

:class:`TeacherLabels` is the fixed counterpart for validation: the teacher's boxes on
whole photos (the validation split's), computed once.

A recipe of :mod:`icm.train.detection` names them with ``data: {kind: teacher, ...}``::

    data: {kind: teacher, train_photos: [set:train, set:pool], val_photos: [set:val],
           size: 320, views: 16, short_side: [256, 480], stamps: 0.3, score: 0.35,
           val_long_side: 512, batch_size: 4}
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import IcmError
from .pseudo import COCO_IDS

_TEACHER = None


def teacher():
    """The NanoDet teacher, loaded once per process (data-loader workers load their own)."""
    global _TEACHER
    if _TEACHER is None:
        from .nanodet import load_teacher

        _TEACHER = load_teacher()
    return _TEACHER


def coco_categories() -> dict[int, str]:
    """``{COCO 2017 id: name}`` of the teacher's 80 classes."""
    from .nanodet import COCO_CLASSES

    return {int(i): str(n) for i, n in zip(COCO_IDS, COCO_CLASSES)}


def _resize(image: np.ndarray, short: int) -> np.ndarray:
    """``image`` rescaled (PIL bilinear, antialiased) so that its short side is ``short``."""
    from PIL import Image

    h, w = image.shape[:2]
    f = short / min(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    if size == (w, h):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=None))


def coco_detections(image: np.ndarray, score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's detections on an RGB picture: ``(boxes (N, 4) xyxy, labels (N,) as COCO
    2017 ids, scores (N,))``, best first."""
    found = teacher().detect(np.ascontiguousarray(image), score_thresh=score)
    labels = np.array([COCO_IDS[int(k)] for k in found.labels], dtype=np.int64)
    return found.boxes.reshape(-1, 4), labels, found.scores


def label(image: np.ndarray, image_id: int, score: float) -> dict:
    """The teacher's detections on ``image`` as a detection target (COCO ids)."""
    from ..tasks.annotations import make_target

    boxes, labels, scores = coco_detections(image, score)
    keep = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)
    return make_target(image_id, boxes[keep], labels[keep], scores=(scores[keep] * 1000).round())


class TeacherCrops(Dataset):
    """Random views of training photos, each labelled by the teacher when drawn.

    Item ``i`` is a view of photo ``i % len(sources)``; ``views`` items per photo make an
    epoch.  Its randomness comes from torch's generator, which the training loader seeds
    per item and epoch (:class:`icm.train.resume.SeededItems`), so every epoch draws new
    views and a resumed run draws the same ones.  A view: the photo rescaled so that its
    short side is uniform in ``short_side``, a random crop of at most ``size``² of it, a
    horizontal flip half of the time, and with probability ``stamps`` one Tux Paint stamp
    pasted on a square crop (:func:`icm.data.composite_stamp`).

    Items are ``(uint8 (H, W, 3), target)`` with ``boxes``, ``labels`` (COCO ids),
    ``scores`` (the teacher's, ×1000), ``area``, ``iscrowd`` and ``image_id`` ``i``.

    Args:
        sources: photo sources (:func:`icm.data.load_photo`), held in memory once read.
        size: largest crop side.
        views: items per photo in an epoch.
        short_side: range of the rescaled photo's short side.
        stamps: share of views with a stamp; needs the stamps (``icm data pull
            tuxpaint-stamps``), else 0.
        score: the teacher's score threshold.
    """

    def __init__(self, sources, size: int = 320, views: int = 16, short_side=(256, 480),
                 stamps: float = 0.3, score: float = 0.35) -> None:
        from ..data import tuxpaint_stamps

        self.sources = tuple(sources)
        if not self.sources:
            raise IcmError("no training photos for the teacher's views")
        self.size, self.views, self.score = int(size), int(views), float(score)
        self.short_side = (int(short_side[0]), int(short_side[-1]))
        if not 32 <= self.short_side[0] <= self.short_side[1]:
            raise IcmError(f"short_side must be a range [low, high] with 32 <= low <= high, got {short_side!r}")
        self.stamp_paths = tuxpaint_stamps() if stamps > 0 else ()
        self.stamps = float(stamps) if self.stamp_paths else 0.0
        self._photos: dict[int, np.ndarray] = {}
        self._stamps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.sources) * self.views

    def _photo(self, k: int) -> np.ndarray:
        if k not in self._photos:
            from ..data import load_photo

            self._photos[k] = load_photo(self.sources[k])
        return self._photos[k]

    def _stamp(self, k: int) -> np.ndarray:
        if k not in self._stamps:
            from ..data import load_stamp

            self._stamps[k] = load_stamp(self.stamp_paths[k])
        return self._stamps[k]

    def view(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """The view of item ``i`` drawn from ``rng``."""
        from ..data import composite_stamp

        image = _resize(self._photo(i % len(self.sources)), int(rng.integers(self.short_side[0], self.short_side[1] + 1)))
        h, w = image.shape[:2]
        ch, cw = min(h, self.size), min(w, self.size)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        image = image[y : y + ch, x : x + cw]
        if self.stamps and rng.random() < self.stamps:
            stamp = self._stamp(int(rng.integers(len(self.stamp_paths))))
            image, _ = composite_stamp(image, stamp, min(ch, cw), rng, scale=(0.3, 0.9))
        if rng.random() < 0.5:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)

    def __getitem__(self, i: int):
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        image = self.view(int(i), rng)
        return image, label(image, int(i), self.score)


class TeacherLabels(Dataset):
    """Whole photos with the teacher's detections as targets, computed once.

    Args:
        sources: photo sources (:func:`icm.data.load_photo`).
        long_side: photos larger than this are shrunk to it first (0: never).
        score: the teacher's score threshold.
    """

    def __init__(self, sources, long_side: int = 512, score: float = 0.35) -> None:
        self.items = []
        for k, source in enumerate(sources):
            from ..data import load_photo

            image = load_photo(source)
            if long_side and max(image.shape[:2]) > long_side:
                image = _resize(image, max(1, round(long_side * min(image.shape[:2]) / max(image.shape[:2]))))
            self.items.append((np.ascontiguousarray(image), label(image, k + 1, score)))
        self.sources = tuple(sources)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        image, target = self.items[i]
        return image, {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in target.items()}


class StampInstances(Dataset):
    """Exact instance masks: a photographic Tux Paint stamp (an object cut out on
    transparency) pasted on a random view of a photo, its alpha (> 127) the mask and
    the alpha's extent the box.  No teacher and no class: for a class-agnostic mask head
    (:class:`icm.tasks.detection.AgnosticMaskPredictor`) learned under boxes that come
    from elsewhere; every instance has label 1.

    The photo's other objects are not annotated, so these targets train masks only
    (``model: train_only: mask`` in a recipe), never boxes or classes.

    Args:
        sources: background photo sources.
        size: largest crop side (the composite is a square of the view's short side).
        views: items per photo in an epoch.
        short_side: range of the rescaled photo's short side.
        scale: range of the stamp's longer side as a share of the square.
        fixed: item ``i`` always the same composite (seeded by ``i``; validation),
            rather than torch's generator's draw.
    """

    def __init__(self, sources, size: int = 320, views: int = 4, short_side=(256, 480),
                 scale=(0.3, 0.9), fixed: bool = False) -> None:
        from ..data import tuxpaint_stamps

        self.crops = TeacherCrops(sources, size=size, views=views, short_side=short_side, stamps=0.0)
        self.stamp_paths = tuxpaint_stamps()
        if not self.stamp_paths:
            raise IcmError("stamp instances need the Tux Paint stamps: icm data pull tuxpaint-stamps-default")
        self.crops.stamp_paths = self.stamp_paths
        self.scale, self.fixed = (float(scale[0]), float(scale[-1])), bool(fixed)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        from ..data import composite_stamp
        from ..tasks.annotations import make_target

        seed = (7919, int(i)) if self.fixed else int(torch.randint(0, 2**62, ()))
        rng = np.random.default_rng(seed)
        view = self.crops.view(int(i), rng)
        stamp = self.crops._stamp(int(rng.integers(len(self.stamp_paths))))
        image, alpha = composite_stamp(view, stamp, min(view.shape[:2]), rng, scale=self.scale)
        mask = (alpha > 127).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        if not len(xs):  # a stamp too faint to hold a pixel above 127: an image without objects
            return image, make_target(int(i), np.zeros((0, 4)), [], np.zeros((0, *mask.shape), np.uint8))
        box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
        return image, make_target(int(i), box, [1], mask[None])
