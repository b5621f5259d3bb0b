"""``sae_ablated_vllm``: lm-eval's vLLM model with the ablation plan applied per condition.

    lm_eval --model sae_ablated_vllm --model_args pretrained=default --tasks refusal_ablation

Same model_args, plans, conditions, judging and results provenance as ``sae_ablated``
(``plugins/hf.py``), plus ``max_latents`` (latent slots per SAE layer, default 256) and any
vLLM engine argument (``tensor_parallel_size``, ``gpu_memory_utilization``, ...). The engine
runs refusal_eval's edited model class for the model's architecture
(:mod:`refusal_eval.vllm_backend`): the SAE weights are copied into the decoder layers once,
and each condition's requests run in one ``generate()`` after an in-place write of its latent
ids / direction, compiled or eager. When no plan is cached, a search runs: with
``generate_with=hf`` (``auto`` on a CUDA host) before the engine starts, on the HF model, which
is then freed; with ``generate_with=vllm`` (``auto`` on a CPU host) the engine starts first and
the search's generations (screening, verification) run on it while its forward passes (scores,
activations) stay on HF. Prefix caching is off and
``data_parallel_size`` > 1 is refused: lm-eval's data parallelism starts engines this plugin
cannot reach. On a CPU host, vLLM runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
measured faster) with a 2 GiB KV cache (``kv_cache_memory_bytes``) unless you set them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import inspect
import logging
from collections.abc import Iterator
from typing import Any

from refusal_eval.config import DEFAULT_JUDGE
from refusal_eval.vllm_backend import (
    DEFAULT_MAX_LATENTS,
    VllmEditor,
    VllmGenerator,
    cpu_defaults,
    engine_args,
    patch_vllm_version,
)

patch_vllm_version()  # before lm-eval's vLLM module binds importlib.metadata.version

from lm_eval.api.registry import register_model  # noqa: E402
from lm_eval.models.vllm_causallms import VLLM  # noqa: E402

from refusal_eval.ablation import Ablation  # noqa: E402
from refusal_eval.errors import RefusalEvalError  # noqa: E402
from refusal_eval.models import load_model  # noqa: E402
from refusal_eval.positions import check_ablate_positions  # noqa: E402
from refusal_eval.search.engines import pick_generate_with  # noqa: E402
from refusal_eval.search.plan import AblationPlan  # noqa: E402

from ._common import DEFAULT_BATCH, OWN_ARGS, AblationRunner, chosen_batch_size, split_args  # noqa: E402

log = logging.getLogger(__name__)


def _engine_arg_names() -> frozenset[str]:
    from vllm.engine.arg_utils import EngineArgs

    return frozenset(f.name for f in dataclasses.fields(EngineArgs))


_VLLM_ARGS = frozenset(inspect.signature(VLLM.__init__).parameters) - {"self", "kwargs"}


@register_model("sae_ablated_vllm")
class SAEAblatedVLLM(AblationRunner, VLLM):  # type: ignore[misc]  # lm-eval ships no type information
    backend_name = "sae_ablated_vllm"

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
        dtype: str = "bfloat16",
        revision: str | None = None,
        max_latents: int | str = DEFAULT_MAX_LATENTS,
        batch_size: int | str | None = None,
        generate_with: str | None = None,
        search_backend: str | None = None,  # deprecated name of generate_with
        ablate_positions: str = "all",
        **kwargs: Any,
    ) -> None:
        if check_ablate_positions(ablate_positions) != "all":
            raise RefusalEvalError(
                "ablate_positions=content is not supported by sae_ablated_vllm (its compiled edit "
                "sees flattened tokens, not which prompt part they belong to)",
                "use --model sae_ablated for ablate_positions=content",
            )
        self.generate_with = _generate_with(generate_with, search_backend, stream=sae_latents == "stream")
        search_overrides, vllm_kwargs = split_args(
            kwargs,
            (_VLLM_ARGS | _engine_arg_names() | {"device"})
            - {"hf_overrides", "worker_extension_cls", "model"},
            "sae_ablated_vllm",
            (*OWN_ARGS, "max_latents", "batch_size", "generate_with", "ablate_positions"),
        )
        if int(vllm_kwargs.get("data_parallel_size", 1)) > 1:
            raise RefusalEvalError(
                "sae_ablated_vllm does not support data_parallel_size > 1 (lm-eval starts those "
                "engines in Ray workers the ablations cannot reach)",
                "use tensor_parallel_size, or one lm_eval process per GPU with --limit slices",
            )
        # the weights are vLLM's: here only config, tokenizer and identity (plan keys, checks)
        self._setup(
            pretrained=pretrained, saes=saes, sae_layers=sae_layers, sae_latents=sae_latents, sae_ids=sae_ids,
            plan=plan, condition=condition, judge=judge, search_overrides=search_overrides, dtype=dtype,
            device="meta", revision=revision,
        )  # fmt: skip
        wants_plan = self.saes is not None and self.plan_arg != "none"
        if wants_plan and self.generate_with == "hf":
            _ = self.plan  # resolve (or search) before the engine takes the accelerator
        vllm_kwargs = cpu_defaults(vllm_kwargs)
        self.batch_size_used = chosen_batch_size(batch_size, DEFAULT_BATCH["vllm"])
        edit = engine_args(self.chat.source, self.saes, max_latents=int(max_latents))
        super().__init__(
            pretrained=self.chat.source,
            dtype=dtype,
            revision=revision if self.chat.source == str(pretrained) else None,
            batch_size=self.batch_size_used,
            **edit,
            **vllm_kwargs,
        )
        self.editor = VllmEditor(self.model)
        if self.saes is not None:
            self.editor.load_saes(self.saes)
        if wants_plan:
            _ = self.plan  # generate_with=vllm: a search generates on this engine

    def _resolve_plan(self) -> AblationPlan:
        from refusal_eval.search.auto import resolve_plan

        try:
            return resolve_plan(self.chat, self.saes or {}, self.plan_arg, self.search_config, search=False)
        except RefusalEvalError:
            if self.plan_arg != "auto":
                raise
        dtype = str(self.chat.info.get("dtype", "bfloat16")).removeprefix("torch.")
        chat = load_model(self.chat.spec, dtype=dtype)
        generator = None
        if self.generate_with == "vllm":
            log.warning("refusal_eval: no cached plan; searching (generations on vLLM, scores on HF)")
            generator = VllmGenerator(self.model, self.editor, chat.tokenizer)
        else:
            log.warning("refusal_eval: no cached plan; searching with the HF model before vLLM starts")
        try:
            return resolve_plan(chat, self.saes or {}, self.plan_arg, self.search_config, generator=generator)
        finally:
            del chat
            gc.collect()

    @contextlib.contextmanager
    def _ablation_scope(self, ablations: list[Ablation]) -> Iterator[None]:
        self.editor.set(ablations)
        yield

    @staticmethod
    def modify_gen_kwargs(gen_kwargs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        gen_kwargs = {k: v for k, v in gen_kwargs.items() if k != "condition"}  # consumed above
        return VLLM.modify_gen_kwargs(gen_kwargs, *args, **kwargs)

    def get_model_info(self) -> dict[str, Any]:
        from vllm.platforms import current_platform

        info = {"model_backend": "vllm", "refusal_eval_vllm": self.editor.describe()}
        info.update(self.refusal_eval_info(str(current_platform.device_type)))
        return info


def _generate_with(value: str | None, deprecated: str | None, *, stream: bool = False) -> str:
    """Where a search started by this model generates: ``generate_with`` (the CLI's word, as in
    ``refusal-eval search --generate-with``; default ``auto``, see
    :func:`~refusal_eval.search.engines.pick_generate_with`), or its old name ``search_backend``,
    which broke the rule that every ``search_<key>`` model_arg is a search-config key."""
    if deprecated is not None:
        if value is not None and value != deprecated:
            raise RefusalEvalError(
                f"generate_with={value} and search_backend={deprecated} disagree",
                "pass generate_with only (search_backend is its deprecated name)",
            )
        log.warning("refusal_eval: search_backend= is deprecated; pass generate_with=%s", deprecated)
        value = deprecated
    return pick_generate_with(value or "auto", stream_saes=stream)
