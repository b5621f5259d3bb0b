"""Latent cards: for every latent a plan ablates (the minimal-set union) and every dormant or
hydra latent it found, the contexts where the latent fires most, its layer, the cosine of its
decoder row with the refusal direction, and how many minimal sets contain it.

Contexts come from a seeded sample of the SAE training corpus's prompts (chat-formatted
harmful/harmless *train* prompts, as ``train-sae`` uses them) and of the validation prompts. Activations are
read at every prompt token but the first (an attention sink), with nothing ablated.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..chat import ChatLike, chat_batches
from ..coders import SparseCoder
from ..hooks import forward_until
from ..search.activations import capture_outputs, valid_positions
from ..search.artifacts import Latent
from ..search.plan import AblationPlan

CONTEXT_SETS = ("harmful_train", "harmless_train", "harmful_val", "harmless_val")


@dataclass(frozen=True)
class Context:
    source: str  # prompt set
    prompt: str
    token: str
    position: int
    activation: float
    window: str  # the tokens around the position, the firing token in [[ ]]


@torch.inference_mode()
def top_contexts(
    chat: ChatLike,
    saes: Mapping[int, SparseCoder],
    latents: Sequence[Latent],
    prompts: Sequence[tuple[str, str]],
    *,
    top: int = 5,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[Latent, list[Context]]:
    """The ``top`` highest activations of each latent over ``prompts`` ((source, text) pairs)."""
    layers = sorted({layer for layer, _ in latents})
    best: dict[Latent, list[tuple[float, int, int]]] = {m: [] for m in latents}
    device = next(chat.model.parameters()).device
    texts = [t for _, t in prompts]
    token_rows: list[list[str]] = []
    if not layers:
        return {}
    with capture_outputs(chat.model, layers) as seen:
        batches = chat_batches(
            chat.tokenizer, texts, device, batch_size=batch_size, desc="cards", progress=progress
        )
        for start, enc in zip(range(0, len(texts), batch_size), batches, strict=False):
            forward_until(chat.model, enc, layers[-1])
            valid = valid_positions(enc["attention_mask"], skip_first=True)
            ids = enc["input_ids"].tolist()
            token_rows.extend(chat.tokenizer.convert_ids_to_tokens(row) for row in ids)
            for layer in layers:
                mine = [m for m in latents if m[0] == layer]
                acts = saes[layer].encode(seen[layer].float()).clamp_min(0)[..., [i for _, i in mine]]
                acts = acts * valid[..., None]
                for j, m in enumerate(mine):
                    flat = acts[..., j].flatten()
                    k = min(top, int((flat > 0).sum()))
                    if k == 0:
                        continue
                    vals, where = flat.topk(k)
                    for v, w in zip(vals.tolist(), where.tolist(), strict=True):
                        best[m].append((v, start + w // acts.shape[1], w % acts.shape[1]))
    out: dict[Latent, list[Context]] = {}
    for m, hits in best.items():
        hits.sort(key=lambda h: (-h[0], h[1], h[2]))
        out[m] = [_context(prompts[r], token_rows[r], pos, v) for v, r, pos in hits[:top]]
    return out


def _context(prompt: tuple[str, str], tokens: list[str], pos: int, activation: float) -> Context:
    def clean(t: str) -> str:
        return t.replace("Ġ", " ").replace("Ċ", "\\n")

    lo, hi = max(0, pos - 6), min(len(tokens), pos + 3)
    window = "".join(clean(t) if i != pos else f"[[{clean(t)}]]" for i, t in enumerate(tokens[lo:hi], lo))
    return Context(prompt[0], prompt[1], clean(tokens[pos]), pos, activation, window.strip())


def card_prompts(n_corpus: int = 256, n_validation: int = 128, seed: int = 0) -> list[tuple[str, str]]:
    """A seeded sample: ``n_corpus`` SAE-corpus prompts (half harmful_train, half harmless_train)
    and up to ``n_validation`` prompts of each validation set."""
    from ..data import load_prompts

    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for name in CONTEXT_SETS:
        texts = [p.text for p in load_prompts(name)]
        n = n_corpus // 2 if name.endswith("_train") else n_validation
        texts = [texts[i] for i in sorted(rng.sample(range(len(texts)), min(n, len(texts))))]
        out.extend((name, t) for t in texts)
    return out


def neuronpedia_ids(release: str) -> dict[str, str]:
    """SAE id -> Neuronpedia id, from sae-lens's pretrained directory (empty if not listed)."""
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        entry = get_pretrained_saes_directory().get(release)
    except Exception:
        return {}
    return {k: v for k, v in (getattr(entry, "neuronpedia_id", None) or {}).items() if v}


def plan_latents(plan: AblationPlan) -> dict[Latent, dict[str, Any]]:
    """Every latent a card is written for, with what the plan says of it."""
    s2, s3 = plan.body.stage2, plan.body.stage3
    counts = {(a, b): c for a, b, c in s2.counts}
    hydras = list(s3.woken.hydra) if s3.woken is not None else []
    roles: dict[Latent, dict[str, Any]] = {}
    for layer, ids in plan.latent_sets("sae").items():
        for i in ids:
            roles.setdefault((layer, i), {"roles": set()})["roles"].add("union")
    for d in s3.dormant:
        roles.setdefault(d.latent, {"roles": set()})["roles"].add("dormant")
    for h in hydras:
        roles.setdefault(h.latent, {"roles": set()})["roles"].add("hydra")
    for m, info in roles.items():
        info["minimal_sets"] = counts.get(m, 0)
        info["hydra_prompts"] = sum(1 for h in hydras if h.latent == m)
    return dict(sorted(roles.items()))


def cards_markdown(
    plan: AblationPlan,
    saes: Mapping[int, SparseCoder],
    contexts: Mapping[Latent, Sequence[Context]],
    *,
    links: Mapping[str, str] | None = None,
) -> str:
    """The cards of one plan as Markdown."""
    latents = plan_latents(plan)
    unit = plan.direction.float() / plan.direction.float().norm().clamp_min(1e-12)
    n_sets = plan.body.stage2.n_prompts
    ids = plan.sae_layer_ids
    lines = [
        f"# Latent cards: {plan.body.model.name} / {plan.sae_source}",
        "",
        f"Plan `{plan.path.name}` (sha256 `{plan.hash[:12]}`), refusal direction of layer {plan.layer}. "
        f"{len(latents)} latents: the minimal-set union, dormant members and cross-layer hydras. "
        "Contexts: top activations over a seeded sample of the SAE training prompts and of the "
        "validation prompts (first token skipped); the firing token is in `[[ ]]`.",
        "",
        "| latent | roles | cosine with r | in minimal sets | hydra on prompts |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (layer, i), info in latents.items():
        w = saes[layer].W_dec[i].detach().float().cpu()
        info["cosine"] = float(w @ unit / w.norm().clamp_min(1e-12))
        lines.append(
            f"| [L{layer}/{i}](#l{layer}-{i}) | {', '.join(sorted(info['roles']))} | {info['cosine']:.3f} | "
            f"{info['minimal_sets']} / {n_sets} | {info['hydra_prompts']} |"
        )
    for (layer, i), info in latents.items():
        lines += ["", f"## L{layer}-{i}", ""]
        link = (links or {}).get(ids.get(layer, ""))
        meta = f"layer {layer} (SAE `{ids.get(layer, '?')}`), roles {', '.join(sorted(info['roles']))}, "
        meta += f"cosine with the refusal direction {info['cosine']:.3f}, "
        meta += f"in {info['minimal_sets']} of {n_sets} minimal sets"
        if link:
            meta += f", [Neuronpedia](https://www.neuronpedia.org/{link}/{i})"
        lines.append(meta)
        lines += ["", "| activation | set | context | prompt |", "| --- | --- | --- | --- |"]
        for c in contexts.get((layer, i), []):
            prompt = c.prompt.replace("|", "\\|").replace("\n", " ")[:90]
            window = c.window.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {c.activation:.2f} | {c.source} | `{window}` | {prompt} |")
        if not contexts.get((layer, i)):
            lines.append("| 0 | - | never fires on these prompts | - |")
    return "\n".join(lines) + "\n"


def write_cards(
    plan: AblationPlan,
    chat: ChatLike,
    saes: Mapping[int, SparseCoder],
    *,
    n_corpus: int = 256,
    batch_size: int = 16,
    progress: bool = False,
) -> str:
    """Write ``PLAN.cards.md`` next to the plan; return its path."""
    latents = list(plan_latents(plan))
    contexts = top_contexts(
        chat, saes, latents, card_prompts(n_corpus), batch_size=batch_size, progress=progress
    )
    text = cards_markdown(plan, saes, contexts, links=neuronpedia_ids(plan.sae_source))
    out = plan.path.with_suffix(".cards.md")
    out.write_text(text)
    return str(out)
