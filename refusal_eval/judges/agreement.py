"""How wrong is a judge? Agreement with human labels, and error-corrected refusal rates.

- :func:`agreement`: accuracy, precision, recall (sensitivity), specificity and F1 of predicted
  vs human refusal labels, each with a percentile bootstrap CI (vectorised over resamples).
- :func:`rogan_gladen`: the prevalence estimate corrected for a judge's sensitivity ``se`` and
  specificity ``sp``: ``(raw + sp - 1) / (se + sp - 1)``, clipped to [0, 1]
  (Rogan & Gladen 1978).
- intervals for corrected rates, with error rates measured leave-one-model-out:
  :mod:`.correction`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


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
    """Area under the ROC curve of ``scores`` for ``gold`` (sklearn; NaN without both classes)."""
    from sklearn.metrics import roc_auc_score

    if len(set(gold)) < 2:
        return float("nan")
    return float(roc_auc_score(list(gold), list(scores)))


def bootstrap_metrics(
    pred: Sequence[bool], gold: Sequence[bool], *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, tuple[float, float]]:
    """Percentile CIs of every :func:`metrics` value over ``n_boot`` resamples, vectorised: the
    confusion counts of all resamples at once (a resample whose metric is undefined is dropped)."""
    p, g = np.asarray(pred, dtype=bool), np.asarray(gold, dtype=bool)
    if len(g) == 0:
        return {k: (math.nan, math.nan) for k in ("accuracy", "precision", "recall", "specificity", "f1")}
    idx = np.random.default_rng(seed).integers(0, len(g), size=(n_boot, len(g)))
    pp, gg = p[idx], g[idx]
    tp, fp = (pp & gg).sum(1), (pp & ~gg).sum(1)
    fn, tn = (~pp & gg).sum(1), (~pp & ~gg).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        values = {
            "accuracy": (tp + tn) / len(g),
            "precision": precision,
            "recall": recall,
            "specificity": tn / (tn + fp),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }
    out = {}
    for key, v in values.items():
        v = v[np.isfinite(v)]
        out[key] = (
            (float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2)))
            if v.size
            else (math.nan, math.nan)
        )
    return out


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
    ci = bootstrap_metrics(pred, gold, n_boot=n_boot, seed=seed)
    return Agreement(len(gold), sum(gold), **point, ci={k: ci[k] for k in point})


def rogan_gladen(raw: float, sensitivity: float, specificity: float) -> float:
    denom = sensitivity + specificity - 1
    if denom <= 0:
        return float("nan")  # a judge no better than chance cannot be corrected
    return min(1.0, max(0.0, (raw + specificity - 1) / denom))
