"""Where a plan's latents fire, by position class (system / template / user / generated).

The paper finds the refusal circuit's redundant features concentrated on special-token positions
(``<bos>``). This report tests that on any model: greedy baseline answers to harmful prompts,
one forward pass over prompt + answer, and the activations of one condition's latents (the
``sae`` minimal-set union by default) at every position, pooled by class. Position 0 is also
reported on its own: it is ``<bos>`` where the template writes one, and an attention sink with
an outsized norm in any case (our SAEs were trained without it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..chat import format_chat, generate
from ..coders import SparseCoder
from ..hooks import forward_until
from ..positions import POSITION_CLASSES, TemplateLayout, position_classes
from ..search.activations import capture_outputs

ROWS = (*POSITION_CLASSES, "position 0")


@torch.inference_mode()
def firing_by_position(
    chat: Any,
    saes: Mapping[int, SparseCoder],
    latents: Mapping[int, Sequence[int]],
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Per position class: positions seen, mean number of ``latents`` active per position, and
    the share of their total activation mass (all layers pooled, and per layer)."""
    from ..errors import RefusalEvalError

    if not any(latents.values()):
        raise RefusalEvalError(
            "the latent set is empty: nothing to locate", "pick a condition with latents (--condition sae)"
        )
    tok, model = chat.tokenizer, chat.model
    layout = TemplateLayout.of(tok)
    answers = generate(
        model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
    )
    layers = sorted(int(k) for k, v in latents.items() if v)
    device = next(model.parameters()).device
    zero = {row: 0.0 for row in ROWS}
    counts, active = dict(zero), dict(zero)
    mass = {layer: dict(zero) for layer in layers}
    for prompt, answer in zip(prompts, answers, strict=True):
        prompt_ids = tok(format_chat(tok, [prompt])[0], add_special_tokens=False).input_ids
        answer_ids = tok(answer, add_special_tokens=False).input_ids
        classes = position_classes(tok, prompt_ids, layout, system=False) + ["generated"] * len(answer_ids)
        ids = torch.tensor([prompt_ids + answer_ids], device=device)
        with capture_outputs(model, layers) as seen:
            forward_until(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, layers[-1])
        per_position = torch.zeros(ids.shape[1])
        for layer in layers:
            coder = saes[layer]
            idx = torch.tensor(coder.positions(sorted(latents[layer])), device=device)
            acts = coder.encode_latents(seen[layer][0].float(), idx).clamp_min(0).cpu()  # (tokens, |S_l|)
            per_position += (acts > 0).sum(-1).float()
            for pos, name in enumerate(classes):
                value = float(acts[pos].sum())
                mass[layer][name] += value
                if pos == 0:
                    mass[layer]["position 0"] += value
        for pos, name in enumerate(classes):
            for row in (name, "position 0") if pos == 0 else (name,):
                counts[row] += 1
                active[row] += float(per_position[pos])
    total = {layer: sum(mass[layer][c] for c in POSITION_CLASSES) or 1.0 for layer in layers}
    pooled = {row: sum(mass[layer][row] for layer in layers) for row in ROWS}
    all_mass = sum(pooled[c] for c in POSITION_CLASSES) or 1.0
    return {
        "prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "latents": {str(k): len(v) for k, v in sorted(latents.items()) if v},
        "classes": {
            row: {
                "positions": int(counts[row]),
                "mean_active": active[row] / counts[row] if counts[row] else 0.0,
                "mass_share": pooled[row] / all_mass,
                "mass_per_position": pooled[row] / counts[row] if counts[row] else 0.0,
            }
            for row in ROWS
        },
        "mass_share_by_layer": {
            str(layer): {row: mass[layer][row] / total[layer] for row in ROWS} for layer in layers
        },
    }


def positions_table(report: Mapping[str, Any]) -> str:
    """The report as a markdown table."""
    lines = [
        "| position class | positions | active / position | mass share | mass / position |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row, r in report["classes"].items():
        cells = [row, str(r["positions"]), f"{r['mean_active']:.2f}", f"{r['mass_share']:.3f}"]
        lines.append("| " + " | ".join([*cells, f"{r['mass_per_position']:.2f}"]) + " |")
    return "\n".join(lines)
