"""SAE activations on prompts: pooled per prompt (stage 3 features) or per position."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..ablation import Ablation, ablate
from ..chat import chat_batches, encode_chat
from ..coders import SparseCoder
from ..hooks import decoder_layers, forward_until
from ..saes._stream import widths
from .artifacts import Latent

Pool = Literal["max", "mean"]


@dataclass(frozen=True)
class Pooled:
    """Pooled activations of ``n_rows`` prompts, held sparsely: per SAE layer a coalesced
    ``(n_rows, d_sae)`` COO tensor of the nonzero entries (20 bytes each against 4 dense).
    A prompt's max over its positions is nonzero for at most positions x L0 latents: 64 x ~100
    of Llama Scope's 131k (~5%, a quarter of the dense bytes), while the default model's
    2,048-wide SAEs on ~40-token prompts are 42% nonzero (262,178 of 622,592 entries on the
    eight-layer plan), where sparse costs about twice dense, a few MB. One layer is dense at a time."""

    n_rows: int
    widths: Mapping[int, int]  # SAE layer -> d_sae
    sparse: Mapping[int, Tensor]  # layer -> coalesced sparse (n_rows, d_sae)

    @classmethod
    def from_dense(cls, per_layer: Mapping[int, Tensor]) -> Pooled:
        """From ``(n_rows, d_sae)`` dense activations per layer (one layer at a time is dense)."""
        rows = {int(t.shape[0]) for t in per_layer.values()}
        if len(rows) > 1:
            raise ValueError(f"layers disagree on the number of prompts: {sorted(rows)}")
        return cls(
            rows.pop() if rows else 0,
            {layer: int(t.shape[1]) for layer, t in per_layer.items()},
            {layer: t.to_sparse().coalesce() for layer, t in per_layer.items()},
        )

    def active(self) -> list[Latent]:
        """Every latent that fired on some prompt, by layer then id."""
        return [
            (layer, int(i))
            for layer in sorted(self.sparse)
            for i in torch.unique(self.sparse[layer].indices()[1]).tolist()
        ]

    def layer(self, layer: int) -> Tensor:
        """``(n_rows, d_sae)`` dense activations of one layer."""
        return self.sparse[layer].to_dense()

    def columns(self, latents: Sequence[Latent]) -> Tensor:
        """``(n_rows, len(latents))`` dense activations of ``latents`` (0 where they never fired)."""
        out = torch.zeros(self.n_rows, len(latents))
        for layer in sorted({la for la, _ in latents}):
            cols = [c for c, (la, _) in enumerate(latents) if la == layer]
            ids = torch.tensor([latents[c][1] for c in cols], dtype=torch.long)
            out[:, cols] = self.sparse[layer].index_select(1, ids).to_dense()
        return out

    def value(self, row: int, latent: Latent) -> float:
        return float(self.columns([latent])[row, 0])

    def nnz(self) -> int:
        """Stored entries over all layers."""
        return sum(int(t.values().numel()) for t in self.sparse.values())

    def dense(self) -> Tensor:
        """``(n_rows, sum of d_sae)``, layers ascending (columns as :func:`feature_index`)."""
        return torch.cat([self.layer(layer) for layer in sorted(self.widths)], dim=-1)


@contextlib.contextmanager
def capture_outputs(model: nn.Module, layers: Sequence[int]) -> Iterator[dict[int, Tensor]]:
    """Record the output of the given decoder layers (after any ablation hooks there)."""
    seen: dict[int, Tensor] = {}
    blocks = decoder_layers(model)

    def grab(layer: int) -> Callable[..., None]:
        def hook(_m: nn.Module, _a: Any, out: Any) -> None:
            seen[layer] = (out[0] if isinstance(out, tuple) else out).detach()

        return hook

    handles = [blocks[layer].register_forward_hook(grab(layer)) for layer in layers]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def valid_positions(mask: Tensor, skip_first: bool) -> Tensor:
    """Attention mask minus each row's first real token (an attention sink with a huge norm)."""
    valid = mask.bool().clone()
    if skip_first:
        first = valid.float().argmax(dim=1)
        valid[torch.arange(valid.shape[0]), first] = False
    return valid


@torch.inference_mode()
def pooled_activations(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    saes: Mapping[int, SparseCoder],
    *,
    pool: Pool = "max",
    batch_size: int = 16,
    skip_first: bool = True,
    progress: bool = False,
    edits: Callable[[range], Sequence[Ablation]] | None = None,
) -> Pooled:
    """Pooled activations of ``prompts`` (max or mean over real positions), held sparsely.

    ``edits(rows)`` gives ablations for the prompts at ``rows`` of each batch; a layer's
    activations are then read before that layer's own edit, i.e. given the edits upstream.

    One forward per batch records every SAE layer's residual; then each layer's SAE encodes all
    batches before the next layer's is asked for, so streamed SAEs
    (:class:`refusal_eval.saes.StreamedSAEs`) are each read once and held one at a time.
    """
    layers = sorted(saes)
    width = widths(saes)
    device = next(model.parameters()).device
    recorded: list[tuple[dict[int, Tensor], Tensor]] = []  # per batch: residuals, valid positions
    with capture_outputs(model, layers) as seen:
        batches = chat_batches(
            tokenizer, prompts, device, batch_size=batch_size, desc="activations", progress=progress
        )
        for start, enc in zip(range(0, len(prompts), batch_size), batches, strict=False):
            edit = list(edits(range(start, start + enc["input_ids"].shape[0]))) if edits else []
            with ablate(model, edit):
                forward_until(model, enc, layers[-1])
            valid = valid_positions(enc["attention_mask"], skip_first)[..., None]
            # kept off the accelerator until encoded (exact: moved back as they were)
            recorded.append(({layer: seen[layer].cpu() for layer in layers}, valid.cpu()))
            seen.clear()
    per_layer: dict[int, Tensor] = {}
    for layer in layers:
        coder, parts = saes[layer], []
        for residuals, kept in recorded:
            valid = kept.to(device)
            acts = coder.encode(residuals.pop(layer).to(device).float()).clamp_min(0) * valid
            if pool == "max":
                parts.append(acts.amax(dim=1).cpu())
            else:
                parts.append((acts.sum(dim=1) / valid.sum(dim=1).clamp_min(1)).cpu())
        del coder  # a streamed SAE's layer goes before the next one is read
        dense = torch.cat(parts) if parts else torch.zeros(0, width[layer])
        per_layer[layer] = dense.to_sparse().coalesce()  # one layer is dense at a time
    return Pooled(len(prompts), dict(width), per_layer)


def feature_index(saes: Mapping[int, SparseCoder]) -> list[tuple[int, int]]:
    """Column -> (layer, latent) for :func:`pooled_activations`."""
    return [(layer, i) for layer, d_sae in sorted(widths(saes).items()) for i in range(d_sae)]


@torch.inference_mode()
def position_activations(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    saes: Mapping[int, SparseCoder],
    latents: Sequence[tuple[int, int]],
    ablations: Sequence[Ablation] = (),
) -> tuple[list[str], Tensor]:
    """Tokens of one chat-formatted prompt and ``(len(latents), n_tokens)`` activations of
    ``latents`` at every position, with ``ablations`` applied."""
    device = next(model.parameters()).device
    enc = encode_chat(tokenizer, [prompt], device)
    layers = sorted({layer for layer, _ in latents})
    # capture before the edits at the same layer: a latent's activation given upstream edits
    with capture_outputs(model, layers) as seen, ablate(model, list(ablations)):
        forward_until(model, enc, layers[-1])
        rows = [saes[layer].encode(seen[layer][0].float())[:, i].clamp_min(0) for layer, i in latents]
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    return tokens, torch.stack(rows).cpu() if rows else torch.zeros(0, len(tokens))
