"""Refusal judges behind one interface, selected by name from a registry.

``judge(prompts, responses) -> Judgement`` with one boolean label (refused) and one score in
[0, 1] per response. ``keyword`` is the default: a curated refusal-phrase list matched on the
*opening* of the answer (a disclaimer followed by help is not a refusal).

Judges: ``keyword`` (default), ``prefix:A|B``, ``embedding`` (MiniLM + logistic head trained on
the human-labelled XSTest completions), ``llm:SPEC`` (a causal LM asked a refusal question).
:mod:`.agreement` measures each against human labels and corrects rates (Rogan-Gladen).
"""

from . import embedding, keyword, llm  # noqa: F401  (register the judges)
from ._base import (
    Judge,
    JudgedText,
    Judgement,
    fallback_judge_spec,
    get_judge,
    judge_texts,
    register_judge,
)
from .keyword import REFUSAL_OPENINGS, is_degenerate, keyword_refusal, late_refusal

__all__ = [
    "REFUSAL_OPENINGS",
    "Judge",
    "JudgedText",
    "Judgement",
    "fallback_judge_spec",
    "get_judge",
    "is_degenerate",
    "judge_texts",
    "keyword_refusal",
    "late_refusal",
    "register_judge",
]
