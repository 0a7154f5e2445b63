"""Model families and the registry.

The registry (names, ids, qualities, tasks, cost models) answers without torch;
``Compressed`` and ``ImageCodec`` (torch) are imported when first asked for.
"""

from ._registry import (
    ModelInfo,
    create_model,
    has_weights,
    list_models,
    model_info,
    model_info_by_id,
    register_model,
)

__all__ = [
    "Compressed",
    "ImageCodec",
    "ModelInfo",
    "create_model",
    "has_weights",
    "list_models",
    "model_info",
    "model_info_by_id",
    "register_model",
]

_LAZY = {"Compressed": "._base", "ImageCodec": "._base"}


def __getattr__(name: str):
    # PEP 562: the torch-backed names load on first use, so that `import icm.models` stays light
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
