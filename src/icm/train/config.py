"""Reading a training recipe (YAML) into its sections."""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

from ..errors import IcmError


def load_config(path: str | os.PathLike) -> dict:
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise IcmError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise IcmError(f"config {path} is not valid YAML: {e}") from None
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise IcmError(f"config {path} needs at least a 'model' section")
    validate(cfg, path)
    for key in ("data", "optim", "trainer"):
        cfg.setdefault(key, {})
    return cfg


# -- what a recipe may say --------------------------------------------------------------------------------
# Every section's keys, by recipe kind (the keys the training code reads; icm.train.run and the
# family modules).  A key outside these is a typo or a setting nothing reads: an error naming it
# and the nearest valid key.  ``model.kwargs`` (architecture overrides) is checked by the
# builder's own signature; ``trainer`` keys beyond ours go to ``lightning.Trainer`` and are
# checked against its parameters.

TRAINER_OURS = frozenset({"max_steps", "val_every", "ckpt_every", "out_dir", "threads", "seed", "resume",
                          "keep_checkpoints", "ema"})
_MODEL = {"name", "quality", "init", "kwargs"}
SCHEMA: dict[str, dict[str, frozenset]] = {
    "rd": {
        "": frozenset({"model", "data", "optim", "trainer"}),
        "model": frozenset(_MODEL | {"lmbda"}),
        "data": frozenset({"kind", "crop", "batch_size", "workers", "val_side", "train_photos", "val_photos"}),
        "optim": frozenset({"lr", "final_lr_ratio", "clip"}),
    },
    "bai2022": {
        "": frozenset({"step", "model", "data", "loss", "optim", "trainer"}),
        "model": frozenset(_MODEL),
        "data": frozenset({"kind", "root", "crop", "batch_size", "val_batch_size", "workers", "augment", "cutmix",
                           "mixup", "randaugment", "random_erasing", "val_limit", "train_limit", "epoch_images"}),
        "loss": frozenset({"alpha", "beta", "label_smoothing"}),
        "optim": frozenset({"lr", "lr_batch", "latent_lr", "min_lr", "warmup_steps", "weight_decay", "clip"}),
    },
    "dicm": {
        "": frozenset({"stage", "model", "data", "loss", "moco", "optim", "train", "trainer"}),
        "model": frozenset(_MODEL | {"init_parts", "fit_prior", "fit_transform", "re_identity_gain"}),
        "data": frozenset({"kind", "root", "crop", "short_sides", "batch_size", "val_batch_size", "val_crop",
                           "val_resize", "workers", "stats_images", "train_photos", "val_photos", "box_size",
                           "epoch_images", "stamps", "stamp_scale"}),
        "loss": frozenset({"lmbda", "lmbda_warmup", "rate", "l1", "infonce", "re_mse", "std_mse", "stage_mse", "kl",
                           "kl_t", "ce", "quant", "tau", "mix"}),
        "moco": frozenset({"dim", "hidden", "queue", "momentum", "temperature", "warmup_epochs", "refresh_every"}),
        "optim": frozenset({"name", "lr", "lr_batch", "min_lr", "momentum", "weight_decay", "clip"}),
    },
    "detection": {
        "": frozenset({"task", "path", "model", "heads", "data", "optim", "trainer"}),
        "model": frozenset(_MODEL | {"pretrained", "init_parts", "heads_init", "latent_qualities", "train_only"}),
        "heads": frozenset({"fpn_channels", "representation_size", "mask_layers", "mask_agnostic", "anchor_sizes",
                            "aspect_ratios",
                            "rpn_batch_size_per_image", "box_batch_size_per_image", "rpn_pre_nms_top_n_test",
                            "rpn_post_nms_top_n_test"}),
        "data": frozenset({"kind", "root", "val_root", "image_set", "val_image_set", "annotations", "images",
                           "val_annotations", "val_images", "size", "train_images", "flip", "seed",
                           "batch_size", "val_batch_size", "val_limit", "workers", "epoch_images",
                           "train_photos", "val_photos", "views", "short_side", "stamps", "score",
                           "val_long_side", "val_views", "stamp_scale", "categories"}),
        "optim": frozenset({"name", "lr", "min_lr", "momentum", "weight_decay", "warmup_steps", "clip"}),
    },
    "dense": {
        "": frozenset({"task", "model", "dense", "data", "loss", "optim", "trainer"}),
        "model": frozenset({"name", "quality", "heads_init", "dense_init", "paths"}),
        "dense": frozenset({"kind", "width", "refine", "score_thresh", "iou", "max_det", "finetune", "cut", "enter",
                            "decoder_width"}),
        "data": frozenset({"train_photos", "val_photos", "size", "short_side", "stamps", "batch_size"}),
        "loss": frozenset({"mimic", "cls", "box", "box_from", "picture"}),
        "optim": frozenset({"lr", "min_lr", "weight_decay", "warmup_steps", "clip", "upper_lr_scale"}),
    },
}
_NESTED = {("dicm", "model", "fit_prior"): frozenset({"images", "steps"}),
           ("dicm", "model", "fit_transform"): frozenset({"images", "step"})}


# The kind of value a key takes wherever it appears (None, YAML's null, always means "unset").
# Numbers may be written as YAML strings ("2e-4": PyYAML reads exponents without a dot so).
_NUMBER = frozenset({"stamps", "lr", "final_lr_ratio", "clip", "lmbda", "alpha", "beta", "label_smoothing", "latent_lr",
                     "min_lr", "weight_decay", "momentum", "temperature", "rate", "l1", "infonce", "re_mse", "std_mse",
                     "kl", "kl_t", "ce", "re_identity_gain", "cutmix", "mixup", "random_erasing", "mimic", "cls", "box",
                     "box_from", "score_thresh", "iou", "upper_lr_scale", "picture", "ema"})
_INTEGER = frozenset({"crop", "batch_size", "workers", "val_side", "val_batch_size", "val_limit", "train_limit",
                      "warmup_steps", "lr_batch", "lmbda_warmup", "dim", "hidden", "queue", "warmup_epochs",
                      "refresh_every", "stats_images", "val_crop", "val_resize", "quality", "stage", "step",
                      "max_steps", "val_every", "ckpt_every", "threads", "seed", "size", "train_images",
                      "fpn_channels", "representation_size", "rpn_batch_size_per_image",
                      "box_batch_size_per_image", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test",
                      "box_size", "epoch_images", "width", "refine", "max_det", "cut", "enter", "decoder_width"})
_BOOL = frozenset({"augment", "flip", "pretrained", "keep_checkpoints", "finetune"})
_LIST = frozenset({"stamp_scale", "short_sides", "train_photos", "val_photos", "init_parts", "latent_qualities", "stage_mse",
                   "anchor_sizes", "aspect_ratios", "train", "mask_layers", "paths"})
_TEXT = frozenset({"name", "kind", "init", "heads_init", "dense_init", "out_dir", "resume", "task", "path", "image_set",
                   "val_image_set", "annotations", "val_annotations"})


def _is_number(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    try:
        float(v)
        return isinstance(v, str)
    except (TypeError, ValueError):
        return False


def _kind_error(where: str, key: str, value):
    checks = ((_NUMBER, _is_number, "a number"),
              (_INTEGER, lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and v.isdigit()),
               "a whole number"),
              (_BOOL, lambda v: isinstance(v, bool), "true or false"),
              (_LIST, lambda v: isinstance(v, list), "a list"),
              (_TEXT, lambda v: isinstance(v, str), "text"))
    for keys, ok, what in checks:
        if key in keys and value is not None and not ok(value):
            return f"{where}{key} must be {what}, not {value!r}"
    return None


def check_ema(decay) -> float:
    """``trainer.ema`` as a float in [0, 1), or an :class:`IcmError` naming the bad value."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) \
            or not 0.0 <= decay < 1.0:
        raise IcmError(f"trainer.ema must be a number in [0, 1) (the average's decay per step), not {decay!r}")
    return float(decay)


def recipe_kind(cfg: dict) -> str:
    """``detection``, ``dicm``, ``bai2022`` or ``rd`` (the rate–distortion recipes), as :func:`icm.train.run.build` dispatches."""
    if cfg.get("task") == "dense":
        return "dense"
    if "task" in cfg:
        return "detection"
    if "stage" in cfg:
        return "dicm"
    if "step" in cfg:
        return "bai2022"
    return "rd"


def _unknown(where: str, key, known, path) -> IcmError:
    import difflib

    near = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(sorted(known))})"
    return IcmError(f"{path}: unknown key {where}{key!r}{hint}")


def validate(cfg: dict, path="recipe") -> dict:
    """Check every key of a recipe (:data:`SCHEMA`); returns ``cfg``.

    Raises:
        IcmError: an unknown key (named, with the nearest valid one), a section that is
            not a mapping, or Lightning's gradient clipping (the recipes clip with ``optim.clip``).
    """
    kind = recipe_kind(cfg)
    schema = SCHEMA[kind]
    for key in cfg:
        if key not in schema[""]:
            raise _unknown("", key, schema[""], path)
        bad = _kind_error("", key, cfg[key])
        if bad:
            raise IcmError(f"{path}: {bad}")
    for section, known in schema.items():
        value = cfg.get(section) if section else None
        if not section or value is None:
            continue
        if not isinstance(value, dict):
            raise IcmError(f"{path}: '{section}' must be a mapping, not {type(value).__name__}")
        for key, sub in value.items():
            if key not in known:
                raise _unknown(f"{section}.", key, known, path)
            bad = _kind_error(f"{section}.", key, sub) if (kind, section, key) not in _NESTED else None
            if bad:
                raise IcmError(f"{path}: {bad}")
            nested = _NESTED.get((kind, section, key))
            if nested is not None and isinstance(sub, dict):
                for k in sub:
                    if k not in nested:
                        raise _unknown(f"{section}.{key}.", k, nested, path)
    trainer = cfg.get("trainer") or {}
    if not isinstance(trainer, dict):
        raise IcmError(f"{path}: 'trainer' must be a mapping, not {type(trainer).__name__}")
    for key in ("gradient_clip_val", "gradient_clip_algorithm"):
        if key in trainer:
            raise IcmError(f"{path}: trainer.{key} has no effect here: the recipes clip gradients with optim.clip")
    for key in TRAINER_OURS & set(trainer):
        bad = _kind_error("trainer.", key, trainer[key])
        if bad:
            raise IcmError(f"{path}: {bad}")
    if trainer.get("ema") is not None:
        if kind == "dense":
            raise IcmError(f"{path}: trainer.ema: the dense loop keeps no weight average (a Lightning recipe does)")
        try:
            check_ema(trainer["ema"])
        except IcmError as e:
            raise IcmError(f"{path}: {e}") from None
    extra = [k for k in trainer if k not in TRAINER_OURS]
    if extra:
        known = _lightning_trainer_keys()
        if known is not None:
            for key in extra:
                if key not in known:
                    raise _unknown("trainer.", key, set(known) | TRAINER_OURS, path)
    return cfg


def _lightning_trainer_keys() -> frozenset | None:
    """``lightning.Trainer``'s keyword parameters (None without Lightning: checked when it runs)."""
    import inspect

    try:
        import lightning
    except ImportError:
        return None
    return frozenset(p for p in inspect.signature(lightning.Trainer.__init__).parameters if p != "self")
