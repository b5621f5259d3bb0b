"""Leave-one-model-out evaluation of refusal judges.

The three human-labelled XSTest completion files come from three different models (Llama-2
original, Llama-2 new, Mistral with a guard prompt). A judge fitted on completions of some models
is scored on the completions of the model it never saw, one fold per file; the pooled row joins
the folds' predictions. Judges without fitted parameters (``keyword``, ``prefix:``) are simply
scored per file; the ``embedding`` judge's logistic head is refitted on the two training files
of each fold; other judges (``llm:``) keep their shipped threshold, and say so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .agreement import Agreement, agreement, auc


@dataclass(frozen=True)
class Fold:
    held_out: str  # the model (completion file) scored
    train: tuple[int, ...]  # row indices the judge may fit on
    test: tuple[int, ...]  # row indices it is scored on


def lomo_folds(rows: Sequence[dict[str, Any]]) -> list[Fold]:
    """One fold per source: train on every other source's rows, test on this one's."""
    sources = sorted({str(r["source"]) for r in rows})
    return [
        Fold(
            s,
            tuple(i for i, r in enumerate(rows) if r["source"] != s),
            tuple(i for i, r in enumerate(rows) if r["source"] == s),
        )
        for s in sources
    ]


Rows = list[dict[str, Any]]
Scorer = Callable[[Rows], tuple[list[bool], list[float]]]  # test rows -> (refused, scores)
Fitter = Callable[[Rows], Scorer]  # training rows -> scorer


@dataclass(frozen=True)
class LomoRow:
    judge: str
    held_out: str  # a source, or "pooled"
    agreement: Agreement
    auc: float
    fitting: str  # refitted per fold | nothing to fit | shipped parameters


def evaluate_lomo(judge: str, rows: Sequence[dict[str, Any]], fit: Fitter, *, fitting: str) -> list[LomoRow]:
    """Score ``judge`` on each held-out model and pooled over the folds."""
    out: list[LomoRow] = []
    pooled_pred: list[bool] = []
    pooled_score: list[float] = []
    pooled_gold: list[bool] = []
    for fold in lomo_folds(rows):
        score = fit([dict(rows[i]) for i in fold.train])
        test = [dict(rows[i]) for i in fold.test]
        pred, scores = score(test)
        gold = [bool(r["refused"]) for r in test]
        out.append(LomoRow(judge, fold.held_out, agreement(pred, gold), auc(scores, gold), fitting))
        pooled_pred += pred
        pooled_score += scores
        pooled_gold += gold
    out.append(
        LomoRow(judge, "pooled", agreement(pooled_pred, pooled_gold), auc(pooled_score, pooled_gold), fitting)
    )
    return out


def fixed_judge(call: Callable[[list[str], list[str]], Any]) -> Fitter:
    """A judge with nothing to fit: the same verdicts whatever the training rows."""

    def fit(_train: Rows) -> Scorer:
        def score(test: Rows) -> tuple[list[bool], list[float]]:
            v = call([r["prompt"] for r in test], [r["completion"] for r in test])
            return list(v.refused), list(v.scores)

        return score

    return fit


def embedding_fitter(features: Any, index: dict[str, int], c: float = 1.0) -> Fitter:
    """Refit the embedding judge's logistic head on each fold's training rows (``features``:
    precomputed MiniLM embeddings, ``index``: row id -> feature row)."""
    from sklearn.linear_model import LogisticRegression

    def fit(train: Rows) -> Scorer:
        clf = LogisticRegression(C=c, max_iter=5000)
        clf.fit(features[[index[r["id"]] for r in train]], [int(r["refused"]) for r in train])

        def score(test: Rows) -> tuple[list[bool], list[float]]:
            p = clf.predict_proba(features[[index[r["id"]] for r in test]])[:, 1]
            return [bool(v >= 0.5) for v in p], [float(v) for v in p]

        return score

    return fit
