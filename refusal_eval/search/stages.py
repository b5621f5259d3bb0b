"""The search stages as functions of one :class:`Context`; each returns JSON-able results and
caches them (see :mod:`.pipeline`)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..ablation import DirectionAblation, as_ablations
from ..chat import generate
from ..coders import SparseCoder
from ..conditions import LATENT_CONDITIONS
from ..config import SearchConfig
from ..errors import RefusalEvalError
from ..judges import get_judge
from ..scoring import first_token_logprobs, refusal_score
from .activations import feature_index, pooled_activations, position_activations
from .direction import decoder_candidates, layer_scan
from .greedy import GreedyResult, greedy_minimal_sets
from .hydra import find_hydras, per_row_edits
from .interactions import fit_fm, fit_probe, interaction_scores, split, top_ranked
from .plan import by_layer
from .scorer import Latent, SubsetScorer


@dataclass
class Context:
    chat: Any
    saes: Mapping[int, SparseCoder]
    cfg: SearchConfig
    harmful: list[str]
    harmless: list[str]
    validation: list[str]
    refusal_ids: list[int]
    cache: Any
    screen_cache: Any
    progress: bool = True
    _scorers: dict[tuple[int, ...], SubsetScorer] = field(default_factory=dict, repr=False)

    def refused(self, screen: Mapping[str, Any]) -> list[str]:
        return [self.harmful[i] for i in screen["refused_harmful"]]

    def contrast(self, screen: Mapping[str, Any]) -> list[str]:
        """Harmless prompts the model answers, size-matched to the refused harmful ones."""
        answered = [self.harmless[i] for i in screen["answered_harmless"]]
        return answered[: len(screen["refused_harmful"])] or self.harmless

    def scorer(self, screen: Mapping[str, Any], layers: Sequence[int]) -> SubsetScorer:
        """One scorer (and memo) per set of ablatable layers, over the refused prompts."""
        key = tuple(sorted(set(layers)))
        if key not in self._scorers:
            self._scorers[key] = SubsetScorer(
                self.chat.model,
                self.chat.tokenizer,
                self.refused(screen),
                {layer: self.saes[layer] for layer in key},
                self.refusal_ids,
                batch_size=self.cfg.batch_size,
                skip_prefix=self.cfg.skip_prefix,
                progress=self.progress,
            )
        return self._scorers[key]


def _generate(ctx: Context, prompts: Sequence[str], edits: Any = None) -> list[str]:
    return generate(
        ctx.chat.model,
        ctx.chat.tokenizer,
        prompts,
        max_new_tokens=ctx.cfg.max_new_tokens,
        batch_size=ctx.cfg.batch_size,
        progress=ctx.progress,
        edits=edits,
    )


def run_screen(ctx: Context) -> dict[str, Any]:
    """Baseline answers: which harmful / validation prompts the model refuses, and which
    harmless prompts it answers (refusal-token probability below one half)."""

    def compute() -> dict[str, Any]:
        judge = get_judge(ctx.cfg.judge)
        out: dict[str, Any] = {"n_harmful": len(ctx.harmful), "n_validation": len(ctx.validation)}
        for name, prompts in (("harmful", ctx.harmful), ("validation", ctx.validation)):
            answers = _generate(ctx, prompts)
            refused = judge(prompts, answers).refused
            out[f"refused_{name}"] = [i for i, r in enumerate(refused) if r]
        lp = first_token_logprobs(
            ctx.chat.model, ctx.chat.tokenizer, ctx.harmless, batch_size=ctx.cfg.batch_size
        )
        p = refusal_score(lp, ctx.refusal_ids)
        out["answered_harmless"] = [i for i, s in enumerate(p.tolist()) if s < 0]
        return out

    screen = ctx.screen_cache.cached("screen", compute)
    if not screen["refused_harmful"]:
        raise RefusalEvalError(
            "the model refused none of the harmful search prompts, so there is no refusal to dissect",
            "use a safety-tuned chat model, or another harmful prompt set",
        )
    return screen


def run_stage1(ctx: Context, screen: Mapping[str, Any]) -> tuple[dict[str, Any], Tensor]:
    """Directions per layer, the chosen layer (and the rule that chose it), candidates."""
    cfg, chat = ctx.cfg, ctx.chat
    cached = ctx.cache.get("stage1")
    if cached is not None and "directions" in cached:
        return {k: v for k, v in cached.items() if k != "directions"}, torch.tensor(cached["directions"])
    harmful, harmless = ctx.refused(screen), ctx.contrast(screen)
    scan = layer_scan(
        chat.model,
        chat.tokenizer,
        harmful,
        harmless,
        ctx.refusal_ids,
        select_prompts=cfg.layer_select_prompts,
        fixed_layer=cfg.layer,
        max_kl=cfg.max_kl,
        max_depth_frac=cfg.max_depth_frac,
        min_drop_frac=cfg.min_drop_frac,
        batch_size=cfg.batch_size,
        progress=ctx.progress,
    )
    layer, directions = scan.choice.layer, scan.directions
    if cfg.candidate_direction == "per_layer":
        along: Tensor | dict[int, Tensor] = {sae_layer: directions[sae_layer] for sae_layer in ctx.saes}
    else:
        along = directions[layer]
    candidates = decoder_candidates(ctx.saes, along, cfg.top_k)
    result = {
        "layer": layer,
        "selected_by": scan.choice.selected_by,
        "baseline_refusal_score": scan.choice.baseline_score,
        "layer_scores": [vars(s) for s in scan.scores],
        "direction_norms": directions.norm(dim=-1).tolist(),
        "n_harmful": len(harmful),
        "n_harmless": len(harmless),
        "candidate_direction": cfg.candidate_direction,
        "candidates": [[c.layer, c.latent, c.cosine] for c in candidates],
    }
    stored = ctx.cache.put("stage1", {**result, "directions": directions.tolist()})
    return {k: v for k, v in stored.items() if k != "directions"}, torch.tensor(stored["directions"])


def _candidates(stage1: Mapping[str, Any]) -> list[Latent]:
    return [(int(c[0]), int(c[1])) for c in stage1["candidates"]]


def _layers(stage1: Mapping[str, Any]) -> list[int]:
    """The SAE layers that hold candidates: the layers every scorer of the search ablates at."""
    return sorted({layer for layer, _ in _candidates(stage1)})


def run_stage2(ctx: Context, screen: Mapping[str, Any], stage1: Mapping[str, Any]) -> dict[str, Any]:
    """Per-prompt minimal sets, in cached chunks of ``chunk_prompts`` prompts."""
    cfg = ctx.cfg
    candidates, layers = _candidates(stage1), _layers(stage1)
    n = len(screen["refused_harmful"])
    results: list[GreedyResult] = []
    chunks = range(0, n, cfg.chunk_prompts)
    for c, start in enumerate(tqdm(chunks, desc="stage 2 (greedy)", disable=not ctx.progress)):
        prompts = list(range(start, min(n, start + cfg.chunk_prompts)))

        def compute(prompts: list[int] = prompts) -> list[dict[str, Any]]:
            scorer = ctx.scorer(screen, layers)
            found = greedy_minimal_sets(
                prompts,
                candidates,
                scorer.p_refusal,
                tau=cfg.tau,
                block_size=cfg.block_size,
                seeds=cfg.seeds,
                eps=cfg.eps,
            )
            return [r.to_json() for r in found]

        results.extend(GreedyResult.from_json(d) for d in ctx.cache.cached(f"stage2_chunk{c:04d}", compute))
    counts: dict[Latent, int] = {}
    for r in results:
        for latent in r.minimal:
            counts[latent] = counts.get(latent, 0) + 1
    union = sorted(counts)
    return {
        "n_prompts": n,
        "prompts": [{**r.to_json(), "harmful_index": screen["refused_harmful"][r.prompt]} for r in results],
        "union": [list(x) for x in union],
        "counts": [[*x, counts[x]] for x in sorted(counts, key=lambda x: (-counts[x], x))],
        "mean_minimal_size": sum(len(r.minimal) for r in results) / max(1, len(results)),
        "flipped_by_proxy": sum(r.p_minimal < 0.5 for r in results),
    }


def _minimal_sets(stage2: Mapping[str, Any]) -> list[frozenset[Latent]]:
    return [frozenset((int(a), int(b)) for a, b in p["minimal"]) for p in stage2["prompts"]]


def run_stage3(
    ctx: Context, screen: Mapping[str, Any], stage1: Mapping[str, Any], stage2: Mapping[str, Any]
) -> dict[str, Any]:
    """FM + probe on pooled activations, ranked extras, random controls, dormant latents."""
    hit = ctx.cache.get("stage3")
    if hit is not None:
        return hit
    cfg, chat = ctx.cfg, ctx.chat
    harmful = ctx.refused(screen)
    harmless = ctx.contrast(screen)
    kw = {"pool": cfg.pool, "batch_size": cfg.batch_size, "progress": ctx.progress}
    act_h = pooled_activations(chat.model, chat.tokenizer, harmful, ctx.saes, **kw)
    act_b = pooled_activations(chat.model, chat.tokenizer, harmless, ctx.saes, **kw)
    index = feature_index(ctx.saes)
    union = [(int(a), int(b)) for a, b in stage2["union"]]
    pos = {f: i for i, f in enumerate(index)}
    active = set(torch.nonzero(act_h.amax(0) > 0).flatten().tolist())
    columns = sorted(active | {pos[u] for u in union})
    x = torch.cat([act_h, act_b])[:, columns]
    y = torch.cat([torch.ones(len(harmful)), torch.zeros(len(harmless))])
    train, test = split(len(y), cfg.test_frac, cfg.seed, y)
    scale = x[train].amax(0).clamp_min(1e-6)
    x = x / scale
    fm = fit_fm(
        x, y, train, test, rank=cfg.fm_rank, lr=cfg.fm_lr, epochs=cfg.fm_epochs,
        batch_size=cfg.fm_batch_size, init_std=cfg.fm_init_std, seed=cfg.seed,
    )  # fmt: skip
    probe = fit_probe(x, y, train, test, c=cfg.probe_l2)
    feat = [index[c] for c in columns]
    in_union = [i for i, f in enumerate(feat) if f in set(union)]
    fm_scores = interaction_scores(fm.model.V.detach(), in_union)
    fm_top = [feat[i] for i in top_ranked(fm_scores, cfg.extra_k)]
    probe_top = [feat[i] for i in top_ranked(probe.weights.abs(), cfg.extra_k, exclude=in_union)]
    rng = random.Random(cfg.seed)
    pool = [f for f in feat if f not in set(union)]
    random_extra = sorted(rng.sample(pool, min(cfg.extra_k, len(pool))))
    random_same = _random_like(union, ctx.saes, rng)
    dormant = find_dormant(ctx, screen, stage1, stage2, act_h, pos)
    woken = find_hydras(
        ctx.chat,
        ctx.saes,
        harmful,
        _minimal_sets(stage2),
        act_h,
        index,
        ctx.scorer(screen, _layers(stage1)),
        cfg,
        progress=ctx.progress,
    )
    hydra = sorted({(int(h["latent"][0]), int(h["latent"][1])) for h in woken["hydra"]})
    result = {
        "n_features": len(columns),
        "n_train": len(train),
        "n_test": len(test),
        "fm": {"train_accuracy": fm.train_accuracy, "test_accuracy": fm.test_accuracy, "losses": fm.losses},
        "probe": {"train_accuracy": probe.train_accuracy, "test_accuracy": probe.test_accuracy},
        "fm_ranked": [[*f, float(fm_scores[feat.index(f)])] for f in fm_top],
        "probe_ranked": [[*f, float(probe.weights[feat.index(f)])] for f in probe_top],
        "dormant": dormant,
        "woken": woken,
        "sets": {
            "sae": [list(u) for u in union],
            "sae_fm": sorted([list(u) for u in set(union) | set(fm_top)]),
            "sae_probe": sorted([list(u) for u in set(union) | set(probe_top)]),
            "sae_random": sorted([list(u) for u in set(union) | set(random_extra)]),
            "sae_hydra": sorted([list(u) for u in set(union) | set(hydra)]),
            "random": [list(u) for u in random_same],
        },
    }
    stored = ctx.cache.put("stage3", result)
    return stored


def _random_like(
    union: Sequence[Latent], saes: Mapping[int, SparseCoder], rng: random.Random
) -> list[Latent]:
    """As many random latents per layer as ``union`` has there, none of them in ``union``."""
    out: list[Latent] = []
    taken = set(union)
    for layer in sorted({layer for layer, _ in union}):
        n = sum(1 for lay, _ in union if lay == layer)
        pool = [(layer, i) for i in range(saes[layer].d_sae) if (layer, i) not in taken]
        out.extend(rng.sample(pool, min(n, len(pool))))
    return sorted(out)


def find_dormant(
    ctx: Context,
    screen: Mapping[str, Any],
    stage1: Mapping[str, Any],
    stage2: Mapping[str, Any],
    act_h: Tensor,
    pos: Mapping[Latent, int],
) -> list[dict[str, Any]]:
    """Minimal-set members that are zero on their prompt yet necessary: restoring them alone
    raises P(refusal) by ``tau``. For each, where it fires once the active members are ablated."""
    cfg = ctx.cfg
    tests: list[tuple[int, Latent]] = []
    for p, minimal in enumerate(_minimal_sets(stage2)):
        tests.extend((p, m) for m in sorted(minimal) if float(act_h[p, pos[m]]) == 0.0)
    if not tests:
        return []
    sets = _minimal_sets(stage2)
    scorer = ctx.scorer(screen, _layers(stage1))
    rows = [(p, sets[p] - {m}) for p, m in tests]
    p_back = scorer.p_refusal(rows, desc="dormant")
    p_min = [float(stage2["prompts"][p]["p_minimal"]) for p, _ in tests]
    out: list[dict[str, Any]] = []
    harmful = ctx.refused(screen)
    for (p, m), back, base in zip(tests, p_back, p_min, strict=True):
        if (back - base) / max(base, cfg.eps) < cfg.tau:
            continue
        active = [a for a in sorted(sets[p]) if a != m and float(act_h[p, pos[a]]) > 0]
        ablations = as_ablations(by_layer(active), ctx.saes)
        tokens, acts = position_activations(
            ctx.chat.model, ctx.chat.tokenizer, harmful[p], ctx.saes, [m], ablations
        )
        where = torch.nonzero(acts[0] > 0).flatten().tolist()
        top = sorted(where, key=lambda t: (-float(acts[0, t]), t))[:3]
        out.append(
            {
                "prompt": p,
                "latent": list(m),
                "p_minimal": base,
                "p_restored": back,
                "fires_when_active_ablated": bool(where),
                "fires_at": [[t, tokens[t], float(acts[0, t])] for t in top],
            }
        )
    return out


def run_verification(
    ctx: Context,
    screen: Mapping[str, Any],
    stage1: Mapping[str, Any],
    stage2: Mapping[str, Any],
    sets: Mapping[str, Any],
    directions: Tensor,
) -> dict[str, Any]:
    """Generate with each condition on the refused search and validation prompts and judge."""
    judge = get_judge(ctx.cfg.judge)
    direction = DirectionAblation(directions[int(stage1["layer"])])
    splits = {
        "search": ctx.refused(screen),
        "validation": [ctx.validation[i] for i in screen["refused_validation"]],
    }
    out: dict[str, Any] = {}
    for split_name, prompts in splits.items():
        conditions: dict[str, Any] = {}
        if split_name == "search":
            conditions["minimal"] = per_row_edits(ctx.saes, _minimal_sets(stage2))
        for name in LATENT_CONDITIONS:
            latents = [(int(a), int(b)) for a, b in sets[name]]
            conditions[name] = as_ablations(by_layer(latents), ctx.saes)
        conditions["direction"] = [direction]
        results: dict[str, Any] = {}
        same_as: dict[str, str] = {}  # a latent set equal to an earlier one is not generated twice
        seen: dict[tuple[Any, ...], str] = {}
        for name in LATENT_CONDITIONS:
            key = tuple(sorted(map(tuple, sets[name])))
            if key in seen:
                same_as[name] = seen[key]
            seen.setdefault(key, name)
        for name, edit in conditions.items():
            if name in same_as:
                results[name] = results[same_as[name]]
                continue

            def compute(edit: Any = edit, prompts: list[str] = prompts) -> dict[str, Any]:
                if not prompts:
                    return {"n": 0, "refused": 0, "attack_success": None, "complied": []}
                fn = edit if callable(edit) else (lambda _rows, e=edit: e)
                answers = _generate(ctx, prompts, edits=fn)
                refused = judge(prompts, answers).refused
                return {
                    "n": len(prompts),
                    "refused": sum(refused),
                    "attack_success": 1 - sum(refused) / len(prompts),
                    "complied": [i for i, r in enumerate(refused) if not r],
                    "examples": [a[:160] for a in answers[:3]],
                }

            results[name] = ctx.cache.cached(f"verify_{split_name}_{name}", compute)
        out[split_name] = results
    return out
