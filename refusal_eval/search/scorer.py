"""Score P(refusal) for many (prompt, latent subset) rows, fast.

Each row is one prompt with its own set of ``(layer, latent)`` pairs zero-ablated. Rows are
batched across prompts and subsets (per-row latent sets of the one ablation module), only the
last position's logits are computed, identical rows are answered from a memo, and the residual
entering the first ablatable layer is computed once per prompt and reused: layers below it are
swapped for pass-throughs while a batch runs (checked against a full forward once, per scorer).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..ablation import LatentAblation, ablate
from ..chat import encode_chat
from ..coders import SparseCoder
from ..hooks import decoder_layers, forward_until
from ..scoring import last_position_logits
from .artifacts import Latent

log = logging.getLogger(__name__)

Row = tuple[int, frozenset[Latent]]  # (prompt index, latents ablated)


class _PassThrough(nn.Module):
    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return hidden_states


@contextlib.contextmanager
def _start_at(model: nn.Module, first: int, hidden: Tensor) -> Iterator[None]:
    """Run only layers ``first..``: earlier layers pass through, ``hidden`` enters layer ``first``."""
    layers = decoder_layers(model)
    saved = [layers[i] for i in range(first)]

    def substitute(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (hidden.to(args[0].dtype), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden.to(kwargs["hidden_states"].dtype)}

    handle = layers[first].register_forward_pre_hook(substitute, with_kwargs=True, prepend=True)
    try:
        for i in range(first):
            layers[i] = _PassThrough()
        yield
    finally:
        for i, module in enumerate(saved):
            layers[i] = module
        handle.remove()


class SubsetScorer:
    """``p_refusal(rows)`` for rows ``(prompt_index, latents)`` over fixed ``prompts``."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        prompts: Sequence[str],
        saes: Mapping[int, SparseCoder],
        refusal_ids: Sequence[int],
        *,
        batch_size: int = 32,
        skip_prefix: bool = True,
        progress: bool = True,
    ) -> None:
        self.model, self.tokenizer, self.saes = model, tokenizer, saes
        self.refusal_ids = torch.tensor(list(refusal_ids), dtype=torch.long)
        self.batch_size, self.progress = batch_size, progress
        self.device = next(model.parameters()).device
        self._ids = [encode_chat(tokenizer, [p])["input_ids"][0] for p in prompts]
        self._memo: dict[Row, float] = {}
        self.forward_rows = 0  # rows actually run (memo misses), for benchmarks
        self.first = min(saes) if saes else 0
        self._prefix: list[Tensor] | None = None
        if skip_prefix and self.first > 0 and prompts:
            self._prefix = self._residuals_into(self.first)
            if not self._prefix_matches():
                log.warning("layer skipping does not reproduce the full forward here; disabled")
                self._prefix = None

    # -- batching ---------------------------------------------------------------------------
    def _pad(self, seqs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Left-pad ``(len, ...)`` tensors; returns (padded, attention mask)."""
        n = max(s.shape[0] for s in seqs)
        pad_id = (self.tokenizer.pad_token_id or 0) if seqs[0].dim() == 1 else 0
        out, mask = [], torch.zeros(len(seqs), n, dtype=torch.long)
        for r, s in enumerate(seqs):
            out.append(torch.cat([torch.full((n - s.shape[0], *s.shape[1:]), pad_id, dtype=s.dtype), s]))
            mask[r, n - s.shape[0] :] = 1
        return torch.stack(out).to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def _residuals_into(self, layer: int) -> list[Tensor]:
        """Per prompt, the ``(len, d_model)`` residual entering decoder layer ``layer``."""
        out: list[Tensor] = []
        for start in range(0, len(self._ids), self.batch_size):
            chunk = self._ids[start : start + self.batch_size]
            ids, mask = self._pad(chunk)
            h = forward_until(
                self.model, {"input_ids": ids, "attention_mask": mask}, layer, before=True
            ).cpu()
            out.extend(h[r, h.shape[1] - s.shape[0] :].clone() for r, s in enumerate(chunk))
        return out

    def _prefix_matches(self) -> bool:
        rows: list[Row] = [(i, frozenset()) for i in range(min(2, len(self._ids)))]
        with_prefix = self._run(rows)
        saved, self._prefix = self._prefix, None
        try:
            full = self._run(rows)
        finally:
            self._prefix = saved
        return bool(torch.allclose(with_prefix, full, atol=2e-2, rtol=0))

    @torch.inference_mode()
    def _run(self, rows: Sequence[Row]) -> Tensor:
        """P(refusal) for one batch of rows (no memo)."""
        ids, mask = self._pad([self._ids[p] for p, _ in rows])
        per_layer: dict[int, list[list[int]]] = {}
        for r, (_, latents) in enumerate(rows):
            for layer, idx in latents:
                per_layer.setdefault(layer, [[] for _ in rows])[r].append(idx)
        ablations = [LatentAblation.of(self.saes[layer], sets) for layer, sets in sorted(per_layer.items())]
        enc = {"input_ids": ids, "attention_mask": mask}
        prefix: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self._prefix is not None:
            hidden, _ = self._pad([self._prefix[p] for p, _ in rows])
            prefix = _start_at(self.model, self.first, hidden)
            enc = {"inputs_embeds": torch.zeros_like(hidden), "attention_mask": mask}
        with ablate(self.model, ablations), prefix:
            logits = last_position_logits(self.model, enc)
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        self.forward_rows += len(rows)
        return probs[:, self.refusal_ids].sum(-1)

    def p_refusal(self, rows: Sequence[Row], desc: str | None = None) -> list[float]:
        """P(refusal) per row; rows already scored come from the memo."""
        todo = sorted({r for r in rows if r not in self._memo}, key=self._order_key)
        starts = range(0, len(todo), self.batch_size)
        bar = tqdm(starts, desc=desc or "score", disable=not self.progress or len(starts) < 2, leave=False)
        for start in bar:
            batch = todo[start : start + self.batch_size]
            for row, p in zip(batch, self._run(batch).tolist(), strict=True):
                self._memo[row] = p
        return [self._memo[r] for r in rows]

    def _order_key(self, row: Row) -> tuple[int, int, tuple[Latent, ...]]:
        return (int(self._ids[row[0]].shape[0]), row[0], tuple(sorted(row[1])))
