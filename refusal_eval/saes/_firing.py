"""How often each latent fires on a long held-out text: dead and rare latents told apart.

``sae-report`` reads ~21k held-out tokens (validation prompts + the model's answers), enough for
FVE and CE but not for "dead": a latent that fires once in 50k tokens is missing from such a
sample two times in three. Here every SAE layer is read from one forward per batch over as many
held-out chat-formatted prompts as a token budget allows (the SAE training corpus is chat-formatted
prompts of the same sources; these splits were never in it), the model stops after the deepest SAE
layer, and each latent's firing count is kept, so a reader can pick the frequency floor.
Position 0 (the attention sink, left out of training) is left out here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ..chat import format_chat
from ..coders import SparseCoder
from ..data import load_prompts
from ..errors import RefusalEvalError
from ..hooks import decoder_layers

#: frequency below which a latent that did fire counts as rare (1 in 10^5 tokens, sae-lens'
#: log10 frequency of -5, the threshold of its own dead-latent log)
RARE = 1e-5


@dataclass(frozen=True)
class Firing:
    layer: int
    d_sae: int
    n_tokens: int
    dead_fraction: float  # never fired on the n_tokens
    rare_fraction: float  # fired, but on fewer than RARE * n_tokens of them
    median_frequency: float  # over the latents that fired

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def firing_summary(layer: int, counts: torch.Tensor, n_tokens: int) -> Firing:
    """The shares of dead and rare latents from per-latent firing counts over ``n_tokens``."""
    fired = counts > 0
    freq = counts.double() / max(n_tokens, 1)
    rare = fired & (freq < RARE)
    median = float(freq[fired].median()) if bool(fired.any()) else 0.0
    return Firing(
        layer=layer,
        d_sae=int(counts.numel()),
        n_tokens=n_tokens,
        dead_fraction=1 - float(fired.double().mean()),
        rare_fraction=float(rare.double().mean()),
        median_frequency=median,
    )


def heldout_prompts(chat: Any, sets: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Chat-formatted prompts of ``sets`` in order, tokenized, until ``max_tokens`` are taken."""
    out: list[list[int]] = []
    total = 0
    for name in sets:
        texts = format_chat(chat.tokenizer, [p.text for p in load_prompts(name)])
        for text in texts:
            if total >= max_tokens:
                return out
            ids = chat.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(ids)
            total += len(ids) - 1  # position 0 is not counted
    return out


class _Stop(Exception):
    """Raised after the deepest SAE layer: the rest of the model is not needed."""


@torch.inference_mode()
def firing_counts(
    chat: Any,
    coders: Sequence[SparseCoder],
    sequences: Sequence[Sequence[int]],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[dict[int, torch.Tensor], int]:
    """Per coder (by layer) how many tokens each latent fired on, and the tokens read. One forward
    per batch (sequences sorted by length, so little padding) serves every coder."""
    if not coders:
        raise RefusalEvalError("no SAE layers to count", "pass an SAE release or directory")
    model, device = chat.model, chat.device
    pad = chat.tokenizer.pad_token_id if chat.tokenizer.pad_token_id is not None else 0
    coders = [c.to(device=device) for c in coders]
    counts = {c.layer: torch.zeros(c.d_sae, dtype=torch.long) for c in coders}
    deepest = max(c.layer for c in coders)
    state: dict[str, torch.Tensor] = {}

    def hook_for(coder: SparseCoder) -> Any:
        def hook(_m: Any, _a: Any, out: Any) -> None:
            hs = out[0] if isinstance(out, tuple) else out
            acts = coder.encode(hs[state["valid"]].float())
            counts[coder.layer] += (acts > 0).sum(0).cpu()
            if coder.layer == deepest:
                raise _Stop

        return hook

    layers = decoder_layers(model)
    handles = [layers[c.layer].register_forward_hook(hook_for(c)) for c in coders]
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    n_tokens = 0
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="firing", disable=not progress):
            rows = [list(sequences[i]) for i in order[start : start + batch_size]]
            width = max(len(r) for r in rows)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
            first = mask.argmax(1)  # left padding: each row's first real token
            pos = torch.arange(width, device=device)[None]
            state["valid"] = mask.bool() & (pos > first[:, None])
            n_tokens += int(state["valid"].sum())
            with contextlib.suppress(_Stop):
                model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return counts, n_tokens
