"""The typed results of each search stage and the plan body.

Every class is frozen; its JSON form is :mod:`refusal_eval._codec`'s, driven by the type hints
(``to_json`` / ``from_json`` on the shared base), so a field is declared once and decoded by its
type. The JSON is what plans and stage caches hold (one schema, ``plan.VERSION``), so the same
inputs still give the same plan bytes. Optional fields are declared ``X | None`` and, from plan
version 2 on, always written (null when not measured), so a reader can tell "not measured" from
"not known to this version".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._codec import decode, encode
from .direction import Candidate, LayerScore

Latent = tuple[int, int]  # (SAE layer, latent index): the one definition
Json = dict[str, Any]
T = TypeVar("T", bound="_Json")


def by_layer(pairs: Iterable[Sequence[int]]) -> dict[int, list[int]]:
    """``[(layer, latent), ...]`` -> ``{layer: sorted latents}``."""
    out: dict[int, list[int]] = {}
    for layer, idx in pairs:
        out.setdefault(int(layer), []).append(int(idx))
    return {k: sorted(v) for k, v in sorted(out.items())}


def latents(xs: Sequence[Sequence[Any]]) -> tuple[Latent, ...]:
    return tuple(decode(Latent, x, "latent") for x in xs)


class _Json:
    def to_json(self) -> Json:
        out: Json = encode(self)
        return out

    @classmethod
    def from_json(cls: type[T], d: Mapping[str, Any]) -> T:
        out: T = decode(cls, d, cls.__name__)
        return out


# --- the screen ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Screen(_Json):
    """Baseline answers: refused harmful / validation prompts, answered harmless prompts."""

    n_harmful: int
    n_validation: int
    refused_harmful: tuple[int, ...]
    refused_validation: tuple[int, ...]
    answered_harmless: tuple[int, ...]


# --- stage 1 ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage1(_Json):
    layer: int
    selected_by: str  # fixed | arditi | fallback_min_kl | depth_only
    layer_scores: tuple[LayerScore, ...]
    direction_norms: tuple[float, ...]
    n_harmful: int
    n_harmless: int
    candidates: tuple[Candidate, ...] = field(metadata={"rows": True})  # [layer, latent, cosine]
    baseline_refusal_score: float | None
    candidate_direction: str  # best | per_layer

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


@dataclass(frozen=True)
class Stage2(_Json):
    n_prompts: int
    prompts: tuple[MinimalSet, ...]
    union: tuple[Latent, ...]
    counts: tuple[tuple[int, int, int], ...]  # (layer, latent, number of minimal sets), most first
    mean_minimal_size: float
    flipped_by_proxy: int

    def minimal_sets(self) -> list[frozenset[Latent]]:
        return [frozenset(p.minimal) for p in self.prompts]


# --- stage 3 ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit(_Json):
    train_accuracy: float
    test_accuracy: float
    losses: tuple[float, ...] | None


@dataclass(frozen=True)
class Dormant(_Json):
    """A minimal-set member that is zero on its prompt yet necessary (the method's definition)."""

    prompt: int
    latent: Latent
    p_minimal: float
    p_restored: float
    fires_when_active_ablated: bool
    fires_at: tuple[tuple[int, str, float], ...]  # (position, token, activation)


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
    n_min_effect: int | None
    n_relative: int | None
    strongest: tuple[WakeEffect, ...] | None

    @property
    def latents(self) -> list[Latent]:
        return sorted({h.latent for h in self.hydra})


@dataclass(frozen=True)
class CausalTests(_Json):
    """Stage 3's ablation tests (dormant members, cross-layer hydras): cached on their own key,
    so another FM or probe setting does not rerun them (they read no fit)."""

    dormant: tuple[Dormant, ...]
    woken: Woken | None


@dataclass(frozen=True)
class KlPruning(_Json):
    """The ``sae_kl`` condition's set (:mod:`.kl_bound`): the union in harmless-share order, the
    leading ``dropped`` latents removed to bring first-token KL on harmless prompts to ``bound``."""

    bound: float
    order: tuple[tuple[int, int, float], ...]  # (layer, latent, harmless share), first dropped first
    dropped: int
    kept: tuple[Latent, ...]
    points: tuple[tuple[int, float], ...]  # (latents dropped, first-token KL) as measured


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
    woken: Woken | None
    #: the sae_kl condition, when ``sae_max_kl`` is set; written only then (added within format 2)
    kl_pruning: KlPruning | None = field(default=None, metadata={"omit_none": True})


# --- verification -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verified(_Json):
    """Generation under one condition on one split, judged."""

    n: int
    refused: int
    attack_success: float | None
    complied: tuple[int, ...]
    examples: tuple[str, ...] | None
    #: answers the default outcome judge calls harmful (None: not measured, e.g. older plans);
    #: read off the verification's short answers, a floor on what longer answers would show
    harmful: int | None


Verification = dict[str, dict[str, Verified]]  # split -> condition -> result


@dataclass(frozen=True)
class SideEffect(_Json):
    """What a condition costs on harmless prompts: mean first-token KL(baseline || condition)."""

    first_token_kl: float
    n: int


def verification_from_json(d: Mapping[str, Any]) -> Verification:
    out: Verification = decode(Verification, d, "verification")
    return out


# --- the plan body ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo(_Json):
    spec: str
    name: str
    revision: str | None
    n_layers: int
    d_model: int
    dtype: str


@dataclass(frozen=True)
class SaeInfo(_Json):
    id: str
    hook: str
    hf_hook: str
    architecture: str
    d_sae: int
    sha256: str


@dataclass(frozen=True)
class SaeSet(_Json):
    source: str
    layers: dict[int, SaeInfo]


@dataclass(frozen=True)
class PromptSetInfo(_Json):
    name: str
    n: int
    sha256: str


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
    side_effects: dict[str, SideEffect] | None
