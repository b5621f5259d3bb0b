"""Chat-model loading: offline registry, GGUF assembly and caching, hub ids, local paths."""

from ._load import ChatModel, default_device, load_model, parse_dtype
from ._registry import (
    OfflineModel,
    offline_model,
    offline_model_names,
    register_offline_model,
)

__all__ = [
    "ChatModel",
    "OfflineModel",
    "default_device",
    "load_model",
    "offline_model",
    "offline_model_names",
    "parse_dtype",
    "register_offline_model",
]
