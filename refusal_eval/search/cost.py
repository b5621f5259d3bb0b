"""What each stage of a search cost: wall time, forward passes and tokens processed.

Counted at the decoder layers, so the search's shortcuts are counted as what they cost: a stage-2
row that reuses the residual below the first SAE layer runs only the layers above it. ``forwards``
and ``tokens`` are in full-model equivalents (decoder-layer calls and the tokens through them,
divided by the number of layers); padding counts, since it is computed. Generations on another
engine (``--generate-with vllm``) are not seen here; their wall time is.

Wall time differs from run to run, so the record is a sidecar (``PLAN.cost.json``) and never part
of the plan, whose bytes a rerun reproduces.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from ..hooks import decoder_layers

FORMAT = "refusal_eval.search_cost"
VERSION = 1


@dataclass
class StageCost:
    seconds: float = 0.0
    layer_calls: int = 0
    layer_tokens: int = 0
    cache_hits: int = 0
    cache_writes: int = 0


class Counted(Protocol):
    @property
    def hits(self) -> int: ...

    @property
    def writes(self) -> int: ...


@dataclass
class CostMeter:
    """Times and counts the stages run inside :meth:`stage` (nested stages are not supported)."""

    model: nn.Module
    stages: dict[str, StageCost] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str, *caches: Counted) -> Iterator[None]:
        """Meter the block; ``caches`` (the stage caches it reads and writes) say whether it was
        read back or computed."""
        cost = self.stages.setdefault(name, StageCost())
        before = [(c.hits, c.writes) for c in caches]

        def count(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states")
            cost.layer_calls += 1
            if hidden is not None and hidden.dim() >= 2:
                cost.layer_tokens += int(hidden.shape[0] * hidden.shape[1])

        handles = [b.register_forward_pre_hook(count, with_kwargs=True) for b in decoder_layers(self.model)]
        t0 = time.perf_counter()
        try:
            yield
        finally:
            cost.seconds += time.perf_counter() - t0
            cost.cache_hits += sum(c.hits - h for c, (h, _) in zip(caches, before, strict=True))
            cost.cache_writes += sum(c.writes - w for c, (_, w) in zip(caches, before, strict=True))
            for h in handles:
                h.remove()

    def to_json(self, plan_sha256: str | None = None) -> dict[str, Any]:
        n = len(decoder_layers(self.model))
        stages = {
            name: {
                "seconds": round(c.seconds, 3),
                "forwards": round(c.layer_calls / n, 3),
                "tokens": round(c.layer_tokens / n, 1),
                "layer_calls": c.layer_calls,
                "layer_tokens": c.layer_tokens,
                # read back from the stage cache: entries read, none computed
                "from_cache": c.cache_hits > 0 and c.cache_writes == 0,
            }
            for name, c in self.stages.items()
        }
        return {
            "format": FORMAT,
            "version": VERSION,
            "plan_sha256": plan_sha256,
            "n_layers": n,
            "seconds": round(sum(c.seconds for c in self.stages.values()), 3),
            "stages": stages,
        }

    def summary(self) -> str:
        return ", ".join(f"{name} {c.seconds:.0f}s" for name, c in self.stages.items())
