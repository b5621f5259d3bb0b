"""refusal_eval: dissect LLM refusal with SAE latents (arXiv 2509.09708), for lm-eval.

Public API (imported lazily, so ``import refusal_eval`` stays cheap)::

    chat = refusal_eval.load_model("default")            # offline Qwen2.5-Coder-0.5B-Instruct
    saes = refusal_eval.load_saes(DIR_OR_RELEASE, layers=[12], model=chat)
    with refusal_eval.ablate(chat.model, {12: [101, 2048]}, saes):
        ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

_EXPORTS: dict[str, str] = {
    "ablate": "ablation",
    "LatentAblation": "ablation",
    "DirectionAblation": "ablation",
    "PositionFilter": "ablation",
    "position_classes": "positions",
    "spared_positions": "positions",
    "load_model": "models",
    "ChatModel": "models",
    "load_saes": "saes",
    "SAEBundle": "saes",
    "SparseCoder": "coders",
    "HookPoint": "hooks",
    "RefusalEvalError": "errors",
    "generate": "chat",
    "format_chat": "chat",
    "get_judge": "judges",
    "SearchConfig": "config",
    "load_config": "config",
    "AblationPlan": "search.plan",
    "run_search": "search.pipeline",
    "search_to_file": "search.pipeline",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from .ablation import DirectionAblation as DirectionAblation
    from .ablation import LatentAblation as LatentAblation
    from .ablation import PositionFilter as PositionFilter
    from .ablation import ablate as ablate
    from .chat import format_chat as format_chat
    from .chat import generate as generate
    from .coders import SparseCoder as SparseCoder
    from .config import SearchConfig as SearchConfig
    from .config import load_config as load_config
    from .errors import RefusalEvalError as RefusalEvalError
    from .hooks import HookPoint as HookPoint
    from .judges import get_judge as get_judge
    from .models import ChatModel as ChatModel
    from .models import load_model as load_model
    from .positions import position_classes as position_classes
    from .positions import spared_positions as spared_positions
    from .saes import SAEBundle as SAEBundle
    from .saes import load_saes as load_saes
    from .search.pipeline import run_search as run_search
    from .search.pipeline import search_to_file as search_to_file
    from .search.plan import AblationPlan as AblationPlan


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'refusal_eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
