"""Leave-one-model-out evaluation of refusal judges.

The three human-labelled XSTest completion files come from three different models (Llama-2
original, Llama-2 new, Mistral with a guard prompt). A judge fitted on completions of some models
is scored on the completions of the model it never saw, one fold per file; the pooled row joins
the folds' predictions. What is refitted per fold (:func:`fitter_for`):

- rules (``cues``, ``keyword``, ``prefix:``): nothing, they are scored per file;
- ``embedding`` and ``hybrid``: their logistic head, on the two training files;
- ``llm:``: its yes/no threshold, on the training files (:func:`threshold_fitter`); its scores
  are computed once and cached per row (:func:`cached_scores`, resumable).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import RefusalEvalError
from ..agreement import Agreement, agreement, auc


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


def sample_per_source(rows: Sequence[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded random ``n`` rows of each source, in the original order (the XSTest files are
    sorted by prompt type, so their first rows are no sample)."""
    rng = random.Random(seed)
    keep: set[int] = set()
    for source in sorted({str(r["source"]) for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["source"] == source]
        keep.update(rng.sample(idx, min(n, len(idx))))
    return [r for i, r in enumerate(rows) if i in keep]


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
    folds = lomo_folds(rows)
    if len(folds) < 2:
        raise RefusalEvalError(
            f"leave-one-model-out needs completions of at least two models, got {len(folds)}",
            "label completions of another model (a `source` per row) or drop --by-model",
        )
    for fold in folds:
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


def logistic_fitter(
    features: Any, index: dict[str, int], refit: Callable[[Any, list[bool]], Callable[[Any], Any]]
) -> Fitter:
    """Refit a head on each fold's training rows (``features``: precomputed feature rows,
    ``index``: row id -> feature row, ``refit(x, y)`` -> a function giving P(refused) of rows)."""

    def fit(train: Rows) -> Scorer:
        prob = refit(features[[index[r["id"]] for r in train]], [bool(r["refused"]) for r in train])

        def score(test: Rows) -> tuple[list[bool], list[float]]:
            p = prob(features[[index[r["id"]] for r in test]])
            return [bool(v >= 0.5) for v in p], [float(v) for v in p]

        return score

    return fit


def _embedding_head(c: float = 1.0) -> Callable[[Any, list[bool]], Callable[[Any], Any]]:
    """The ``embedding`` judge's head: plain L2 logistic regression on the MiniLM embedding."""
    from sklearn.linear_model import LogisticRegression

    def refit(x: Any, y: list[bool]) -> Callable[[Any], Any]:
        clf = LogisticRegression(C=c, max_iter=5000).fit(x, [int(v) for v in y])
        return lambda rows: clf.predict_proba(rows)[:, 1]

    return refit


def _hybrid_head(c: float) -> Callable[[Any, list[bool]], Callable[[Any], Any]]:
    from ..hybrid import predict
    from .heads import fit_logistic

    def refit(x: Any, y: list[bool]) -> Callable[[Any], Any]:
        head = fit_logistic(x, y, c)
        return lambda rows: predict(head, rows)

    return refit


def best_threshold(scores: Sequence[float], gold: Sequence[bool]) -> float:
    """The refusal-score threshold (``refused = score >= t``) with the highest accuracy on
    ``(scores, gold)``; ties go to the threshold nearest 0.5. Grid: 0.01 .. 0.99."""
    grid = [i / 100 for i in range(1, 100)]

    def accuracy(t: float) -> float:
        return sum((s >= t) == g for s, g in zip(scores, gold, strict=True)) / max(len(gold), 1)

    return max(grid, key=lambda t: (accuracy(t), -abs(t - 0.5)))


def threshold_fitter(scores: dict[str, float]) -> Fitter:
    """A judge whose only fitted parameter is its threshold (``llm:``): refit it on each fold's
    training rows (``scores``: row id -> refusal score in [0, 1], computed once)."""

    def fit(train: Rows) -> Scorer:
        t = best_threshold([scores[r["id"]] for r in train], [bool(r["refused"]) for r in train])

        def score(test: Rows) -> tuple[list[bool], list[float]]:
            s = [scores[r["id"]] for r in test]
            return [v >= t for v in s], s

        return score

    return fit


def _row_key(row: dict[str, Any]) -> str:
    return hashlib.sha256(f"{row['prompt']}\x00{row['completion']}".encode()).hexdigest()[:20]


def cached_scores(
    path: Path,
    rows: Sequence[dict[str, Any]],
    compute: Callable[[list[str], list[str]], list[float]],
    *,
    chunk: int = 64,
) -> dict[str, float]:
    """Row id -> score, computed ``chunk`` rows at a time and saved after each chunk to ``path``
    (keyed by a hash of prompt and completion), so an interrupted run resumes where it stopped."""
    from ..._cache import atomic_write

    done: dict[str, float] = {}
    if path.is_file():
        try:
            done = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
        except (ValueError, AttributeError):
            done = {}  # unreadable: recompute (atomic writes make this a foreign file, not ours)
    todo = [r for r in rows if _row_key(r) not in done]
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        values = compute([r["prompt"] for r in part], [r["completion"] for r in part])
        done.update({_row_key(r): float(v) for r, v in zip(part, values, strict=True)})
        atomic_write(path, json.dumps(done, sort_keys=True))
    return {r["id"]: done[_row_key(r)] for r in rows}


def fitter_for(spec: str, rows: Sequence[dict[str, Any]]) -> tuple[Fitter, str]:
    """How ``spec`` is evaluated leave-one-model-out: (fitter, what is fitted per fold)."""
    from ..._cache import cache_dir
    from .._base import JudgeSpec, get_judge
    from ..embedding import MiniLM
    from ..hybrid import DEFAULT_C, hybrid_features, load_hybrid_head
    from ..llm import LLMJudge

    parsed = JudgeSpec.parse(spec)
    name, arg = parsed.name, parsed.arg or ""
    index = {r["id"]: i for i, r in enumerate(rows)}
    if spec == "embedding":
        features = MiniLM().encode([r["completion"] for r in rows]).numpy()
        return logistic_fitter(features, index, _embedding_head()), "head refitted per fold"
    if name == "hybrid":
        c = float(load_hybrid_head(arg).get("c", DEFAULT_C)) if arg else DEFAULT_C
        x = hybrid_features(MiniLM(), [r["completion"] for r in rows])
        return logistic_fitter(x, index, _hybrid_head(c)), f"head refitted per fold (C={c:g})"
    judge = get_judge(spec)
    if isinstance(judge, LLMJudge):
        safe = hashlib.sha256(f"{spec}\x00{judge.template}".encode()).hexdigest()[:16]
        path = cache_dir("judges", "scores") / f"{name}-{safe}.json"

        def refusal_scores(prompts: list[str], answers: list[str]) -> list[float]:
            return [1 - p for p in judge.p_yes(prompts, answers)]

        return threshold_fitter(cached_scores(path, rows, refusal_scores)), "threshold refitted per fold"
    return fixed_judge(judge), "nothing to fit"
