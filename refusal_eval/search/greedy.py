"""Stage 2: block-wise greedy filtering of the candidates to a minimal set, per prompt.

For each seed the candidates are shuffled and walked in blocks. Starting from everything
ablated, a block is restored; if P(refusal) rises by at least ``tau`` relative to the current
ablation the block is needed and kept, otherwise it is dropped from the ablation. The minimal set
of a prompt is the intersection of the kept sets over seeds.

All (prompt, seed) walks advance in lockstep, so each step is one batch of rows for the scorer;
P(refusal | current) is carried over between steps instead of being recomputed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .artifacts import Latent
from .scorer import Row

ScoreFn = Callable[[Sequence[Row]], list[float]]


@dataclass
class _Walk:
    prompt: int
    blocks: list[list[Latent]]
    current: set[Latent]
    p_current: float
    keep: list[Latent] = field(default_factory=list)
    step: int = 0


@dataclass(frozen=True)
class GreedyResult:
    prompt: int
    p_clean: float  # P(refusal), nothing ablated
    p_full: float  # P(refusal), every candidate ablated
    per_seed: tuple[tuple[Latent, ...], ...]
    minimal: tuple[Latent, ...]  # intersection over seeds
    p_minimal: float  # P(refusal) with the minimal set ablated


def seed_order(candidates: Sequence[Latent], seed: int) -> list[Latent]:
    order = sorted(candidates)
    random.Random(seed).shuffle(order)
    return order


def greedy_minimal_sets(
    prompts: Sequence[int],
    candidates: Sequence[Latent],
    score: ScoreFn,
    *,
    tau: float = 0.3,
    block_size: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    eps: float = 1e-6,
) -> list[GreedyResult]:
    """Minimal sets for ``prompts`` (indices understood by ``score``)."""
    full = frozenset(candidates)
    base = score([(p, frozenset()) for p in prompts] + [(p, full) for p in prompts])
    p_clean, p_full = base[: len(prompts)], base[len(prompts) :]
    walks: list[_Walk] = []
    for i, p in enumerate(prompts):
        for seed in seeds:
            order = seed_order(candidates, seed)
            blocks = [order[j : j + block_size] for j in range(0, len(order), block_size)]
            walks.append(_Walk(p, blocks, set(full), p_full[i]))
    while active := [w for w in walks if w.step < len(w.blocks)]:
        rows = [(w.prompt, frozenset(w.current - set(w.blocks[w.step]))) for w in active]
        for w, (_, restored), p_back in zip(active, rows, score(rows), strict=True):
            block = w.blocks[w.step]
            if (p_back - w.p_current) / max(w.p_current, eps) >= tau:
                w.keep.extend(block)
            else:
                w.current, w.p_current = set(restored), p_back
            w.step += 1
    minimal: list[tuple[Latent, ...]] = []
    per_prompt: list[tuple[tuple[Latent, ...], ...]] = []
    for i in range(len(prompts)):
        kept = [set(w.keep) for w in walks[i * len(seeds) : (i + 1) * len(seeds)]]
        per_prompt.append(tuple(tuple(sorted(k)) for k in kept))
        minimal.append(tuple(sorted(set.intersection(*kept))))
    p_min = score([(p, frozenset(m)) for p, m in zip(prompts, minimal, strict=True)])
    return [
        GreedyResult(p, p_clean[i], p_full[i], per_prompt[i], minimal[i], p_min[i])
        for i, p in enumerate(prompts)
    ]
