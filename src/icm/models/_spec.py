"""What a model family declares when it registers (:func:`register_model`), kept apart from
the loading registry (:mod:`._registry`) so that family modules import only this.

A family may be declared by its facts alone, its builder named as ``"module:function"``
(:func:`declare_model`): the registry then answers everything but building a model
without importing the family's code (and so without torch).  The shipped families are
declared so, in :mod:`._facts`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model name.

    Attributes:
        name: registry name (``"hyperprior"``).
        model_id: the number written into ``.icm`` headers; never reused.
        qualities: valid quality levels.
        builder: ``builder(quality, **kwargs) -> nn.Module``, or ``"module:function"``
            naming it, imported when a model is first built.
        description: one line for ``icm models``.
        pixel_decoder: whether files of this model can be turned back into pixels.
        tasks: analysis tasks that run from its bitstream.
        retired_ids: ids this model's files carried before a renumbering of its
            qualities, each with ``{old quality: quality}``; read, never written.
        cost: ``cost(height, width) -> icm.limits.DecodeCost``, what decoding a file
            of that size needs, priced from the header before anything is built.
        train: ``"module:function"`` (or the function) that builds a recipe's
            ``(model, LightningModule, train loader, val loader)`` for ``icm train``.
        export: ``"module:function"`` (or the function) ``(model, recipe, metadata,
            out_dir) -> (path, one-line summary)`` writing shipped weights.
        small: architecture overrides that make the model tiny for contract tests.
    """

    name: str
    model_id: int
    qualities: tuple[int, ...]
    builder: Callable | str = field(repr=False)
    description: str = ""
    pixel_decoder: bool = True
    tasks: tuple[str, ...] = ()
    retired_ids: dict[int, dict[int, int]] = field(default_factory=dict, repr=False)
    cost: Callable | None = field(default=None, repr=False)
    train: str | Callable | None = field(default=None, repr=False)
    export: str | Callable | None = field(default=None, repr=False)
    small: dict = field(default_factory=dict, repr=False)


_REGISTRY: dict[str, ModelInfo] = {}
_BY_ID: dict[int, ModelInfo] = {}
_RETIRED: dict[int, ModelInfo] = {}


def register_model(name: str, *, model_id: int, qualities, description: str = "", pixel_decoder: bool = True,
                   tasks=(), retired_ids: dict[int, dict[int, int]] | None = None, cost: Callable | None = None,
                   train: str | Callable | None = None, export: str | Callable | None = None, small: dict | None = None):
    """Decorator registering ``builder(quality, **kwargs)`` under ``name``.

    Raises:
        ValueError: the name or an id is already taken, or a retired id maps
            onto a quality the model does not have.
    """
    retired = {int(k): dict(v) for k, v in (retired_ids or {}).items()}

    def wrap(builder: Callable | str) -> Callable | str:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        for i in (model_id, *retired):
            taken = _BY_ID.get(i) or _RETIRED.get(i)
            if taken is not None or list((model_id, *retired)).count(i) > 1:
                raise ValueError(f"model id {i} is already used by {(taken.name if taken else name)!r}")
            if not 0 < i < 128:
                raise ValueError("model ids are 1..127 (one header byte)")
        for i, mapping in retired.items():
            if not set(mapping.values()) <= set(qualities):
                raise ValueError(f"retired id {i} of {name!r} maps onto qualities it does not have")
        info = ModelInfo(name, model_id, tuple(qualities), builder, description, pixel_decoder, tuple(tasks),
                         retired, cost, train, export, dict(small or {}))
        _REGISTRY[name] = info
        _BY_ID[model_id] = info
        _RETIRED.update(dict.fromkeys(retired, info))
        return builder

    return wrap


def declare_model(name: str, builder: str, **facts) -> None:
    """Register ``name`` by its facts (the keywords of :func:`register_model`), its builder
    named as ``"module:function"`` and imported only when a model is built."""
    if not isinstance(builder, str) or ":" not in builder:
        raise ValueError(f"declare {name!r} with its builder as 'module:function', not {builder!r}")
    register_model(name, **facts)(builder)


def unregister_model(name: str) -> None:
    """Forget a registered model and its ids (a plug-in unloading; tests).  Its ids stay
    unusable for files written meanwhile only as long as the plug-in is loaded."""
    info = _REGISTRY.pop(name, None)
    if info is None:
        return
    for table in (_BY_ID, _RETIRED):
        for k in [k for k, v in table.items() if v is info]:
            del table[k]

