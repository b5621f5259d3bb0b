"""How wrong is a judge? Agreement with human labels, and error-corrected refusal rates.

- :func:`agreement`: accuracy, precision, recall (sensitivity), specificity and F1 of predicted
  vs human refusal labels, each with a percentile bootstrap CI.
- :func:`rogan_gladen`: the prevalence estimate corrected for a judge's sensitivity ``se`` and
  specificity ``sp``: ``(raw + sp - 1) / (se + sp - 1)``, clipped to [0, 1]
  (Rogan & Gladen 1978).
- intervals for corrected rates, with error rates measured leave-one-model-out:
  :mod:`.correction`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass


def _counts(pred: Sequence[bool], gold: Sequence[bool]) -> tuple[int, int, int, int]:
    tp = sum(p and g for p, g in zip(pred, gold, strict=True))
    fp = sum(p and not g for p, g in zip(pred, gold, strict=True))
    fn = sum(g and not p for p, g in zip(pred, gold, strict=True))
    tn = len(gold) - tp - fp - fn
    return tp, fp, fn, tn


def metrics(pred: Sequence[bool], gold: Sequence[bool]) -> dict[str, float]:
    tp, fp, fn, tn = _counts(pred, gold)
    n = len(gold)

    def div(a: float, b: float) -> float:
        return a / b if b else float("nan")

    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    f1 = div(2 * tp, 2 * tp + fp + fn)
    return {
        "accuracy": div(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "specificity": div(tn, tn + fp),
        "f1": f1,
    }


def auc(scores: Sequence[float], gold: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for ``gold`` (Mann-Whitney, ties count half)."""
    pos = [s for s, g in zip(scores, gold, strict=True) if g]
    neg = [s for s, g in zip(scores, gold, strict=True) if not g]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def bootstrap(
    stat: Callable[[list[int]], float], n: int, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile CI of ``stat(indices)`` over ``n_boot`` resamples of ``range(n)``."""
    rng = random.Random(seed)
    values = sorted(
        v for v in (stat([rng.randrange(n) for _ in range(n)]) for _ in range(n_boot)) if v == v
    )  # drop NaN resamples
    if not values:
        return float("nan"), float("nan")
    lo = values[int(alpha / 2 * (len(values) - 1))]
    hi = values[int((1 - alpha / 2) * (len(values) - 1))]
    return lo, hi


@dataclass(frozen=True)
class Agreement:
    n: int
    positives: int
    accuracy: float
    precision: float
    recall: float
    specificity: float
    f1: float
    ci: dict[str, tuple[float, float]]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def agreement(pred: Sequence[bool], gold: Sequence[bool], *, n_boot: int = 1000, seed: int = 0) -> Agreement:
    point = metrics(pred, gold)

    def stat(key: str) -> Callable[[Sequence[int]], float]:
        return lambda idx: metrics([pred[i] for i in idx], [gold[i] for i in idx])[key]

    ci = {k: bootstrap(stat(k), len(gold), n_boot=n_boot, seed=seed) for k in point}
    return Agreement(len(gold), sum(gold), **point, ci=ci)


def rogan_gladen(raw: float, sensitivity: float, specificity: float) -> float:
    denom = sensitivity + specificity - 1
    if denom <= 0:
        return float("nan")  # a judge no better than chance cannot be corrected
    return min(1.0, max(0.0, (raw + specificity - 1) / denom))
