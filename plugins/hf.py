"""``sae_ablated``: lm-eval's HF model with the ablation plan applied per condition.

    lm_eval --model sae_ablated \\
        --model_args pretrained=default,saes=qwen2.5-coder-0.5b-instruct-res-2k,plan=auto \\
        --tasks refusal_ablation

``pretrained`` takes every spec :func:`refusal_eval.load_model` takes (``default``, registered
offline names, local dirs, .gguf files, hub ids). Each task's name ends with its condition
(``baseline``, ``sae``, ``sae_fm``, ``random``, ``direction``, ...; see
:mod:`refusal_eval.conditions`); requests are grouped by condition and each group runs inside
the one ablation module's context. Requests of tasks without one use ``condition=`` (default
baseline). With ``plan=auto`` the plan is found or searched before the first request (rank 0
only). Without ``saes=``, a registered offline model (``pretrained=default``) uses its own
shipped SAE release, all layers, and the plan shipped for it. ``sae_layers=10|14`` restricts the
SAEs to those layers (needed for templated sae-lens releases such as
``gemma-scope-2b-pt-res-canonical``); ``search_<key>=value`` overrides a search config key;
``judge=`` picks the refusal judge: answers are judged here, in batches, and reach the task as
:class:`~refusal_eval.judges.JudgedText` carrying the verdict. Generation batches mix conditions
(each row under its own condition's ablations, :func:`refusal_eval.ablation.by_row`), so five
conditions of a few prompts fill one batch instead of five short ones; ``mix_conditions=false``
runs one condition at a time. ``sae_ablated_vllm``
(``plugins/vllm.py``) takes the same arguments.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from refusal_eval.ablation import Ablation, PositionFilter, ablate
from refusal_eval.config import DEFAULT_JUDGE
from refusal_eval.errors import RefusalEvalError
from refusal_eval.positions import TemplateLayout, check_ablate_positions, spared_positions

from ._common import (
    DEFAULT_BATCH,
    OWN_ARGS,
    AblationRunner,
    chosen_batch_size,
    cli_flag,
    parse_bool,
    split_args,
)

log = logging.getLogger(__name__)

_HFLM_ARGS = frozenset(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}
_EXPANDING = ("num_beams", "num_return_sequences")  # generate kwargs that repeat batch rows


def _usable(device: str | None) -> str | None:
    """lm-eval's CLI passes ``device=cuda`` by default; on a machine without CUDA use the default
    device instead of failing (an explicit ``--device cpu`` or ``cuda:1`` is kept). Under
    ``accelerate launch`` / ``torchrun`` each process takes its own GPU (``cuda:LOCAL_RANK``)."""
    import torch

    if device and device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("refusal_eval: CUDA is not available; running on CPU")
        return None
    if device == "cuda" and _launched_world_size() > 1:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def _launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _join_launched_processes(lm: HFLM) -> None:
    """lm-eval's HFLM sets up data parallelism only for models it loads itself; ours is loaded
    by refusal_eval, so join the processes ``accelerate launch`` / ``torchrun`` started here:
    each rank evaluates its share of the documents, lm-eval gathers them on rank 0, and rank 0
    alone resolves (or searches) the plan while the others wait (``AblationRunner.plan``)."""
    if _launched_world_size() <= 1:
        return
    from datetime import timedelta

    from accelerate import Accelerator, InitProcessGroupKwargs

    accelerator = Accelerator(
        cpu=lm.device.type == "cpu",  # else accelerate ignores CPU processes (DistributedType.NO)
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(weeks=52))],
    )
    if accelerator.num_processes > 1:
        lm.accelerator = accelerator
        lm._rank, lm._world_size = accelerator.process_index, accelerator.num_processes


@register_model("sae_ablated")
class SAEAblatedLM(AblationRunner, HFLM):  # type: ignore[misc]  # lm-eval ships no type information
    backend_name = "sae_ablated"

    def __init__(
        self,
        pretrained: str = "default",
        saes: str | None = None,
        sae_layers: str | int | None = None,
        sae_latents: str = "plan",
        sae_ids: str | None = None,
        plan: str = "auto",
        condition: str = "baseline",
        judge: str = DEFAULT_JUDGE,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int | str | None = None,
        revision: str | None = None,
        ablate_positions: str = "all",
        mix_conditions: bool | str = True,
        **kwargs: Any,
    ) -> None:
        search_overrides, hf_kwargs = split_args(
            kwargs,
            _HFLM_ARGS,
            "sae_ablated",
            (*OWN_ARGS, "device", "batch_size", "ablate_positions", "mix_conditions"),
        )
        self.mix_conditions = parse_bool("mix_conditions", mix_conditions)
        self.ablate_positions = check_ablate_positions(ablate_positions)
        # ablate_positions=content: the latent edits spare each prompt's system and template
        # tokens (set per generation batch in _model_generate)
        self._spare = PositionFilter() if ablate_positions == "content" else None
        self._layout: TemplateLayout | None = None
        self._batch_ablations: list[Ablation] | None = None
        self._setup(
            pretrained=pretrained, saes=saes, sae_layers=sae_layers, sae_latents=sae_latents, sae_ids=sae_ids,
            plan=plan, condition=condition, judge=judge, search_overrides=search_overrides, dtype=dtype,
            device=_usable(device), revision=revision,
        )  # fmt: skip
        cpu = self.chat.device.type == "cpu"
        self.batch_size_used = chosen_batch_size(
            batch_size, DEFAULT_BATCH["hf-cpu" if cpu else "hf-cuda"], cpu=cpu
        )
        super().__init__(
            pretrained=self.chat.model,
            tokenizer=self.chat.tokenizer,
            batch_size=self.batch_size_used,
            device=str(self.chat.device),
            **hf_kwargs,
        )
        _join_launched_processes(self)

    def _ablation_scope(self, ablations: list[Ablation]) -> contextlib.AbstractContextManager[Any]:
        return ablate(self.model, ablations, spare=self._spare)

    def tok_batch_encode(self, strings: list[str], *args: Any, **kwargs: Any) -> Any:
        # lm-eval's generate_until encodes each batch right before generating it: the tagged
        # contexts (AblationRunner._mixed) say which ablations each row of that batch gets.
        # (batch_size=auto's probe on CUDA runs before any batch, without the ablation hooks:
        # their memory, a TopK encode per hooked layer, is small beside the probe's logits)
        self._batch_ablations = self._row_ablations(strings)  # None outside a mixed run
        return super().tok_batch_encode(strings, *args, **kwargs)

    def _model_generate(
        self, context: Any, max_length: int, stop: list[str], **generation_kwargs: Any
    ) -> Any:
        generation_kwargs.pop("condition", None)  # a user task's condition kwarg: consumed above
        rows, self._batch_ablations = self._batch_ablations, None
        if rows is not None and any(int(generation_kwargs.get(k) or 1) > 1 for k in _EXPANDING):
            raise RefusalEvalError(
                "num_beams / num_return_sequences repeat each row inside generate, so a batch "
                "that mixes conditions cannot give each copy its row's ablations",
                "pass mix_conditions=false in --model_args (one condition per batch)",
            )
        scope = contextlib.nullcontext() if rows is None else self._ablation_scope(rows)
        with scope:
            return self._generate_sparing(context, max_length, stop, **generation_kwargs)

    def _generate_sparing(
        self, context: Any, max_length: int, stop: list[str], **generation_kwargs: Any
    ) -> Any:
        if self._spare is None:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        if self._layout is None:
            self._layout = TemplateLayout.of(self.tokenizer)
        system = bool(cli_flag("--system_instruction"))
        mask = generation_kwargs.get("attention_mask")
        self._spare.keep = spared_positions(self.tokenizer, context, mask, self._layout, system=system)
        try:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        finally:
            self._spare.keep = None

    def get_model_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super().get_model_info()
        info.update(self.refusal_eval_info(str(self.chat.device)))
        return info
