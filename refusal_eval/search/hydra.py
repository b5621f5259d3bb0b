"""Cross-layer dormant ("hydra") latents.

A latent ``w`` at SAE layer ``j`` is *woken* on a refused prompt when its pooled activation is at
most ``wake_threshold`` with nothing ablated and above it once the prompt's minimal set at layers
``< j`` is ablated (activations at ``j`` are read before any edit at ``j``). A woken latent is a
*hydra* when it carries refusal given the rest of the minimal set is ablated::

    effect = P(refusal | S \\ {w}) - P(refusal | S ∪ {w})      (S = the prompt's minimal set)

i.e. restoring it (if it is in S) or additionally ablating it (if it is not) moves P(refusal)
by at least ``hydra_min_effect`` and by a relative ``tau`` (the greedy filter's criterion).
Every woken latent up to ``wake_top_n`` per prompt and layer is tested; the counts of woken and
tested latents are recorded so that "no hydra" is a measurement, not a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..ablation import Ablation, LatentAblation, as_ablations
from ..chat import ChatLike
from ..coders import SparseCoder
from ..config import SearchConfig
from ..saes._stream import rows_of
from .activations import Pooled, pooled_activations, position_activations
from .artifacts import Hydra, Latent, WakeEffect, Woken, by_layer
from .scorer import Row, SubsetScorer

STRONGEST = 8  # tested woken latents recorded with their effect, hydra or not


def per_row_edits(
    saes: Mapping[int, SparseCoder], sets: Sequence[frozenset[Latent]]
) -> Callable[[range], list[Ablation]]:
    """``edits(rows)`` for batched forwards: one latent set per prompt."""

    def edits(rows: range) -> list[Ablation]:
        chosen = [sets[r] for r in rows]
        layers = sorted({layer for s in chosen for layer, _ in s})
        return [
            LatentAblation.of(saes[layer], [[i for la, i in s if la == layer] for s in chosen])
            for layer in layers
        ]

    return edits


@dataclass(frozen=True)
class WakeTest:
    prompt: int
    latent: Latent
    before: float  # pooled activation, nothing ablated
    after: float  # pooled activation, minimal set below its layer ablated


def woken_latents(
    before: Pooled,
    after: Pooled,
    sets: Sequence[frozenset[Latent]],
    *,
    threshold: float,
    top_n: int,
) -> tuple[list[WakeTest], dict[int, int]]:
    """Pure: the woken latents to test (largest ``after`` first, ``top_n`` per prompt and layer)
    and the number woken per layer before that cap. One layer is made dense at a time."""
    tests: list[WakeTest] = []
    woken_per_layer: dict[int, int] = {layer: 0 for layer in before.widths}
    lowest = {p: min(layer for layer, _ in s) for p, s in enumerate(sets) if s}
    found: dict[int, list[WakeTest]] = {p: [] for p in lowest}
    for layer in sorted(before.widths):
        rows = [p for p, low in lowest.items() if layer > low]
        if not rows:
            continue
        b_all, a_all = before.layer(layer), after.layer(layer)
        for p in rows:
            b, a = b_all[p], a_all[p]
            hits = torch.nonzero((b <= threshold) & (a > threshold)).flatten().tolist()
            woken_per_layer[layer] += len(hits)
            hits.sort(key=lambda h: (-float(a[h]), h))
            found[p].extend(WakeTest(p, (layer, h), float(b[h]), float(a[h])) for h in hits[:top_n])
    for p in sorted(found):  # prompt-major, layers ascending: the order the tests always had
        tests.extend(found[p])
    return tests, woken_per_layer


def effect_rows(test: WakeTest, minimal: frozenset[Latent]) -> tuple[Row, Row]:
    """(rows without ``w``, with ``w``) ablated on top of the rest of the minimal set."""
    rest = minimal - {test.latent}
    return (test.prompt, rest), (test.prompt, rest | {test.latent})


def find_hydras(
    chat: ChatLike,
    saes: Mapping[int, SparseCoder],
    prompts: Sequence[str],
    sets: Sequence[frozenset[Latent]],
    before: Pooled,
    scorer_for: Callable[[Sequence[Latent]], SubsetScorer],
    cfg: SearchConfig,
    *,
    progress: bool = False,
) -> Woken:
    """Test every woken latent on every refused prompt; record the hydras with where they fire.
    ``scorer_for(latents)`` scores rows ablating subsets of the minimal sets and ``latents``."""
    minimal = rows_of(saes, sorted({m for s in sets for m in s}))
    after = pooled_activations(
        chat.model,
        chat.tokenizer,
        prompts,
        saes,
        pool=cfg.pool,
        batch_size=cfg.batch_size,
        progress=progress,
        edits=per_row_edits(minimal, sets),
    )
    tests, woken = woken_latents(before, after, sets, threshold=cfg.wake_threshold, top_n=cfg.wake_top_n)
    pairs = [effect_rows(t, sets[t.prompt]) for t in tests]
    scorer = scorer_for(sorted({t.latent for t in tests}))
    # a test's two rows differ only at its latent's layer, so both may start there (scorer.py);
    # a row shared by several tests (S itself, when w is not in S) keeps the first start asked
    starts = [t.latent[0] for t in tests]
    p_without = scorer.p_refusal([w for w, _ in pairs], desc="hydra (without)", starts=starts)
    p_with = scorer.p_refusal([w for _, w in pairs], desc="hydra (with)", starts=starts)
    tested: dict[int, int] = {}
    hydras: list[Hydra] = []
    effects: list[WakeEffect] = []
    n_min_effect = n_relative = 0
    for t, hi, lo in zip(tests, p_without, p_with, strict=True):
        tested[t.latent[0]] = tested.get(t.latent[0], 0) + 1
        effect = hi - lo
        big, relative = effect >= cfg.hydra_min_effect, effect / max(hi, cfg.eps) >= cfg.tau
        n_min_effect, n_relative = n_min_effect + big, n_relative + relative
        effects.append(WakeEffect(t.prompt, t.latent, t.latent in sets[t.prompt], t.after, hi, lo, effect))
        if not (big and relative):
            continue
        layer = t.latent[0]
        upstream = by_layer([m for m in sets[t.prompt] if m[0] < layer])
        tokens, acts_after = position_activations(
            chat.model, chat.tokenizer, prompts[t.prompt], saes, [t.latent], as_ablations(upstream, minimal)
        )
        _, acts_before = position_activations(chat.model, chat.tokenizer, prompts[t.prompt], saes, [t.latent])
        where = torch.nonzero(acts_after[0] > cfg.wake_threshold).flatten().tolist()
        top = sorted(where, key=lambda i: (-float(acts_after[0, i]), i))[:3]
        fires = tuple((i, tokens[i], float(acts_before[0, i]), float(acts_after[0, i])) for i in top)
        hydras.append(
            Hydra(t.prompt, t.latent, t.latent in sets[t.prompt], t.before, t.after, hi, lo, effect, fires)
        )
    return Woken(
        threshold=cfg.wake_threshold,
        top_n=cfg.wake_top_n,
        min_effect=cfg.hydra_min_effect,
        n_prompts=sum(1 for s in sets if s),
        woken_by_layer=dict(sorted(woken.items())),
        tested_by_layer=dict(sorted(tested.items())),
        n_tested=len(tests),
        hydra=tuple(hydras),
        n_min_effect=n_min_effect,
        n_relative=n_relative,
        strongest=tuple(sorted(effects, key=lambda e: (-e.effect, e.prompt, e.latent))[:STRONGEST]),
    )
