"""The worker extension: methods vLLM mixes into each worker, called with
``llm.collective_rpc("refusal_eval_...", args=...)`` (arguments travel as msgpack; no pickled code)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._layers import EditState, Packed, apply_state, load_sae_weights


class RefusalEvalWorker:
    def _refusal_eval_model(self) -> Any:
        model = self.get_model()  # type: ignore[attr-defined]  # vLLM's worker, mixed in at run time
        return model.unwrap() if hasattr(model, "unwrap") else model  # cudagraph wrappers

    def refusal_eval_load_saes(self, weights: Mapping[Any, Mapping[str, Packed]]) -> list[int]:
        return load_sae_weights(self._refusal_eval_model(), {int(k): v for k, v in weights.items()})

    def refusal_eval_set_state(
        self,
        latents: Mapping[Any, Sequence[int]],
        direction: Sequence[float] | None = None,
        direction_layers: Sequence[int] | None = None,
    ) -> bool:
        state = EditState({int(k): list(v) for k, v in latents.items()}, direction, direction_layers)
        apply_state(self._refusal_eval_model(), state)
        return True
