"""What ``sae_ablated`` (HF) and ``sae_ablated_vllm`` share: model_args, the plan, conditions,
judging and the provenance recorded in lm-eval's results. A backend supplies the model and
one context manager, :meth:`AblationRunner._ablation_scope`, that runs a group of requests
under a list of ablations (hooks for HF, in-place buffers for vLLM)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any

from refusal_eval._codec import DecodeError, decode
from refusal_eval.ablation import Ablation, by_row
from refusal_eval.chat import format_chat
from refusal_eval.conditions import check_condition
from refusal_eval.config import SearchConfig, load_config
from refusal_eval.errors import RefusalEvalError
from refusal_eval.judges import Judge, get_judge, judge_texts
from refusal_eval.models import ChatModel, load_model
from refusal_eval.report.summary import encode_verdicts, verdict_code
from refusal_eval.runs import GROUP, PREFIX, RunInfo, Scored, condition_of_task
from refusal_eval.saes import SAEBundle, StreamedSAEs, is_local_source, load_saes, stream_saes
from refusal_eval.search.plan import AblationPlan, display_path

log = logging.getLogger(__name__)

OWN_ARGS = (
    "pretrained", "saes", "sae_layers", "sae_ids", "sae_latents", "plan", "condition", "judge", "dtype",
    "revision",
)  # fmt: skip
#: ``sae_latents=``: hold only the latents the plan ablates (when the plan is known without a
#: search), or every latent of every SAE, or (``stream``) the plan's latents and, when ``plan=auto``
#: must search, a search that holds one whole SAE layer at a time (``refusal-eval search
#: --stream-saes``: many wide SAEs)
SAE_LATENTS = ("plan", "all", "stream")


def split_args(
    kwargs: dict[str, Any], allowed: frozenset[str], model: str, own: tuple[str, ...] = OWN_ARGS
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``search_<key>`` model_args -> search config overrides; the rest must be backend args."""
    search = {k.removeprefix("search_"): v for k, v in kwargs.items() if k.startswith("search_")}
    rest = {k: v for k, v in kwargs.items() if not k.startswith("search_")}
    unknown = sorted(set(rest) - allowed)
    if unknown:
        raise RefusalEvalError(
            f"unknown {model} model_args {unknown}",
            f"use {', '.join(own)}, search_<config key>, or a model arg of lm-eval's backend",
        )
    return search, rest


#: the batch size each backend uses when the user did not choose one. HF on CPU: 16, the best of
#: 1 / 4 / 8 / 16 (8.6 / 19.9 / 29.2 / 33.9 new tokens/s, ``benchmarks/bench_batch_size.py``,
#: BENCHMARKS.md); on CUDA lm-eval's own probe (``auto``) is cheap and right; vLLM schedules every
#: request itself (``auto``).
DEFAULT_BATCH: dict[str, int | str] = {"hf-cpu": 16, "hf-cuda": "auto", "vllm": "auto"}
_BATCH_FLAGS = ("--batch_size", "--batch-size", "-b")


def chosen_batch_size(
    value: int | str | None, default: int | str, *, cpu: bool = False, argv: list[str] | None = None
) -> int | str:
    """``value`` unless it is lm-eval's CLI default of 1 that the user never typed: the CLI
    always passes ``batch_size=1`` when ``--batch_size`` is absent (its flag is suppressed and
    the config default is 1), which would generate one answer at a time. On a CPU (``cpu``),
    ``auto`` means ``default`` too: lm-eval's probe starts at batch 64 x the whole context
    (11.8 GB and 9.5 minutes before it was stopped). Every other value is kept."""
    import sys

    argv = sys.argv if argv is None else argv
    cli = bool(argv) and os.path.basename(argv[0]).replace("-", "_") in ("lm_eval", "__main__.py")
    typed = any(a in _BATCH_FLAGS or a.startswith(("--batch_size=", "--batch-size=")) for a in argv)
    if value is None or (str(value) == "1" and cli and not typed):
        return default
    if cpu and str(value).startswith("auto"):
        log.warning(
            "refusal_eval: --batch_size %s on a CPU means %s (lm-eval's probe never ends)", value, default
        )
        return default
    return int(value) if str(value).isdigit() else value  # the CLI passes "8"


_USE_CACHE_ERROR = (
    "--use_cache keys answers by prompt and generation kwargs only, so it would serve one "
    "condition's answers to another",
    "drop --use_cache (refusal_eval caches plans and searches itself)",
)


def check_cli_cache(argv: list[str] | None = None) -> None:
    """Refuse ``lm_eval --use_cache ... --tasks`` with an ablated task before any model loads
    (the request-time check in :meth:`AblationRunner._by_condition` would come minutes later)."""
    import sys

    argv = sys.argv if argv is None else argv
    if not any(a in ("--use_cache", "-c") or a.startswith("--use_cache=") for a in argv):
        return
    tasks = (cli_flag("--tasks", argv) or cli_flag("-t", argv) or "").split(",")
    groups = (GROUP, f"{PREFIX}length")  # refusal_ablation*, refusal_length*: ablated unless _baseline
    if any(t.startswith(groups) and not t.endswith("_baseline") for t in tasks) or any(
        condition_of_task(t) not in (None, "baseline") for t in tasks
    ):
        raise RefusalEvalError(*_USE_CACHE_ERROR)


def cli_flag(flag: str, argv: list[str] | None = None) -> str | None:
    """The value the ``lm_eval`` command line gave ``flag`` (``--flag V`` or ``--flag=V``)."""
    import sys

    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _templated_prompt(tokenizer: Any, context: str, system: str | None) -> str:
    """``context`` in the chat template. Without ``--apply_chat_template`` lm-eval prepends a
    ``--system_instruction`` to the text; it goes back into a system turn (replacing the
    template's default one) instead of riding inside the user turn."""
    if system and context.startswith(system):
        return format_chat(tokenizer, [context[len(system) :].lstrip()], system=system)[0]
    return format_chat(tokenizer, [context])[0]


def parse_layers(value: str | int | None) -> list[int] | None:
    """``sae_layers=14`` or ``sae_layers=10|14|18`` (lm-eval splits model_args on commas)."""
    if value is None or value == "":
        return None
    try:
        return [int(v) for v in str(value).replace(":", "|").split("|") if v.strip()]
    except ValueError:
        raise RefusalEvalError(
            f"cannot parse sae_layers={value!r}", "write layer numbers separated by |, e.g. sae_layers=10|14"
        ) from None


def rank_and_barrier() -> tuple[int, Callable[[], Any]]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.barrier
    except ImportError:
        pass
    return 0, lambda: None


def prompt_of(request: Any) -> str:
    """The user prompt a request's answer is judged against (the doc's, else the context)."""
    doc = getattr(request, "doc", None)
    if isinstance(doc, dict) and isinstance(doc.get("prompt"), str):
        return str(doc["prompt"])
    return str(request.args[0])


class Conditioned(str):
    """A request's context that carries its condition through lm-eval's batching (which only
    sorts and slices the ``(context, gen_kwargs)`` pairs) to the backend's batch hook."""

    condition: str

    def __new__(cls, text: str, condition: str) -> Conditioned:
        obj = super().__new__(cls, text)
        obj.condition = condition
        return obj


def parse_bool(name: str, value: bool | str) -> bool:
    """A boolean model_arg (lm-eval passes ``true``/``false`` as bools or strings), read by the
    codec that reads ``--set key=value``."""
    try:
        return bool(decode(bool, value, name, strings=True))
    except DecodeError:
        raise RefusalEvalError(
            f"{name}={value!r} is not true or false", f"pass {name}=true or {name}=false"
        ) from None


class AblationRunner:
    """Mixin: the plan, the per-request condition, grouped execution, judging, provenance."""

    chat: ChatModel
    saes: SAEBundle | StreamedSAEs | None  # streamed only until a streamed search has its plan
    search_config: SearchConfig
    plan_arg: str
    default_condition: str
    judge: Judge
    tokenizer: Any
    backend_name: str
    batch_size_used: int | str | None = None
    #: generation batches hold rows of several conditions, each row under its own ablations
    #: (a backend that can edit per row sets it; :meth:`generate_until` then tags each context)
    mix_conditions: bool = False
    _condition_ablations: dict[str, list[Ablation]]  # set by _mixed for the batches it runs
    ablate_positions: str = "all"  # refusal_eval.positions.ABLATE_POSITIONS
    _plan: AblationPlan | None = None
    #: (source, layers, ids) of streamed SAEs, whose plan's rows are loaded once the search is done
    _streamed_from: tuple[str, list[int] | None, Any] | None = None

    @functools.cached_property
    def template_applied_by(self) -> set[str]:
        """Who applied the chat template (recorded in the results, not used to decide)."""
        return set()

    def _setup(
        self,
        *,
        pretrained: str,
        saes: str | None,
        sae_layers: str | int | None,
        plan: str,
        condition: str,
        judge: str,
        search_overrides: dict[str, Any],
        sae_latents: str = "plan",
        sae_ids: str | None = None,
        **load: Any,
    ) -> None:
        """The chat model (``load``: dtype/device/revision for :func:`~refusal_eval.load_model`),
        SAEs, search config, judge and plan argument, checked before the backend starts."""
        check_condition(condition)
        check_cli_cache()
        if sae_latents not in SAE_LATENTS:
            raise RefusalEvalError(
                f"sae_latents={sae_latents!r} is not one of {list(SAE_LATENTS)}",
                "pass sae_latents=plan (hold the plan's latents only), all, or stream (a search "
                "holding one SAE layer at a time)",
            )
        self.judge = get_judge(judge)  # built once; fails early on a bad spec
        self.chat = load_model(str(pretrained), **load)
        layers = parse_layers(sae_layers)
        self.search_config = load_config(
            overrides=search_overrides, model_defaults=self.chat.search_defaults(saes, layers)
        )
        sae_source = saes or (self.chat.info.get("default_saes") if plan != "none" else None)
        if not saes and layers is None and plan == "auto":  # its own release: its plan's layers
            layers = self.chat.info.get("default_sae_layers")
        self.saes = self._load_saes(sae_source, layers, str(plan), sae_latents, sae_ids)
        self.plan_arg, self.default_condition = str(plan), condition
        self._plan = None
        if self.saes is None and plan not in ("none", "auto"):
            raise RefusalEvalError("plan= needs the SAEs it was made with", "pass saes=RELEASE_OR_DIR")

    def _load_saes(
        self,
        source: str | None,
        layers: list[int] | None,
        plan: str,
        sae_latents: str,
        ids: str | None = None,
    ) -> SAEBundle | StreamedSAEs | None:
        """The SAEs, holding only the latents the plan ablates when the plan is known before any
        search: a plan file, or ``plan=auto`` with a cached or shipped plan for these SAEs (its
        key needs only the SAEs' fingerprints, so they are first loaded holding no latents).
        Held whole: ``sae_latents=all``, TopK SAEs, and a search still to come (it reads every
        latent), unless ``sae_latents=stream``: then the search gets one layer at a time and the
        plan's rows are loaded once it is done (:attr:`plan`)."""
        if source is None:
            return None
        if plan not in ("none", "auto") and ids is None and not is_local_source(source):
            made = AblationPlan.load(plan)
            layers = layers or sorted(made.sae_layer_ids)
            if (plan_ids := made.sae_ids_for(source, layers)) is not None:
                return self._load_held(source, layers, plan_ids, made, sae_latents)
        if sae_latents == "all" or plan == "none":
            return load_saes(source, layers=layers, ids=ids, model=self.chat)
        if plan == "auto":
            from refusal_eval.search.auto import find_plan_for
            from refusal_eval.search.pipeline import search_inputs

            headers = load_saes(source, layers=layers, ids=ids, latents={}, model=self.chat)
            if all(c.held is None for c in headers.values()):
                return headers  # TopK: held whole already
            found = find_plan_for(search_inputs(self.chat, headers, self.search_config))
            if found is None and sae_latents == "stream":
                self._streamed_from = (source, layers, ids)
                hub_ids = None if is_local_source(source) else [headers.ids[x] for x in headers.layers]
                return stream_saes(source, headers.layers, hub_ids, model=self.chat)
            if found is None:
                return load_saes(source, layers=layers, ids=ids, model=self.chat)
            plan = str(found)
        return self._load_held(source, layers, ids, AblationPlan.load(plan), sae_latents)

    def _load_held(
        self, source: str, layers: list[int] | None, ids: Any, plan: AblationPlan, sae_latents: str
    ) -> SAEBundle:
        held = None if sae_latents == "all" else plan.held_latents()  # plan and stream: its rows
        return load_saes(source, layers=layers, ids=ids, latents=held, model=self.chat)

    # --- supplied by the backend --------------------------------------------------------------
    def _ablation_scope(self, ablations: list[Ablation]) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _resolve_plan(self) -> AblationPlan:
        from refusal_eval.search.auto import resolve_plan

        return resolve_plan(self.chat, self.saes or {}, self.plan_arg, self.search_config)

    # --- the plan -----------------------------------------------------------------------------
    @property
    def plan(self) -> AblationPlan:
        if self._plan is None:
            if self.saes is None or self.plan_arg == "none":
                raise RefusalEvalError(
                    "this run asks for an ablation condition but no plan/SAEs were given",
                    "pass saes=RELEASE_OR_DIR (plan=auto) or evaluate only baseline tasks "
                    "(registered offline models bring their own SAEs: pretrained=default)",
                )
            rank, barrier = rank_and_barrier()
            if rank != 0:
                barrier()  # rank 0 searches (or finds the cached plan) first
            self._plan = self._resolve_plan()
            if rank == 0:
                barrier()
            if self._streamed_from is not None:  # the search streamed: hold the plan's rows now
                source, layers, ids = self._streamed_from
                self.saes = self._load_held(source, layers, ids, self._plan, "plan")
                self._streamed_from = None
            log.warning("refusal_eval: plan %s (sha256 %s)", self._plan.path, self._plan.hash[:12])
        return self._plan

    def _ablations(self, condition: str) -> list[Ablation]:
        if condition == "baseline":
            return []
        check_condition(condition)
        return self.plan.ablations(self.saes or {}, condition)

    @functools.cached_property
    def _generation_suffix(self) -> str:
        """What the chat template puts after a user turn (``<|im_end|>\\n<|im_start|>assistant\\n``)."""
        marker = "\x00refusal-eval\x00"
        return format_chat(self.tokenizer, [marker])[0].split(marker, 1)[-1]

    def _templated(self, context: str) -> bool:
        """Whether lm-eval already applied the chat template (``--apply_chat_template``)."""
        return bool(self._generation_suffix.strip()) and context.endswith(self._generation_suffix)

    def _chat_formatted(self, requests: list[Any]) -> list[Any]:
        """The requests with the chat template applied where lm-eval did not apply it, in place:
        lm-eval's ``--log_samples`` then records the prompt the model actually saw."""
        system = cli_flag("--system_instruction")
        seen: set[int] = set()
        for req in requests:
            if id(req) in seen:  # lm-eval passes a repeated request's Instance `repeats` times
                continue
            seen.add(id(req))
            context, gen_kwargs = req.args
            templated = self._templated(context)
            self.template_applied_by.add("lm-eval" if templated else self.backend_name)
            if not templated:  # the tasks expect the chat template; apply it if not yet
                req.arguments = (_templated_prompt(self.tokenizer, context, system), gen_kwargs)
        return requests

    # --- lm-eval entry points (one implementation for every backend) ---------------------------
    def _lm_evals(self, name: str) -> Callable[..., Any]:
        """The backend's own ``name`` (lm-eval's ``HFLM`` / ``VLLM``: the class after this mixin
        in the model's bases), which runs one group of requests under the current scope."""
        return getattr(super(), name)  # type: ignore[no-any-return]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        generate = self._lm_evals("generate_until")
        requests = self._chat_formatted(requests)
        if self.mix_conditions:
            return self._judged(requests, self._mixed(requests, lambda reqs: generate(reqs, disable_tqdm)))
        return self._by_condition(requests, lambda reqs: self._judged(reqs, generate(reqs, disable_tqdm)))

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        score = self._lm_evals("loglikelihood")
        return self._by_condition(requests, lambda reqs: score(reqs, disable_tqdm))

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        score = self._lm_evals("loglikelihood_rolling")

        def run(reqs: list[Any]) -> list[Any]:  # one group shares one condition
            return [Scored(v, self._condition(reqs[0])) for v in score(reqs, disable_tqdm)]

        return self._by_condition(requests, run)

    # --- conditions ---------------------------------------------------------------------------
    def _condition(self, request: Any) -> str:
        """A request's condition: a ``condition`` generation kwarg (user tasks may set one), else
        the doc's ``condition`` field (the shipped generation tasks put it in every doc), else the
        condition a ``refusal_*`` task name ends with (``refusal_ce_sae_fm``), else the model's
        ``condition=`` model_arg. No generation kwarg in the shipped tasks: lm-eval's own ``hf``
        and ``vllm`` would forward it to ``generate`` and fail; instead their ablated tasks stop
        with one error naming --model sae_ablated (tasks/refusal_ablation/utils.py:verdict)."""
        args = request.args
        if len(args) > 1 and isinstance(args[1], dict) and "condition" in args[1]:
            return str(args[1]["condition"])
        doc = getattr(request, "doc", None)
        if isinstance(doc, dict) and isinstance(doc.get("condition"), str):  # the shipped tasks' docs
            return str(doc["condition"])
        return condition_of_task(getattr(request, "task_name", None)) or self.default_condition

    def _check_cache(self, conditions: set[str]) -> None:
        caching = getattr(getattr(self, "cache_hook", None), "dbdict", None) is not None  # --use_cache
        if caching and conditions - {"baseline"}:
            raise RefusalEvalError(*_USE_CACHE_ERROR)

    def _by_condition(self, requests: list[Any], run: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """Run ``requests`` grouped by condition, each group inside its ablation scope."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(self._condition(req), []).append(i)
        self._check_cache(set(groups))
        out: list[Any] = [None] * len(requests)
        for cond in sorted(groups):
            idx = groups[cond]
            with self._ablation_scope(self._ablations(cond)):
                for i, value in zip(idx, run([requests[i] for i in idx]), strict=True):
                    out[i] = value
        return out

    def _mixed(self, requests: list[Any], run: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """Run every request in one call, each context tagged with its condition: the backend
        applies each batch row's ablations (:meth:`_row_ablations`), so batches fill across
        conditions instead of one short batch per condition. The tags are removed afterwards."""
        conditions = [self._condition(r) for r in requests]
        self._check_cache(set(conditions))
        self._condition_ablations = {c: self._ablations(c) for c in sorted(set(conditions))}
        given = [r.arguments for r in requests]
        for req, cond in zip(requests, conditions, strict=True):
            context, *rest = req.arguments
            req.arguments = (Conditioned(context, cond), *rest)
        try:
            return run(requests)
        finally:
            for req, arguments in zip(requests, given, strict=True):
                req.arguments = arguments
            self._condition_ablations = {}

    def _row_ablations(self, contexts: Any) -> list[Ablation] | None:
        """The ablations for one generation batch of tagged contexts; None outside
        :meth:`_mixed`. Inside it an untagged context stops the run: an lm-eval that rebuilt the
        context strings would otherwise generate every condition without its ablation."""
        if not getattr(self, "_condition_ablations", None):
            return None
        conditions = [getattr(c, "condition", None) for c in contexts]
        if None in conditions:
            raise RefusalEvalError(
                "lm-eval handed the model a context without its condition, so the batch's ablations "
                "are unknown",
                "pass mix_conditions=false in --model_args (one condition per batch)",
            )
        return by_row([self._condition_ablations[str(c)] for c in conditions])

    def _judged(self, requests: list[Any], answers: list[Any]) -> list[Any]:
        prompts = [prompt_of(r) for r in requests]
        judged = judge_texts(self.judge, prompts, [a or "" for a in answers])
        for req, text in zip(requests, judged, strict=True):  # for the run's summary
            task, doc_id = getattr(req, "task_name", None), getattr(req, "doc_id", None)
            if condition_of_task(task) is not None and isinstance(doc_id, int):
                self._verdicts.setdefault(str(task), {})[doc_id] = verdict_code(text.refused, text.outcome)
        return judged

    @functools.cached_property
    def _verdicts(self) -> dict[str, dict[int, str]]:
        """``{task: {doc_id: letter}}`` of every judged answer of a ``refusal_*`` task (a task
        with ``repeats`` keeps its last answer's letter; the shipped tasks answer once)."""
        return {}

    # --- provenance ---------------------------------------------------------------------------
    def run_info(self, device: str) -> RunInfo:
        """The provenance of this run (written into lm-eval's results ``config``)."""
        from refusal_eval import __version__

        plan = self.plan if self.saes is not None and self.plan_arg != "none" else None
        plan_fields: dict[str, Any] = (
            {
                "plan": display_path(plan.path),
                "plan_hash": plan.hash,
                "plan_layer": plan.layer,
                "plan_layers": plan.sae_layers,
                "feature_counts": plan.counts(),
                "dormant": plan.dormant_count,
                "hydra": plan.hydra_count,
                "first_token_kl": plan.first_token_kl,
            }
            if plan
            else {}
        )
        return RunInfo(
            model=str(self.chat.info.get("name", self.chat.spec)),
            judge=str(self.judge.spec),
            device=device,
            version=__version__,
            model_revision=self.chat.revision,
            judge_error_rates=_error_rates(str(self.judge.spec)),
            judge_info=getattr(self.judge, "provenance", None) or None,
            batch_size=self.batch_size_used,
            mix_conditions=self.mix_conditions,
            chat_template={
                "sha256": hashlib.sha256(str(self.tokenizer.chat_template or "").encode()).hexdigest(),
                "applied_by": sorted(self.template_applied_by) or ["-"],
                # the text, for lm-eval's own top-level chat_template when lm-eval did not apply it
                "text": str(self.tokenizer.chat_template or "") or None,
            },
            saes=self.saes.describe() if self.saes is not None else None,
            ablate_positions=self.ablate_positions,
            **plan_fields,
            # one process's verdicts are the whole run's only without data parallelism (lm-eval
            # asks rank 0 alone for this record): else the report reads --log_samples
            verdicts=(encode_verdicts(self._verdicts) or None) if _world_size(self) == 1 else None,
        )

    def refusal_eval_info(self, device: str) -> dict[str, Any]:
        """Our provenance keys, and lm-eval's ``model_sha`` made true (the GGUF's sha256 for the
        offline models, not ``""``). lm-eval writes its ``device`` (what was asked for) after
        this, so the device that ran is ``refusal_eval_device``."""
        return {
            "model_sha": self.chat.revision or "",
            **self.run_info(device).to_config(),
        }


def _world_size(lm: Any) -> int:
    try:
        return int(getattr(lm, "world_size", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _error_rates(spec: str) -> dict[str, Any] | None:
    from refusal_eval.judges.correction import load_error_rates

    rates = load_error_rates(spec)
    return rates.provenance() if rates else None
