"""Rate–task sweeps: codecs × qualities × images → one JSON file per codec.

For every image of a dataset and every quality of every codec, code the image,
decode it and run the task (:mod:`icm.eval.tasks`):

* a classical anchor (:mod:`icm.eval.anchors`: ``jpeg420``, ``jpeg444``,
  ``webp``, ``avif``, ``hevc``, ``vvc``, ``jxl``; ``jpeg`` is an alias of
  ``jpeg420``) codes whole files through its ``encode`` / ``decode``, and
  the task runs on the decoded pixels;
* one of our models (any name in :func:`icm.list_models`) codes through
  :func:`icm.codec.encode` / :func:`icm.codec.decode`.  When the model lists
  the task among its ``tasks`` the task runs on the decoded latent (no pixels
  are made; its time is ``analyze_s``), otherwise on the decoded pixels.
  Its default qualities are those with shipped weights.

Anchors run in a pool of ``workers`` processes (``workers=1``, the default,
codes in this process); our models run in this process.  Every result is
cached as a small JSON file, ``<cache>/<codec>/<key>.json``, with ``key`` a
SHA-256 of (codec name, codec settings, quality, model weights hash, image id,
image pixels hash, task and task settings, label): an interrupted sweep
resumes where it stopped and re-codes nothing.

Results schema (``<out>/<dataset slug>--<task>--<codec>.json``)::

    {
      "schema": 1,
      "codec": "hevc",                 # canonical name
      "label": "HEVC 4:4:4 (x265)",    # for plots and tables
      "kind": "anchor" | "model",
      "dataset": "samples",            # canonical dataset name
      "task": "psnr",
      "task_settings": {...},
      "metrics": ["psnr"],             # per-image numbers averaged into points, higher is better
      "primary_metric": "psnr",        # what BD-rate / BD-metric use
      "settings": {...},               # codec settings (anchor.settings() or the model's)
      "qualities": [22, 27, ...],
      "n_images": 4,
      "uncompressed": {...},           # classify: accuracy of the network on the originals
      "points": [{                      # one per quality, in the order of "qualities"
        "quality", "n_images",
        "bpp",                          # mean over images of 8·(whole-file bytes)/(H·W)
        "payload_bpp",                  # same with the coded payload only (no container/header)
        "bytes", "payload_bytes",       # means over images
        <metric>: mean over images,     # e.g. "psnr"; detect/segment: mAP over the images
        "encode_s_median",
        "decode_s_median",              # pixels decoded (anchors; models without the task)
        "task_s_median",                # tasks with a network run on decoded pixels
        "analyze_s_median"              # instead of decode/task: task from the bitstream
      }, ...],
      "images": [{                      # one per (quality, image), the raw material of "points"
        "image", "quality", "height", "width", "bytes", "payload_bytes", "bpp",
        "payload_bpp", "encode_s", "decode_s" | "analyze_s", ["task_s"], <metrics>,
        [classify: "pred_top5", "reference_top1", "imagenet_label"],
        [detect / segment: "pred": {"boxes", "labels", "scores", ["masks": RLE counts]}]
      }, ...],
      "icm_version", "created", "machine"
    }

Timings are seconds per image, single images, on the machine named in
``machine``; compare them only within one sweep.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime
import hashlib
import inspect
import json
import multiprocessing
import os
import pickle
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import IcmError
from ..refine import default_steps, model_setting
from .datasets import Dataset, image_digest

SCHEMA_VERSION = 1
CACHE_VERSION = 1
ALIASES = {"jpeg": "jpeg420"}
REFERENCE = "hevc"
# -- codecs --------------------------------------------------------------------

def _anchors():
    """The anchor module (a hook: the tests put stand-in anchors here)."""
    from . import anchors

    return anchors


def known_codecs() -> list[str]:
    from ..models import list_models

    return list_models() + list(_anchors().list_anchors()) + sorted(ALIASES)


@dataclass
class Codec:
    """One codec of a sweep.

    Attributes:
        name: canonical name (``"jpeg420"``, ``"hyperprior"``).
        label: display name.
        kind: ``"anchor"`` or ``"model"``.
        qualities: the qualities swept, in order.
        settings: what defines the codec's output besides quality (part of the cache key).
        anchor: the anchor object (anchors only).
        model: the registered model a ``model`` codec runs (``name`` may add
            an encoder option: ``hyperprior+refine``).
        refine: encoder-side refinement steps (:mod:`icm.refine`).
        refine_for: the task refinement keeps (``None``: the model's default).
    """

    name: str
    label: str
    kind: str
    qualities: tuple
    settings: dict
    anchor: object = None
    tasks: tuple = ()
    model: str = ""
    refine: int = 0
    refine_for: str | None = None
    _state: dict = field(default_factory=dict, repr=False)

    def state_hash(self, quality) -> str | None:
        """SHA-256 of our model's tensors at ``quality`` (so new weights never hit old cache)."""
        if self.kind != "model":
            return None
        if quality not in self._state:
            from .. import codec as icm_codec

            model = icm_codec.get_model(self.model, quality)
            h = hashlib.sha256()
            for k, v in model.state_dict().items():
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
            self._state[quality] = h.hexdigest()
        return self._state[quality]


def _split_refine(name: str) -> tuple[str, int | None, str | None]:
    """``"hyperprior+refine:50"`` → ``("hyperprior", 50, None)``; ``+refine`` alone → ``0``,
    the model's own default (:func:`icm.refine.default_steps`); ``@TASK`` at the end names
    the task refinement keeps (``dicm-lite0+refine@classify``); no suffix → ``(name, None, None)``."""
    base, plus, option = name.partition("+")
    if not plus:
        return name, None, None
    option, at, task = option.partition("@")
    word, colon, steps = option.partition(":")
    if word != "refine" or (colon and not steps.isdigit()) or (colon and int(steps) < 1) or (at and not task):
        raise IcmError(f"unknown codec option {'+' + option + at + task!r} in {name!r}; the one option is "
                       "+refine, +refine:N (N >= 1 steps), either followed by @TASK (the task it keeps)")
    return base, int(steps) if colon else 0, task or None


def resolve_codec(name: str, qualities=None) -> Codec:
    """A :class:`Codec` for a ``--codecs`` entry.

    Args:
        name: a model name, an anchor name or an alias.
        qualities: qualities to sweep (default: shipped weights for a model,
            ``anchor.qualities`` for an anchor).

    Raises:
        IcmError: unknown name (listing the known ones), a model without
            shipped weights and no qualities given, an invalid quality, or an
            anchor whose package is missing.
    """
    from ..models import has_weights, list_models, model_info
    from ..models._registry import heads_tasks

    name = ALIASES.get(name, name)
    base, refine, refine_for = _split_refine(name)
    if base in list_models():
        info = model_info(base)
        name = base
        if qualities is None:
            qualities = [q for q in info.qualities if has_weights(name, q)]
            if not qualities:
                raise IcmError(f"no shipped weights for {name!r} at any quality; "
                               f"pass --qualities {name}=Q,... to use weights you provide")
        bad = [q for q in qualities if q not in info.qualities]
        if bad:
            raise IcmError(f"model {name!r} has qualities {list(info.qualities)}, not {bad}")
        tasks = tuple(info.tasks) + heads_tasks(name)  # detection heads ship beside the codec
        settings = {"model": name, "model_id": info.model_id, "pixel_decoder": info.pixel_decoder,
                    "tasks": list(tasks)}
        if heads_tasks(name):
            from .detect import heads_digest

            settings["heads_sha256"] = heads_digest(name)  # new heads never hit old cached detections
        if refine is None:
            return Codec(name, f"icm {name}", "model", tuple(qualities), settings, tasks=tasks, model=name)
        from .. import codec as icm_codec

        model = icm_codec.get_model(name, qualities[0])
        default = default_steps(model)
        refine = refine or default
        icm_codec.check_refine(model, refine, refine_for)
        settings["refine_steps"] = refine
        if refine_for is not None:
            settings["refine_for"] = refine_for
        # what else decides a refined file: a cached result of another setting never answers
        setting = model_setting(model)
        settings["refine"] = {**setting, "tau": list(setting["tau"])}
        spec = f"{name}+refine" + ("" if refine == default else f":{refine}") + (f"@{refine_for}" if refine_for else "")
        label = f"icm {name} + refine ({refine} steps" + (f", for {refine_for})" if refine_for else ")")
        return Codec(spec, label, "model", tuple(qualities), settings, tasks=tasks, model=name, refine=refine,
                     refine_for=refine_for)
    mod = _anchors()
    if name not in mod.list_anchors():
        raise IcmError(f"unknown codec {name!r}; known codecs: {', '.join(known_codecs())}")
    anchor = mod.get_anchor(name)
    anchor.check()
    qs = tuple(qualities) if qualities is not None else tuple(anchor.qualities)
    settings = dict(anchor.settings())
    settings.pop("qualities", None)  # the default sweep list does not change any one result
    return Codec(name, anchor.label, "anchor", qs, settings, anchor=anchor)


# -- coding one image ----------------------------------------------------------

def _rates(row: dict, h: int, w: int) -> dict:
    row["bpp"] = 8.0 * row["bytes"] / (h * w)
    row["payload_bpp"] = 8.0 * row["payload_bytes"] / (h * w)
    return row


def code_anchor(anchor, quality, image: np.ndarray, task, label, ref) -> dict:
    """Code, decode and measure one image with an anchor (runs in a worker process)."""
    # The anchor's decode takes the source size where it has the parameter (VVC
    # codes even sides only and crops back).
    size = {"size": image.shape[:2]} if "size" in inspect.signature(anchor.decode).parameters else {}
    t0 = time.perf_counter()
    data = anchor.encode(image, quality)
    t1 = time.perf_counter()
    decoded = np.asarray(anchor.decode(data, **size))
    t2 = time.perf_counter()
    if decoded.shape != image.shape or decoded.dtype != np.uint8:
        raise IcmError(f"anchor {anchor.name!r} decoded {decoded.shape} {decoded.dtype}, expected {image.shape} uint8")
    h, w = image.shape[:2]
    row = {"height": h, "width": w, "bytes": len(data), "payload_bytes": int(anchor.payload_bytes(data)),
           "encode_s": t1 - t0, "decode_s": t2 - t1}
    row.update(task.on_pixels(image, decoded, label, ref))
    return _rates(row, h, w)


def code_model(c: Codec, quality, image: np.ndarray, task, label, ref) -> dict:
    """Code one image with our model; the task runs on the latent if the model has it."""
    from .. import bitstream
    from .. import codec as icm_codec
    from ..data import to_tensor

    model = icm_codec.get_model(c.model, quality)
    x = to_tensor(np.array(image))[None]  # a writable copy for torch
    t0 = time.perf_counter()
    # a model that refines for tasks refines with its default (dicm: every task at once),
    # as a sender that does not know which one the receiver runs
    data = icm_codec.encode(model, x, refine=c.refine, task=c.refine_for)[0]
    t1 = time.perf_counter()
    h, w = image.shape[:2]
    row = {"height": h, "width": w, "bytes": len(data),
           "payload_bytes": sum(len(s) for s in bitstream.unpack(data).sections), "encode_s": t1 - t0}
    if (task.latent_name or task.name) in c.tasks:
        t1 = time.perf_counter()
        out = icm_codec.decode(data, model=model, pixels=False)
        row.update(task.on_latent(model, out["y_hat"], image, label, ref))
        row["analyze_s"] = time.perf_counter() - t1
    else:
        if not c.settings.get("pixel_decoder", True):
            raise IcmError(f"model {c.name!r} has no pixel decoder and does not run task {task.name!r}")
        t1 = time.perf_counter()
        decoded = icm_codec.to_uint8(icm_codec.decode(data, model=model, pixels=True)["x_hat"])
        row["decode_s"] = time.perf_counter() - t1
        if decoded.ndim == 2:  # a greyscale model: compare like the anchors' greyscale pictures, as RGB
            decoded = np.repeat(decoded[..., None], 3, axis=2)
        row.update(task.on_pixels(image, decoded, label, ref))
    return _rates(row, h, w)


def _pool_code_anchor(anchor, quality, image, task, label, ref) -> dict:
    if isinstance(anchor, str):
        anchor = _anchors().get_anchor(anchor)
    return code_anchor(anchor, quality, image, task, label, ref)


def _worker_init() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)  # one core per worker: N workers use N cores


# -- the cache -----------------------------------------------------------------

class Cache:
    """One small JSON file per (codec, quality, image, task) result."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @staticmethod
    def key(**fields) -> str:
        blob = json.dumps({"cache_version": CACHE_VERSION, **fields}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, group: str, key: str) -> Path:
        return self.root / group / f"{key}.json"

    def get(self, group: str, key: str) -> dict | None:
        try:
            return json.loads(self.path(group, key).read_text())["row"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return None  # missing or half-written: compute again

    def put(self, group: str, key: str, row: dict, about: dict) -> None:
        p = self.path(group, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"about": about, "row": row}, default=str))
        os.replace(tmp, p)  # atomic: an interruption never leaves a half file under the real name


# -- the sweep -----------------------------------------------------------------

def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def aggregate(rows: list[dict], qualities, task) -> list[dict]:
    """Per-quality means (rates), the task's metrics (:meth:`~icm.eval.tasks.Task.aggregate`:
    means of per-image numbers, or mAP over the images) and medians (times) of per-image rows."""
    points = []
    for q in qualities:
        rs = [r for r in rows if r["quality"] == q]
        if not rs:
            continue
        p = {"quality": q, "n_images": len(rs)}
        for k in ("bpp", "payload_bpp", "bytes", "payload_bytes"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            p[k] = float(np.mean(vals)) if vals else None
        p.update(task.aggregate(rs))
        for t in ("encode_s", "decode_s", "task_s", "analyze_s"):
            m = _median(r.get(t) for r in rs)
            if m is not None:
                p[f"{t}_median"] = m
        points.append(p)
    return points


def result_path(out_dir: str | os.PathLike, dataset: Dataset, task, codec: Codec) -> Path:
    return Path(out_dir) / f"{dataset.slug}--{task.name}--{codec.name}.json"


class _LineProgress:
    """Progress for a log file (stderr not a terminal): one plain line at every
    tenth of the work and at the end, ``icm eval: 120/800 results (15%), 4m12s``."""

    def __init__(self, total: int, stream=None) -> None:
        self.total, self.done, self.stream = total, 0, stream or sys.stderr
        self.start = time.monotonic()
        self.next = max(1, total // 10)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self.next or self.done == self.total:
            self.next = self.done + max(1, self.total // 10)
            s = int(time.monotonic() - self.start)
            pct = 100 * self.done // max(self.total, 1)
            print(f"icm eval: {self.done}/{self.total} results ({pct}%), {s // 60}m{s % 60:02d}s",
                  file=self.stream, flush=True)

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool | None):
    """A tqdm bar on a terminal (or when ``enabled``), plain lines in a log
    (``None`` and stderr redirected), nothing when ``enabled`` is False."""
    from tqdm import tqdm

    if enabled is None and not sys.stderr.isatty():
        return _LineProgress(total)
    return tqdm(total=total, desc="icm eval", unit="img", file=sys.stderr, leave=False,
                disable=None if enabled is None else not enabled)


def run_sweep(codecs: list[Codec], dataset: Dataset, task, out_dir: str | os.PathLike,
              cache_dir: str | os.PathLike | None = None, workers: int = 1,
              progress: bool | None = None) -> list[Path]:
    """Sweep ``codecs`` × qualities × ``dataset`` images for ``task``; write the results.

    Args:
        codecs: from :func:`resolve_codec`.
        dataset: from :func:`icm.eval.datasets.open_dataset` (already limited).
        task: from :func:`icm.eval.tasks.get_task`.
        out_dir: where the result JSON files go (one per codec).
        cache_dir: per-image result cache (default ``<out_dir>/cache``).
        workers: processes for the anchors (1: in this process).
        progress: show a progress bar (``None``: a bar on a terminal, a line per tenth
            of the work when stderr is a log file).

    Returns:
        The paths of the result files, in the order of ``codecs``.
    """
    if workers < 1:
        raise IcmError(f"--workers must be at least 1, not {workers}")
    if len(dataset) == 0:
        raise IcmError(f"dataset {dataset.name} has no images")
    names = [c.name for c in codecs]
    if len(set(names)) != len(names):
        raise IcmError(f"a codec is listed twice: {', '.join(names)}")
    out_dir = Path(out_dir)
    cache = Cache(cache_dir if cache_dir is not None else out_dir / "cache")
    task.setup(dataset)
    task_cfg = {"task": task.name, "task_settings": task.config()}
    rows: dict[str, list] = {c.name: [] for c in codecs}
    refs: list[dict | None] = []
    order: dict[str, int] = {}
    pool = None
    if workers > 1 and any(c.kind == "anchor" for c in codecs):
        # spawn, not fork: a forked child that runs torch after its parent did can hang in OpenMP.
        pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_init)
    pending: dict[cf.Future, tuple] = {}
    # Workers get the anchor object itself where it pickles, else its name to look up.
    shipped = {c.name: (c.anchor if picklable(c.anchor) else c.name) for c in codecs if c.kind == "anchor"}
    total = len(dataset) * sum(len(c.qualities) for c in codecs)
    bar = _progress(total, progress)

    def finish(done) -> None:
        for fut in done:
            name, key, about, base = pending.pop(fut)
            row = {**base, **fut.result()}
            cache.put(name, key, row, about)
            rows[name].append(row)
            bar.update()

    try:
        for index, (image_id, image, label) in enumerate(dataset):
            order[image_id] = index
            digest = image_digest(image)
            ref = None
            if task.network:
                rkey = cache.key(image_sha256=digest, **task_cfg)
                ref = cache.get("_reference", rkey)
                if ref is None:
                    ref = task.reference(image)
                    cache.put("_reference", rkey, ref, {"image": image_id})
            refs.append({"image": image_id, "ref": ref, "label": label})
            for c in codecs:
                for q in c.qualities:
                    about = {"codec": c.name, "settings": c.settings, "quality": q, "weights": c.state_hash(q),
                             "image": image_id, "image_sha256": digest, "label": label, **task_cfg}
                    key = cache.key(**about)
                    base = {"image": image_id, "quality": q}
                    hit = cache.get(c.name, key)
                    if hit is not None:
                        rows[c.name].append(hit)
                        bar.update()
                    elif pool is not None and c.kind == "anchor":
                        fut = pool.submit(_pool_code_anchor, shipped[c.name], q, image, task, label, ref)
                        pending[fut] = (c.name, key, about, base)
                        while len(pending) >= 2 * workers:  # bounded: images are not all held in memory
                            finish(cf.wait(pending, return_when=cf.FIRST_COMPLETED).done)
                    else:
                        if c.kind == "anchor":
                            row = code_anchor(c.anchor, q, image, task, label, ref)
                        else:
                            row = code_model(c, q, image, task, label, ref)
                        row = {**base, **row}
                        cache.put(c.name, key, row, about)
                        rows[c.name].append(row)
                        bar.update()
        while pending:
            finish(cf.wait(pending, return_when=cf.FIRST_COMPLETED).done)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    uncompressed = task.uncompressed(refs)
    paths = []
    for c in codecs:
        qpos = {q: i for i, q in enumerate(c.qualities)}
        rs = sorted(rows[c.name], key=lambda r: (qpos[r["quality"]], order[r["image"]]))
        result = {
            "schema": SCHEMA_VERSION,
            "codec": c.name,
            "label": c.label,
            "kind": c.kind,
            "dataset": dataset.name,
            "task": task.name,
            "task_settings": task.config(),
            "metrics": list(task.metrics),
            "primary_metric": task.primary,
            "settings": c.settings,
            "qualities": list(c.qualities),
            "n_images": len(dataset),
            "uncompressed": uncompressed,
            "points": aggregate(rs, c.qualities, task),
            "images": rs,
            "icm_version": _icm_version(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        }
        p = result_path(out_dir, dataset, task, c)
        p.write_text(json.dumps(result, indent=1))
        paths.append(p)
    return paths


def _icm_version() -> str:
    from .. import __version__

    return __version__


def picklable(obj) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True
