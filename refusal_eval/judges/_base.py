"""The judge interface, registry and the task-wide default judge."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

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


_JUDGES: dict[str, Callable[[str], Judge]] = {}


def register_judge(name: str) -> Callable[[Callable[[str], Judge]], Callable[[str], Judge]]:
    """Register a judge factory; it receives the text after ``name:`` (e.g. ``llm:SPEC``)."""

    def wrap(factory: Callable[[str], Judge]) -> Callable[[str], Judge]:
        _JUDGES[name] = factory
        return factory

    return wrap


_DEFAULT_JUDGE: dict[str, str] = {}


def set_default_judge(spec: str) -> None:
    """The judge lm-eval tasks use when scoring (the ``sae_ablated`` model sets it from
    ``judge=``; otherwise ``REFUSAL_EVAL_JUDGE`` or ``keyword``)."""
    get_judge(spec)
    _DEFAULT_JUDGE["spec"] = spec


_INSTANCES: dict[str, Judge] = {}


def current_judge_spec() -> str:
    return _DEFAULT_JUDGE.get("spec") or os.environ.get("REFUSAL_EVAL_JUDGE", "keyword")


def default_judge() -> Judge:
    spec = current_judge_spec()
    if spec not in _INSTANCES:
        _INSTANCES[spec] = get_judge(spec)
    return _INSTANCES[spec]


def get_judge(spec: str = "keyword") -> Judge:
    name, _, arg = spec.partition(":")
    if name not in _JUDGES:
        raise RefusalEvalError(f"unknown judge {spec!r}", f"use one of {sorted(_JUDGES)}")
    return _JUDGES[name](arg)
