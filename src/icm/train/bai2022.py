"""Training recipe of ``bai2022`` (Bai et al., AAAI 2022): the two steps of
``SEEDS.md`` section A, and the data they read.

A recipe (``configs/bai2022/``) names its step at the top level::

    step: 1                                   # or 2
    model:   {name: bai2022-fmnist, quality: 1, init: null}
    loss:    {alpha: 1.0, beta: 0.001, label_smoothing: 0.1}   # step 2: default (α, β) of the quality
    data:    {kind: fashion-mnist, batch_size: 128, val_limit: 1000}
    optim:   {lr: 5.0e-4, lr_batch: 512, weight_decay: 0.05, warmup_steps: 250, min_lr: 1.0e-5}
    trainer: {max_steps: 4000, val_every: 500, out_dir: runs/..., threads: 1, seed: 0}

Step 1
    No rate term, no hyperprior (its parameters are frozen, so DDP sees no
    unused parameters) and no quantisation (``ŷ = y``), loss ``CE (label smoothing 0.1) + 1e-3·MSE`` on ``0–255`` pixels.  DeiT
    optimiser: AdamW, ``lr · global_batch / lr_batch`` (5e-4 per 512 images),
    weight decay 0.05 except on biases, norms, cls token and position
    embedding; linear warm-up, then cosine to ``min_lr``.
Step 2
    Starts from step 1 (``model.init``), adds the hyperprior (trained from
    scratch: its step-1 weights are the untouched initialisation) and trains
    everything jointly on ``α·CE + β·MSE + bpp``: Adam, lr 1e-4 cosine to
    1e-5, gradient-norm clip 1.0.  The authors' code has a second optimiser
    (lr 1e-3) for the factorized prior's *quantile* parameters; icm's
    factorized prior has no quantiles (its coding tables are computed from the
    density itself), so there is no auxiliary loss and no second optimiser:
    the prior's density parameters are trained by the rate term.

Step 0
    Not part of the paper: the *pixel-domain baseline* that ``icm eval``
    classifies the anchors' decoded pixels with.  The same encoder and
    Transformer (:meth:`~icm.models.bai2022.Bai2022.classify_pixels`) trained
    on clean images with step 1's optimiser and schedule, on cross-entropy
    alone; the hyperprior, feature aggregation and pixel decoder are frozen
    and unused.

Data kinds:

``fashion-mnist``
    Debian's idx files (``root``, default ``/usr/share/datasets/fashion-mnist``):
    train split with light augmentation (random crop of the 2-pixel
    zero-padded image, horizontal flip), validation on the first
    ``val_limit`` test images.  The model pads 28² to its stride itself.
``imagefolder``
    ImageNet layout ``root/train/<class>/*.JPEG`` and ``root/val/<class>/…``
    (torchvision ``ImageFolder``): RandomResizedCrop to ``crop`` + flip,
    optional RandAugment (``randaugment: true``), random erasing
    (``random_erasing: p``) and mixup / cutmix (``mixup``, ``cutmix``: their
    α); validation resizes to ``crop / 0.875`` and centre-crops ``crop``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..errors import IcmError
from ..losses import rate_accuracy_distortion
from .optim import make_optimizer, schedule

_NO_DECAY = ("cls_token", "cls_pos", "pos_embed")


class Bai2022Module(L.LightningModule):
    """Thin Lightning wrapper holding the two training steps.

    Args:
        model: a :class:`icm.models.bai2022.Bai2022`, built outside.
        step: 1 (no rate, AdamW + warm-up) or 2 (rate, Adam).
        alpha, beta: weights of CE and of MSE on ``0–255`` pixels.
        label_smoothing: of the cross-entropy.
        lr: step 1: base lr per ``lr_batch`` images; step 2: the lr.
        lr_batch: step 1's linear scaling rule (the lr used is
            ``lr · global batch / lr_batch``, the global batch being
            ``batch_size`` × devices × gradient accumulation); ``None`` uses
            ``lr`` as is.
        batch_size: images per device and step.
        weight_decay: AdamW weight decay (step 1).
        warmup_steps: linear warm-up from ``lr / 1000`` (step 1).
        min_lr: end of the cosine schedule.
        max_steps: length of the schedule.
        clip: gradient-norm clip (``0``: none).
        latent_lr: step 2: lr of the hyperprior, which starts from scratch
            (default: ``lr``); it follows the same schedule (as a factor).
    """

    def __init__(self, model: nn.Module, step: int = 1, alpha: float = 1.0, beta: float = 1e-3,
                 label_smoothing: float = 0.1, lr: float = 5e-4, lr_batch: int | None = 512,
                 batch_size: int = 128, weight_decay: float = 0.05, warmup_steps: int = 0, min_lr: float = 1e-5,
                 max_steps: int = 10000, clip: float = 0.0, latent_lr: float | None = None) -> None:
        super().__init__()
        if step not in (0, 1, 2):
            raise IcmError(f"bai2022 has training steps 1 and 2 (and 0, the pixel-domain baseline), not {step!r}")
        self.model = model
        self.step = step
        self.alpha, self.beta, self.label_smoothing = alpha, beta, label_smoothing
        self.lr, self.lr_batch, self.batch_size, self.weight_decay = lr, lr_batch, batch_size, weight_decay
        self.warmup_steps, self.min_lr, self.max_steps_, self.clip = warmup_steps, min_lr, max_steps, clip
        self.latent_lr = latent_lr
        self.save_hyperparameters(ignore=["model"])
        if step <= 1:
            self.model.latent.requires_grad_(False)
        if step == 0:
            for part in (model.tap_proj, model.fuse, model.decoder):
                part.requires_grad_(False)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """Loss terms of a batch ``(images, targets)`` (see :func:`icm.losses.rate_accuracy_distortion`)."""
        x, target = batch
        if self.step == 0:
            logits = self.model.classify_pixels(x)
            ce = torch.nn.functional.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
            labels = target if target.dim() == 1 else target.argmax(dim=1)
            return {"loss": ce, "ce": ce, "acc": (logits.detach().argmax(dim=1) == labels).float().mean()}
        out = self.model(x, rate=self.step == 2)
        return rate_accuracy_distortion(out, x, target, self.alpha, self.beta, self.label_smoothing)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x = batch[0]
        terms = self.loss(batch)
        self.log_dict({f"{stage}/{k}": v.detach() for k, v in terms.items()},
                      prog_bar=stage == "train", on_step=stage == "train", on_epoch=stage != "train",
                      batch_size=x.shape[0], sync_dist=stage != "train")
        return terms["loss"]

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def _global_batch(self) -> int:
        trainer = self._trainer
        if trainer is None:
            return self.batch_size
        return self.batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self):
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if self.step <= 1:
            lr = self.lr * self._global_batch() / self.lr_batch if self.lr_batch else self.lr
            decay = [p for n, p in params if p.ndim > 1 and not n.endswith(_NO_DECAY)]
            rest = [p for n, p in params if not (p.ndim > 1 and not n.endswith(_NO_DECAY))]
            opt = make_optimizer("adamw", [{"params": decay, "weight_decay": self.weight_decay},
                                           {"params": rest, "weight_decay": 0.0}], lr=lr)
        else:
            lr = self.lr
            latent = [p for n, p in params if n.startswith("latent.")]
            rest = [p for n, p in params if not n.startswith("latent.")]
            opt = make_optimizer("adam", [{"params": rest}, {"params": latent, "lr": self.latent_lr or lr}], lr=lr)
        return {"optimizer": opt, "lr_scheduler": schedule(opt, self.max_steps_, floor=min(self.min_lr / lr, 1.0),
                                                           warmup=self.warmup_steps, start=1e-3)}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)


# -- data -------------------------------------------------------------------------------


class FashionMnist(Dataset):
    """Fashion-MNIST images ``(1, 28, 28)`` in ``[0, 1]`` with integer labels.

    Args:
        images: ``uint8 (N, 28, 28)``; labels: ``(N,)``.
        augment: random 28² crop of the 2-pixel zero-padded image, and a
            horizontal flip with probability 1/2 (drawn from torch's RNG).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool = False) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.images[i][None].float().div_(255.0)
        if self.augment:
            h, w = img.shape[-2:]
            dy, dx = torch.randint(0, 5, (2,)).tolist()
            img = torch.nn.functional.pad(img, (2, 2, 2, 2))[:, dy : dy + h, dx : dx + w]
            if torch.rand(()) < 0.5:
                img = img.flip(-1)
        return img, self.labels[i]


def _fashion_mnist(d: dict):
    from ..eval.datasets import (
        FASHION_MNIST_CLASSES,
        FASHION_MNIST_DIR,
        read_fashion_mnist,
    )

    root = d.get("root", FASHION_MNIST_DIR)
    train = FashionMnist(*read_fashion_mnist("train", root, d.get("train_limit")), augment=bool(d.get("augment", True)))
    val = FashionMnist(*read_fashion_mnist("test", root, int(d.get("val_limit", 1000))))
    return train, val, FASHION_MNIST_CLASSES


class MixCollate:
    """Batch collation with torchvision's mixup / cutmix (one of them per batch)."""

    def __init__(self, num_classes: int, mixup: float, cutmix: float) -> None:
        from torchvision.transforms import v2

        mixes = ([v2.MixUp(alpha=mixup, num_classes=num_classes)] if mixup > 0 else []) + \
                ([v2.CutMix(alpha=cutmix, num_classes=num_classes)] if cutmix > 0 else [])
        self.mix = v2.RandomChoice(mixes)

    def __call__(self, batch):
        from torch.utils.data import default_collate

        return self.mix(*default_collate(batch))


def _imagefolder(d: dict, in_channels: int):
    from torchvision import datasets
    from torchvision import transforms as T

    if "root" not in d:
        raise IcmError("data kind 'imagefolder' needs a 'root' with train/ (and val/) class folders")
    root = Path(d["root"])
    if not (root / "train").is_dir():
        raise IcmError(f"{root / 'train'} is not a directory (ImageNet layout: root/train/<class>/image)")
    crop = int(d.get("crop", 224))
    grey = [T.Grayscale()] if in_channels == 1 else []
    aug = [T.RandomResizedCrop(crop, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip()]
    if d.get("randaugment"):
        aug.append(T.RandAugment(num_ops=2, magnitude=9))
    post = [T.RandomErasing(p=float(d["random_erasing"]))] if d.get("random_erasing") else []
    train = datasets.ImageFolder(str(root / "train"), T.Compose(grey + aug + [T.ToTensor()] + post))
    val = None
    if (root / "val").is_dir():
        val = datasets.ImageFolder(str(root / "val"), T.Compose(
            grey + [T.Resize(round(crop / 0.875), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(crop),
                    T.ToTensor()]))
        if val.classes != train.classes:
            raise IcmError(f"{root}: train/ and val/ have different class folders")
    return train, val, tuple(train.classes)


def build(cfg: dict):
    """Model, LightningModule and data loaders of a ``bai2022`` recipe."""
    from ..models import create_model, model_info
    from .checkpoints import load_into
    from .resume import train_loader as make_train_loader

    m, d, o, t = cfg["model"], cfg["data"], cfg["optim"], cfg["trainer"]
    loss = cfg.get("loss") or {}
    step = int(cfg.get("step", 1))
    info = model_info(m["name"])
    model = create_model(info.name, quality=m.get("quality"), pretrained=False, **m.get("kwargs", {}))
    if m.get("init"):
        load_into(model, m["init"])
    model.train()

    kind = d.get("kind", "fashion-mnist")
    if kind == "fashion-mnist":
        if model.in_channels != 1:
            raise IcmError(f"data kind 'fashion-mnist' is greyscale; {info.name} takes {model.in_channels} channels")
        train, val, classes = _fashion_mnist(d)
    elif kind == "imagefolder":
        train, val, classes = _imagefolder(d, model.in_channels)
    else:
        raise IcmError(f"unknown data kind {kind!r} for {info.name}; known: fashion-mnist, imagefolder")
    if len(classes) > model.num_classes:
        raise IcmError(f"{len(classes)} classes in the data but {info.name} has {model.num_classes} outputs "
                       "(set model.kwargs.num_classes)")
    if len(classes) == model.num_classes and model.class_names[0] == "class 0":
        model.class_names = classes

    workers = int(d.get("workers", 0))
    batch = int(d.get("batch_size", 128))
    collate = None
    if float(d.get("mixup", 0)) > 0 or float(d.get("cutmix", 0)) > 0:
        collate = MixCollate(model.num_classes, float(d.get("mixup", 0)), float(d.get("cutmix", 0)))
    common = {"num_workers": workers, "persistent_workers": workers > 0}
    train_loader = make_train_loader(train, batch, int(t.get("seed", 0)), collate_fn=collate, num_workers=workers)
    val_loader = DataLoader(val, batch_size=int(d.get("val_batch_size", batch)), **common) if val else None

    default_alpha, default_beta = (1.0, 1e-3) if step <= 1 else (model.alpha, model.beta)
    lr_batch = o.get("lr_batch", 512 if step <= 1 else None)
    module = Bai2022Module(
        model, step=step,
        alpha=float(loss.get("alpha", default_alpha)), beta=float(loss.get("beta", default_beta)),
        label_smoothing=float(loss.get("label_smoothing", 0.1)),
        lr=float(o.get("lr", 5e-4 if step <= 1 else 1e-4)),
        lr_batch=int(lr_batch) if lr_batch else None,
        batch_size=batch,
        weight_decay=float(o.get("weight_decay", 0.05)),
        warmup_steps=int(o.get("warmup_steps", 0)),
        min_lr=float(o.get("min_lr", 1e-5)),
        max_steps=int(t.get("max_steps", 10000)),
        clip=float(o.get("clip", 0.0 if step <= 1 else 1.0)),
        latent_lr=float(o["latent_lr"]) if o.get("latent_lr") else None,
    )
    torch.manual_seed(int(t.get("seed", 0)))
    return model, module, train_loader, val_loader
