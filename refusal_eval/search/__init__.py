"""The three-stage search: refusal direction -> greedy minimal set -> interactions.

The public face, read in stage order (each module imported lazily)::

    inputs = search.search_inputs(chat, saes, cfg)    # validated inputs and their key
    body, tensors = search.run_search(chat, saes, inputs=inputs)
    search.write_plan(body, tensors, Path("plan.json"))
    plan = search.resolve_plan(chat, saes, "auto", cfg)  # cached / shipped plan, else a search
    plan = search.AblationPlan.load("plan.json")

Inside: ``stages`` runs the screen, stage 1 (``direction``), stage 2 (``greedy`` over a
``scorer``) and verification; ``stage3`` runs stage 3 (``activations``, ``interactions``,
``hydra``);
``artifacts`` holds every stage's typed result; ``plan`` is the plan file's reader and writer
only; ``auto`` finds plans by key; ``minimality`` re-checks a plan's sets; ``upgrade`` rewrites
older plan formats.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "SearchInputs": "pipeline",
    "PromptSets": "pipeline",
    "search_inputs": "pipeline",
    "run_search": "pipeline",
    "search_to_file": "pipeline",
    "resolve_plan": "auto",
    "find_plan_for": "auto",
    "AblationPlan": "plan",
    "write_plan": "plan",
    "PlanBody": "artifacts",
    "Latent": "artifacts",
    "upgrade_plan": "upgrade",
    "check_plan": "minimality",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .artifacts import Latent as Latent
    from .artifacts import PlanBody as PlanBody
    from .auto import find_plan_for as find_plan_for
    from .auto import resolve_plan as resolve_plan
    from .minimality import check_plan as check_plan
    from .pipeline import PromptSets as PromptSets
    from .pipeline import SearchInputs as SearchInputs
    from .pipeline import run_search as run_search
    from .pipeline import search_inputs as search_inputs
    from .pipeline import search_to_file as search_to_file
    from .plan import AblationPlan as AblationPlan
    from .plan import write_plan as write_plan
    from .upgrade import upgrade_plan as upgrade_plan


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'refusal_eval.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
