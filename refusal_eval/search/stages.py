"""The search stages as functions of one :class:`Context`: the screen, stage 1, stage 2,
verification and side effects here, stage 3 in :mod:`.stage3`. Each returns its typed result
(:mod:`.artifacts`) and caches its JSON form (see :mod:`.pipeline`); a resumed run reads back
exactly what an uninterrupted one computed."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._codec import decode, encode
from ..ablation import Ablation, DirectionAblation, ablate, as_ablations
from ..chat import ChatLike, generate
from ..coders import SparseCoder
from ..conditions import latent_conditions_in
from ..config import DEFAULT_JUDGE, SearchConfig
from ..errors import RefusalEvalError
from ..judges import get_judge
from ..saes._stream import StreamedSAEs, rows_of
from ..scoring import first_token_kl, first_token_logprobs, refusal_score
from .artifacts import (
    Json,
    Latent,
    MinimalSet,
    Screen,
    SideEffect,
    Stage1,
    Stage2,
    Verification,
    Verified,
    by_layer,
)
from .direction import decoder_candidates, layer_scan
from .greedy import GreedyResult, greedy_minimal_sets
from .hydra import per_row_edits
from .scorer import SubsetScorer

Sets = dict[str, tuple[Latent, ...]]


class StageStore(Protocol):
    """What the stages need of a cache: ``get``, ``put`` (returns what a resumed run would
    read) and ``cached``; :class:`refusal_eval._cache.StageCache` is the JSON-file implementation."""

    def get(self, name: str) -> Any | None: ...

    def put(self, name: str, value: Any) -> Any: ...

    def cached(self, name: str, compute: Callable[[], Any]) -> Any: ...


class TextGenerator(Protocol):
    """Greedy answers to chat prompts under per-prompt ablations (``edits(rows)``, as
    :func:`refusal_eval.chat.generate` takes them): how the search's screening and verification
    generate on another engine (``refusal_eval.vllm_backend.VllmGenerator``)."""

    def __call__(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        edits: Callable[[range], Sequence[Ablation]] | None = None,
    ) -> list[str]: ...


@dataclass
class Context:
    chat: ChatLike
    saes: Mapping[int, SparseCoder]
    cfg: SearchConfig
    harmful: list[str]
    harmless: list[str]
    validation: list[str]
    refusal_ids: list[int]
    cache: StageStore
    screen_cache: StageStore
    progress: bool = True
    generator: TextGenerator | None = None  # None: the HF model generates (refusal_eval.chat)
    _scorers: dict[tuple[tuple[int, ...], frozenset[Latent]], SubsetScorer] = field(
        default_factory=dict, repr=False
    )

    def refused(self, screen: Screen) -> list[str]:
        return [self.harmful[i] for i in screen.refused_harmful]

    def contrast(self, screen: Screen) -> list[str]:
        """Harmless prompts the model answers, size-matched to the refused harmful ones."""
        answered = [self.harmless[i] for i in screen.answered_harmless]
        return answered[: len(screen.refused_harmful)] or self.harmless

    def scorer(self, screen: Screen, layers: Sequence[int], latents: Sequence[Latent]) -> SubsetScorer:
        """One scorer (and memo) per set of ablatable layers, over the refused prompts, able to
        ablate any subset of ``latents`` (streamed SAEs hold just their rows; others share one)."""
        held = frozenset(latents) if isinstance(self.saes, StreamedSAEs) else frozenset()
        key = (tuple(sorted(set(layers))), held)
        if key not in self._scorers:
            saes = rows_of(self.saes, sorted(held))
            self._scorers[key] = SubsetScorer(
                self.chat.model,
                self.chat.tokenizer,
                self.refused(screen),
                {layer: saes[layer] for layer in key[0]},
                self.refusal_ids,
                batch_size=self.cfg.batch_size,
                skip_prefix=self.cfg.skip_prefix,
                progress=self.progress,
            )
        return self._scorers[key]


def _generate(
    ctx: Context, prompts: Sequence[str], edits: Callable[[range], Sequence[Ablation]] | None = None
) -> list[str]:
    if ctx.generator is not None:  # another engine (vLLM) generates; HF still scores
        return ctx.generator(prompts, max_new_tokens=ctx.cfg.max_new_tokens, edits=edits)
    return generate(
        ctx.chat.model,
        ctx.chat.tokenizer,
        prompts,
        max_new_tokens=ctx.cfg.max_new_tokens,
        batch_size=ctx.cfg.batch_size,
        progress=ctx.progress,
        edits=edits,
    )


def run_screen(ctx: Context) -> Screen:
    """Baseline answers: which harmful / validation prompts the model refuses, and which
    harmless prompts it answers (refusal-token probability below one half)."""

    def compute() -> Json:
        judge = get_judge(ctx.cfg.judge)
        refused: dict[str, list[int]] = {}
        for name, prompts in (("harmful", ctx.harmful), ("validation", ctx.validation)):
            verdict = judge(prompts, _generate(ctx, prompts)).refused
            refused[name] = [i for i, r in enumerate(verdict) if r]
        lp = first_token_logprobs(
            ctx.chat.model, ctx.chat.tokenizer, ctx.harmless, batch_size=ctx.cfg.batch_size
        )
        p = refusal_score(lp, ctx.refusal_ids)
        answered = [i for i, v in enumerate(p.tolist()) if v < 0]
        return Screen(
            len(ctx.harmful),
            len(ctx.validation),
            tuple(refused["harmful"]),
            tuple(refused["validation"]),
            tuple(answered),
        ).to_json()

    screen = Screen.from_json(ctx.screen_cache.cached("screen", compute))
    if not screen.refused_harmful:
        raise RefusalEvalError(
            "the model refused none of the harmful search prompts, so there is no refusal to dissect",
            "use a safety-tuned chat model, or another harmful prompt set",
        )
    return screen


def run_stage1(ctx: Context, screen: Screen) -> tuple[Stage1, Tensor]:
    """Directions per layer, the chosen layer (and the rule that chose it), candidates."""
    cfg, chat = ctx.cfg, ctx.chat
    cached = ctx.cache.get("stage1")
    if cached is not None and "directions" in cached:
        return _stage1_from_json(cached)
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
    along: Tensor | dict[int, Tensor] = directions[layer]
    if cfg.candidate_direction == "per_layer":
        along = {sae_layer: directions[sae_layer] for sae_layer in ctx.saes}
    result = Stage1(
        layer=layer,
        selected_by=scan.choice.selected_by,
        layer_scores=tuple(scan.scores),
        direction_norms=tuple(directions.norm(dim=-1).tolist()),
        n_harmful=len(harmful),
        n_harmless=len(harmless),
        candidates=tuple(decoder_candidates(ctx.saes, along, cfg.top_k)),
        baseline_refusal_score=scan.choice.baseline_score,
        candidate_direction=cfg.candidate_direction,
    )
    stored = ctx.cache.put("stage1", {**result.to_json(), "directions": directions.tolist()})
    return _stage1_from_json(stored)


def run_stage2(ctx: Context, screen: Screen, stage1: Stage1) -> Stage2:
    """Per-prompt minimal sets, in cached chunks of ``chunk_prompts`` prompts."""
    cfg = ctx.cfg
    candidates, layers = stage1.candidate_latents, stage1.sae_layers
    n = len(screen.refused_harmful)
    results: list[GreedyResult] = []
    chunks = range(0, n, cfg.chunk_prompts)
    for start in tqdm(chunks, desc="stage 2 (greedy)", disable=not ctx.progress):
        prompts = list(range(start, min(n, start + cfg.chunk_prompts)))
        # named by its prompts, not its index: chunk_prompts is compute-only (not in the key),
        # so a resume with another chunk size must not read a chunk of other prompts
        name = f"stage2_prompts{prompts[0]:04d}-{prompts[-1]:04d}"

        def compute(prompts: list[int] = prompts) -> list[dict[str, object]]:
            scorer = ctx.scorer(screen, layers, candidates)
            found = greedy_minimal_sets(
                prompts,
                candidates,
                scorer.p_refusal,
                tau=cfg.tau,
                block_size=cfg.block_size,
                seeds=cfg.seeds,
                eps=cfg.eps,
            )
            return [encode(r) for r in found]

        chunk = ctx.cache.cached(name, compute)
        results.extend(decode(GreedyResult, d, f"{name}[{i}]") for i, d in enumerate(chunk))
    counts: dict[Latent, int] = {}
    for r in results:
        for m in r.minimal:
            counts[m] = counts.get(m, 0) + 1
    return Stage2(
        n_prompts=n,
        prompts=tuple(
            MinimalSet(
                r.prompt,
                screen.refused_harmful[r.prompt],
                r.p_clean,
                r.p_full,
                r.per_seed,
                r.minimal,
                r.p_minimal,
            )
            for r in results
        ),
        union=tuple(sorted(counts)),
        counts=tuple((*x, counts[x]) for x in sorted(counts, key=lambda x: (-counts[x], x))),
        mean_minimal_size=sum(len(r.minimal) for r in results) / max(1, len(results)),
        flipped_by_proxy=sum(r.p_minimal < 0.5 for r in results),
    )


def _stage1_from_json(d: Mapping[str, Any]) -> tuple[Stage1, Tensor]:
    rest = {k: v for k, v in d.items() if k != "directions"}  # the cache keeps them beside the stage
    return Stage1.from_json(rest), torch.tensor(d["directions"])


def run_verification(
    ctx: Context,
    screen: Screen,
    stage1: Stage1,
    stage2: Stage2,
    sets: Mapping[str, Sequence[Latent]],
    directions: Tensor,
) -> Verification:
    """Generate with each condition on the refused search and validation prompts and judge: refusal
    by the search's own judge (``judge``, part of the plan key), harmful compliance by the default
    outcome judge when it can be built (its encoder ships with the ``models`` extra)."""
    judge = get_judge(ctx.cfg.judge)
    outcomes = _outcome_judge()
    saes = rows_of(ctx.saes, sorted({x for s in sets.values() for x in s} | set(stage2.union)))
    direction: list[Ablation] = [DirectionAblation(directions[stage1.layer])]
    splits = {
        "search": ctx.refused(screen),
        "validation": [ctx.validation[i] for i in screen.refused_validation],
    }
    same_as: dict[str, str] = {}  # a latent set equal to an earlier one is not generated twice
    seen: dict[tuple[Latent, ...], str] = {}
    present = latent_conditions_in(sets)
    for name in present:
        key = tuple(sorted(sets[name]))
        if key in seen:
            same_as[name] = seen[key]
        seen.setdefault(key, name)
    out: Verification = {}
    for split_name, prompts in splits.items():
        conditions: dict[str, Callable[[range], Sequence[Ablation]]] = {}
        if split_name == "search":
            conditions["minimal"] = per_row_edits(saes, stage2.minimal_sets())
        for name in present:
            conditions[name] = _shared(as_ablations(by_layer(sets[name]), saes))
        conditions["direction"] = _shared(direction)
        results: dict[str, Verified] = {}
        for name, edits in conditions.items():
            if name in same_as:
                results[name] = results[same_as[name]]
                continue

            def compute(
                edits: Callable[[range], Sequence[Ablation]] = edits, prompts: list[str] = prompts
            ) -> Json:
                if not prompts:
                    return Verified(0, 0, None, (), None, None).to_json()
                answers = _generate(ctx, prompts, edits=edits)
                refused = judge(prompts, answers).refused
                found = outcomes(prompts, answers).outcomes if outcomes is not None else []
                return Verified(
                    n=len(prompts),
                    refused=sum(refused),
                    attack_success=1 - sum(refused) / len(prompts),
                    complied=tuple(i for i, r in enumerate(refused) if not r),
                    examples=tuple(a[:160] for a in answers[:3]),
                    harmful=sum(o == "harmful" for o in found) if found else None,
                ).to_json()

            cache_key = f"verify_{split_name}_{name}_{DEFAULT_JUDGE}"  # the counts depend on it
            results[name] = Verified.from_json(ctx.cache.cached(cache_key, compute))
        out[split_name] = results
    return out


def _outcome_judge() -> Any:
    """The default outcome judge (the one lm-eval runs score with). Always used, so a plan's
    bytes do not depend on what is installed; without its encoder it fails naming the fix."""
    judge = get_judge(DEFAULT_JUDGE)
    return judge if judge.sees_outcomes else None


def run_side_effects(
    ctx: Context, sets: Mapping[str, Sequence[Latent]], stage1: Stage1, directions: Tensor
) -> dict[str, SideEffect]:
    """Mean first-token KL(baseline || condition) on the search's harmless prompts, per condition."""

    def compute() -> Json:
        chat, prompts, bs = ctx.chat, ctx.harmless, ctx.cfg.batch_size
        base = first_token_logprobs(chat.model, chat.tokenizer, prompts, batch_size=bs)
        saes = rows_of(ctx.saes, sorted({x for s in sets.values() for x in s}))
        conditions: dict[str, Sequence[Ablation]] = {
            name: as_ablations(by_layer(sets[name]), saes)
            for name in latent_conditions_in(sets)
            if sets[name]
        }
        conditions["direction"] = [DirectionAblation(directions[stage1.layer])]
        out: Json = {}
        for name, ablations in conditions.items():
            with ablate(chat.model, list(ablations)):
                lp = first_token_logprobs(chat.model, chat.tokenizer, prompts, batch_size=bs)
            out[name] = SideEffect(first_token_kl(base, lp), len(prompts)).to_json()
        return out

    return {k: SideEffect.from_json(v) for k, v in ctx.cache.cached("side_effects", compute).items()}


def _shared(ablations: Sequence[Ablation]) -> Callable[[range], Sequence[Ablation]]:
    """The same ablations for every batch of a generation."""
    return lambda _rows: ablations
