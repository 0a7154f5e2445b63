"""Model families and the registry."""

from ._base import Compressed, ImageCodec
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
