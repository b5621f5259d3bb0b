"""SAE quality on held-out chat text: variance explained, L0, dead latents, spliced CE.

Held-out text = chat-formatted *validation* prompts (never in SAE training) followed by the
model's own greedy answers. Position 0 of every sequence (an attention sink whose norm is
orders of magnitude larger; excluded from training too) is left out of every statistic and is
never replaced when splicing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .._cache import atomic_write, cache_dir
from ..chat import generate
from ..coders import SparseCoder
from ..data import load_prompts
from ..hooks import decoder_layers


@dataclass(frozen=True)
class SAEQuality:
    layer: int
    architecture: str
    d_sae: int
    n_tokens: int
    fve: float  # fraction of variance explained
    mean_l0: float
    dead_fraction: float  # latents never active on the held-out tokens
    ce_clean: float  # next-token cross-entropy, nats
    ce_spliced: float  # same with the SAE reconstruction (no error term) spliced in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def heldout_texts(
    chat: Any, n_harmless: int = 192, n_harmful: int = 39, answer_tokens: int = 64, progress: bool = True
) -> list[str]:
    """Validation prompts + the model's answers, chat-formatted (cached per model revision)."""
    key = hashlib.sha256(
        json.dumps([chat.revision or chat.source, n_harmless, n_harmful, answer_tokens]).encode()
    ).hexdigest()[:16]
    path = cache_dir("heldout") / f"{key}.json"
    if path.exists():
        return [str(t) for t in json.loads(path.read_text())]
    prompts = [p.text for p in load_prompts("harmless_val")[:n_harmless]]
    prompts += [p.text for p in load_prompts("harmful_val")[:n_harmful]]
    answers = generate(
        chat.model, chat.tokenizer, prompts, max_new_tokens=answer_tokens, batch_size=16, progress=progress
    )
    texts = [
        chat.tokenizer.apply_chat_template(
            [{"role": "user", "content": p}, {"role": "assistant", "content": a}], tokenize=False
        )
        for p, a in zip(prompts, answers, strict=True)
    ]
    atomic_write(path, json.dumps(texts))
    return texts


class _Tally:
    """One coder's running sums over the clean pass."""

    def __init__(self, coder: SparseCoder) -> None:
        self.coder = coder
        self.sq_err = self.l0 = self.xs_sq = 0.0
        self.n = 0
        self.xs_sum = torch.zeros(coder.d_in, dtype=torch.float64)
        self.ever_active = torch.zeros(coder.d_sae, dtype=torch.bool)

    def add(self, x: torch.Tensor, acts: torch.Tensor, recon: torch.Tensor) -> None:
        self.sq_err += float(((x - recon) ** 2).sum())
        self.l0 += float((acts > 0).sum())
        self.n += x.shape[0]
        self.xs_sum.add_(x.double().sum(0).cpu())
        self.xs_sq += float((x.double() ** 2).sum())
        self.ever_active.logical_or_(((acts > 0).any(0)).cpu())

    def result(self, ce_clean: float, ce_spliced: float) -> SAEQuality:
        n = max(self.n, 1)
        total_var = self.xs_sq - float((self.xs_sum**2).sum()) / n
        return SAEQuality(
            layer=self.coder.layer,
            architecture=self.coder.architecture,
            d_sae=self.coder.d_sae,
            n_tokens=self.n,
            fve=1 - self.sq_err / max(total_var, 1e-12),
            mean_l0=self.l0 / n,
            dead_fraction=1 - float(self.ever_active.float().mean()),
            ce_clean=ce_clean,
            ce_spliced=ce_spliced,
        )


@torch.inference_mode()
def sae_qualities(
    chat: Any, coders: Sequence[SparseCoder], texts: list[str], *, batch_size: int = 8, progress: bool = True
) -> list[SAEQuality]:
    """:class:`SAEQuality` of each coder. One clean forward per batch serves every coder's
    statistics and the clean loss; then one forward per coder with only its reconstruction
    spliced in. The same numbers as one :func:`sae_quality` per coder, in 1 + N forwards, not 2N."""
    model, tok = chat.model, chat.tokenizer
    device = chat.device
    tallies = [_Tally(c.to(device=device)) for c in coders]
    ce_spliced = [0.0] * len(coders)
    ce_clean, n_ce = 0.0, 0
    state: dict[str, Any] = {}

    def hook_for(i: int) -> Any:
        tally = tallies[i]

        def hook(_m: Any, _a: Any, out: Any) -> Any:
            if state["splice"] not in (None, i):
                return None
            hs = out[0] if isinstance(out, tuple) else out
            valid = state["valid"]
            x = hs[valid].float()
            acts = tally.coder.encode(x)
            recon = tally.coder.decode(acts)
            if state["splice"] == i:
                new = hs.clone()
                new[valid] = recon.to(hs.dtype)
                return (new, *out[1:]) if isinstance(out, tuple) else new
            tally.add(x, acts, recon)
            return None

        return hook

    layers = decoder_layers(model)
    handles = [layers[t.coder.layer].register_forward_hook(hook_for(i)) for i, t in enumerate(tallies)]
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="sae-report", disable=not progress):
            enc = tok(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            mask = enc["attention_mask"].bool()
            first = mask.float().argmax(1)  # left padding: first real token per row
            pos = torch.arange(mask.shape[1], device=device)[None]
            state["valid"] = mask & (pos > first[:, None])
            labels = enc["input_ids"].masked_fill(~state["valid"], -100)
            for splice in (None, *range(len(tallies))):
                state["splice"] = splice
                logits = model(**enc, use_cache=False).logits.float()
                ce = float(
                    torch.nn.functional.cross_entropy(
                        logits[:, :-1].reshape(-1, logits.shape[-1]),
                        labels[:, 1:].reshape(-1),
                        ignore_index=-100,
                        reduction="sum",
                    )
                )
                if splice is None:
                    ce_clean += ce
                else:
                    ce_spliced[splice] += ce
            n_ce += int((labels[:, 1:] != -100).sum())
    finally:
        for h in handles:
            h.remove()
    n = max(n_ce, 1)
    return [t.result(ce_clean / n, ce_spliced[i] / n) for i, t in enumerate(tallies)]


def sae_quality(
    chat: Any, coder: SparseCoder, texts: list[str], *, batch_size: int = 8, progress: bool = True
) -> SAEQuality:
    return sae_qualities(chat, [coder], texts, batch_size=batch_size, progress=progress)[0]
