"""SAE quality on held-out chat text: variance explained, L0, dead latents, spliced CE.

Held-out text = chat-formatted *validation* prompts (never in SAE training) followed by the
model's own greedy answers. Position 0 of every sequence (an attention sink whose norm is
orders of magnitude larger; excluded from training too) is left out of every statistic and is
never replaced when splicing.
"""

from __future__ import annotations

import hashlib
import json
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


@torch.inference_mode()
def sae_quality(
    chat: Any, coder: SparseCoder, texts: list[str], *, batch_size: int = 8, progress: bool = True
) -> SAEQuality:
    model, tok = chat.model, chat.tokenizer
    device = chat.device
    layer = decoder_layers(model)[coder.layer]
    coder = coder.to(device=device)
    sums = {"sq_err": 0.0, "l0": 0.0, "n": 0, "ce_clean": 0.0, "ce_spliced": 0.0, "n_ce": 0}
    xs_sum = torch.zeros(coder.d_in, dtype=torch.float64)
    xs_sq = 0.0
    ever_active = torch.zeros(coder.d_sae, dtype=torch.bool)
    state: dict[str, Any] = {}

    def hook(_m: Any, _a: Any, out: Any) -> Any:
        hs = out[0] if isinstance(out, tuple) else out
        valid = state["valid"]
        x = hs[valid].float()
        acts = coder.encode(x)
        recon = coder.decode(acts)
        if state["splice"]:
            new = hs.clone()
            new[valid] = recon.to(hs.dtype)
            return (new, *out[1:]) if isinstance(out, tuple) else new
        sums["sq_err"] += float(((x - recon) ** 2).sum())
        sums["l0"] += float((acts > 0).sum())
        sums["n"] += x.shape[0]
        xs_sum.add_(x.double().sum(0).cpu())
        state["xs_sq"] = state.get("xs_sq", 0.0) + float((x.double() ** 2).sum())
        ever_active.logical_or_(((acts > 0).any(0)).cpu())
        return None

    handle = layer.register_forward_hook(hook)
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
            for splice in (False, True):
                state["splice"] = splice
                logits = model(**enc, use_cache=False).logits.float()
                ce = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]),
                    labels[:, 1:].reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                )
                sums["ce_spliced" if splice else "ce_clean"] += float(ce)
            sums["n_ce"] += int((labels[:, 1:] != -100).sum())
    finally:
        handle.remove()
    xs_sq = state.get("xs_sq", 0.0)
    n = max(sums["n"], 1)
    total_var = xs_sq - float((xs_sum**2).sum()) / n
    return SAEQuality(
        layer=coder.layer,
        architecture=coder.architecture,
        d_sae=coder.d_sae,
        n_tokens=int(sums["n"]),
        fve=1 - sums["sq_err"] / max(total_var, 1e-12),
        mean_l0=sums["l0"] / n,
        dead_fraction=1 - float(ever_active.float().mean()),
        ce_clean=sums["ce_clean"] / max(sums["n_ce"], 1),
        ce_spliced=sums["ce_spliced"] / max(sums["n_ce"], 1),
    )
