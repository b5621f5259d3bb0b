"""Is each minimal set minimal, and do the seeds agree? Checks of stage 2's claim.

Stage 2 keeps a block when restoring it raises P(refusal) by ``tau`` (relative), walking the
candidates in three shuffled orders and intersecting the kept sets. Two things that claim
needs and the greedy walk does not itself show:

- **1-minimality**: with the prompt's minimal set S ablated, restore one latent x of S at a time.
  x is *needed* when P(refusal | S minus x) rises by at least ``tau`` relative to
  P(refusal | S), the walk's own criterion. S is 1-minimal when every latent is needed.
- **Seed (block-order) agreement**: the Jaccard similarity of the kept sets of the seeds'
  orders, pairwise, and of each seed's set with their intersection (the minimal set).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .artifacts import Latent
from .scorer import Row

ScoreFn = Callable[[Sequence[Row], Sequence[int]], list[float]]  # (rows, start layer per row)


@dataclass(frozen=True)
class MinimalityCheck:
    prompt: int
    minimal: tuple[Latent, ...]
    p_minimal: float  # P(refusal) with the minimal set ablated
    p_without: tuple[float, ...]  # ... with each latent restored, in ``minimal``'s order
    needed: tuple[bool, ...]

    @property
    def one_minimal(self) -> bool:
        return all(self.needed)


def jaccard(a: Sequence[Latent], b: Sequence[Latent]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def one_minimality(
    prompts: Sequence[tuple[int, Sequence[Latent], float]],
    score: ScoreFn,
    *,
    tau: float = 0.3,
    eps: float = 1e-6,
) -> list[MinimalityCheck]:
    """``prompts``: ``(prompt index, minimal set, P(refusal | set ablated) as stage 2 found it)``.
    The set itself is scored again with its one-latent-restored rows, in the same scorer call,
    so the comparison never mixes two scorer setups; the recorded value is not used."""
    rows, starts = [], []
    for p, m, _ in prompts:
        rows.append((p, frozenset(m)))
        rows.extend((p, frozenset(set(m) - {x})) for x in sorted(m))
        # restoring x changes nothing below x's layer, so that row need only run from there
        starts.extend([min((layer for layer, _ in m), default=0), *(x[0] for x in sorted(m))])
    scores = iter(score(rows, starts))
    out = []
    for p, minimal, _ in prompts:
        ordered = tuple(sorted(minimal))
        p_min = next(scores)
        p_without = tuple(next(scores) for _ in ordered)
        needed = tuple((q - p_min) / max(p_min, eps) >= tau for q in p_without)
        out.append(MinimalityCheck(p, ordered, p_min, p_without, needed))
    return out


def seed_agreement(per_seed: Sequence[Sequence[Sequence[Latent]]]) -> dict[str, float]:
    """Per prompt, the seeds' kept sets (``per_seed[prompt][seed]``): mean pairwise Jaccard,
    mean Jaccard of a seed's set with the intersection, and the share of prompts whose seeds
    kept exactly the same set."""
    pairwise, to_minimal, same = [], [], 0
    for seeds in per_seed:
        minimal = set.intersection(*(set(s) for s in seeds)) if seeds else set()
        pairs = list(itertools.combinations(seeds, 2))
        pairwise.append(sum(jaccard(a, b) for a, b in pairs) / len(pairs) if pairs else 1.0)
        to_minimal.append(sum(jaccard(s, sorted(minimal)) for s in seeds) / max(1, len(seeds)))
        same += all(set(s) == set(seeds[0]) for s in seeds)
    n = max(1, len(per_seed))
    return {
        "prompts": float(len(per_seed)),
        "mean_pairwise_jaccard": sum(pairwise) / n,
        "mean_seed_to_minimal_jaccard": sum(to_minimal) / n,
        "share_identical": same / n,
    }


def summarize(checks: Sequence[MinimalityCheck]) -> dict[str, Any]:
    latents = [n for c in checks for n in c.needed]
    return {
        "prompts": len(checks),
        "one_minimal_share": sum(c.one_minimal for c in checks) / max(1, len(checks)),
        "needed_latent_share": sum(latents) / max(1, len(latents)),
        "latents_tested": len(latents),
        "mean_set_size": len(latents) / max(1, len(checks)),
    }


def check_plan(chat: Any, saes: Any, plan: Any, *, progress: bool = True) -> dict[str, Any]:
    """Both checks for every prompt of a plan's stage 2, with the plan's own prompts, scorer
    settings, tau and eps (the harmful prompt set is checked against the plan's hash first)."""
    from ..config import SearchConfig
    from ..errors import RefusalEvalError
    from .pipeline import PromptSets
    from .scorer import SubsetScorer

    body = plan.body
    cfg = SearchConfig().replace(**{k: v for k, v in body.config.items() if k in SearchConfig().to_dict()})
    sets = PromptSets.from_config(cfg)
    if sets.describe()["harmful"]["sha256"] != body.data["harmful"].sha256:
        raise RefusalEvalError(
            f"the harmful prompts {cfg.harmful!r} differ from those plan {plan.path} was searched on",
            "check the plan against the refusal_eval version (and prompt files) that wrote it",
        )
    found = body.stage2.prompts
    texts = [sets.harmful[m.harmful_index] for m in found]
    layers = list(body.stage1.sae_layers)  # the layers stage 2 scored with (its skip-prefix start)
    scorer = SubsetScorer(
        chat.model, chat.tokenizer, texts, {layer: saes[layer] for layer in layers}, body.refusal_ids,
        batch_size=cfg.batch_size, skip_prefix=cfg.skip_prefix, progress=progress,
    )  # fmt: skip
    checks = one_minimality(
        [(i, m.minimal, m.p_minimal) for i, m in enumerate(found) if m.minimal],
        scorer.p_refusal,
        tau=cfg.tau,
        eps=cfg.eps,
    )
    return {
        "plan": str(plan.path),
        "tau": cfg.tau,
        "one_minimality": summarize(checks),
        "seed_agreement": seed_agreement([m.per_seed for m in found]),
        "empty_minimal_sets": sum(not m.minimal for m in found),
        "per_prompt": [
            {
                "harmful_index": found[c.prompt].harmful_index,
                "minimal": [list(x) for x in c.minimal],
                "p_minimal": c.p_minimal,
                "p_without": list(c.p_without),
                "needed": list(c.needed),
            }
            for c in checks
        ],
    }
