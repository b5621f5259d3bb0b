"""Run the three stages end to end, caching each one, and write the ablation plan.

Each stage is cached as JSON under ``<cache>/search/stages/<stage>-<key>/``, its key hashing
only what it depends on (:func:`stage_keys`): the model revision, SAE weights, refusal tokens,
prompt sets and stage-1 settings for stage 1, then the previous stage's key and the stage's own
settings. A rerun after an interruption skips every finished stage (stage 2 is cached per chunk
of prompts, verification per condition), and a rerun with another stage-3 setting reuses stages
1 and 2. ``run_search`` returns the plan body and its tensors; ``search_to_file`` writes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from .._cache import StageCache, atomic_write, cache_dir, cache_lock
from .._codec import canonical_json
from .._version import __version__
from ..chat import ChatLike, check_context
from ..coders import SparseCoder
from ..config import KEYED_WHEN_SET, LATER_STAGE_SETTINGS, SearchConfig
from ..data import load_prompts, prompt_set_hash
from ..errors import RefusalEvalError
from ..saes._stream import headers
from ..scoring import refusal_token_ids
from .artifacts import ModelInfo, PlanBody, PromptSetInfo, SaeSet
from .cost import CostMeter
from .plan import VERSION, write_plan
from .stage3 import run_stage3
from .stages import (
    Context,
    TextGenerator,
    run_screen,
    run_side_effects,
    run_stage1,
    run_stage2,
    run_verification,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptSets:
    harmful: list[str]
    harmless: list[str]
    validation: list[str]
    names: dict[str, str]

    @classmethod
    def from_config(cls, cfg: SearchConfig) -> PromptSets:
        harmful = [p.text for p in load_prompts(cfg.harmful)][: cfg.n_harmful]
        pool = [p.text for p in load_prompts(cfg.harmless)]
        n = min(len(pool), cfg.n_harmless if cfg.n_harmless is not None else len(harmful))
        pick = sorted(random.Random(cfg.seed).sample(range(len(pool)), n))
        validation = [p.text for p in load_prompts(cfg.validation)][: cfg.n_validation]
        names = {"harmful": cfg.harmful, "harmless": cfg.harmless, "validation": cfg.validation}
        return cls(harmful, [pool[i] for i in pick], validation, names)

    def describe(self) -> dict[str, Any]:
        sets = {"harmful": self.harmful, "harmless": self.harmless, "validation": self.validation}
        return {
            k: {"name": self.names.get(k, "custom"), "n": len(v), "sha256": prompt_set_hash(v)}
            for k, v in sets.items()
        }


def _model_block(chat: ChatLike) -> dict[str, Any]:
    return {
        "spec": chat.spec,
        "name": chat.info.get("name", chat.spec),
        "revision": chat.revision,
        "n_layers": chat.n_layers,
        "d_model": chat.d_model,
        "dtype": str(next(chat.model.parameters()).dtype),
    }


def _sae_block(saes: Mapping[int, SparseCoder]) -> dict[str, Any]:
    ids = getattr(saes, "ids", {})
    return {
        "source": getattr(saes, "source", "code"),
        "layers": {
            str(layer): {
                "id": ids.get(layer, c.source),
                "hook": c.hook.tl_name,
                "hf_hook": c.hook.hf_name,
                "architecture": c.architecture,
                "d_sae": c.d_sae,
                "sha256": c.sha256,
            }
            for layer, c in sorted(headers(saes).items())  # a streamed SAE is not loaded for this
        },
    }


def _inputs(
    model: Mapping[str, Any],
    saes: Mapping[str, Any],
    data: Mapping[str, Any],
    refusal_ids: Sequence[int],
    version: int,
) -> dict[str, Any]:
    return {
        "version": version,
        "model": {k: model[k] for k in ("name", "revision", "dtype")},
        "saes": {k: v["sha256"] for k, v in saes["layers"].items()},
        "data": {k: v["sha256"] for k, v in data.items()},
        "refusal_ids": list(refusal_ids),
    }


def _digest(material: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(material)).hexdigest()


def search_key(
    model: Mapping[str, Any],
    saes: Mapping[str, Any],
    cfg: SearchConfig,
    data: Mapping[str, Any],
    refusal_ids: Sequence[int],
    version: int = VERSION,
) -> str:
    """The fingerprint of a search's inputs (the plan's key). It includes the plan format
    ``version``, so a new format never serves a plan or stage cache written in the old one."""
    # compute-only settings never change what a search finds
    return _digest({**_inputs(model, saes, data, refusal_ids, version), "config": cfg.result_dict()})


def stage_keys(
    model: Mapping[str, Any],
    saes: Mapping[str, Any],
    cfg: SearchConfig,
    data: Mapping[str, Any],
    refusal_ids: Sequence[int],
    version: int = VERSION,
) -> dict[str, str]:
    """Per stage, the fingerprint of what it depends on: stage 1 hashes the search's inputs and
    every result setting no later stage owns; each later stage hashes the key before it and its
    own settings (:data:`~refusal_eval.config.LATER_STAGE_SETTINGS`)."""
    settings = cfg.result_dict()
    later = frozenset().union(*LATER_STAGE_SETTINGS.values())
    first = {k: v for k, v in settings.items() if k not in later}
    keys = {"stage1": _digest({**_inputs(model, saes, data, refusal_ids, version), "stage1": first})}
    before = keys["stage1"]
    for stage, names in LATER_STAGE_SETTINGS.items():
        own = {k: settings[k] for k in sorted(names) if k in settings or k not in KEYED_WHEN_SET}
        before = keys[stage] = _digest({"after": before, stage: own})
    return keys


class StageStores:
    """The stage caches of one search, a directory per stage key; ``get``/``put``/``cached``
    send an entry to its stage's directory by name: ``stage2_*`` chunks to stage 2, ``verify_*``
    runs to verification, ``side_effects`` to stage 3 (it measures stage 3's sets), stage 3's
    ablation tests to their own key (``stage3_tests``, before the fits)."""

    ROUTES = (
        ("stage1", "stage1"),
        ("stage2", "stage2"),
        ("stage3_tests", "stage3_tests"),
        ("stage3", "stage3"),
        ("side_effects", "stage3"),
        ("verify", "verification"),
    )

    def __init__(self, stores: Mapping[str, StageCache]) -> None:
        self.stores = dict(stores)

    def store(self, name: str) -> StageCache:
        for prefix, stage in self.ROUTES:
            if name.startswith(prefix):
                return self.stores[stage]
        raise KeyError(f"no search stage caches {name!r}")

    def get(self, name: str) -> Any | None:
        return self.store(name).get(name)

    def put(self, name: str, value: Any) -> Any:
        return self.store(name).put(name, value)

    def cached(self, name: str, compute: Callable[[], Any]) -> Any:
        return self.store(name).cached(name, compute)

    @property
    def hits(self) -> int:
        return sum(s.hits for s in self.stores.values())

    @property
    def writes(self) -> int:
        return sum(s.writes for s in self.stores.values())


@dataclass(frozen=True)
class SearchInputs:
    """Everything a search depends on, and the key that fingerprints it."""

    cfg: SearchConfig
    prompts: PromptSets
    tokens: tuple[str, ...]
    refusal_ids: list[int]
    model: dict[str, Any]
    saes: dict[str, Any]
    data: dict[str, Any]
    key: str


def search_inputs(
    chat: ChatLike, saes: Mapping[int, SparseCoder], cfg: SearchConfig, prompts: PromptSets | None = None
) -> SearchInputs:
    """Validate the inputs of a search and compute its key (cheap: no forward pass)."""
    if not saes:
        raise RefusalEvalError("the search needs at least one SAE", "pass --saes RELEASE_OR_DIR")
    if cfg.layer is not None and not 0 <= cfg.layer < chat.n_layers:
        raise RefusalEvalError(
            f"layer={cfg.layer} is outside the model's {chat.n_layers} layers",
            "pick a layer inside the model",
        )
    prompts = prompts or PromptSets.from_config(cfg)
    if not prompts.harmful or not prompts.harmless:
        raise RefusalEvalError("the search needs harmful and harmless prompts", "check the prompt sets")
    for texts in (prompts.harmful, prompts.validation):
        check_context(chat.model, chat.tokenizer, texts, cfg.max_new_tokens)
    check_context(chat.model, chat.tokenizer, prompts.harmless)
    tokens = tuple(cfg.refusal_tokens or chat.refusal_tokens)
    refusal_ids = refusal_token_ids(chat.tokenizer, tokens)
    model, sae_block, data = _model_block(chat), _sae_block(saes), prompts.describe()
    key = search_key(model, sae_block, cfg, data, refusal_ids)
    return SearchInputs(cfg, prompts, tokens, refusal_ids, model, sae_block, data, key)


def run_search(
    chat: ChatLike,
    saes: Mapping[int, SparseCoder],
    cfg: SearchConfig | None = None,
    *,
    prompts: PromptSets | None = None,
    work_dir: Path | None = None,
    progress: bool = True,
    generator: TextGenerator | None = None,
    inputs: SearchInputs | None = None,
    meter: CostMeter | None = None,
) -> tuple[PlanBody, dict[str, Tensor]]:
    """All three stages plus verification; returns (plan body, tensors). ``generator`` moves the
    greedy generations (screening, verification) to another engine, e.g. vLLM: not part of the
    key, as both compute the same greedy answers (in bf16 they can part late in an answer; the
    judge reads the opening). ``meter`` records what each stage cost (:mod:`.cost`)."""
    if inputs is None:  # plan=auto hands over the inputs it keyed its lookup with
        inputs = search_inputs(chat, saes, cfg or SearchConfig(), prompts)
    elif cfg is not None and cfg != inputs.cfg:
        raise RefusalEvalError("run_search got a config other than its inputs'", "pass one of the two")
    cfg, refusal_ids, key = inputs.cfg, inputs.refusal_ids, inputs.key
    model, data = inputs.model, inputs.data
    keys = stage_keys(model, inputs.saes, cfg, data, refusal_ids)
    home = work_dir or cache_dir("search", "stages")
    cache = StageStores({stage: StageCache(home / f"{stage}-{k[:16]}") for stage, k in keys.items()})
    # the screen (baseline generations) depends on far fewer inputs: shared across configs
    screen_key = hashlib.sha256(
        canonical_json(
            {
                "model": {k: model[k] for k in ("name", "revision", "dtype")},
                "data": {k: v["sha256"] for k, v in data.items()},
                "refusal_ids": refusal_ids,
                **{k: getattr(cfg, k) for k in ("judge", "max_new_tokens", "batch_size")},
            }
        )
    ).hexdigest()
    screen_cache = StageCache(work_dir or cache_dir("search", "screen", screen_key[:16]))
    log.info("search stages cached in %s (stage 3 in %s)", home, cache.stores["stage3"].root.name)
    # a twin waits, then reads (searches that only share early stages may compute them twice)
    with cache_lock((work_dir or cache_dir("search", "runs")) / key[:16], "running the same search"):
        return _run_stages(chat, saes, inputs, cache, screen_cache, progress, generator, meter)


def _run_stages(
    chat: ChatLike,
    saes: Mapping[int, SparseCoder],
    inputs: SearchInputs,
    cache: StageStores,
    screen_cache: StageCache,
    progress: bool,
    generator: TextGenerator | None,
    meter: CostMeter | None = None,
) -> tuple[PlanBody, dict[str, Tensor]]:
    cfg, prompts, refusal_ids, key = inputs.cfg, inputs.prompts, inputs.refusal_ids, inputs.key
    tokens, model, sae_block, data = inputs.tokens, inputs.model, inputs.saes, inputs.data
    t0 = time.perf_counter()
    sets = (prompts.harmful, prompts.harmless, prompts.validation)
    ctx = Context(chat, saes, cfg, *sets, refusal_ids, cache, screen_cache, progress, generator)
    meter = meter or CostMeter(chat.model)
    caches = (cache, screen_cache)
    with meter.stage("screen", *caches):
        screen = run_screen(ctx)
    with meter.stage("stage1", *caches):
        stage1, directions = run_stage1(ctx, screen)
    with meter.stage("stage2", *caches):
        stage2 = run_stage2(ctx, screen, stage1)
    with meter.stage("stage3", *caches):
        stage3, condition_sets = run_stage3(ctx, screen, stage1, stage2)
    with meter.stage("verification", *caches):
        verification = (
            run_verification(ctx, screen, stage1, stage2, condition_sets, directions) if cfg.verify else {}
        )
    with meter.stage("side_effects", *caches):
        side_effects = run_side_effects(ctx, condition_sets, stage1, directions)
    body = PlanBody(
        created_by=f"refusal_eval {__version__}",
        key=key,
        model=ModelInfo.from_json(model),
        saes=SaeSet.from_json(sae_block),
        config=cfg.plan_dict(),
        data={k: PromptSetInfo.from_json(v) for k, v in data.items()},
        refusal_tokens=tokens,
        refusal_ids=tuple(refusal_ids),
        screen=screen,
        stage1=stage1,
        stage2=stage2,
        stage3=stage3,
        sets=condition_sets,
        verification=verification,
        side_effects=side_effects,
    )
    log.info("search finished in %.0fs (%s)", time.perf_counter() - t0, meter.summary())
    return body, {"directions": directions.float().contiguous()}


def search_to_file(
    chat: ChatLike, saes: Mapping[int, SparseCoder], cfg: SearchConfig, out: Path, **kw: Any
) -> tuple[PlanBody, str]:
    """Search and write ``out`` (PLAN.json), its tensors and ``PLAN.cost.json`` (what each stage
    cost, beside the plan: wall times differ between runs, the plan's bytes do not)."""
    meter = CostMeter(chat.model)
    body, tensors = run_search(chat, saes, cfg, meter=meter, **kw)
    digest = write_plan(body, tensors, out)
    atomic_write(cost_path(out), json.dumps(meter.to_json(digest), indent=1) + "\n")
    return body, digest


def cost_path(plan: Path) -> Path:
    """``PLAN.cost.json`` beside ``PLAN.json``."""
    return plan.with_suffix(".cost.json")
