"""Images in, ``.icm`` bytes out, and back: the glue the CLI and users share."""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from . import bitstream, preflight
from .errors import BitstreamError, IcmError
from .images import read_rgb  # torch-free, shared with icm-edge
from .limits import LimitError, Limits  # noqa: F401  (LimitError: part of this module's errors)
from .models import Compressed, create_model, has_weights, model_info, model_info_by_id  # noqa: F401
from .preflight import check_limits, parse, read  # noqa: F401  (part of this module's API; torch-free)
from .refine import supports_refine
from .tasks import DETECTION_TASKS


def load_image(path: str | os.PathLike, notes: list | None = None) -> torch.Tensor:
    """Read an image file as an RGB batch ``(1, 3, H, W)`` in ``[0, 1]`` (``notes``: see :func:`read_rgb`)."""
    return torch.from_numpy(read_rgb(path, notes)).permute(2, 0, 1)[None].float().div(255.0)


def save_image(x: torch.Tensor, path: str | os.PathLike) -> None:
    """Write ``(1, 3, H, W)`` or ``(3, H, W)`` in ``[0, 1]`` as an 8-bit image."""
    from PIL import Image

    Image.fromarray(to_uint8(x)).save(path)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` or ``(C, H, W)`` in ``[0, 1]`` → ``uint8 (H, W, C)``, or ``(H, W)`` for one channel."""
    x = x[0] if x.dim() == 4 else x
    out = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out[..., 0] if out.shape[-1] == 1 else out


def to_model_channels(model, x: torch.Tensor) -> torch.Tensor:
    """RGB ``(B, 3, H, W)`` → the model's input channels (greyscale models take BT.601 luma)."""
    if getattr(model, "in_channels", 3) == 1 and x.dim() == 4 and x.shape[1] == 3:
        w = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    return x


def get_model(name: str, quality: int):
    """Shipped model, built once per process.

    Raises:
        IcmError: no shipped weights for ``name`` at ``quality`` (said before anything is built).
    """
    info = model_info(name)
    if quality in info.qualities and not has_weights(name, quality):
        shipped = [q for q in info.qualities if has_weights(name, q)]
        raise IcmError(f"no shipped weights for {name} q{quality} in this icm "
                       f"(shipped: {', '.join(f'q{q}' for q in shipped) or 'none'})")
    return _shipped_model(name, quality)


@functools.lru_cache(maxsize=16)
def _shipped_model(name: str, quality: int):
    return create_model(name, quality=quality, pretrained=True)


def check_refine(model, refine: int, task: str | None = None) -> None:
    """:class:`IcmError` unless ``model`` can be coded with ``refine`` refinement
    steps (for ``task``, where the model refines for a task)."""
    if refine < 0:
        raise IcmError(f"refinement takes a number of steps >= 0, not {refine}")
    if refine and not supports_refine(model):
        raise IcmError(f"model {model.model_name!r} does not support refinement (it has no refinement objective)")
    refine_tasks = getattr(model, "refine_tasks", ())
    if refine and task is not None and task not in refine_tasks:
        can = f"refines for {', '.join(refine_tasks)}" if refine_tasks else "refines for pixel fidelity"
        raise IcmError(f"model {model.model_name!r} {can}, not for task {task!r}")


def encode(model, x: torch.Tensor, refine: int = 0, callback=None, task: str | None = None) -> list[bytes]:
    """Code a batch ``(B, 3, H, W)`` into one ``.icm`` file per image (greyscale
    models code its luma).

    Args:
        refine: steps of encoder-side latent refinement (:mod:`icm.refine`);
            0 codes the analysis transform's latents as they are.
        callback: called with the step number after each refinement step.
        task: the receiver's task that refinement keeps (models with
            ``refine_tasks``: ``dicm`` refines for ``all`` by default — the class
            distribution and the stage features inside the boxes its shipped heads
            find, so the file still classifies, detects and segments — or for
            ``classify`` alone, or ``detect`` / ``segment`` alone with the shipped heads).

    Raises:
        IcmError: ``refine`` for a model that does not support it, or a ``task``
            it does not refine for.
    """
    info = model_info(model.model_name)
    check_refine(model, refine, task)
    task = task if task is not None else getattr(model, "refine_default", None)
    objective = None
    if refine and task in DETECTION_TASKS:
        from .tasks.refine import detection_objective

        objective = functools.partial(detection_objective, model=model, heads=heads_for(model, task))
    elif refine and task == "all":
        from .tasks.refine import joint_objective

        objective = functools.partial(joint_objective, model=model, heads=get_heads(model))
    elif refine and task is not None:
        objective = functools.partial(model.refine_objective, task=task)
    coded = model.compress(to_model_channels(model, x), refine=refine, callback=callback, objective=objective)
    h, w = coded.image_size
    header = bitstream.Header(info.model_id, model.quality, h, w)
    return [bitstream.pack(header, s) for s in coded.strings]


def model_for(header: bitstream.Header, model=None):
    """The model that decodes a header (``model`` if given and it matches)."""
    info = preflight.model_of(header)
    if model is not None:
        if model.model_name != info.name or model.quality != header.quality:
            raise IcmError(f"file was coded with {info.name} q{header.quality}, not {model.model_name} q{model.quality}")
        return model
    return get_model(info.name, header.quality)


def check_finite(values, what: str) -> None:
    """:class:`IcmError` if any tensor in ``values`` holds NaN or ±inf (a hostile or damaged file)."""
    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise BitstreamError(f"the decoded {what} are not finite (NaN or inf): the payload is damaged or hostile")


def decode(data: bytes | bitstream.IcmFile, model=None, pixels: bool = True, max_pixels: int | None = None,
           limits: Limits | None = None) -> dict:
    """Decode ``.icm`` bytes: ``{"y_hat", "x_hat" (with pixels), "file", "model"}``.

    Everything the header decides is checked first (:func:`icm.preflight.check_decode`:
    the model, its pixel decoder, the price of the decode against ``max_pixels`` and
    ``limits``), before any model is built or anything allocated.

    Raises:
        LimitError: the header declares more than the limits allow.
        BitstreamError: a malformed file, or one that decodes to non-finite values.
    """
    f = parse(data)
    preflight.check_decode(f, pixels, max_pixels, limits)
    model = model_for(f.header, model)
    out = _on_payload(f, model, lambda c: model.decompress(c, pixels=pixels))
    check_finite([out.get("y_hat"), out.get("x_hat")], "latent and pixels")
    out.update(file=f, model=model)
    return out


def _on_payload(f: bitstream.IcmFile, model, run):
    """``run(Compressed)`` on a parsed file; payload errors become :class:`BitstreamError`."""
    if len(f.sections) != model.num_sections:
        raise BitstreamError(f"{model.model_name} files have {model.num_sections} sections, this one has {len(f.sections)}")
    try:
        return run(Compressed([f.sections], (f.header.height, f.header.width)))
    except ValueError as e:
        if isinstance(e, IcmError):
            raise
        raise BitstreamError(f"corrupted .icm payload: {e}") from None


def use_heads(family: str, path=None) -> None:
    """Run ``family``'s detection tasks with the heads of ``path`` in this process
    (``None``: back to ``ICM_HEADS`` or the shipped heads), e.g. heads of one's own
    training (``icm eval --heads``).  Other processes: the ``ICM_HEADS`` environment
    variable (:data:`icm.models._registry.HEADS_ENV`).

    Raises:
        IcmError: ``path`` is not a file.
    """
    from .models._registry import HEADS_FILES

    if path is None:
        HEADS_FILES.pop(family, None)
    else:
        if not os.path.isfile(path):
            raise IcmError(f"detection heads file not found: {path}")
        HEADS_FILES[family] = os.path.abspath(path)


def get_heads(model):
    """The detection heads of ``model``'s family in use (:func:`use_heads`', ``ICM_HEADS``'
    or the shipped ones), built on ``model`` once per process and file
    (:func:`icm.tasks.heads_file.load_heads`); ``None`` where there are none or the model
    has no split backbone to run them on."""
    if not hasattr(model, "decode_features"):
        return None
    from .models._registry import heads_override

    return _heads(model, heads_override(model.model_name))


@functools.lru_cache(maxsize=16)
def _heads(model, path: str | None):
    from .tasks.heads_file import load_heads

    return load_heads(model, model.model_name, path=path)


def heads_for(model, task: str):
    """Detection heads that run ``task`` (``detect`` or ``segment``) on ``model``'s latent.

    Raises:
        IcmError: a model without a split backbone, without shipped heads, or heads
            without masks for ``segment``.
    """
    name = model.model_name
    if not hasattr(model, "decode_features"):
        tasks = ", ".join(getattr(model, "tasks", ())) or "none"
        raise IcmError(f"model {name!r} does not run task {task!r} from its bitstream (its tasks: {tasks})")
    heads = get_heads(model)
    if heads is None:
        raise IcmError(f"no shipped detection heads for {name}")
    if task == "segment" and not heads.masks:
        raise IcmError(f"the shipped {name} heads detect boxes only; they cannot run task 'segment'")
    return heads


def analyze(data: bytes | bitstream.IcmFile, model=None, task: str | None = None, max_pixels: int | None = None,
            limits: Limits | None = None) -> dict:
    """Run an analysis task straight from ``.icm`` bytes (no pixels are made).

    Returns:
        ``{"output", "task", "file", "model"}``; for ``classify`` the output is
        logits ``(1, classes)``; for ``detect`` / ``segment`` a list with one
        torchvision-style dict (``boxes`` in the image's pixels, ``labels``,
        ``scores``, and ``masks`` ``(N, 1, H, W)`` probabilities), and
        ``"heads"`` (their ``categories`` name the labels).

    Everything the header decides is checked first, as in :func:`decode`
    (:func:`icm.preflight.check_analyze`: the model, its tasks and the shipped
    detection heads', the price of the decode).

    Raises:
        IcmError: the file's model has no analysis tasks, or not ``task``, or
            no detection heads for ``detect`` / ``segment``.
        LimitError: the header declares more than the limits allow.
        BitstreamError: the file is malformed, or decodes to non-finite outputs.
    """
    f = parse(data)
    preflight.check_analyze(f, task, max_pixels, limits)
    if task in DETECTION_TASKS:
        from .tasks.detection import detect_from_bitstream

        model = model_for(f.header, model)
        heads = heads_for(model, task)
        output = _on_payload(f, model, lambda c: detect_from_bitstream(model, heads, c, masks=task == "segment"))
        check_finite([v for det in output for v in det.values()], "detections")
        return {"output": output, "task": task, "file": f, "model": model, "heads": heads}
    model = model_for(f.header, model)
    task = task or model.tasks[0]
    output = _on_payload(f, model, lambda c: model.analyze(c, task=task))
    check_finite([output], f"{task} outputs")
    return {"output": output, "task": task, "file": f, "model": model}
