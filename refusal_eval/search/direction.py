"""Stage 1: difference-in-means refusal directions per layer and Arditi-style layer selection."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..ablation import DirectionAblation, ablate
from ..chat import chat_batches
from ..coders import SparseCoder
from ..hooks import decoder_layers
from ..scoring import first_token_kl, first_token_logprobs, last_position_logits, refusal_score


@torch.inference_mode()
def last_token_residuals(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> Tensor:
    """``(n_layers, len(prompts), d_model)`` float32 resid_post at the last prompt token."""
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    store: list[list[Tensor]] = [[] for _ in layers]

    def capture(i: int) -> Callable[..., None]:
        def hook(_m: Any, _a: Any, out: Any) -> None:
            hs = out[0] if isinstance(out, tuple) else out
            store[i].append(hs[:, -1].float().cpu())

        return hook

    handles = [layer.register_forward_hook(capture(i)) for i, layer in enumerate(layers)]
    try:
        for enc in chat_batches(
            tokenizer, prompts, device, batch_size=batch_size, desc="residuals", progress=progress
        ):
            last_position_logits(model, enc)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([torch.cat(s) for s in store])


def mean_diff_directions(harmful: Tensor, harmless: Tensor) -> Tensor:
    """``r_l = mean_H(x_l) - mean_B(x_l)`` for every layer: ``(n_layers, d_model)``."""
    return harmful.mean(1) - harmless.mean(1)


@dataclass(frozen=True)
class LayerScore:
    layer: int
    refusal_score: float  # mean harmful refusal score with r_hat_l ablated everywhere
    harmless_kl: float  # first-token KL on harmless prompts under the same ablation
    norm_ratio: float  # ||r_l|| / mean ||x_l||


def score_layers(
    model: Any,
    tokenizer: Any,
    directions: Tensor,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    residual_norms: Tensor,
    refusal_ids: Sequence[int],
    batch_size: int = 16,
    progress: bool = True,
    layers: Sequence[int] | None = None,
) -> list[LayerScore]:
    """Ablate each layer's direction (of ``layers``, default all) at every layer; measure
    harmful refusal and harmless KL."""
    base_harmless = first_token_logprobs(model, tokenizer, harmless, batch_size=batch_size)
    scores: list[LayerScore] = []
    todo = range(directions.shape[0]) if layers is None else layers
    for layer in tqdm(todo, desc="layers", disable=not progress):
        with ablate(model, DirectionAblation(directions[layer])):
            lp_h = first_token_logprobs(model, tokenizer, harmful, batch_size=batch_size)
            lp_b = first_token_logprobs(model, tokenizer, harmless, batch_size=batch_size)
        scores.append(
            LayerScore(
                layer=layer,
                refusal_score=float(refusal_score(lp_h, refusal_ids).mean()),
                harmless_kl=first_token_kl(base_harmless, lp_b),
                norm_ratio=float(directions[layer].norm() / residual_norms[layer]),
            )
        )
    return scores


@dataclass(frozen=True)
class LayerChoice:
    layer: int
    selected_by: str  # "arditi" | "fallback_min_kl" | "depth_only" ("fixed" when configured)
    baseline_score: float | None  # harmful refusal score with nothing ablated


def select_layer(
    scores: Sequence[LayerScore],
    n_layers: int,
    *,
    max_kl: float = 0.1,
    max_depth_frac: float = 0.8,
    min_drop_frac: float = 0.0,
    baseline_score: float | None = None,
) -> LayerChoice:
    """Arditi selection with an effectiveness filter and a recorded fallback.

    Eligible: ``layer < max_depth_frac * n_layers``. *Effective*: ablating the layer's direction
    lowers the harmful refusal score by at least ``min_drop_frac`` of the best eligible layer's
    drop (from ``baseline_score``; without one every layer is effective).

    - ``arditi``: lowest refusal score among effective layers with harmless KL < ``max_kl``;
    - ``fallback_min_kl``: none passes both, so the effective layer with the lowest KL;
    - ``depth_only``: nothing lowers the score at all; lowest refusal score among eligible layers.
    """
    allowed = set(eligible_layers(n_layers, max_depth_frac))
    eligible = [s for s in scores if s.layer in allowed]
    if not eligible:
        raise ValueError("no layer lies below max_depth_frac of the depth")
    effective = eligible
    if baseline_score is not None:
        best_drop = max(baseline_score - s.refusal_score for s in eligible)
        if best_drop <= 0:
            return LayerChoice(min(eligible, key=_by_score).layer, "depth_only", baseline_score)
        effective = [s for s in eligible if baseline_score - s.refusal_score >= min_drop_frac * best_drop]
    passing = [s for s in effective if s.harmless_kl < max_kl]
    if passing:
        return LayerChoice(min(passing, key=_by_score).layer, "arditi", baseline_score)
    return LayerChoice(
        min(effective, key=lambda s: (s.harmless_kl, s.layer)).layer, "fallback_min_kl", baseline_score
    )


def eligible_layers(n_layers: int, max_depth_frac: float) -> list[int]:
    """The layers the selection may pick: ``layer < max_depth_frac * n_layers``."""
    return [layer for layer in range(n_layers) if layer < max_depth_frac * n_layers]


def _by_score(s: LayerScore) -> tuple[float, int]:
    return (s.refusal_score, s.layer)


@dataclass(frozen=True)
class LayerScan:
    """Stage 1's pure result: directions per layer, per-layer scores and the chosen layer."""

    directions: Tensor  # (n_layers, d_model)
    scores: list[LayerScore]  # empty when the layer was fixed
    choice: LayerChoice


def layer_scan(
    model: Any,
    tokenizer: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    refusal_ids: Sequence[int],
    *,
    select_prompts: int = 32,
    fixed_layer: int | None = None,
    max_kl: float = 0.1,
    max_depth_frac: float = 0.8,
    min_drop_frac: float = 0.5,
    batch_size: int = 16,
    progress: bool = False,
    score_all: bool = False,
) -> LayerScan:
    """Difference-in-means directions on all prompts, layers scored on the first
    ``select_prompts`` of each side, and the layer choice (``fixed_layer`` skips the scoring).

    Only the layers :func:`select_layer` may pick (below ``max_depth_frac`` of the depth) are
    scored unless ``score_all``: each scored layer costs two forwards of the selection prompts,
    and the deep ones could never be chosen (a fifth of a 24-layer scan)."""
    kw: dict[str, Any] = {"batch_size": batch_size, "progress": progress}
    res_h = last_token_residuals(model, tokenizer, harmful, **kw)
    res_b = last_token_residuals(model, tokenizer, harmless, **kw)
    directions = mean_diff_directions(res_h, res_b)
    if fixed_layer is not None:
        return LayerScan(directions, [], LayerChoice(fixed_layer, "fixed", None))
    norms = torch.cat([res_h, res_b], dim=1).norm(dim=-1).mean(1)
    h, b = harmful[:select_prompts], harmless[:select_prompts]
    base = first_token_logprobs(model, tokenizer, h, batch_size=batch_size)
    baseline = float(refusal_score(base, refusal_ids).mean())
    n_layers = directions.shape[0]
    scan = None if score_all else eligible_layers(n_layers, max_depth_frac)
    scores = score_layers(
        model, tokenizer, directions, h, b, residual_norms=norms, refusal_ids=refusal_ids, layers=scan, **kw
    )
    choice = select_layer(
        scores,
        n_layers,
        max_kl=max_kl,
        max_depth_frac=max_depth_frac,
        min_drop_frac=min_drop_frac,
        baseline_score=baseline,
    )
    return LayerScan(directions, scores, choice)


@dataclass(frozen=True)
class Candidate:
    layer: int
    latent: int
    cosine: float


def decoder_candidates(
    saes: Mapping[int, SparseCoder], directions: Tensor | Mapping[int, Tensor], top_k: int
) -> list[Candidate]:
    """Per SAE layer, the ``top_k`` latents whose decoder rows point most along the direction.

    ``directions`` is one vector used at every SAE layer (r_best), or ``{layer: r_l}``. No
    activation filter: latents that never fire on the search prompts stay candidates (this is
    what lets dormant latents surface later). Ties break by latent id.
    """
    out: list[Candidate] = []
    for layer in sorted(saes):
        r = directions[layer] if isinstance(directions, Mapping) else directions
        unit = r.float().cpu() / r.float().norm().clamp_min(1e-12)
        w = saes[layer].W_dec.detach().float().cpu()
        cos = (w @ unit) / w.norm(dim=-1).clamp_min(1e-12)
        del w  # a streamed SAE's layer goes before the next one is read
        k = min(top_k, cos.shape[0])
        order = sorted(range(cos.shape[0]), key=lambda i: (-float(cos[i]), i))[:k]
        out.extend(Candidate(layer, i, float(cos[i])) for i in order)
    return out
