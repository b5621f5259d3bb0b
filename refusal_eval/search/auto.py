"""``plan=auto``: find or make the ablation plan for a model + SAEs + config.

Lookup order, all keyed by :func:`~.pipeline.search_inputs` (model revision, SAE weights,
config, refusal tokens, prompt-set hashes): the user cache ``<cache>/plans/<key>.json``, then
plans shipped in the package (``refusal_eval/plans/``), then a fresh search on the search split
(the harmful/harmless *train* prompts, never the evaluated ones), written to the cache.
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
from .pipeline import search_inputs, search_to_file
from .plan import AblationPlan, sae_weights_hash

log = logging.getLogger(__name__)


def shipped_plans() -> list[Path]:
    root = resources.files("refusal_eval") / "plans"
    if not root.is_dir():
        return []
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".json"))


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
    found = find_plan(inputs.key)
    if found is not None:
        log.warning("refusal_eval: using the ablation plan %s", found)
        return AblationPlan.load(found)
    if not search:
        raise RefusalEvalError("no cached plan for this model, SAEs and config", "run with plan=auto")
    out = cache_dir("plans") / f"{inputs.key[:16]}.json"
    with cache_lock(out, "searching the same plan"):
        found = find_plan(inputs.key)  # another process may have searched it while we waited
        if found is None:
            log.warning(
                "refusal_eval: no plan cached for this model/SAEs/config; searching (cached at %s)", out
            )
            search_to_file(chat, saes, cfg, out, progress=progress, generator=generator)
            found = out
    return AblationPlan.load(found)
