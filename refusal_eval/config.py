"""The one typed search config, merged from defaults < a registered model's settings for its own
SAEs < file < environment < explicit overrides.

Every knob of the method (arXiv 2509.09708 as read in the project's method notes) is a field here
with its default; ``default_config.toml`` next to this file is the same defaults, each commented. Plans
record the full resolved config, so a plan says exactly how it was made.

- model defaults: ``OfflineModel.default_search`` of a registered model, when it runs with its
  own SAE release at its plan's layers (``ChatModel.search_defaults``), e.g. the 0.5B's
  ``top_k = 20``; ``refusal-eval config --model NAME`` shows them resolved;
- file: ``--config FILE`` (TOML or JSON, flat keys);
- environment: ``REFUSAL_EVAL_<KEY>`` (e.g. ``REFUSAL_EVAL_TAU=0.5``);
- overrides: ``--set key=value`` on the CLI, ``search_*`` model_args in lm-eval, or kwargs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._codec import DecodeError, decode
from .errors import RefusalEvalError

Pool = Literal["max", "mean"]
CandidateDirection = Literal["best", "per_layer"]


#: the judge that scores lm-eval runs unless told otherwise (``judge=``): four outcomes per
#: answer (refusal / harmful / deflection / degenerate), measured on the labelled ablated answers
#: and on XSTest leave one model out (docs/judges/outcomes.md). The search verifies with its own
#: ``judge`` setting below (``keyword``), part of every plan's key.
DEFAULT_JUDGE = "outcome"


@dataclass(frozen=True)
class SearchConfig:
    # --- prompts -------------------------------------------------------------------------
    harmful: str = "harmful_train"  # prompt set the search runs on (refused ones are kept)
    harmless: str = "harmless_train"  # contrast set for directions, KL and the FM
    validation: str = "harmful_val"  # disjoint harmful set for verification
    n_harmful: int | None = None  # cap on harmful search prompts (None: all)
    n_harmless: int | None = None  # None: as many as harmful prompts
    n_validation: int | None = None  # cap on validation prompts (None: all)
    refusal_tokens: tuple[str, ...] | None = None  # None: the model's registered refusal openings
    # --- stage 1: direction, layer, candidates --------------------------------------------
    layer: int | None = None  # fixed direction layer; None: Arditi selection below
    max_kl: float = 0.1  # harmless first-token KL limit for layer selection
    max_depth_frac: float = 0.8  # selected layer < this fraction of depth
    min_drop_frac: float = 0.5  # a layer must lower the refusal score by this share of the best drop
    layer_select_prompts: int = 32  # prompts per side used to score layers
    top_k: int = 50  # candidates per SAE layer, by cosine(W_dec[i], r)
    candidate_direction: CandidateDirection = "best"  # r = r_best for every SAE layer, or r_l per layer
    # --- stage 2: greedy filtering --------------------------------------------------------
    tau: float = 0.3  # relative refusal-probability increase that marks a block as needed
    block_size: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)  # one shuffled order per seed; sets are intersected
    eps: float = 1e-6  # floor of p_all in the relative increase
    chunk_prompts: int = 16  # prompts searched together (one resumable chunk)
    # --- stage 3: factorization machine, probe, dormant latents ---------------------------
    pool: Pool = "max"  # pooling of SAE activations over prompt tokens
    fm_rank: int = 20
    fm_lr: float = 1e-3
    fm_epochs: int = 20
    fm_batch_size: int = 16
    fm_init_std: float = 0.1  # 0.01 fits as well but ranks the planted partner wrong (docs/search)
    fm_members: int = 5  # FMs fit from different starts, logits and interaction scores averaged
    test_frac: float = 0.2  # held-out share for FM and probe accuracy
    probe_l2: float = 1.0  # inverse regularisation C of the logistic-regression probe
    extra_k: int = 50  # extras added to the minimal-set union: FM-, probe-ranked, random
    wake_threshold: float = 0.0  # pooled activation above which a latent counts as active
    wake_top_n: int = 16  # woken latents tested per prompt and layer (largest activation first)
    hydra_min_effect: float = 0.05  # absolute P(refusal) a woken latent must carry to be a hydra
    #: a ``sae_kl`` condition: the union less its most harmless-busy latents, pruned until the
    #: first-token KL on the search's harmless prompts is <= this (None: no such condition)
    sae_max_kl: float | None = None
    # --- verification by generation -------------------------------------------------------
    verify: bool = True
    max_new_tokens: int = 32
    judge: str = "keyword"
    # --- compute ----------------------------------------------------------------------------
    batch_size: int = 32
    seed: int = 0
    skip_prefix: bool = True  # reuse the residual below a row's start (first SAE layer; a tested latent's)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def plan_dict(self) -> dict[str, Any]:
        """What a plan records: every setting, the :data:`KEYED_WHEN_SET` ones only when set (so
        a plan searched without them reads as one searched before they existed)."""
        return {k: v for k, v in self.to_dict().items() if not (k in KEYED_WHEN_SET and v is None)}

    def result_dict(self) -> dict[str, Any]:
        """The settings that can change a search's result (its key): the recorded ones but
        :data:`COMPUTE_ONLY`."""
        return {k: v for k, v in self.plan_dict().items() if k not in COMPUTE_ONLY}

    def replace(self, **changes: Any) -> SearchConfig:
        return resolve(self, changes)


#: settings that change how fast a search runs, never what it finds: left out of plan keys, so
#: ``search_batch_size=8`` still finds the plan searched with the default batch size.
COMPUTE_ONLY = frozenset({"batch_size", "chunk_prompts", "skip_prefix"})

#: optional settings added after plans were shipped, whose unset value (None) leaves the search
#: as it was: in a plan key only when set, so the plans searched before them are still found
KEYED_WHEN_SET = frozenset({"sae_max_kl"})

#: the settings each later stage reads besides the results of the stages before it. Every other
#: result setting belongs to the screen and stage 1 (prompts, judge, direction, candidates), so
#: changing one of those reruns everything, while a stage-3 setting (``fm_init_std``) reruns
#: stage 3 and what follows it: stages are cached by these groups
#: (:func:`refusal_eval.search.pipeline.stage_keys`). ``tau`` and ``eps`` are stage 2's; stage 3's
#: dormant test reads them too, which is safe because a stage's key includes the keys before it.
LATER_STAGE_SETTINGS: dict[str, frozenset[str]] = {
    "stage2": frozenset({"tau", "block_size", "seeds", "eps"}),
    # stage 3's ablation tests (dormant, hydra) read the pooled activations, not the fits: keyed
    # before the FM and probe, so their settings rerun only the fits (not the ~500 s of tests)
    "stage3_tests": frozenset({"pool", "wake_threshold", "wake_top_n", "hydra_min_effect"}),
    "stage3": frozenset(
        {
            "fm_rank",
            "fm_lr",
            "fm_epochs",
            "fm_batch_size",
            "fm_init_std",
            "fm_members",
            "test_frac",
            "probe_l2",
            "extra_k",
            "sae_max_kl",
        }
    ),
    "verification": frozenset({"verify"}),
}

_FIELDS = {f.name: f for f in dataclasses.fields(SearchConfig)}


def _coerce(name: str, value: Any) -> Any:
    """A config value (from TOML, ``--set key=value`` or a plan) as its field's type, by the one
    artifact codec (command-line strings accepted: ``"none"``, ``"true"``, ``"1,2,3"``)."""
    hint = typing.get_type_hints(SearchConfig)[name]
    try:
        return decode(hint, value, name, strings=True)
    except DecodeError:
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        shown = " | ".join(map(str, typing.get_args(base))) if typing.get_origin(base) is Literal else hint
        raise RefusalEvalError(
            f"search config {name}={value!r} is not a valid {shown}",
            f"give {name} a value of that type (see default_config.toml)",
        ) from None


def resolve(base: SearchConfig, changes: Mapping[str, Any]) -> SearchConfig:
    unknown = sorted(set(changes) - set(_FIELDS))
    if unknown:
        raise RefusalEvalError(
            f"unknown search config key(s) {unknown}", f"valid keys: {', '.join(sorted(_FIELDS))}"
        )
    cfg = dataclasses.replace(base, **{k: _coerce(k, v) for k, v in changes.items()})
    _check(cfg)
    return cfg


def _check(cfg: SearchConfig) -> None:
    rules = [
        (cfg.tau > 0, "tau must be > 0"),
        (cfg.block_size >= 1, "block_size must be >= 1"),
        (len(cfg.seeds) >= 1, "seeds must name at least one seed"),
        (cfg.top_k >= 1, "top_k must be >= 1"),
        (0 < cfg.test_frac < 1, "test_frac must be in (0, 1)"),
        (cfg.fm_rank >= 1 and cfg.fm_epochs >= 1, "fm_rank and fm_epochs must be >= 1"),
        (cfg.batch_size >= 1 and cfg.chunk_prompts >= 1, "batch_size and chunk_prompts must be >= 1"),
        (
            all(n is None or n >= 1 for n in (cfg.n_harmful, cfg.n_harmless, cfg.n_validation)),
            "n_harmful, n_harmless and n_validation must be >= 1 (or unset for all)",
        ),
        (
            cfg.layer_select_prompts >= 1 and cfg.max_new_tokens >= 1,
            "layer_select_prompts and max_new_tokens must be >= 1",
        ),
        (cfg.extra_k >= 0 and cfg.fm_batch_size >= 1, "extra_k must be >= 0 and fm_batch_size >= 1"),
        (cfg.fm_lr > 0 and cfg.fm_init_std > 0, "fm_lr and fm_init_std must be > 0"),
        (cfg.fm_members >= 1, "fm_members must be >= 1"),
        (cfg.probe_l2 > 0 and cfg.eps > 0, "probe_l2 and eps must be > 0"),
        (cfg.max_kl > 0 and 0 < cfg.max_depth_frac <= 1, "max_kl must be > 0 and max_depth_frac in (0, 1]"),
        (cfg.layer is None or cfg.layer >= 0, "layer must be >= 0 (or unset)"),
        (0 <= cfg.min_drop_frac <= 1, "min_drop_frac must be in [0, 1]"),
        (cfg.wake_threshold >= 0 and cfg.wake_top_n >= 0, "wake_threshold and wake_top_n must be >= 0"),
        (cfg.hydra_min_effect >= 0, "hydra_min_effect must be >= 0"),
        (cfg.sae_max_kl is None or cfg.sae_max_kl > 0, "sae_max_kl must be > 0 (or unset)"),
    ]
    for ok, msg in rules:
        if not ok:
            raise RefusalEvalError(f"invalid search config: {msg}", "fix the value in --config / --set")


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise RefusalEvalError(
            f"cannot read config file {p}: {exc.strerror}", "pass an existing file"
        ) from None
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise RefusalEvalError(
            f"config file {p} is malformed: {exc}", "fix its syntax (TOML or JSON)"
        ) from None
    if not isinstance(data, dict):
        raise RefusalEvalError(f"config file {p} must hold a table of keys", "write key = value lines")
    return data


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    prefix = "REFUSAL_EVAL_"
    reserved = {"CACHE"}
    return {
        k[len(prefix) :].lower(): v
        for k, v in environ.items()
        if k.startswith(prefix) and k[len(prefix) :] not in reserved and k[len(prefix) :].lower() in _FIELDS
    }


def load_config(
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    model_defaults: Mapping[str, Any] | None = None,
) -> SearchConfig:
    """Defaults < ``model_defaults`` (a registered model's, ``ChatModel.search_defaults``) <
    ``file`` < ``REFUSAL_EVAL_*`` environment < ``overrides``."""
    merged: dict[str, Any] = dict(model_defaults or {})
    if file is not None:
        merged.update(read_config_file(file))
    merged.update(env_overrides(environ))
    merged.update(overrides or {})
    return resolve(SearchConfig(), merged)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["tau=0.5", "seeds=0,1"]`` -> ``{"tau": "0.5", "seeds": "0,1"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RefusalEvalError(f"cannot parse --set {item!r}", "write key=value, e.g. --set tau=0.5")
        out[key.strip()] = value.strip()
    return out


DEFAULT_CONFIG_FILE = Path(__file__).with_name("default_config.toml")
