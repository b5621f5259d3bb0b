"""Judges behind one interface, selected by name from a registry.

``judge(prompts, responses) -> Judgement`` with one boolean label (refused), one score in [0, 1]
and, from a judge that sees them (``judge.sees_outcomes``), one of :data:`OUTCOMES` per response:
refusal / harmful / deflection / degenerate (docs/judges/rubric.md). Partial refusals count as
refusals (the XSTest convention).

Judges: ``outcome`` (default: the four outcomes; refusal cues over the whole answer, a
bare-answer rule and a head fitted on labelled ablated answers), ``cues`` (stock and soft
refusal openings plus decline / policy cues in the first two sentences), ``keyword`` (stock
openings only; what the search verifies with), ``hybrid`` (MiniLM embeddings + cue features ->
logistic head), ``embedding`` (MiniLM -> logistic head), ``llm:SPEC`` (a causal LM asked whether
the answer complied), ``prefix:A|B``; and for users with the hub and a GPU the standard
classifiers ``harmbench``, ``strongreject``, ``llamaguard`` (through judgezoo) and ``qwen3guard``
(:mod:`.zoo`).
:mod:`.lomo` measures each leave-one-model-out against human labels, :mod:`.correction` turns
that into error rates for a new model and corrects rates (Rogan-Gladen) with intervals;
:mod:`.lab` holds the labelled ablated answers and measures outcome judges against them.
"""

from ..config import DEFAULT_JUDGE
from . import cues, embedding, hybrid, keyword, llm, outcome, zoo  # noqa: F401  (register the judges)
from ._base import (
    OUTCOMES,
    Judge,
    JudgedText,
    Judgement,
    JudgeSpec,
    Outcome,
    RuleJudge,
    fallback_judge_spec,
    get_judge,
    judge_texts,
    register_judge,
)
from .degenerate import is_degenerate
from .keyword import REFUSAL_OPENINGS, keyword_refusal, late_refusal

__all__ = [
    "DEFAULT_JUDGE",
    "OUTCOMES",
    "REFUSAL_OPENINGS",
    "Judge",
    "JudgeSpec",
    "JudgedText",
    "Judgement",
    "Outcome",
    "RuleJudge",
    "fallback_judge_spec",
    "get_judge",
    "is_degenerate",
    "judge_texts",
    "keyword_refusal",
    "late_refusal",
    "register_judge",
]
