"""The one door to every model: ``create_model(name, quality=…, pretrained=True)``.

Everything here but :func:`create_model` and :func:`read_weights` answers from the
registry's facts (:mod:`._facts`, and what plug-ins register) and the files in
``icm/weights``, without importing torch or any family's code."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from ..errors import IcmError
from . import _facts  # noqa: F401  (declares the shipped families)
from ._spec import _BY_ID, _REGISTRY, _RETIRED, ModelInfo, register_model  # noqa: F401


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise IcmError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}") from None


def model_info_by_id(model_id: int) -> ModelInfo | None:
    """The model that writes ``model_id`` into its headers, or that wrote it before a
    renumbering of its qualities (see :func:`current_id`); ``None`` if unknown."""
    return _BY_ID.get(model_id) or _RETIRED.get(model_id)


def current_id(model_id: int, quality: int) -> tuple[int, int]:
    """``(model id, quality)`` as this icm writes them for a header's pair: a retired
    id becomes its model's id and the quality its renumbered one; any other pair
    (an unknown quality under a retired id included) comes back unchanged."""
    info = _RETIRED.get(model_id)
    if info is None or quality not in info.retired_ids[model_id]:
        return model_id, quality
    return info.model_id, info.retired_ids[model_id][quality]


def resolve_hook(hook):
    """A family's builder, ``train`` or ``export`` hook: the callable itself, or imported from
    ``"module:function"`` when first used (so registering imports no model or training code)."""
    if hook is None or callable(hook):
        return hook
    import importlib

    module, _, func = hook.partition(":")
    return getattr(importlib.import_module(module), func)


def model_row(name: str) -> dict:
    """What ``icm models --json`` says of a model: ``{"name", "id", "qualities", "weights"
    (the shipped qualities), "pixels", "tasks" (its own and its shipped heads'), "description"}``."""
    info = model_info(name)
    return {"name": name, "id": info.model_id, "qualities": list(info.qualities),
            "weights": [q for q in info.qualities if has_weights(name, q)], "pixels": info.pixel_decoder,
            "tasks": list(info.tasks) + list(heads_tasks(name)), "description": info.description}


def weights_name(name: str, quality: int) -> str:
    return f"{name}-q{quality}.safetensors"


def has_weights(name: str, quality: int) -> bool:
    return resources.files("icm.weights").joinpath(weights_name(name, quality)).is_file()


def heads_name(name: str) -> str:
    """File of the detection heads shipped for a model family (one for every quality)."""
    return f"{name}-rcnn.safetensors"


HEADS_ENV = "ICM_HEADS"
"""Environment variable naming detection heads files to use instead of the shipped ones:
``FAMILY=PATH``, several separated by commas (``ICM_HEADS=dicm-lite0=my-heads.safetensors``)."""
HEADS_FILES: dict[str, str] = {}
"""Family → heads file set in this process (:func:`icm.codec.use_heads`); before :data:`HEADS_ENV`."""


def heads_override(name: str) -> str | None:
    """The heads file that replaces ``name``'s shipped one (:data:`HEADS_FILES`, then
    :data:`HEADS_ENV`), or ``None``."""
    if name in HEADS_FILES:
        return HEADS_FILES[name]
    for item in os.environ.get(HEADS_ENV, "").split(","):
        family, sep, path = item.strip().partition("=")
        if sep and family.strip() == name and path.strip():
            return path.strip()
    return None


def heads_file(name: str):
    """The detection heads file of a family: :func:`heads_override`'s, else the shipped one;
    ``None`` where neither exists."""
    override = heads_override(name)
    if override is not None:
        return Path(override) if os.path.isfile(override) else None
    path = resources.files("icm.weights").joinpath(heads_name(name))
    return path if path.is_file() else None


def _heads_architecture(name: str) -> dict | None:
    """The ``architecture`` of the detection heads of ``name`` in use (read from the file's
    header only); ``None`` without heads or with unreadable metadata."""
    path = heads_file(name)
    if path is None:
        return None
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(min(n, 1 << 24))
    try:
        return read_metadata(len(raw).to_bytes(8, "little") + raw).get("architecture", {})
    except (ValueError, KeyError):
        return None


def heads_tasks(name: str) -> tuple[str, ...]:
    """``("detect", "segment")``, ``("detect",)`` or ``()``: what the detection heads of
    ``name`` in use run (:func:`heads_file`; read from their metadata;
    :func:`icm.tasks.heads_file.load_heads` builds them)."""
    arch = _heads_architecture(name)
    if arch is None:
        return ()
    return ("detect", "segment") if arch.get("masks") else ("detect",)


def heads_make_pictures(name: str) -> bool:
    """Whether the detection heads of ``name`` in use find boxes on a picture they decode
    (:class:`icm.tasks.dense.PictureHead`), which ``icm analyze --draw`` can draw on."""
    return ((_heads_architecture(name) or {}).get("dense") or {}).get("kind") == "picture"


def read_weights(name: str, quality: int):
    """Shipped state dict and metadata of ``name`` at ``quality``.

    Returns:
        ``(state_dict, metadata)``: tensors in float32 (integers kept), metadata dict.
    """
    from safetensors.torch import load

    path = resources.files("icm.weights").joinpath(weights_name(name, quality))
    if not path.is_file():
        raise IcmError(f"no shipped weights for {name!r} at quality {quality}; use pretrained=False for random weights")
    raw = path.read_bytes()
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load(raw).items()}
    return state, read_metadata(raw)


def read_metadata(raw: bytes) -> dict:
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.get("__metadata__", {})
    return json.loads(meta["icm"]) if "icm" in meta else {}


def create_model(name: str, quality: int | None = None, pretrained: bool = True, **kwargs):
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        quality: one of the model's qualities (default: the highest).
        pretrained: load the shipped weights (raises if there are none).
        **kwargs: architecture overrides passed to the builder (only with ``pretrained=False``).

    Returns:
        The model in eval mode.

    Raises:
        IcmError: unknown name or quality, or no shipped weights.
    """
    info = model_info(name)
    if quality is None:
        quality = max(info.qualities)
    if quality not in info.qualities:
        raise IcmError(f"model {name!r} has qualities {list(info.qualities)}, not {quality}")
    if pretrained and kwargs:
        raise IcmError("architecture overrides need pretrained=False")
    model = resolve_hook(info.builder)(quality, **kwargs)  # the family's module is imported here
    model.model_name = name
    model.quality = quality
    model.metadata = {}
    if pretrained:
        state, meta = read_weights(name, quality)
        model.load_shipped(state)
        model.metadata = meta
    return model.eval()
