"""Error rates that travel: a judge's sensitivity and specificity *on a model it was not fitted to*.

A refusal rate from a judge with sensitivity ``se`` and specificity ``sp`` is corrected with
Rogan-Gladen (:func:`.agreement.rogan_gladen`). Which ``se``/``sp``? A new user's model is a new
model, so we use the leave-one-model-out folds (:mod:`.lomo`): one confusion matrix per held-out
model. Their logits are pooled with a DerSimonian-Laird random-effects model, and the interval
of a corrected rate draws ``se`` and ``sp`` from the *predictive* distribution for a new model,
``logit ~ N(mean, var(mean) + tau^2)``: the between-model spread ``tau^2`` widens it, on top of the
sampling error of the rate itself (a Jeffreys Beta posterior).

The table ships as ``data/judges/error_rates.json`` (``refusal-eval judge-eval --by-model
--write-error-rates``); a user's copy in ``<cache>/judges/`` wins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RefusalEvalError
from ._base import judge_file
from .agreement import rogan_gladen

FORMAT = "refusal_eval.judge_error_rates"
VERSION = 2


@dataclass(frozen=True)
class Counts:
    """A judge's confusion matrix on one held-out model (refusal = positive)."""

    tp: int
    fn: int
    tn: int
    fp: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")


@dataclass(frozen=True)
class LogitPool:
    """Random-effects pool of proportions on the logit scale."""

    mean: float  # pooled logit
    var_mean: float  # variance of the pooled logit
    tau2: float  # between-model variance

    @property
    def point(self) -> float:
        return 1 / (1 + math.exp(-self.mean))

    @property
    def predictive_sd(self) -> float:
        """Standard deviation of a new model's logit."""
        return math.sqrt(self.var_mean + self.tau2)


def random_effects(successes: Sequence[int], totals: Sequence[int]) -> LogitPool:
    """DerSimonian-Laird pooling of ``successes[i] / totals[i]`` on the logit scale (0.5 added to
    each cell, so 0 and 1 stay finite)."""
    if not totals or any(t <= 0 for t in totals):
        raise RefusalEvalError("random-effects pooling needs at least one count per model", "check the table")
    y = [math.log((s + 0.5) / (t - s + 0.5)) for s, t in zip(successes, totals, strict=True)]
    v = [1 / (s + 0.5) + 1 / (t - s + 0.5) for s, t in zip(successes, totals, strict=True)]
    w = [1 / vi for vi in v]
    fixed = sum(wi * yi for wi, yi in zip(w, y, strict=True)) / sum(w)
    q = sum(wi * (yi - fixed) ** 2 for wi, yi in zip(w, y, strict=True))
    denom = sum(w) - sum(wi**2 for wi in w) / sum(w)
    tau2 = max(0.0, (q - (len(y) - 1)) / denom) if denom > 0 else 0.0
    w_re = [1 / (vi + tau2) for vi in v]
    mean = sum(wi * yi for wi, yi in zip(w_re, y, strict=True)) / sum(w_re)
    return LogitPool(mean, 1 / sum(w_re), tau2)


@dataclass(frozen=True)
class JudgeErrorRates:
    judge: str
    per_model: dict[str, Counts]
    source: str

    @property
    def sensitivity(self) -> LogitPool:
        c = self.per_model.values()
        return random_effects([x.tp for x in c], [x.tp + x.fn for x in c])

    @property
    def specificity(self) -> LogitPool:
        c = self.per_model.values()
        return random_effects([x.tn for x in c], [x.tn + x.fp for x in c])

    def provenance(self) -> dict[str, Any]:
        """What a results file records: which error rates corrected its rates, and from where."""
        se, sp = self.sensitivity, self.specificity
        return {
            "judge": self.judge,
            "source": self.source,
            "sensitivity": round(se.point, 6),
            "specificity": round(sp.point, 6),
            "sensitivity_tau2": round(se.tau2, 6),
            "specificity_tau2": round(sp.tau2, 6),
            "per_model": {
                m: {"sensitivity": round(c.sensitivity, 6), "specificity": round(c.specificity, 6)}
                for m, c in self.per_model.items()
            },
        }


def corrected_interval(
    refused: int,
    n: int,
    rates: JudgeErrorRates,
    *,
    n_draws: int = 4000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(corrected rate, lower, upper) of ``refused`` of ``n`` verdicts: the point uses the pooled
    ``se``/``sp``; the interval draws the raw rate (Jeffreys Beta) and a new model's ``se`` and
    ``sp`` (random-effects predictive distribution), percentile ``1 - alpha``."""
    if n <= 0:
        return float("nan"), float("nan"), float("nan")
    se, sp = rates.sensitivity, rates.specificity
    point = rogan_gladen(refused / n, se.point, sp.point)
    rng = np.random.default_rng(seed)
    raw = rng.beta(refused + 0.5, n - refused + 0.5, n_draws)
    se_d = 1 / (1 + np.exp(-rng.normal(se.mean, se.predictive_sd, n_draws)))
    sp_d = 1 / (1 + np.exp(-rng.normal(sp.mean, sp.predictive_sd, n_draws)))
    ok = se_d + sp_d > 1  # a draw no better than chance cannot be corrected
    if not ok.any():
        return point, float("nan"), float("nan")
    c = np.clip((raw[ok] + sp_d[ok] - 1) / (se_d[ok] + sp_d[ok] - 1), 0.0, 1.0)
    lo, hi = np.quantile(c, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)


def corrected_for(spec: str, refused: int, n: int) -> tuple[float, float, float] | None:
    """:func:`corrected_interval` with judge ``spec``'s recorded error rates (None: none measured)."""
    rates = load_error_rates(spec)
    return None if rates is None else corrected_interval(refused, n, rates)


def table_from_lomo(rows: Sequence[Any], source: str) -> dict[str, Any]:
    """The error-rates file from leave-one-model-out rows (:class:`.lomo.LomoRow`)."""
    judges: dict[str, Any] = {}
    for r in rows:
        if r.held_out == "pooled":
            continue
        a = r.agreement
        pos, neg = a.positives, a.n - a.positives
        tp, tn = round(a.recall * pos) if pos else 0, round(a.specificity * neg) if neg else 0
        entry = judges.setdefault(r.judge, {"source": source, "fitting": r.fitting, "per_model": {}})
        entry["per_model"][r.held_out] = {"tp": tp, "fn": pos - tp, "tn": tn, "fp": neg - tn}
    return {"format": FORMAT, "version": VERSION, "judges": judges}


def load_error_rates(spec: str) -> JudgeErrorRates | None:
    """The leave-one-model-out error rates recorded for judge ``spec`` (None: not measured)."""
    path = judge_file("error_rates.json")
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RefusalEvalError(
            f"cannot read the judge error rates {path}: {exc}",
            "delete it, or rewrite it: refusal-eval judge-eval --by-model --write-error-rates",
        ) from None
    if table.get("format") != FORMAT or table.get("version") != VERSION:
        raise RefusalEvalError(
            f"{path} is not a version-{VERSION} judge error-rates table",
            "rewrite it: refusal-eval judge-eval --by-model --write-error-rates",
        )
    entry = table["judges"].get(spec)
    return None if entry is None else rates_from_entry(spec, entry)


def rates_from_entry(spec: str, entry: dict[str, Any]) -> JudgeErrorRates:
    """One judge's entry of the error-rates file (its per-model confusion counts)."""
    try:
        per_model = {str(m): Counts(**c) for m, c in entry["per_model"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise RefusalEvalError(
            f"malformed error rates for judge {spec!r}: {exc}",
            "rewrite them: refusal-eval judge-eval --by-model --write-error-rates",
        ) from None
    return JudgeErrorRates(spec, per_model, str(entry.get("source", "?")))
