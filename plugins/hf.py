"""``sae_ablated``: lm-eval's HF model with the ablation plan applied per condition.

    lm_eval --model sae_ablated \\
        --model_args pretrained=default,saes=qwen2.5-coder-0.5b-instruct-res,plan=auto \\
        --tasks refusal_ablation

``pretrained`` takes every spec :func:`refusal_eval.load_model` takes (``default``, registered
offline names, local dirs, .gguf files, hub ids). Each task names its condition in its
``generation_kwargs`` (``baseline``, ``sae``, ``sae_fm``, ``sae_probe``, ``sae_random``,
``random``, ``direction``); requests are grouped by condition and each group runs inside the
one ablation module's context. Loglikelihood requests use ``condition=`` (default baseline).
With ``plan=auto`` the plan is found or searched before the first request (rank 0 only).
Without ``saes=``, a registered offline model (``pretrained=default``) uses its own shipped SAE
release, all layers, and the plan shipped for it. ``sae_layers=10|14`` restricts the SAEs to
those layers (needed for templated sae-lens releases such as
``gemma-scope-2b-pt-res-canonical``); ``search_<key>=value`` overrides a search config key;
``judge=`` picks the refusal judge: answers are judged here, in batches, and reach the task as
:class:`~refusal_eval.judges.JudgedText` carrying the verdict.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from refusal_eval.ablation import ablate
from refusal_eval.chat import format_chat
from refusal_eval.conditions import check_condition, condition_of_task
from refusal_eval.config import load_config
from refusal_eval.errors import RefusalEvalError
from refusal_eval.judges import get_judge, judge_texts
from refusal_eval.models import load_model
from refusal_eval.saes import load_saes
from refusal_eval.search.plan import AblationPlan, display_path

log = logging.getLogger(__name__)

_OWN_ARGS = (
    "pretrained", "saes", "sae_layers", "plan", "condition", "judge",
    "dtype", "device", "batch_size", "revision",
)  # fmt: skip
_HFLM_ARGS = frozenset(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}


def _split_args(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``search_<key>`` model_args -> search config overrides; the rest must be HFLM args."""
    search = {k.removeprefix("search_"): v for k, v in kwargs.items() if k.startswith("search_")}
    rest = {k: v for k, v in kwargs.items() if not k.startswith("search_")}
    unknown = sorted(set(rest) - _HFLM_ARGS)
    if unknown:
        raise RefusalEvalError(
            f"unknown sae_ablated model_args {unknown}",
            f"use {', '.join(_OWN_ARGS)}, search_<config key>, or an hf model arg",
        )
    return search, rest


def _parse_layers(value: str | int | None) -> list[int] | None:
    """``sae_layers=14`` or ``sae_layers=10|14|18`` (lm-eval splits model_args on commas)."""
    if value is None or value == "":
        return None
    try:
        return [int(v) for v in str(value).replace(":", "|").split("|") if v.strip()]
    except ValueError:
        raise RefusalEvalError(
            f"cannot parse sae_layers={value!r}", "write layer numbers separated by |, e.g. sae_layers=10|14"
        ) from None


def _usable(device: str | None) -> str | None:
    """lm-eval's CLI passes ``device=cuda`` by default; on a machine without CUDA use the default
    device instead of failing (an explicit ``--device cpu`` or ``cuda:1`` is kept)."""
    import torch

    if device and device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("refusal_eval: CUDA is not available; running on CPU")
        return None
    return device


def _rank_and_barrier() -> tuple[int, Any]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.barrier
    except ImportError:
        pass
    return 0, lambda: None


def _prompt_of(request: Any) -> str:
    """The user prompt a request's answer is judged against (the doc's, else the context)."""
    doc = getattr(request, "doc", None)
    if isinstance(doc, dict) and isinstance(doc.get("prompt"), str):
        return str(doc["prompt"])
    return str(request.args[0])


@register_model("sae_ablated")
class SAEAblatedLM(HFLM):  # type: ignore[misc]  # lm-eval ships no type information
    def __init__(
        self,
        pretrained: str = "default",
        saes: str | None = None,
        sae_layers: str | int | None = None,
        plan: str = "auto",
        condition: str = "baseline",
        judge: str = "keyword",
        dtype: str = "bfloat16",
        device: str | None = None,
        batch_size: int | str = 8,
        revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        search_overrides, hf_kwargs = _split_args(kwargs)
        check_condition(condition)
        self.judge = get_judge(judge)  # built once; fails early on a bad spec
        self.chat = load_model(str(pretrained), dtype=dtype, device=_usable(device), revision=revision)
        layers = _parse_layers(sae_layers)
        saes = saes or (self.chat.info.get("default_saes") if plan != "none" else None)
        self.saes = load_saes(saes, layers=layers, model=self.chat) if saes else None
        self.search_config = load_config(overrides=search_overrides)
        self.plan_arg, self.default_condition, self.judge_spec = str(plan), condition, judge
        self._plan: AblationPlan | None = None
        self._template_applied_by: set[str] = set()  # recorded in the results, not used to decide
        if self.saes is None and plan not in ("none", "auto"):
            raise RefusalEvalError("plan= needs the SAEs it was made with", "pass saes=RELEASE_OR_DIR")
        super().__init__(
            pretrained=self.chat.model,
            tokenizer=self.chat.tokenizer,
            batch_size=batch_size,
            device=str(self.chat.device),
            **hf_kwargs,
        )

    # --- the plan ------------------------------------------------------------------------------
    @property
    def plan(self) -> AblationPlan:
        if self._plan is None:
            if self.saes is None or self.plan_arg == "none":
                raise RefusalEvalError(
                    "this run asks for an ablation condition but no plan/SAEs were given",
                    "pass saes=RELEASE_OR_DIR (plan=auto) or evaluate only baseline tasks "
                    "(registered offline models bring their own SAEs: pretrained=default)",
                )
            from refusal_eval.search.auto import resolve_plan

            rank, barrier = _rank_and_barrier()
            if rank != 0:
                barrier()  # rank 0 searches (or finds the cached plan) first
            self._plan = resolve_plan(self.chat, self.saes, self.plan_arg, self.search_config)
            if rank == 0:
                barrier()
            log.warning("refusal_eval: plan %s (sha256 %s)", self._plan.path, self._plan.hash[:12])
        return self._plan

    def _ablations(self, condition: str) -> list[Any]:
        if condition == "baseline":
            return []
        check_condition(condition)
        return self.plan.ablations(self.saes or {}, condition)

    # --- lm-eval entry points ------------------------------------------------------------------
    @functools.cached_property
    def _generation_suffix(self) -> str:
        """What the chat template puts after a user turn (``<|im_end|>\\n<|im_start|>assistant\\n``)."""
        marker = "\x00refusal-eval\x00"
        return format_chat(self.tokenizer, [marker])[0].split(marker, 1)[-1]

    def _templated(self, context: str) -> bool:
        """Whether lm-eval already applied the chat template (``--apply_chat_template``)."""
        return bool(self._generation_suffix.strip()) and context.endswith(self._generation_suffix)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        prepared = []
        for req in requests:
            context, gen_kwargs = req.args
            templated = self._templated(context)
            self._template_applied_by.add("lm-eval" if templated else "sae_ablated")
            if not templated:  # the tasks expect the chat template; apply it if not yet
                req = dataclasses.replace(
                    req, arguments=(format_chat(self.tokenizer, [context])[0], gen_kwargs)
                )
            prepared.append(req)

        def run(reqs: list[Any]) -> list[Any]:
            answers = super(SAEAblatedLM, self).generate_until(reqs, disable_tqdm)
            prompts = [_prompt_of(r) for r in reqs]
            return judge_texts(self.judge, self.judge_spec, prompts, [a or "" for a in answers])

        return self._by_condition(prepared, run)

    def _model_generate(
        self, context: Any, max_length: int, stop: list[str], **generation_kwargs: Any
    ) -> Any:
        generation_kwargs.pop("condition", None)  # consumed by generate_until (kept in cache keys)
        return super()._model_generate(context, max_length, stop, **generation_kwargs)

    def _condition(self, request: Any) -> str:
        """A request's condition: the ``condition`` generation kwarg of an ablation task, else the
        condition its task name ends with (``refusal_ce_sae``), else the model's ``condition=``."""
        args = request.args
        if len(args) > 1 and isinstance(args[1], dict) and "condition" in args[1]:
            return str(args[1]["condition"])
        return condition_of_task(getattr(request, "task_name", None)) or self.default_condition

    def _by_condition(self, requests: list[Any], run: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """Run ``requests`` grouped by condition, each group inside its ablation (one module for
        generation and loglikelihood requests alike)."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(self._condition(req), []).append(i)
        out: list[Any] = [None] * len(requests)
        for cond in sorted(groups):
            idx = groups[cond]
            with ablate(self.model, self._ablations(cond)):
                for i, value in zip(idx, run([requests[i] for i in idx]), strict=True):
                    out[i] = value
        return out

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self._by_condition(
            requests, lambda reqs: super(SAEAblatedLM, self).loglikelihood(reqs, disable_tqdm)
        )

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        return self._by_condition(
            requests, lambda reqs: super(SAEAblatedLM, self).loglikelihood_rolling(reqs, disable_tqdm)
        )

    def get_model_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super().get_model_info()
        info.update(
            {
                "refusal_eval_model": self.chat.info.get("name", self.chat.spec),
                "refusal_eval_model_revision": self.chat.revision,
                "refusal_eval_judge": self.judge_spec,
                # what actually ran (lm-eval's own "device" records what was asked for)
                "refusal_eval_device": str(self.chat.device),
                "refusal_eval_chat_template": {
                    "sha256": hashlib.sha256(str(self.tokenizer.chat_template or "").encode()).hexdigest(),
                    "applied_by": sorted(self._template_applied_by) or ["-"],
                },
            }
        )
        if self.saes is not None:
            info["refusal_eval_saes"] = self.saes.describe()
        if self.saes is not None and self.plan_arg != "none":
            plan = self.plan
            info.update(
                {
                    "refusal_eval_plan": display_path(plan.path),
                    "refusal_eval_plan_hash": plan.hash,
                    "refusal_eval_plan_layer": plan.layer,
                    "refusal_eval_plan_layers": plan.sae_layers,
                    "refusal_eval_feature_counts": plan.counts(),
                    "refusal_eval_dormant": plan.dormant_count,
                    "refusal_eval_hydra": plan.hydra_count,
                    "refusal_eval_first_token_kl": plan.first_token_kl,
                }
            )
        return info
