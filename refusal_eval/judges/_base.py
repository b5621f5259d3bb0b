"""The judge interface, its registry (one instance per spec), and verdict-carrying answers."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, get_args

from .._cache import cache_root
from .._registry import Registry
from ..config import DEFAULT_JUDGE
from ..errors import RefusalEvalError

#: what an answer to a harmful request did (docs/judges/rubric.md): declined; really attempted
#: the requested behaviour (HarmBench's "instance of the behavior"); on topic but harmless,
#: opposite or generic; no answer at all (empty, echo, loop, off-topic, bare announcement)
Outcome = Literal["refusal", "harmful", "deflection", "degenerate"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


@dataclass(frozen=True)
class Judgement:
    refused: list[bool]
    scores: list[float]
    #: empty / degenerate answers (flagged separately; not counted as refusals)
    degenerate: list[bool]
    #: one of :data:`OUTCOMES` per answer; empty from a judge that sees refusals only
    #: (``judge.sees_outcomes`` is False): it cannot tell harmful from deflection
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass(frozen=True)
class JudgeSpec:
    """A judge as it is named on the command line, in ``model_args`` and in results: ``name`` or
    ``name:arg`` (``llm:SPEC@0.3``, ``prefix:A|B``, ``outcome:rules``, ``harmbench:mistral``).
    :meth:`parse` is the one parser; ``str(spec)`` gives the text back exactly."""

    name: str
    arg: str | None = None  # None: no ``:`` was written

    @classmethod
    def parse(cls, spec: str | JudgeSpec) -> JudgeSpec:
        """The parsed spec, checked to name a registered judge (nothing is built or loaded)."""
        if isinstance(spec, JudgeSpec):
            return spec
        name, sep, arg = str(spec).partition(":")
        if name not in _JUDGES:
            raise RefusalEvalError(f"unknown judge {spec!r}", f"use one of {_JUDGES.names()}")
        return cls(name, arg if sep else None)

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name}:{self.arg}"


class Judge(Protocol):
    #: what built it (:func:`get_judge` sets it): recorded with every verdict and in results
    spec: JudgeSpec

    @property
    def sees_outcomes(self) -> bool:
        """Whether :attr:`Judgement.outcomes` is filled (else only refused / degenerate are)."""
        ...

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Judgement: ...


@dataclass
class RuleJudge:
    """A judge that is a rule over one answer: refused iff ``rule(answer)`` (score 0 or 1); the
    base of ``keyword``, ``prefix:`` and ``cues``."""

    sees_outcomes: ClassVar[bool] = False  # refused / degenerate only

    spec: JudgeSpec
    rule: Callable[[str], bool]

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Judgement:
        from .degenerate import degenerate_flags

        refused = [self.rule(r) for r in responses]
        return Judgement(refused, [float(r) for r in refused], degenerate_flags(prompts, responses))


_JUDGES: Registry[Callable[[str], Judge]] = Registry("judge")


def register_judge(name: str) -> Callable[[Callable[[str], Judge]], Callable[[str], Judge]]:
    """Register a judge factory; it receives :attr:`JudgeSpec.arg` (the text after ``name:``, or
    ``""``)."""
    return _JUDGES.register(name)


class JudgedText(str):
    """A model's answer that carries its judge's verdict, so that an lm-eval task scores it with
    the judge the *model* was given (``sae_ablated ... judge=``) and no process-wide setting.

    lm-eval passes the string from ``generate_until`` to the task's ``process_results`` as is;
    anything that turns it back into a plain ``str`` (a response cache, another backend) makes
    the task judge it itself with :func:`fallback_judge_spec`.
    """

    refused: bool
    degenerate: bool
    judge: str
    outcome: Outcome | None  # None: the judge sees refusals only

    def __new__(
        cls, text: str, *, refused: bool, degenerate: bool, judge: str, outcome: Outcome | None = None
    ) -> JudgedText:
        out = super().__new__(cls, text)
        out.refused, out.degenerate, out.judge, out.outcome = refused, degenerate, judge, outcome
        return out

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (lm-eval's multiprocessing) keep the verdict
        return (_judged, (str(self), self.refused, self.degenerate, self.judge, self.outcome))


def _judged(
    text: str, refused: bool, degenerate: bool, judge: str, outcome: Outcome | None = None
) -> JudgedText:
    return JudgedText(text, refused=refused, degenerate=degenerate, judge=judge, outcome=outcome)


def judge_texts(judge: Judge, prompts: Sequence[str], responses: Sequence[str]) -> list[JudgedText]:
    """Judge ``responses`` in one batch and wrap each with its verdict and the judge's spec."""
    verdict = judge(prompts, responses)
    spec = str(judge.spec)
    outcomes: Sequence[Outcome | None] = verdict.outcomes or [None] * len(responses)
    return [
        JudgedText(r, refused=bool(ref), degenerate=bool(deg), judge=spec, outcome=out)
        for r, ref, deg, out in zip(responses, verdict.refused, verdict.degenerate, outcomes, strict=True)
    ]


def fallback_judge_spec() -> str:
    """The judge for answers that come without a verdict: ``REFUSAL_EVAL_JUDGE`` or the default."""
    return os.environ.get("REFUSAL_EVAL_JUDGE", DEFAULT_JUDGE)


def judge_file(name: str) -> Path:
    """A judge data file (``embedding_head.json``, ``llm_thresholds.json``, ``error_rates.json``):
    the user's copy in ``<cache>/judges/`` (what train-judge / calibrate-judge write) wins over the
    copy shipped in the package, which is never written."""
    user = user_judge_file(name)
    if user.is_file():
        return user
    return Path(str(resources.files("refusal_eval") / "data" / "judges" / name))


def read_head(path: str | Path | None, name: str, fmt: str, fix: str) -> dict[str, Any]:
    """A judge's head JSON (``path``, else :func:`judge_file` ``name``), checked for its format;
    any failure names ``fix``."""
    import json

    src = Path(path) if path else judge_file(name)
    try:
        head = json.loads(src.read_text())
    except (OSError, ValueError) as exc:
        raise RefusalEvalError(f"cannot read the judge head {src}: {exc}", fix) from None
    if not isinstance(head, dict) or head.get("format") != fmt:
        raise RefusalEvalError(f"{src} is not a {fmt} file", fix)
    return head


def user_judge_file(name: str) -> Path:
    return cache_root() / "judges" / name


_INSTANCES: dict[str, Judge] = {}


def get_judge(spec: str | JudgeSpec = DEFAULT_JUDGE) -> Judge:
    """The judge for ``spec``, built once per spec (an ``llm:`` judge loads its model once); it
    carries its parsed spec as ``judge.spec``."""
    parsed = JudgeSpec.parse(spec)
    key = str(parsed)
    if key not in _INSTANCES:
        judge = _JUDGES.get(parsed.name)(parsed.arg or "")
        judge.spec = parsed
        _INSTANCES[key] = judge
    return _INSTANCES[key]
