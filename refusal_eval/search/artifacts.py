"""The typed results of each search stage and the plan body, with their JSON form.

Every class is frozen and round-trips through ``to_json`` / ``from_json``; the JSON is what plans
and stage caches hold (one schema, ``plan.VERSION``), so the same inputs still give the same plan
bytes. Fields added after the first plans carry defaults, so older plans load unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .direction import Candidate, LayerScore

Latent = tuple[int, int]  # (SAE layer, latent index)
Json = dict[str, Any]


def to_json(obj: Any) -> Any:
    """Dataclasses -> dicts (their own ``to_json`` if they have one), tuples -> lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        own = getattr(obj, "to_json", None)
        return own() if own is not None else fields_json(obj)
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj


def fields_json(obj: Any) -> Json:
    """A dataclass's fields as JSON; ``None`` fields marked ``omit_none`` are left out."""
    out: Json = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.metadata.get("omit_none"):
            continue
        out[f.name] = to_json(value)
    return out


def latent(x: Sequence[Any]) -> Latent:
    return (int(x[0]), int(x[1]))


def latents(xs: Sequence[Sequence[Any]]) -> tuple[Latent, ...]:
    return tuple(latent(x) for x in xs)


def _ints(xs: Sequence[Any]) -> tuple[int, ...]:
    return tuple(int(x) for x in xs)


def _floats(xs: Sequence[Any]) -> tuple[float, ...]:
    return tuple(float(x) for x in xs)


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


class _Json:
    def to_json(self) -> Json:
        return fields_json(self)


# --- the screen ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Screen(_Json):
    """Baseline answers: refused harmful / validation prompts, answered harmless prompts."""

    n_harmful: int
    n_validation: int
    refused_harmful: tuple[int, ...]
    refused_validation: tuple[int, ...]
    answered_harmless: tuple[int, ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Screen:
        return cls(
            int(d["n_harmful"]),
            int(d["n_validation"]),
            _ints(d["refused_harmful"]),
            _ints(d["refused_validation"]),
            _ints(d["answered_harmless"]),
        )


# --- stage 1 ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage1(_Json):
    layer: int
    selected_by: str  # fixed | arditi | fallback_min_kl | depth_only
    layer_scores: tuple[LayerScore, ...]
    direction_norms: tuple[float, ...]
    n_harmful: int
    n_harmless: int
    candidates: tuple[Candidate, ...]
    baseline_refusal_score: float | None = None
    candidate_direction: str = "best"

    def to_json(self) -> Json:
        out = fields_json(self)
        out["candidates"] = [[c.layer, c.latent, c.cosine] for c in self.candidates]
        out["layer_scores"] = [vars(s) for s in self.layer_scores]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Stage1:
        return cls(
            layer=int(d["layer"]),
            selected_by=str(d["selected_by"]),
            layer_scores=tuple(LayerScore(**s) for s in d["layer_scores"]),
            direction_norms=_floats(d["direction_norms"]),
            n_harmful=int(d["n_harmful"]),
            n_harmless=int(d["n_harmless"]),
            candidates=tuple(Candidate(int(c[0]), int(c[1]), float(c[2])) for c in d["candidates"]),
            baseline_refusal_score=_opt_float(d.get("baseline_refusal_score")),
            candidate_direction=str(d.get("candidate_direction", "best")),
        )

    @property
    def candidate_latents(self) -> list[Latent]:
        return [(c.layer, c.latent) for c in self.candidates]

    @property
    def sae_layers(self) -> list[int]:
        """The SAE layers holding candidates: the layers every scorer of the search ablates at."""
        return sorted({c.layer for c in self.candidates})


# --- stage 2 ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MinimalSet(_Json):
    """One refused prompt's greedy result."""

    prompt: int  # index among the refused prompts
    harmful_index: int  # index in the harmful prompt set
    p_clean: float
    p_full: float
    per_seed: tuple[tuple[Latent, ...], ...]
    minimal: tuple[Latent, ...]
    p_minimal: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MinimalSet:
        return cls(
            int(d["prompt"]),
            int(d["harmful_index"]),
            float(d["p_clean"]),
            float(d["p_full"]),
            tuple(latents(s) for s in d["per_seed"]),
            latents(d["minimal"]),
            float(d["p_minimal"]),
        )


@dataclass(frozen=True)
class Stage2(_Json):
    n_prompts: int
    prompts: tuple[MinimalSet, ...]
    union: tuple[Latent, ...]
    counts: tuple[tuple[int, int, int], ...]  # (layer, latent, number of minimal sets), most first
    mean_minimal_size: float
    flipped_by_proxy: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Stage2:
        return cls(
            int(d["n_prompts"]),
            tuple(MinimalSet.from_json(p) for p in d["prompts"]),
            latents(d["union"]),
            tuple((int(a), int(b), int(c)) for a, b, c in d["counts"]),
            float(d["mean_minimal_size"]),
            int(d["flipped_by_proxy"]),
        )

    def minimal_sets(self) -> list[frozenset[Latent]]:
        return [frozenset(p.minimal) for p in self.prompts]


# --- stage 3 ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit(_Json):
    train_accuracy: float
    test_accuracy: float
    losses: tuple[float, ...] | None = field(default=None, metadata={"omit_none": True})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Fit:
        losses = d.get("losses")
        return cls(
            float(d["train_accuracy"]), float(d["test_accuracy"]), None if losses is None else _floats(losses)
        )


@dataclass(frozen=True)
class Dormant(_Json):
    """A minimal-set member that is zero on its prompt yet necessary (the method's definition)."""

    prompt: int
    latent: Latent
    p_minimal: float
    p_restored: float
    fires_when_active_ablated: bool
    fires_at: tuple[tuple[int, str, float], ...]  # (position, token, activation)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Dormant:
        return cls(
            int(d["prompt"]),
            latent(d["latent"]),
            float(d["p_minimal"]),
            float(d["p_restored"]),
            bool(d["fires_when_active_ablated"]),
            tuple((int(t), str(tok), float(a)) for t, tok, a in d["fires_at"]),
        )


@dataclass(frozen=True)
class Hydra(_Json):
    """A cross-layer hydra: woken by the ablation below its layer, and carrying refusal."""

    prompt: int
    latent: Latent
    in_minimal: bool
    activation_before: float
    activation_after: float
    p_without: float
    p_with: float
    effect: float
    fires_at: tuple[tuple[int, str, float, float], ...]  # (position, token, before, after)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Hydra:
        return cls(
            int(d["prompt"]),
            latent(d["latent"]),
            bool(d["in_minimal"]),
            float(d["activation_before"]),
            float(d["activation_after"]),
            float(d["p_without"]),
            float(d["p_with"]),
            float(d["effect"]),
            tuple((int(t), str(tok), float(b), float(a)) for t, tok, b, a in d["fires_at"]),
        )


@dataclass(frozen=True)
class WakeEffect(_Json):
    """One tested woken latent's effect (kept for the strongest few, hydra or not)."""

    prompt: int
    latent: Latent
    in_minimal: bool
    activation_after: float
    p_without: float
    p_with: float
    effect: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WakeEffect:
        return cls(
            int(d["prompt"]),
            latent(d["latent"]),
            bool(d["in_minimal"]),
            float(d["activation_after"]),
            float(d["p_without"]),
            float(d["p_with"]),
            float(d["effect"]),
        )


@dataclass(frozen=True)
class Woken(_Json):
    """The cross-layer hydra measurement: what was tested, and what was found."""

    threshold: float
    top_n: int
    min_effect: float
    n_prompts: int
    woken_by_layer: dict[int, int]
    tested_by_layer: dict[int, int]
    n_tested: int
    hydra: tuple[Hydra, ...]
    #: tested latents whose effect reaches ``min_effect`` / whose relative effect reaches tau
    n_min_effect: int | None = field(default=None, metadata={"omit_none": True})
    n_relative: int | None = field(default=None, metadata={"omit_none": True})
    strongest: tuple[WakeEffect, ...] | None = field(default=None, metadata={"omit_none": True})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Woken:
        return cls(
            float(d["threshold"]),
            int(d["top_n"]),
            float(d["min_effect"]),
            int(d["n_prompts"]),
            {int(k): int(v) for k, v in d["woken_by_layer"].items()},
            {int(k): int(v) for k, v in d["tested_by_layer"].items()},
            int(d["n_tested"]),
            tuple(Hydra.from_json(h) for h in d["hydra"]),
            None if d.get("n_min_effect") is None else int(d["n_min_effect"]),
            None if d.get("n_relative") is None else int(d["n_relative"]),
            None if d.get("strongest") is None else tuple(WakeEffect.from_json(e) for e in d["strongest"]),
        )

    @property
    def latents(self) -> list[Latent]:
        return sorted({h.latent for h in self.hydra})


@dataclass(frozen=True)
class Stage3(_Json):
    n_features: int
    n_train: int
    n_test: int
    fm: Fit
    probe: Fit
    fm_ranked: tuple[tuple[int, int, float], ...]  # (layer, latent, interaction score)
    probe_ranked: tuple[tuple[int, int, float], ...]  # (layer, latent, probe weight)
    dormant: tuple[Dormant, ...]
    woken: Woken | None = field(default=None, metadata={"omit_none": True})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Stage3:
        def ranked(xs: Sequence[Sequence[Any]]) -> tuple[tuple[int, int, float], ...]:
            return tuple((int(a), int(b), float(c)) for a, b, c in xs)

        return cls(
            int(d["n_features"]),
            int(d["n_train"]),
            int(d["n_test"]),
            Fit.from_json(d["fm"]),
            Fit.from_json(d["probe"]),
            ranked(d["fm_ranked"]),
            ranked(d["probe_ranked"]),
            tuple(Dormant.from_json(x) for x in d["dormant"]),
            None if d.get("woken") is None else Woken.from_json(d["woken"]),
        )


# --- verification -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verified(_Json):
    """Generation under one condition on one split, judged."""

    n: int
    refused: int
    attack_success: float | None
    complied: tuple[int, ...]
    examples: tuple[str, ...] | None = field(default=None, metadata={"omit_none": True})
    #: answers the default outcome judge calls harmful (None: not measured, e.g. older plans);
    #: read off the verification's short answers, a floor on what longer answers would show
    harmful: int | None = field(default=None, metadata={"omit_none": True})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Verified:
        ex = d.get("examples")
        return cls(
            int(d["n"]),
            int(d["refused"]),
            _opt_float(d["attack_success"]),
            _ints(d["complied"]),
            None if ex is None else tuple(str(e) for e in ex),
            None if d.get("harmful") is None else int(d["harmful"]),
        )


Verification = dict[str, dict[str, Verified]]  # split -> condition -> result


@dataclass(frozen=True)
class SideEffect(_Json):
    """What a condition costs on harmless prompts: mean first-token KL(baseline || condition)."""

    first_token_kl: float
    n: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SideEffect:
        return cls(float(d["first_token_kl"]), int(d["n"]))


def verification_from_json(d: Mapping[str, Any]) -> Verification:
    return {split: {c: Verified.from_json(v) for c, v in conds.items()} for split, conds in d.items()}


# --- the plan body ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo(_Json):
    spec: str
    name: str
    revision: str | None
    n_layers: int
    d_model: int
    dtype: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelInfo:
        return cls(
            str(d["spec"]),
            str(d["name"]),
            d.get("revision"),
            int(d["n_layers"]),
            int(d["d_model"]),
            str(d["dtype"]),
        )


@dataclass(frozen=True)
class SaeInfo(_Json):
    id: str
    hook: str
    hf_hook: str
    architecture: str
    d_sae: int
    sha256: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SaeInfo:
        return cls(
            str(d["id"]),
            str(d["hook"]),
            str(d["hf_hook"]),
            str(d["architecture"]),
            int(d["d_sae"]),
            str(d["sha256"]),
        )


@dataclass(frozen=True)
class SaeSet(_Json):
    source: str
    layers: dict[int, SaeInfo]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SaeSet:
        return cls(str(d["source"]), {int(k): SaeInfo.from_json(v) for k, v in d["layers"].items()})


@dataclass(frozen=True)
class PromptSetInfo(_Json):
    name: str
    n: int
    sha256: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PromptSetInfo:
        return cls(str(d["name"]), int(d["n"]), str(d["sha256"]))


@dataclass(frozen=True)
class PlanBody(_Json):
    """Everything a search did and found; what ``PLAN.json`` holds besides its format fields."""

    created_by: str
    key: str
    model: ModelInfo
    saes: SaeSet
    config: dict[str, Any]  # the resolved SearchConfig as recorded
    data: dict[str, PromptSetInfo]  # harmful / harmless / validation
    refusal_tokens: tuple[str, ...]
    refusal_ids: tuple[int, ...]
    screen: Screen
    stage1: Stage1
    stage2: Stage2
    stage3: Stage3
    sets: dict[str, tuple[Latent, ...]]  # condition -> latents (see refusal_eval.conditions)
    verification: Verification
    side_effects: dict[str, SideEffect] | None = field(default=None, metadata={"omit_none": True})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PlanBody:
        return cls(
            created_by=str(d["created_by"]),
            key=str(d["key"]),
            model=ModelInfo.from_json(d["model"]),
            saes=SaeSet.from_json(d["saes"]),
            config=dict(d["config"]),
            data={k: PromptSetInfo.from_json(v) for k, v in d["data"].items()},
            refusal_tokens=tuple(str(t) for t in d["refusal_tokens"]),
            refusal_ids=_ints(d["refusal_ids"]),
            screen=Screen.from_json(d["screen"]),
            stage1=Stage1.from_json(d["stage1"]),
            stage2=Stage2.from_json(d["stage2"]),
            stage3=Stage3.from_json(d["stage3"]),
            sets={k: latents(v) for k, v in d["sets"].items()},
            verification=verification_from_json(d.get("verification") or {}),
            side_effects=None
            if d.get("side_effects") is None
            else {k: SideEffect.from_json(v) for k, v in d["side_effects"].items()},
        )
