"""Stage 1: difference-in-means refusal directions per layer and Arditi-style layer selection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

    def capture(i: int):
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
) -> list[LayerScore]:
    """Ablate each layer's direction at every layer; measure harmful refusal and harmless KL."""
    base_harmless = first_token_logprobs(model, tokenizer, harmless, batch_size=batch_size)
    scores: list[LayerScore] = []
    for layer in tqdm(range(directions.shape[0]), desc="layers", disable=not progress):
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


def select_layer(
    scores: Sequence[LayerScore],
    n_layers: int,
    *,
    max_kl: float = 0.1,
    max_depth_frac: float = 0.8,
) -> LayerScore:
    """Arditi selection: lowest harmful refusal score with harmless KL < max_kl and
    layer < max_depth_frac * depth (falls back to the depth filter alone if none pass)."""
    eligible = [s for s in scores if s.layer < max_depth_frac * n_layers]
    passing = [s for s in eligible if s.harmless_kl < max_kl] or eligible
    return min(passing, key=lambda s: s.refusal_score)


@dataclass(frozen=True)
class Candidate:
    layer: int
    latent: int
    cosine: float


def decoder_candidates(saes: Mapping[int, SparseCoder], direction: Tensor, top_k: int) -> list[Candidate]:
    """Per SAE layer, the ``top_k`` latents whose decoder rows point most along ``direction``.

    No activation filter: latents that never fire on the search prompts stay candidates
    (this is what lets dormant latents surface later). Ties break by latent id.
    """
    unit = direction.float() / direction.float().norm().clamp_min(1e-12)
    out: list[Candidate] = []
    for layer in sorted(saes):
        w = saes[layer].W_dec.detach().float().cpu()
        cos = (w @ unit.cpu()) / w.norm(dim=-1).clamp_min(1e-12)
        k = min(top_k, cos.shape[0])
        order = sorted(range(cos.shape[0]), key=lambda i: (-float(cos[i]), i))[:k]
        out.extend(Candidate(layer, i, float(cos[i])) for i in order)
    return out
