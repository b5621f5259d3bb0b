"""Search-time proxies computed from one forward pass that keeps only the last position.

- refusal score: ``log p(R) - log(1 - p(R))`` with ``p(R)`` the probability that the first
  answer token is one of the refusal tokens (Arditi et al. 2024);
- first-token KL divergence between two runs (batchmean, as heretic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .chat import chat_batches


def refusal_token_ids(tokenizer: Any, tokens: Sequence[str]) -> list[int]:
    """The first token id of each refusal opening (deduplicated, order kept)."""
    ids: list[int] = []
    for tok in tokens:
        enc = tokenizer.encode(tok, add_special_tokens=False)
        if enc and enc[0] not in ids:
            ids.append(int(enc[0]))
    return ids


def last_position_logits(model: Any, enc: dict[str, Tensor]) -> Tensor:
    """``(batch, vocab)`` logits of the last position only (prompts are left-padded); ``enc``
    holds ``input_ids`` or ``inputs_embeds`` plus the attention mask.

    ``logits_to_keep`` is passed as an index *tensor*: transformers then gathers a contiguous
    hidden state for ``lm_head``. With the int form it slices a strided view, and the bf16 CPU
    matmul on that view ran ~9x slower than the whole-sequence forward (BENCHMARKS.md).
    """
    ids = enc["input_ids"] if "input_ids" in enc else enc["inputs_embeds"]
    last = torch.tensor([ids.shape[1] - 1], device=ids.device)
    logits: Tensor = model(**enc, logits_to_keep=last, use_cache=False).logits[:, -1]
    return logits


@torch.inference_mode()
def first_token_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> Tensor:
    """``(len(prompts), vocab)`` float32 log-probabilities of the first answer token."""
    device = next(model.parameters()).device
    out: list[Tensor] = []
    for enc in chat_batches(
        tokenizer, prompts, device, batch_size=batch_size, desc="score", progress=progress
    ):
        logits = last_position_logits(model, enc)
        out.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def refusal_score(logprobs: Tensor, refusal_ids: Sequence[int]) -> Tensor:
    """Per-prompt ``log p(R) - log(1 - p(R))`` from first-token log-probabilities."""
    lp = torch.logsumexp(logprobs[..., list(refusal_ids)], dim=-1)
    return lp - torch.log1p(-lp.exp().clamp(max=1 - 1e-7))


def first_token_kl(ref_logprobs: Tensor, logprobs: Tensor) -> float:
    """KL(ref || new) of the first-token distributions, averaged over prompts."""
    kl = (ref_logprobs.exp() * (ref_logprobs - logprobs)).sum(-1)
    return float(kl.mean())
