"""Score P(refusal) for many (prompt, latent subset) rows, fast.

Each row is one prompt with its own set of ``(layer, latent)`` pairs zero-ablated. Rows are
batched across prompts and subsets (per-row latent sets of the one ablation module), only the
last position's logits are computed, and identical rows are answered from a memo.

Rows start at a layer: the residual entering it is computed once per (prompt, start, latents
ablated below the start) and reused, and layers below it are swapped for pass-throughs while a
batch runs (checked against a full forward once, per scorer). By default every row starts at the
first ablatable layer, whose prefix ablates nothing. Rows that differ only at layer ``j`` and above
(the hydra test's pair for a latent at ``j``, a minimal set with one latent at ``j`` restored)
share everything below ``j``: callers pass ``starts`` and those rows run only layers ``j..``.
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
Prefix = tuple[int, int, frozenset[Latent]]  # (prompt index, start layer, latents below it)


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
        self.layer_rows = 0  # decoder layers those rows ran, summed
        self.prefix_layer_rows = 0  # decoder layers run to make their cached prefixes, summed
        self.n_layers = len(decoder_layers(model))
        self.first = min(saes) if saes else 0
        self._prefixes: dict[Prefix, Tensor] = {}
        self.skips = bool(skip_prefix and prompts and self.n_layers > 1)
        if self.skips and not self._prefix_matches():
            log.warning("layer skipping does not reproduce the full forward here; disabled")
            self.skips = False

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

    def _ablations(self, rows: Sequence[Row], layers: range) -> list[LatentAblation]:
        """One per-row ablation per SAE layer in ``layers`` that any row ablates at."""
        per_layer: dict[int, list[list[int]]] = {}
        for r, (_, latents) in enumerate(rows):
            for layer, idx in latents:
                if layer in layers:
                    per_layer.setdefault(layer, [[] for _ in rows])[r].append(idx)
        return [LatentAblation.of(self.saes[layer], sets) for layer, sets in sorted(per_layer.items())]

    @torch.inference_mode()
    def _prefixes_for(self, rows: Sequence[Row], start: int) -> list[Tensor]:
        """Per row, the ``(len, d_model)`` residual entering layer ``start`` with the row's
        latents below ``start`` ablated; computed once per distinct (prompt, start, latents)."""
        keys: list[Prefix] = [(p, start, frozenset(x for x in s if x[0] < start)) for p, s in rows]
        todo = sorted(
            {k for k in keys if k not in self._prefixes},
            key=lambda k: (int(self._ids[k[0]].shape[0]), k[0], sorted(k[2])),  # little padding
        )
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            ids, mask = self._pad([self._ids[p] for p, _, _ in chunk])
            below = [(p, latents) for p, _, latents in chunk]
            with ablate(self.model, self._ablations(below, range(start))):
                h = forward_until(
                    self.model, {"input_ids": ids, "attention_mask": mask}, start, before=True
                ).cpu()
            for r, key in enumerate(chunk):
                self._prefixes[key] = h[r, h.shape[1] - self._ids[key[0]].shape[0] :].clone()
            self.prefix_layer_rows += len(chunk) * start
        return [self._prefixes[k] for k in keys]

    def _prefix_matches(self) -> bool:
        rows: list[Row] = [(i, frozenset()) for i in range(min(2, len(self._ids)))]
        start = min(max(self.first, 1), self.n_layers - 1)
        return bool(torch.allclose(self._run(rows, start), self._run(rows, 0), atol=2e-2, rtol=0))

    @torch.inference_mode()
    def _run(self, rows: Sequence[Row], start: int) -> Tensor:
        """P(refusal) for one batch of rows (no memo), running layers ``start..`` (0: all)."""
        ids, mask = self._pad([self._ids[p] for p, _ in rows])
        enc = {"input_ids": ids, "attention_mask": mask}
        prefix: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if start > 0:
            hidden, _ = self._pad(self._prefixes_for(rows, start))
            prefix = _start_at(self.model, start, hidden)
            enc = {"inputs_embeds": torch.zeros_like(hidden), "attention_mask": mask}
        # ablations below ``start`` are in the prefix (their layers pass through while it runs)
        with ablate(self.model, self._ablations(rows, range(start, self.n_layers))), prefix:
            logits = last_position_logits(self.model, enc)
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        self.forward_rows += len(rows)
        self.layer_rows += len(rows) * (self.n_layers - start)
        return probs[:, self.refusal_ids].sum(-1)

    def p_refusal(
        self, rows: Sequence[Row], starts: Sequence[int] | None = None, *, desc: str | None = None
    ) -> list[float]:
        """P(refusal) per row; rows already scored come from the memo. ``starts`` (one per row,
        default the first SAE layer) is where each row's forward begins; a row's score does not
        depend on it beyond float rounding, only its cost does. A row asked again with another
        start is answered from the memo (the first start asked wins)."""
        if starts is not None and len(starts) != len(rows):
            raise ValueError(f"{len(starts)} starts for {len(rows)} rows")
        if starts is not None and not all(0 <= s < self.n_layers for s in starts):
            raise ValueError(
                f"starts must be decoder layers 0..{self.n_layers - 1}, got {sorted(set(starts))}"
            )
        start_of: dict[Row, int] = {}
        for i, row in enumerate(rows):
            if row not in self._memo:
                start = self.first if starts is None else starts[i]
                start_of.setdefault(row, start if self.skips else 0)
        batches: list[list[Row]] = []
        for start in sorted(set(start_of.values())):  # one start per batch
            group = sorted((r for r in start_of if start_of[r] == start), key=self._order_key)
            batches.extend(group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size))
        bar = tqdm(batches, desc=desc or "score", disable=not self.progress or len(batches) < 2, leave=False)
        for batch in bar:
            for row, p in zip(batch, self._run(batch, start_of[batch[0]]).tolist(), strict=True):
                self._memo[row] = p
        return [self._memo[r] for r in rows]

    def _order_key(self, row: Row) -> tuple[int, int, tuple[Latent, ...]]:
        return (int(self._ids[row[0]].shape[0]), row[0], tuple(sorted(row[1])))
