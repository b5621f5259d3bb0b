"""The run vocabulary: the benchmarks, the task names built from a benchmark and a condition, and
the provenance record the lm-eval models write into a results file and the report reads back.

Every other module imports these; none builds or parses ``refusal_<benchmark>_<condition>``
itself. Adding a benchmark is one :class:`Benchmark` line here (then
``python tasks/refusal_ablation/_generate_configs.py`` writes its task YAMLs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Self, get_args

from .conditions import CONDITIONS

BenchmarkKind = Literal["harmful", "over_refusal", "harmless"]
#: the shared task template of each kind (tasks/refusal_ablation/_<kind>_template_yaml)
TEMPLATES: dict[BenchmarkKind, str] = {
    "harmful": "_harmful_template_yaml",
    "over_refusal": "_xstest_template_yaml",
    "harmless": "_harmless_template_yaml",
}


@dataclass(frozen=True)
class HubSource:
    """Where real users can load a benchmark's public copy (``--metadata '{"data_source": "hub"}'``)."""

    id: str
    config: str | None
    split: str
    text: str  # the prompt column
    category: str | None  # the category column, if any
    only: tuple[tuple[str, Any], ...] = ()  # (column, value) every kept row has


@dataclass(frozen=True)
class Benchmark:
    name: str  # the task-name part: refusal_<name>_<condition>
    kind: BenchmarkKind
    shipped: str  # the prompt set shipped in refusal_eval.data
    hub: HubSource
    limit: int | None = None  # prompts drawn (seed 0) from the set; None: all

    @property
    def template(self) -> str:
        return TEMPLATES[self.kind]


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "jbb",
        "harmful",
        "jbb",
        HubSource("JailbreakBench/JBB-Behaviors", "behaviors", "harmful", "Goal", "Category"),
    ),
    Benchmark(
        "harmbench",
        "harmful",
        "harmbench_test",
        HubSource("walledai/HarmBench", "standard", "train", "prompt", "category"),
    ),
    Benchmark(
        "strongreject",
        "harmful",
        "strongreject",
        HubSource("walledai/StrongREJECT", None, "train", "prompt", "category"),
    ),
    Benchmark(
        "advbench", "harmful", "advbench", HubSource("walledai/AdvBench", None, "train", "prompt", None)
    ),
    Benchmark(
        "xstest_safe",
        "over_refusal",
        "xstest_safe",
        HubSource("walledai/XSTest", None, "test", "prompt", "type", (("label", "safe"),)),
    ),
    Benchmark(
        "alpaca",
        "harmless",
        "harmless_test",
        HubSource("tatsu-lab/alpaca", None, "train", "instruction", None, (("input", ""),)),
        limit=100,
    ),
)
BY_NAME = {b.name: b for b in BENCHMARKS}
HARMFUL = tuple(b.name for b in BENCHMARKS if b.kind == "harmful")
HARMLESS = tuple(b.name for b in BENCHMARKS if b.kind != "harmful")
#: the one benchmark of each harmless kind the report reads: over-refusal (XSTest safe) and
#: harmless compliance (Alpaca)
OVER_REFUSAL = next(b.name for b in BENCHMARKS if b.kind == "over_refusal")
COMPLIANCE = next(b.name for b in BENCHMARKS if b.kind == "harmless")
assert set(get_args(BenchmarkKind)) == set(TEMPLATES)

PREFIX = "refusal_"
GROUP = "refusal_ablation"
CROSS_ENTROPY = "ce"  # refusal_ce_<condition>: bits per byte on harmless text
LENGTHS = (32, 128, 256)  # refusal_length_<n>_<condition>: delayed refusals at n new tokens
#: every benchmark part a shipped task name can carry
TASK_PARTS = (*BY_NAME, CROSS_ENTROPY, *(f"length_{n}" for n in LENGTHS))


def task_name(benchmark: str, condition: str) -> str:
    """``task_name("jbb", "sae_fm")`` -> ``refusal_jbb_sae_fm``."""
    return f"{PREFIX}{benchmark}_{condition}"


def harmful_group(condition: str) -> str:
    """The group pooling the harmful sets under one condition."""
    return f"{GROUP}_harmful_{condition}"


def condition_of_task(name: str | None) -> str | None:
    """The condition a ``refusal_*`` task name ends with (``refusal_jbb_sae_fm`` -> ``sae_fm``).
    Only names with the ``refusal_`` prefix opt in: a user task called ``wino_sae`` is not one."""
    if not name or not name.startswith(PREFIX):
        return None
    for cond in sorted(CONDITIONS, key=len, reverse=True):  # sae_fm before sae
        if name.endswith(f"_{cond}") and len(name) > len(PREFIX) + len(cond) + 1:
            return cond
    return None


def parse_task(name: str) -> tuple[str, str] | None:
    """``refusal_jbb_sae_fm`` -> (``jbb``, ``sae_fm``); None for any name that is not a shipped
    benchmark (or ``ce`` / ``length_<n>``) under a known condition, groups included."""
    cond = condition_of_task(name)
    if cond is None:
        return None
    part = name[len(PREFIX) : -len(cond) - 1]
    return (part, cond) if part in TASK_PARTS else None


def samples_task(filename: str) -> str | None:
    """The task of an lm-eval ``--log_samples`` file, ``samples_<task>_<date>.jsonl`` (the date
    has no underscore)."""
    if not (filename.startswith("samples_") and filename.endswith(".jsonl")) or "_" not in filename[8:]:
        return None
    return filename.removeprefix("samples_").rsplit("_", 1)[0]


class _Labelled(float):
    """A float that carries one string label through lm-eval: logged as the plain number,
    pickled whole (lm-eval gathers per-sample values across ranks)."""

    label: str

    def __new__(cls, value: float, label: str) -> Self:
        obj = super().__new__(cls, value)
        obj.label = label
        return obj

    def __reduce__(self) -> tuple[type[Self], tuple[float, str]]:
        return (type(self), (float(self), self.label))


class Scored(_Labelled):
    """A log-likelihood the ``sae_ablated`` models computed under ``condition``: the cross-entropy
    tasks check it, as the generation tasks check an answer's verdict."""

    @property
    def condition(self) -> str:
        return self.label


class Judged(_Labelled):
    """A per-answer verdict (1.0 refused, 0.0 not) that names the judge spec behind it: logged as
    a plain number (``--log_samples``), while the judge-corrected aggregation reads ``judge`` to
    find that judge's measured error rates."""

    @property
    def judge(self) -> str:
        return self.label


# --- provenance -----------------------------------------------------------------------------
KEY = "refusal_eval_"  # every provenance key in lm-eval's results["config"] starts so


@dataclass(frozen=True)
class RunInfo:
    """What ``sae_ablated`` / ``sae_ablated_vllm`` record in a results file's ``config`` (one key
    ``refusal_eval_<field>`` per field): the model, judge and device that ran, and the plan."""

    model: str
    judge: str
    device: str  # what ran (lm-eval's own "device" is what was asked for)
    version: str  # refusal_eval's
    model_revision: str | None = None
    judge_error_rates: dict[str, Any] | None = None  # behind every *_corrected metric
    judge_info: dict[str, Any] | None = None  # what a library judge ran (version, template hash)
    batch_size: int | str | None = None
    #: whether a generation batch held rows of several conditions (sae_ablated's default)
    mix_conditions: bool | None = None
    chat_template: dict[str, Any] | None = None  # sha256, applied_by
    saes: dict[str, Any] | None = None
    plan: str | None = None
    plan_hash: str | None = None
    plan_layer: int | None = None
    plan_layers: list[int] | None = None
    feature_counts: dict[str, int] | None = None
    dormant: int | None = None
    hydra: int | None = None
    first_token_kl: dict[str, float] | None = None
    #: which positions the latent edits touch: "all", or "content" (user + generated tokens)
    ablate_positions: str = "all"
    #: one letter per judged answer, by task and doc id (refusal_eval.report.summary.CODES)
    verdicts: dict[str, str] | None = None

    #: what the report needs to tie ablated rates to a plan
    REQUIRED = ("model", "plan_hash", "feature_counts")

    def to_config(self) -> dict[str, Any]:
        """The ``refusal_eval_*`` keys (the SAE and plan ones only when there is a plan)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None or f.default is dataclasses.MISSING or f.name in _ALWAYS:
                out[KEY + f.name] = value
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RunInfo | None:
        """The record in a results ``config``; None when it was not written by our models."""
        if not isinstance(config.get(KEY + "model"), str):
            return None
        given = {f.name: config[KEY + f.name] for f in dataclasses.fields(cls) if KEY + f.name in config}
        given.setdefault("judge", "?")  # very old runs did not say
        given.setdefault("device", "?")
        given.setdefault("version", "?")
        return cls(**given)

    @staticmethod
    def missing(config: dict[str, Any]) -> list[str]:
        """The required ``refusal_eval_*`` keys ``config`` lacks."""
        return [KEY + k for k in RunInfo.REQUIRED if KEY + k not in config]


_ALWAYS = ("model_revision", "judge_error_rates", "batch_size")  # written even when None
