"""``plan=auto``: find or make the ablation plan for a model + SAEs + config.

Lookup order, all keyed by :func:`~.pipeline.search_inputs` (model revision, SAE weights,
config, refusal tokens, prompt-set hashes): the user cache ``<cache>/plans/<key>.json``, then
plans shipped in the package (``refusal_eval/plans/``), then a fresh search on the search split
(the harmful/harmless *train* prompts, never the evaluated ones), written to the cache.

The key holds the precision the search ran in. When no plan of the model's own precision
exists, one searched in another precision (:data:`PRECISIONS`) with otherwise the same inputs
serves it, with a warning: an fp32 run on a CPU without native bf16 uses the shipped bf16 plan
instead of searching for 40 minutes. The results record which plan (path and sha256) was used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .._cache import cache_dir, cache_lock
from ..coders import SparseCoder
from ..config import SearchConfig
from ..errors import RefusalEvalError
from .pipeline import SearchInputs, search_inputs, search_key, search_to_file
from .plan import AblationPlan, sae_weights_hash

log = logging.getLogger(__name__)


def shipped_plans() -> list[Path]:
    root = resources.files("refusal_eval") / "plans"
    if not root.is_dir():
        return []
    # a plan's sidecar (PLAN.cost.json, written beside it by a search) is not a plan
    return sorted(
        Path(str(p)) for p in root.iterdir() if p.name.endswith(".json") and not p.name.endswith(".cost.json")
    )


def default_plan(model: str = "default") -> Path:
    """The shipped plan of a registered offline model: the one searched over its own SAE release
    (``default_saes``), which ``plan=auto`` finds with ``pretrained=model`` alone."""
    from ..models import offline_model, offline_model_names

    plans = {p.name: p for p in shipped_plans()}

    def plan_of(name: str) -> Path | None:
        registered = offline_model(name)
        return plans.get(f"{registered.default_saes}.json") if registered is not None else None

    found = plan_of(model)
    if found is None:
        have = [name for name in offline_model_names() if plan_of(name) is not None]
        raise RefusalEvalError(
            f"no shipped plan for model {model!r}", f"name one of {', '.join(have)}, or pass a plan file"
        )
    return found


def _plan_key(path: Path) -> str | None:
    try:
        key = json.loads(path.read_text()).get("key")
        return key if isinstance(key, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def find_plan(key: str) -> Path | None:
    cached = cache_dir("plans") / f"{key[:16]}.json"
    if cached.exists() and _plan_key(cached) == key:
        return cached
    return next((p for p in shipped_plans() if _plan_key(p) == key), None)


#: the precisions a plan may have been searched in, tried in this order after the model's own
PRECISIONS = ("torch.bfloat16", "torch.float32", "torch.float16")


def find_plan_for(inputs: SearchInputs) -> Path | None:
    """The plan for ``inputs``: of the model's own precision, else of another one (warned)."""
    found = find_plan(inputs.key)
    if found is not None:
        return found
    own = inputs.model["dtype"]
    for dtype in (d for d in PRECISIONS if d != own):
        model = {**inputs.model, "dtype": dtype}
        key = search_key(model, inputs.saes, inputs.cfg, inputs.data, inputs.refusal_ids)
        found = find_plan(key)
        if found is not None:
            log.warning(
                "refusal_eval: no plan searched in %s; using %s, searched in %s with the same "
                "model, SAEs, config and prompts",
                own.removeprefix("torch."),
                found.name,
                dtype.removeprefix("torch."),
            )
            return found
    return None


def resolve_plan(
    chat: Any,
    saes: Mapping[int, SparseCoder],
    plan: str,
    cfg: SearchConfig,
    *,
    search: bool = True,
    progress: bool = True,
    generator: Any = None,
) -> AblationPlan:
    """The plan for ``plan`` (a path, or ``auto``) checked against ``chat`` and ``saes``."""
    if plan != "auto":
        loaded = AblationPlan.load(plan)
        loaded.check_fits(
            {"name": chat.info.get("name", chat.spec), "revision": chat.revision},
            {layer: sae_weights_hash(c) for layer, c in saes.items()},
        )
        missing = sorted(layer for layer in loaded.sae_layer_ids if layer not in saes)
        if missing:
            raise RefusalEvalError(
                f"plan {plan} needs SAEs at layers {missing}, which are not loaded",
                f"pass saes={loaded.sae_source}",
            )
        return loaded
    inputs = search_inputs(chat, saes, cfg)
    found = find_plan_for(inputs)
    if found is not None:
        log.warning("refusal_eval: using the ablation plan %s", found)
        return AblationPlan.load(found)
    if not search:
        raise RefusalEvalError("no cached plan for this model, SAEs and config", "run with plan=auto")
    out = cache_dir("plans") / f"{inputs.key[:16]}.json"
    with cache_lock(out, "searching the same plan"):
        found = find_plan_for(inputs)  # another process may have searched it while we waited
        if found is None:
            log.warning(
                "refusal_eval: no plan cached for this model/SAEs/config; searching (cached at %s)", out
            )
            search_to_file(chat, saes, cfg, out, progress=progress, generator=generator, inputs=inputs)
            found = out
    return AblationPlan.load(found)
