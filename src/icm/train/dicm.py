"""Training recipe of ``dicm`` (Tang, Yi, Wang 2025): the four stages of
``SEEDS.md`` section B, as one thin Lightning module and the data they read.

A recipe (``configs/dicm/``) names its stage at the top level::

    stage: 4
    model:   {name: dicm-lite0, quality: 4, init: runs/dicm-lite0-stage3/checkpoints/last.ckpt}
    loss:    {...}                      # the stage's weights; defaults are the paper's
    data:    {kind: photos, crop: 224, batch_size: 8, short_sides: [256, 320]}  # or imagefolder (root, crop)
             # stages 2 and 4: ``stamps: 0.5`` pastes a Tux Paint stamp on half the crops
             # (icm.data.StampComposites; ``stamp_scale: [0.3, 0.8]`` of the crop side)
    optim:   {name: adamw, lr: 1.0e-4, min_lr: 1.0e-6, weight_decay: 0.0}
    moco:    {queue: 65536, momentum: 0.999, temperature: 0.2, warmup_epochs: 10, refresh_every: 20}
    trainer: {max_steps: ..., out_dir: ..., threads: 1}

Stage 1 — backbone pre-training (MoCo v2 + ContrastiveCrop, :mod:`.moco`):
    the backbone's pooled last stage is the MoCo encoder; crops are plain for
    ``warmup_epochs`` and guided by the heatmap boxes after, refreshed every
    ``refresh_every`` epochs.  Stage 2 starts from its checkpoint
    (``model.init``): the RE module and codec in it are still untouched.
Stage 2 — RE module alone, backbone frozen:
    ``rate(RE bottleneck) + 128·L1(f, f_re)``, Adam 1e-4.  ``model:
    re_identity_gain`` starts an RE without stages as the identity
    (:meth:`~icm.models.dicm.RedundancyElimination.init_identity`).
    Stage 4's ``model: fit_transform: {images, step}`` fits a block-transform
    codec to that many training crops first (:func:`icm.train.calibrate.fit_block_transform`);
    ``model: fit_prior: {images, steps}`` fits a factorized latent's densities
    to the codec's ``y`` (:func:`icm.train.calibrate.fit_prior`).
Stage 3 — joint: ``InfoNCE + 0.1·rate + 0.1·L1`` with guided crops, SGD 1e-3
    cosine; the MoCo encoder is head → RE → tail → pool.  ``train`` lists the
    parts that learn (paper: ``[head, re, tail]``).
Stage 4 — codec only, everything else frozen:
    ``λ·bpp + 2048·MSE(f_re, f̂) + 384/256/192·MSE`` of the three tail stages
    against the uncompressed network (head → tail, no RE, no codec), AdamW
    1e-4; λ is the quality's (:data:`icm.models.dicm.QUALITIES`).

Frozen parts stay in eval mode (their BatchNorm statistics do not move).
Rates are bits per pixel of the input crop.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..errors import IcmError
from ..losses import bpp
from .optim import make_optimizer, schedule

STAGE_DEFAULTS = {
    1: {"optim": {"name": "sgd", "lr": 0.03, "lr_batch": 256, "momentum": 0.9, "weight_decay": 1e-4}},
    2: {"loss": {"rate": 1.0, "l1": 128.0}, "optim": {"name": "adam", "lr": 1e-4}},
    3: {"loss": {"infonce": 1.0, "rate": 0.1, "l1": 0.1},
        "optim": {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4}},
    4: {"loss": {"re_mse": 2048.0, "stage_mse": (384.0, 256.0, 192.0)}, "optim": {"name": "adamw", "lr": 1e-4}},
}


def bits_per_pixel(likelihoods, pixels: int) -> Tensor:
    """:func:`icm.losses.bpp` of one likelihood tensor or a dict of them; ``pixels`` per image."""
    liks = likelihoods if isinstance(likelihoods, dict) else {"x": likelihoods}
    return bpp(liks, next(iter(liks.values())).shape[0] * pixels)


class _Encoder(nn.Module):
    """MoCo encoder on a dicm model: head (→ RE) → tail → global average pool.

    With ``re`` the RE module's rate and L1 of the last call are kept in
    ``self.aux`` for stage 3's loss.
    """

    def __init__(self, model, re: bool) -> None:
        super().__init__()
        self.head, self.tail = model.backbone.head, model.backbone.tail
        self.re = model.re if re else None
        self.aux: dict[str, Tensor] = {}

    def last_stage(self, x: Tensor) -> Tensor:
        f = self.head(x)
        if self.re is not None:
            out = self.re(f)
            self.aux = {"rate": bits_per_pixel(out["likelihoods"], x.shape[-2] * x.shape[-1]),
                        "l1": (out["f_re"] - f).abs().mean()}
            f = out["f_re"]
        return list(self.tail(f).values())[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.last_stage(x).mean(dim=(-2, -1))


class DicmModule(L.LightningModule):
    """The four stages of ``dicm`` training around a model built outside.

    Args:
        model: a :class:`icm.models.dicm.DICM`.
        stage: 1–4 (see the module docstring).
        loss: the stage's weights (``rate``, ``l1``, ``infonce``, ``re_mse``,
            ``stage_mse``, and ``lmbda`` for stage 4, default the quality's λ).
            Stage 4 also takes terms beyond the paper, off by default:
            ``std_mse`` (MSE of the standardised features ``f̂`` and ``f_re``),
            ``kl`` with ``kl_t`` (distillation: KL divergence of the decoded
            network's class distribution from the uncompressed one's, at
            temperature ``kl_t``, times ``kl_t²``), ``ce`` (cross-entropy of the
            decoded network's logits against the uncompressed network's top-1
            class: what top-1 agreement counts) and ``lmbda_warmup`` (λ grows
            linearly over that many steps, so that the entropy model settles
            before the rate presses on ``y``), and ``quant: annealed`` with
            ``tau: [start, end]`` (train through refinement's soft rounding instead
            of noise and straight-through rounding: :meth:`_annealed_forward`), and
            ``mix: {kind: mixup|cutmix|mosaic, alpha}`` (each training batch's pictures mixed
            with others of the batch, weight, box area or cut point drawn from Beta(alpha, alpha), before the
            sender sees them: the uncompressed network labels the same mixed picture,
            so every mixture is a new distillation example; :func:`mix_pictures`).
        optim: ``name`` (sgd, adam, adamw), ``lr`` (with ``lr_batch``: scaled by
            global batch / lr_batch), ``momentum``, ``weight_decay``, ``min_lr``;
            cosine from ``lr`` to ``min_lr`` over ``max_steps``.
        moco: ``queue``, ``momentum``, ``temperature``, ``dim``, ``hidden``.
        train_parts: the learning parts: stage 3's among ``head``, ``re``,
            ``tail`` (default all three); stage 4's: ``codec`` (the compression
            network and hyperprior) or ``g_a`` (the analysis transform alone:
            the decoder and the entropy model stay as they are, so the encoder
            learns to find, in one pass, the latents that encoder-side
            refinement finds for the same receiver).
        max_steps: length of the schedule; clip: gradient-norm clip (0: none).
    """

    def __init__(self, model: nn.Module, stage: int, loss: dict | None = None, optim: dict | None = None,
                 moco: dict | None = None, train_parts=None, batch_size: int = 8,
                 max_steps: int = 1000, clip: float = 0.0) -> None:
        super().__init__()
        if stage not in (1, 2, 3, 4):
            raise IcmError(f"dicm has training stages 1–4, not {stage!r}")
        self.model, self.stage = model, stage
        defaults = STAGE_DEFAULTS[stage]
        self.weights = {**defaults.get("loss", {}), **(loss or {})}
        if stage == 4:
            self.weights.setdefault("lmbda", float(getattr(model, "lmbda", 0.08)))
        self.optim = {**defaults["optim"], **(optim or {})}
        self.batch_size, self.max_steps_, self.clip = batch_size, max_steps, clip
        self.save_hyperparameters(ignore=["model"])
        if self.weights.get("mix") is not None:
            if stage != 4:
                raise IcmError(f"loss.mix mixes stage 4's pictures; stage {stage} has no use for it")
            check_mix(self.weights["mix"])

        model.requires_grad_(False)
        parts = {"head": model.backbone.head, "re": model.re, "tail": model.backbone.tail,
                 "classifier": model.backbone.classifier}
        if stage == 1:
            learn = [model.backbone.head, model.backbone.tail]
        elif stage == 2:
            learn = [model.re]
        elif stage == 3:
            train_parts = ("head", "re", "tail") if train_parts is None else tuple(train_parts)
            unknown = set(train_parts) - {"head", "re", "tail"}
            if unknown:
                raise IcmError(f"stage 3 trains parts among head, re, tail; unknown: {sorted(unknown)}")
            learn = [parts[p] for p in train_parts]
        else:
            train_parts = ("codec",) if train_parts is None else tuple(train_parts)
            receiver = [model.receiver] if model.receiver is not None else []
            choices = {"codec": [model.g_a, model.g_s, model.latent, *receiver], "g_a": [model.g_a],
                       "semantic": [model.semantic] if model.semantic is not None else []}
            if not train_parts or set(train_parts) - set(choices):
                raise IcmError(f"stage 4 trains the codec ([codec]), its analysis transform alone ([g_a]) and/or "
                               f"the sender's semantic steering ([semantic]); got train: {sorted(train_parts)}")
            if "semantic" in train_parts and model.semantic is None:
                raise IcmError("train: [semantic] needs a model with semantic steering (model.kwargs.semantic > 0)")
            learn = []
            for part in train_parts:
                learn += [m for m in choices[part] if all(m is not k for k in learn)]
        for m in learn:
            m.requires_grad_(True)
        # in training mode: the learning parts, and in stage 4 the latent always (its noisy /
        # straight-through quantisation is what carries a gradient back to g_a)
        self._learning = learn + ([model.latent] if stage == 4 and model.latent not in learn else [])
        self.moco = None
        self.boxes_epoch = None  # the epoch whose start computed the guided crops' boxes
        if stage in (1, 3):
            from .moco import MoCo

            c = moco or {}
            enc = _Encoder(model, re=stage == 3)
            feat = model.backbone.tail.out_channels[-1]
            self.moco = MoCo(enc, feat, dim=int(c.get("dim", 128)), hidden=int(c.get("hidden", 2048)),
                             queue_size=int(c.get("queue", 65536)), momentum=float(c.get("momentum", 0.999)),
                             temperature=float(c.get("temperature", 0.2)))

    def train(self, mode: bool = True):
        # Frozen parts keep eval-mode BatchNorm/dropout whatever Lightning asks.
        super().train(mode)
        if mode:
            self.model.eval()
            for m in self._learning:
                m.train()
            if self.moco is not None:
                self.moco.projector_q.train()
                self.moco.encoder_k.train(any(p.requires_grad for p in self.moco.encoder_q.parameters()))
        return self

    def on_train_start(self) -> None:
        # Lightning keeps every submodule in the mode it finds it in, and
        # create_model returns models in eval mode: without this the learning
        # parts would train in eval mode (rounded latents, no gradient to g_a).
        self.train()

    # -- losses ------------------------------------------------------------
    def loss(self, batch) -> dict[str, Tensor]:
        w = self.weights
        if self.stage in (1, 3):
            q, k = batch
            out = self.moco(q, k)
            terms = {"infonce": out["loss"],
                     "acc": (out["logits"].detach().argmax(1) == 0).float().mean()}
            if self.stage == 1:
                terms["loss"] = out["loss"]
                return terms
            aux = self.moco.encoder_q.aux
            terms.update(rate=aux["rate"], l1=aux["l1"])
            terms["loss"] = w["infonce"] * out["loss"] + w["rate"] * aux["rate"] + w["l1"] * aux["l1"]
            return terms
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if self.stage == 4 and self.training and w.get("mix"):
            step = 2_000_003 + self.global_step  # rank 0's seed alone: the shipped runs' draws
            x = mix_pictures(x, w["mix"], (step, self.global_rank) if self.global_rank else step)
        pixels = x.shape[-2] * x.shape[-1]
        m = self.model
        if self.stage == 2:
            with torch.no_grad():
                f = m.head_features(m.pad(x))
            out = m.re(f)
            rate = bits_per_pixel(out["likelihoods"], pixels)
            l1 = (out["f_re"] - f).abs().mean()
            return {"loss": w["rate"] * rate + w["l1"] * l1, "rate": rate, "l1": l1}
        out = self._annealed_forward(x) if w.get("quant") == "annealed" and self.training else m(x)
        with torch.no_grad():
            ref = m.backbone.tail(out["f"])  # the original tail: the reference never adapts
        got = out["stages"]
        rate = (out["bits"].sum() / (x.shape[0] * pixels) if "bits" in out
                else bits_per_pixel(out["likelihoods"], pixels))
        re_mse = F.mse_loss(out["f_hat"], out["f_re"])
        stage_mse = [F.mse_loss(got[k], ref[k]) for k in ref]
        ramp = float(w.get("lmbda_warmup", 0))
        lmbda = w["lmbda"] * (min(1.0, (self.global_step + 1) / ramp) if ramp and self.training else 1.0)
        loss = lmbda * rate + w["re_mse"] * re_mse + sum(a * b for a, b in zip(w["stage_mse"], stage_mse))
        terms = {"bpp": rate, "re_mse": re_mse}
        if w.get("std_mse"):
            # the same distortion on the standardised feature: every channel weighs alike
            terms["std_mse"] = F.mse_loss(m.re.standardise(out["f_hat"]), m.re.standardise(out["f_re"]))
            loss = loss + w["std_mse"] * terms["std_mse"]
        with torch.no_grad():
            ref_logits = m.backbone.classifier(ref["2"])
        if w.get("kl"):
            t = float(w.get("kl_t", 1.0))
            terms["kl"] = F.kl_div(F.log_softmax(out["logits"] / t, 1), F.log_softmax(ref_logits / t, 1),
                                   log_target=True, reduction="batchmean") * t * t
            loss = loss + w["kl"] * terms["kl"]
        if w.get("ce"):
            terms["ce"] = F.cross_entropy(out["logits"], ref_logits.argmax(1))
            loss = loss + w["ce"] * terms["ce"]
        terms["loss"] = loss
        terms.update({f"mse{i}": v for i, v in enumerate(stage_mse)})
        terms["agree"] = (out["logits"].argmax(1) == ref_logits.argmax(1)).float().mean()
        return terms

    def _annealed_forward(self, x: Tensor) -> dict:
        """Stage 4's forward with refinement's quantisation (``loss: quant: annealed``): ``ŷ``
        soft-rounded by stochastic Gumbel annealing (:func:`icm.entropy.annealed_round`)
        at a temperature falling linearly over the run from ``tau[0]`` to ``tau[1]``, and
        the rate of that same ``ŷ``, so the decoder and the rate see one value, as
        refinement's do.  The noise is seeded by the step (a resumed run draws alike)."""
        m, w = self.model, self.weights
        t0, t1 = (float(v) for v in w.get("tau", (0.5, 0.05)))
        tau = t1 + (t0 - t1) * max(0.0, 1.0 - self.global_step / max(self.max_steps_ - 1, 1))
        gen = torch.Generator().manual_seed(1_000_003 + self.global_step)
        size = tuple(x.shape[-2:])
        f = m.head_features(m.pad(x))
        re = m.re(f)
        y = m.steer(f, m.encode_features(re["f_re"])).float()
        z = m.latent.hyper_latent(y)
        y_hat, bits = m.latent.annealed(y, z, tau, gen)
        f_hat = m.decode_features(y_hat, size)
        crop = f_hat.shape[-2:]
        stages = m.stages(f_hat)
        return {"bits": bits, "f": f[..., : crop[0], : crop[1]], "f_re": re["f_re"][..., : crop[0], : crop[1]], "f_hat": f_hat,
                "y_hat": y_hat, "stages": stages, "logits": m.backbone.classifier(stages["2"]),
                "likelihoods": None}

    def _step(self, batch, stage: str) -> Tensor:
        terms = self.loss(batch)
        n = (batch[0] if isinstance(batch, (list, tuple)) else batch).shape[0]
        self.log_dict({f"{stage}/{k}": v.detach() for k, v in terms.items()}, prog_bar=stage == "train",
                      on_step=stage == "train", on_epoch=stage != "train", batch_size=n, sync_dist=stage != "train")
        return terms["loss"]

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    # -- ContrastiveCrop schedule -----------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.start_epoch(self.current_epoch)

    def start_epoch(self, epoch: int) -> None:
        """Plain or guided crops for ``epoch``, and the boxes refreshed when the schedule says
        (also called by :class:`~icm.train.resume.ExactResume` for a run resumed at an epoch's end)."""
        views = getattr(self, "views", None)
        if views is None:
            return
        from .moco import should_refresh

        views.warmup = epoch < self.crop_warmup
        # a run resumed inside an epoch keeps the boxes of that epoch's start (from the checkpoint)
        if should_refresh(epoch, self.crop_warmup, self.crop_every) and self.boxes_epoch != epoch:
            enc = self.moco.encoder_q
            was = enc.training
            enc.eval()
            views.update_boxes(enc.last_stage, device=self.device)
            enc.train(was)
            self.boxes_epoch = epoch

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        views = getattr(self, "views", None)
        if views is not None:  # the guided crops' boxes: they change every refresh, and resuming needs them
            checkpoint["contrastive_crop"] = {"boxes": views.boxes.clone(), "warmup": views.warmup,
                                              "epoch": self.boxes_epoch}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        views, saved = getattr(self, "views", None), checkpoint.get("contrastive_crop")
        if views is not None and saved is not None:
            views.set_boxes(saved["boxes"])
            views.warmup = bool(saved["warmup"])
            self.boxes_epoch = saved["epoch"]

    # -- optimiser ---------------------------------------------------------------
    def configure_optimizers(self):
        o = self.optim
        params = [p for p in self.parameters() if p.requires_grad]
        lr = float(o["lr"])
        if o.get("lr_batch"):
            world = self._trainer.world_size if self._trainer is not None else 1
            lr = lr * self.batch_size * world / float(o["lr_batch"])
        name = o.get("name", "adam").lower()
        wd = float(o.get("weight_decay", 0.01 if name == "adamw" else 0.0))  # AdamW's own default
        opt = make_optimizer(name, params, lr, wd, float(o.get("momentum", 0.9)))
        return {"optimizer": opt, "lr_scheduler": schedule(opt, self.max_steps_, min(float(o.get("min_lr", 0.0)) / lr, 1.0))}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.parameters() if p.requires_grad], self.clip)


MIX_KINDS = ("mixup", "cutmix", "mosaic")


def check_mix(mix) -> tuple[str, float]:
    """``(kind, alpha)`` of a recipe's ``loss.mix``, or one clear error."""
    ok = isinstance(mix, dict) and not set(mix) - {"kind", "alpha"}
    kind, alpha = (mix.get("kind", "mixup"), mix.get("alpha", 1.0)) if ok else (None, None)
    if not ok or kind not in MIX_KINDS or type(alpha) not in (int, float) or not alpha > 0:
        raise IcmError(f"loss.mix is {{kind: {'|'.join(MIX_KINDS)}, alpha: > 0}}, got {mix!r}")
    return kind, float(alpha)


def mix_pictures(x: Tensor, mix: dict, seed) -> Tensor:
    """Each picture of the batch mixed with others of it (random pairings, seeded).

    ``mix["kind"]``: ``"mixup"`` (the weighted sum ``a·x + (1 − a)·x'``), ``"cutmix"``
    (a box of ``x'`` pasted into ``x``, of area ``1 − a`` of the picture), or ``"mosaic"``
    (the picture cut in four at a point ``(a_y, a_x)`` of it, each ``a`` in ``[1/4, 3/4]``,
    three of the quarters replaced by the same quarters of three other pictures, nothing
    rescaled); ``a`` is drawn from Beta(``alpha``, ``alpha``) for every picture (``alpha``
    default 1).  Stage 4
    distils the uncompressed network on the same input, so no label is mixed.  ``seed``:
    anything :func:`numpy.random.default_rng` takes (training passes the step, and the rank
    beyond rank 0).
    """
    kind, alpha = check_mix(mix)
    n, (h, w) = x.shape[0], x.shape[-2:]
    if n < 2:
        return x
    rng = np.random.default_rng(seed)
    other = x[torch.from_numpy(rng.permutation(n))]
    a = rng.beta(alpha, alpha, n)
    if kind == "mixup":
        a = torch.from_numpy(a).to(x.dtype).view(n, 1, 1, 1)
        return a * x + (1 - a) * other
    out = x.clone()
    if kind == "mosaic":
        others = [x[torch.from_numpy(rng.permutation(n))] for _ in range(2)]
        cut_y, cut_x = 0.25 + 0.5 * rng.beta(alpha, alpha, n), 0.25 + 0.5 * a  # in the middle half
        for i in range(n):
            cy, cx = int(round(h * cut_y[i])), int(round(w * cut_x[i]))
            out[i, :, :cy, cx:] = other[i, :, :cy, cx:]
            out[i, :, cy:, :cx] = others[0][i, :, cy:, :cx]
            out[i, :, cy:, cx:] = others[1][i, :, cy:, cx:]
        return out
    for i in range(n):
        side = (1 - a[i]) ** 0.5
        bh, bw = int(round(h * side)), int(round(w * side))
        top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        out[i, :, top:top + bh, left:left + bw] = other[i, :, top:top + bh, left:left + bw]
    return out


# -- data ----------------------------------------------------------------------------


class _Images(Dataset):
    """Whole images of a list of tensors (ContrastiveCrop needs the full picture)."""

    def __init__(self, images: list[Tensor]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def _imagefolder(root: Path, transform):
    from torchvision import datasets

    if not (root / "train").is_dir():
        raise IcmError(f"{root / 'train'} is not a directory (ImageNet layout: root/train/<class>/image)")
    return datasets.ImageFolder(str(root / "train"), transform)


def _datasets(stage: int, d: dict, seed: int):
    """Training and validation datasets of a stage."""
    from ..data import FiveCrops, PhotoCrops, load_photo, recipe_photos, to_tensor

    kind = d.get("kind", "photos")
    crop = int(d.get("crop", 224))
    val = (FiveCrops(recipe_photos(d, "val"), resize=int(d.get("val_resize", 256)), crop=int(d.get("val_crop", 224)))
           if kind == "photos" else None)
    if stage in (1, 3):
        from .moco import ContrastiveCropViews

        if kind == "photos":
            base = _Images([to_tensor(load_photo(s)) for s in recipe_photos(d, "train")])
        elif kind == "imagefolder":
            from torchvision.transforms import v2

            base = _imagefolder(Path(d["root"]), v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]))
        else:
            raise IcmError(f"unknown data kind {kind!r} for dicm; known: photos, imagefolder")
        # no private generator: every item is drawn under its own seed (icm.train.resume)
        views = ContrastiveCropViews(base, size=crop, box_size=int(d.get("box_size", crop)))
        return views, None
    if kind == "photos":
        common = {"size": crop, "seed": seed, "short_sides": d.get("short_sides"),
                  "batch_size": int(d.get("batch_size", 8))}
        if not d.get("stamps"):
            return PhotoCrops(recipe_photos(d, "train"), **common), val
        from ..data import StampComposites

        if d.get("stamp_scale"):
            common["scale"] = tuple(d["stamp_scale"])
        return StampComposites(recipe_photos(d, "train"), fraction=float(d["stamps"]), **common), val
    if kind == "imagefolder":
        from torchvision import transforms as T

        tf = T.Compose([T.RandomResizedCrop(crop, scale=(0.35, 1.0)), T.RandomHorizontalFlip(), T.ToTensor()])
        return _imagefolder(Path(d["root"]), tf), None
    raise IcmError(f"unknown data kind {kind!r} for dicm; known: photos, imagefolder")


def _first_images(dataset, n: int) -> Tensor:
    """Up to ``n`` images of a dataset (items may be ``(image, label)``)."""
    out = []
    for item in dataset:
        out.append(item[0] if isinstance(item, (tuple, list)) else item)
        if len(out) == n:
            break
    return torch.stack(out)


def load_init(model: nn.Module, path: str, parts=None) -> None:
    """Start from a checkpoint of any stage (its ``model.*`` weights) or a shipped .safetensors.

    Args:
        parts: top-level parts to take (``backbone``, ``re``, ``g_a``, ``g_s``,
            ``latent``); default all.  Stage 4 takes ``[backbone, re]`` from stage
            3: its codec starts from scratch, and may have another shape.
    """
    from .checkpoints import read_state

    state, _ = read_state(path)
    if path.endswith(".safetensors"):
        model.load_shipped(state)
        return
    if parts is None:
        model.load_state_dict(state)
        return
    parts = tuple(parts)
    unknown = set(parts) - {name for name, _ in model.named_children()}
    if unknown:
        raise IcmError(f"model.init_parts: unknown parts {sorted(unknown)}")
    state = {k: v for k, v in state.items() if k.split(".")[0] in parts}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.split(".")[0] in parts]
    if missing or unexpected:
        raise IcmError(f"{path} does not fit parts {list(parts)}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def build(cfg: dict):
    """Model, LightningModule and data loaders of a ``dicm`` recipe."""
    from torch.utils.data import IterableDataset

    from ..models import create_model, model_info
    from .calibrate import fit_block_transform, fit_prior, measure_feature_stats
    from .resume import train_loader as train_loader_

    m, d, o, t = cfg["model"], cfg["data"], cfg["optim"], cfg["trainer"]
    stage = int(cfg.get("stage", 4))
    info = model_info(m["name"])
    model = create_model(info.name, quality=m.get("quality"), pretrained=False, **m.get("kwargs", {}))
    if m.get("init"):
        load_init(model, m["init"], m.get("init_parts"))
    seed = int(t.get("seed", 0))
    train, val = _datasets(stage, d, seed)
    if stage == 2 and not m.get("init"):
        measure_feature_stats(model, _first_images(train, int(d.get("stats_images", 64))))
        if m.get("re_identity_gain"):
            model.re.init_identity(float(m["re_identity_gain"]))
    fit = m.get("fit_transform")
    if stage == 4 and fit:
        fit_block_transform(model, _first_images(train, int(fit.get("images", 256))), step=float(fit.get("step", 1.0)))
    fp = m.get("fit_prior")
    if stage == 4 and fp:  # a factorized latent's densities fitted to the codec's y first
        fit_prior(model, _first_images(train, int(fp.get("images", 256))), steps=int(fp.get("steps", 2000)))
    batch = int(d.get("batch_size", 8))
    moco = cfg.get("moco") or {}
    module = DicmModule(model, stage, loss=cfg.get("loss"), optim=o, moco=moco,
                        train_parts=cfg.get("train"), batch_size=batch,
                        max_steps=int(t.get("max_steps", 1000)), clip=float(o.get("clip", 0.0)))
    workers = int(d.get("workers", 0))
    if stage in (1, 3):
        module.views = train
        module.crop_warmup = int(moco.get("warmup_epochs", 10))
        module.crop_every = int(moco.get("refresh_every", 20))
    if isinstance(train, IterableDataset):
        train_loader = DataLoader(train, batch_size=batch, num_workers=workers, persistent_workers=workers > 0)
    else:
        train_loader = train_loader_(train, batch, seed, num_workers=workers)
    val_loader = DataLoader(val, batch_size=int(d.get("val_batch_size", 10))) if val is not None else None
    torch.manual_seed(seed)
    return model, module, train_loader, val_loader
