"""The evaluation conditions: one vocabulary for the search, the plan, the lm-eval model, the
task configs and the leaderboard."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import RefusalEvalError


@dataclass(frozen=True)
class Condition:
    name: str
    latent_set: bool  # the plan stores a latent set under this name
    evaluated: bool  # the refusal_ablation task group has a task per benchmark for it
    description: str
    #: the search setting that adds this condition to a plan (None: every plan has it)
    made_by: str | None = None


_ALL = (
    Condition("baseline", False, True, "no ablation"),
    Condition("sae", True, True, "union of the per-prompt minimal latent sets (stage 2)"),
    Condition("sae_fm", True, True, "sae + the extra_k latents the factorization machine ranks highest"),
    Condition("sae_probe", True, False, "sae + the extra_k latents a logistic probe weights most"),
    Condition("sae_random", True, False, "sae + extra_k random latents active on harmful prompts"),
    Condition("sae_hydra", True, False, "sae + the cross-layer hydra latents (stage 3)"),
    Condition(
        "sae_kl",
        True,
        False,
        "sae less its harmless-busiest latents, to first-token KL <= sae_max_kl",
        made_by="sae_max_kl",
    ),
    Condition("random", True, True, "as many random latents per SAE layer as sae (control)"),
    Condition("direction", False, True, "refusal-direction ablation at every layer (Arditi et al.)"),
)
BY_NAME = {c.name: c for c in _ALL}
CONDITIONS = tuple(c.name for c in _ALL)
LATENT_CONDITIONS = tuple(c.name for c in _ALL if c.latent_set)
#: latent conditions a plan has only when its search was asked for them (``made_by``)
OPTIONAL = frozenset(c.name for c in _ALL if c.made_by is not None)
EVALUATED = tuple(c.name for c in _ALL if c.evaluated)


def latent_conditions_in(sets: Mapping[str, object]) -> list[str]:
    """The latent conditions a plan's ``sets`` must hold: every one but the optional ones it
    was not searched for (a missing required one still fails where it is read)."""
    return [name for name in LATENT_CONDITIONS if name in sets or name not in OPTIONAL]


def describe(name: str) -> str:
    return check_condition(name).description


def check_condition(name: str) -> Condition:
    """The condition called ``name``, or one clear error listing the valid names."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise RefusalEvalError(f"unknown condition {name!r}", f"use one of {', '.join(CONDITIONS)}") from None
