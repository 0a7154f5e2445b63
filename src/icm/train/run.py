"""``icm train CONFIG``: read a YAML recipe, build model and data, run Lightning.

A recipe has four sections (see ``configs/``)::

    model:   {name: hyperprior, quality: 3, init: null}      # init: a .ckpt or .safetensors to start from
    data:    {kind: photos, crop: 128, batch_size: 8, workers: 0}
    optim:   {lr: 3e-4, final_lr_ratio: 0.1, clip: 1.0}
    trainer: {max_steps: 8000, val_every: 1000, out_dir: runs/hyperprior-q3, threads: 1, seed: 0}

``bai2022`` recipes add ``step`` and ``loss`` (see :mod:`icm.train.bai2022`),
``dicm`` recipes ``stage`` (:mod:`icm.train.dicm`); a top-level ``task: detect``
or ``task: segment`` trains detection heads on a ``dicm`` codec
(:mod:`icm.train.detection`).
Every key of ``trainer`` beyond ours goes to ``lightning.Trainer`` as is
(``accelerator``, ``devices``, ``strategy: ddp``, ``num_nodes``, …).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import IcmError
from .config import TRAINER_OURS as _OURS
from .config import load_config  # noqa: F401  (icm.train.run.load_config, as before)


def build(cfg: dict):
    """Model, LightningModule and data loaders of a recipe: ``task: detect|segment`` trains
    detection heads (:mod:`.detection`); otherwise the model's family says how
    (``register_model(..., train=...)``)."""
    from ..models import model_info
    from ..models._registry import resolve_hook

    if "task" in cfg:
        from .detection import build as build_detection

        return build_detection(cfg)
    info = model_info(cfg["model"]["name"])
    train = resolve_hook(info.train)
    if train is None:
        raise IcmError(f"model {info.name!r} declares no training recipe (register_model(..., train=...))")
    return train(cfg)


def build_rd(cfg: dict):
    """A rate–distortion photo codec's recipe (the hyperprior): photo crops, ``bpp + λ·MSE``."""
    import torch
    from torch.utils.data import DataLoader

    from ..data import PhotoCrops, PhotoList, recipe_photos
    from ..models import create_model, model_info
    from .checkpoints import load_into
    from .rd import RateDistortionModule

    m, d, o, t = cfg["model"], cfg["data"], cfg["optim"], cfg["trainer"]
    info = model_info(m["name"])
    model = create_model(info.name, quality=m.get("quality"), pretrained=False, **m.get("kwargs", {}))
    if m.get("init"):
        load_into(model, m["init"])
    model.train()
    lmbda = float(m.get("lmbda", getattr(model, "lmbda", 0.01)))
    if d.get("kind", "photos") != "photos":
        raise IcmError(f"unknown data kind {d.get('kind')!r} for {info.name}")
    batch = int(d.get("batch_size", 8))
    train = PhotoCrops(recipe_photos(d, "train"), size=int(d.get("crop", 128)), seed=int(t.get("seed", 0)),
                       batch_size=batch)
    val = PhotoList(recipe_photos(d, "val"), max_side=int(d.get("val_side", 256)))
    workers = int(d.get("workers", 0))
    train_loader = DataLoader(train, batch_size=batch, num_workers=workers)
    val_loader = DataLoader(val, batch_size=1)
    module = RateDistortionModule(model, lmbda=lmbda, lr=float(o.get("lr", 1e-4)),
                                  max_steps=int(t.get("max_steps", 10000)),
                                  final_lr_ratio=float(o.get("final_lr_ratio", 0.1)), clip=float(o.get("clip", 1.0)))
    torch.manual_seed(int(t.get("seed", 0)))
    return model, module, train_loader, val_loader


def run(cfg: dict, max_steps: int | None = None, callbacks=(), **trainer_kwargs) -> Path:
    """Train a recipe; returns the path of the last checkpoint.

    Every step is seeded from ``(seed, rank, step)`` and checkpoints keep the position in
    the epoch (:class:`icm.train.resume.ExactResume`): ``trainer: {resume: last}``
    continues an interrupted run bit for bit.  ``callbacks`` and ``trainer_kwargs`` go to
    ``lightning.Trainer`` after the recipe's own (the tests interrupt runs with them)."""
    import warnings

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from .ema import WeightEma
    from .resume import ExactResume

    if cfg.get("task") == "dense":  # a plain loop of its own (icm.train.dense), not Lightning
        from .dense import train as train_dense

        return train_dense(cfg, max_steps)
    t = cfg["trainer"]
    if max_steps is not None:
        t["max_steps"] = max_steps
    if t.get("threads"):
        torch.set_num_threads(int(t["threads"]))
    seed = int(t.get("seed", 0))
    L.seed_everything(seed, verbose=False)
    model, module, train_loader, val_loader = build(cfg)
    out = Path(t.get("out_dir", "runs/train"))
    # keep_checkpoints: every periodic checkpoint stays (step-<N> files), to pick a step by validation loss later
    keep = {"save_top_k": -1, "filename": "step-{step}"} if t.get("keep_checkpoints") else {}
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, every_n_train_steps=int(t.get("ckpt_every", 500)),
                           **keep)
    kwargs = {"max_steps": int(t.get("max_steps", 10000)), "val_check_interval": int(t.get("val_every", 1000)),
              "check_val_every_n_epoch": None,
              "limit_val_batches": len(val_loader) if val_loader is not None else 0,
              "logger": CSVLogger(out, name="logs"), "enable_model_summary": False}
    kwargs.update({k: v for k, v in t.items() if k not in _OURS})
    kwargs.update(trainer_kwargs)
    # trainer.ema: validation and checkpoints see the averaged weights (icm.train.ema)
    ours = [ExactResume(seed, train_loader), ckpt, WeightEma(t.get("ema"))]
    trainer = L.Trainer(callbacks=[*ours, *callbacks], **kwargs)
    resume = t.get("resume")
    if resume == "last":
        last = out / "checkpoints" / "last.ckpt"
        resume = str(last) if last.exists() else None
    with warnings.catch_warnings():
        # ExactResume restores the position in the epoch, which Lightning cannot see
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume)
    return out / "checkpoints" / "last.ckpt"
