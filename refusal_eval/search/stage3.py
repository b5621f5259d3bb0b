"""Stage 3: what interacts with the minimal sets. A factorization machine and a linear probe on
pooled SAE activations (:mod:`.interactions`) rank extra latents; random controls of the same
size; dormant minimal-set members; and the cross-layer hydra test (:mod:`.hydra`). Returns the
stage result and the latent set of every evaluation condition."""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..ablation import as_ablations
from ..coders import SparseCoder
from ..saes._stream import rows_of, widths
from .activations import Pooled, pooled_activations, position_activations
from .artifacts import (
    CausalTests,
    Dormant,
    Fit,
    Latent,
    Screen,
    Stage1,
    Stage2,
    Stage3,
    by_layer,
    latents,
)
from .hydra import find_hydras
from .interactions import fit_fm_ensemble, fit_probe, split, top_ranked
from .kl_bound import kl_pruned
from .scorer import SubsetScorer
from .stages import Context, Sets


def run_stage3(ctx: Context, screen: Screen, stage1: Stage1, stage2: Stage2) -> tuple[Stage3, Sets]:
    """FM + probe on pooled activations, ranked extras, random controls, dormant latents and
    cross-layer hydras; returns the stage result and the latent set of every condition."""
    hit = ctx.cache.get("stage3")
    if hit is not None:
        return _stage3_from_json(hit)
    cfg, chat = ctx.cfg, ctx.chat
    harmful = ctx.refused(screen)
    harmless = ctx.contrast(screen)
    pooled = functools.partial(
        pooled_activations, chat.model, chat.tokenizer, saes=ctx.saes,
        pool=cfg.pool, batch_size=cfg.batch_size, progress=ctx.progress,
    )  # fmt: skip
    act_h, act_b = pooled(harmful), pooled(harmless)
    union = list(stage2.union)
    # the features: every latent that fired on a refused prompt, and the union (by layer, id)
    feat = sorted(set(act_h.active()) | set(union))
    x = torch.cat([act_h.columns(feat), act_b.columns(feat)])
    y = torch.cat([torch.ones(len(harmful)), torch.zeros(len(harmless))])
    train, test = split(len(y), cfg.test_frac, cfg.seed, y)
    x, unseen = scale_by_training_max(x, train)
    fm = fit_fm_ensemble(
        x, y, train, test, members=cfg.fm_members, rank=cfg.fm_rank, lr=cfg.fm_lr, epochs=cfg.fm_epochs,
        batch_size=cfg.fm_batch_size, init_std=cfg.fm_init_std, seed=cfg.seed,
    )  # fmt: skip
    probe = fit_probe(x, y, train, test, c=cfg.probe_l2)
    in_union = [i for i, f in enumerate(feat) if f in set(union)]
    fm_scores = fm.scores(in_union)
    # a latent the fit never saw active has only its random initial factors: never an extra
    fm_top = [feat[i] for i in top_ranked(fm_scores, cfg.extra_k, exclude=unseen)]
    probe_top = [feat[i] for i in top_ranked(probe.weights.abs(), cfg.extra_k, exclude=[*in_union, *unseen])]
    rng = random.Random(cfg.seed)
    pool = [f for f in feat if f not in set(union)]
    random_extra = sorted(rng.sample(pool, min(cfg.extra_k, len(pool))))
    random_same = _random_like(union, ctx.saes, rng)
    tests = causal_tests(ctx, screen, stage1, stage2, harmful, act_h)
    woken = tests.woken
    pruning = (
        None
        if cfg.sae_max_kl is None
        else kl_pruned(
            chat,
            ctx.saes,
            union,
            harmful,
            ctx.harmless,
            bound=cfg.sae_max_kl,
            batch_size=cfg.batch_size,
        )
    )
    result = Stage3(
        n_features=len(feat),
        n_train=len(train),
        n_test=len(test),
        fm=Fit(fm.train_accuracy, fm.test_accuracy, tuple(fm.losses)),
        probe=Fit(probe.train_accuracy, probe.test_accuracy, None),
        fm_ranked=tuple((*f, float(fm_scores[feat.index(f)])) for f in fm_top),
        probe_ranked=tuple((*f, float(probe.weights[feat.index(f)])) for f in probe_top),
        dormant=tests.dormant,
        woken=woken,
        kl_pruning=pruning,
    )
    condition_sets: Sets = {
        "sae": tuple(union),
        "sae_fm": tuple(sorted(set(union) | set(fm_top))),
        "sae_probe": tuple(sorted(set(union) | set(probe_top))),
        "sae_random": tuple(sorted(set(union) | set(random_extra))),
        "sae_hydra": tuple(sorted(set(union) | set(woken.latents if woken else ()))),
        "random": tuple(random_same),
        # a bound only the empty set meets leaves no condition (the pruning record says so)
        **({"sae_kl": pruning.kept} if pruning is not None and pruning.kept else {}),
    }
    return _stage3_from_json(ctx.cache.put("stage3", {**result.to_json(), "sets": condition_sets}))


def causal_tests(
    ctx: Context, screen: Screen, stage1: Stage1, stage2: Stage2, harmful: Sequence[str], act_h: Pooled
) -> CausalTests:
    """Dormant minimal-set members and the cross-layer hydra test (cached as ``stage3_tests``)."""
    hit = ctx.cache.get("stage3_tests")
    if hit is not None:
        return CausalTests.from_json(hit)
    scorer = ctx.scorer(screen, stage1.sae_layers, stage1.candidate_latents)
    dormant = find_dormant(ctx, harmful, stage2, act_h, scorer)

    def scorer_for(latents: Sequence[Latent]) -> SubsetScorer:  # the hydra test's woken latents too
        held = sorted(set(stage1.candidate_latents) | set(latents))
        return ctx.scorer(screen, stage1.sae_layers, held)

    sets = stage2.minimal_sets()
    woken = find_hydras(ctx.chat, ctx.saes, harmful, sets, act_h, scorer_for, ctx.cfg, progress=ctx.progress)
    tests = CausalTests(tuple(dormant), woken)
    return CausalTests.from_json(ctx.cache.put("stage3_tests", tests.to_json()))


def scale_by_training_max(x: Tensor, train: Tensor) -> tuple[Tensor, list[int]]:
    """Each feature divided by its maximum over the training rows; a feature never active in a
    training row is set to 0 everywhere (returned as ``unseen``). Dividing it by a floor instead
    (the old ``clamp_min(1e-6)``) blew its held-out values up to millions, and the FM's untrained
    random factors for it turned the held-out logits into noise: held-out accuracy 0.74 where the
    probe reached 0.97 on the same split (docs/search/fm.md)."""
    top = x[train].amax(0)
    seen = top > 0
    scaled = torch.where(seen, x / top.clamp_min(1e-12), torch.zeros_like(x))
    return scaled, torch.nonzero(~seen).flatten().tolist()


def _stage3_from_json(d: Mapping[str, Any]) -> tuple[Stage3, Sets]:
    rest = {k: v for k, v in d.items() if k != "sets"}  # the cache keeps the sets beside the stage
    return Stage3.from_json(rest), {k: latents(v) for k, v in d["sets"].items()}


def _random_like(
    union: Sequence[Latent], saes: Mapping[int, SparseCoder], rng: random.Random
) -> list[Latent]:
    """As many random latents per layer as ``union`` has there, none of them in ``union``."""
    out: list[Latent] = []
    taken, width = set(union), widths(saes)
    for layer in sorted({layer for layer, _ in union}):
        n = sum(1 for lay, _ in union if lay == layer)
        pool = [(layer, i) for i in range(width[layer]) if (layer, i) not in taken]
        out.extend(rng.sample(pool, min(n, len(pool))))
    return sorted(out)


def find_dormant(
    ctx: Context,
    harmful: Sequence[str],
    stage2: Stage2,
    act_h: Pooled,
    scorer: SubsetScorer,
) -> list[Dormant]:
    """Minimal-set members that are zero on their prompt yet necessary: restoring them alone
    raises P(refusal) by ``tau``. For each, where it fires once the active members are ablated."""
    cfg = ctx.cfg
    sets = stage2.minimal_sets()
    tests = [(p, m) for p, minimal in enumerate(sets) for m in sorted(minimal) if act_h.value(p, m) == 0.0]
    if not tests:
        return []
    rows = [(p, sets[p] - {m}) for p, m in tests]
    p_back = scorer.p_refusal(rows, desc="dormant", starts=[m[0] for _, m in tests])
    out: list[Dormant] = []
    held = rows_of(ctx.saes, sorted(stage2.union))  # once: every active set below is in the union
    for (p, m), back in zip(tests, p_back, strict=True):
        base = stage2.prompts[p].p_minimal
        if (back - base) / max(base, cfg.eps) < cfg.tau:
            continue
        active = [a for a in sorted(sets[p]) if a != m and act_h.value(p, a) > 0]
        ablations = as_ablations(by_layer(active), held)
        tokens, acts = position_activations(
            ctx.chat.model, ctx.chat.tokenizer, harmful[p], ctx.saes, [m], ablations
        )
        where = torch.nonzero(acts[0] > 0).flatten().tolist()
        top = sorted(where, key=lambda t: (-float(acts[0, t]), t))[:3]
        fires = tuple((t, tokens[t], float(acts[0, t])) for t in top)
        out.append(Dormant(p, m, base, back, bool(where), fires))
    return out
