"""The judge interface, its registry (one instance per spec), and verdict-carrying answers."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from .._cache import cache_root
from .._registry import Registry
from ..config import DEFAULT_JUDGE
from ..errors import RefusalEvalError


@dataclass(frozen=True)
class Judgement:
    refused: list[bool]
    scores: list[float]
    #: empty / degenerate answers (flagged separately; not counted as refusals)
    degenerate: list[bool]


class Judge(Protocol):
    name: str

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> Judgement: ...


_JUDGES: Registry[Callable[[str], Judge]] = Registry("judge")


def register_judge(name: str) -> Callable[[Callable[[str], Judge]], Callable[[str], Judge]]:
    """Register a judge factory; it receives the text after ``name:`` (e.g. ``llm:SPEC``)."""
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

    def __new__(cls, text: str, *, refused: bool, degenerate: bool, judge: str) -> JudgedText:
        out = super().__new__(cls, text)
        out.refused, out.degenerate, out.judge = refused, degenerate, judge
        return out

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (lm-eval's multiprocessing) keep the verdict
        return (_judged, (str(self), self.refused, self.degenerate, self.judge))


def _judged(text: str, refused: bool, degenerate: bool, judge: str) -> JudgedText:
    return JudgedText(text, refused=refused, degenerate=degenerate, judge=judge)


def judge_texts(
    judge: Judge, spec: str, prompts: Sequence[str], responses: Sequence[str]
) -> list[JudgedText]:
    """Judge ``responses`` in one batch and wrap each with its verdict."""
    verdict = judge(prompts, responses)
    return [
        JudgedText(r, refused=bool(ref), degenerate=bool(deg), judge=spec)
        for r, ref, deg in zip(responses, verdict.refused, verdict.degenerate, strict=True)
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


def get_judge(spec: str = DEFAULT_JUDGE) -> Judge:
    """The judge for ``spec``, built once per spec (an ``llm:`` judge loads its model once)."""
    if spec not in _INSTANCES:
        name, _, arg = spec.partition(":")
        if name not in _JUDGES:
            raise RefusalEvalError(f"unknown judge {spec!r}", f"use one of {_JUDGES.names()}")
        _INSTANCES[spec] = _JUDGES.get(name)(arg)
    return _INSTANCES[spec]
