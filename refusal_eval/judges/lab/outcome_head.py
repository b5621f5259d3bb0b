"""Fit the ``outcome`` judge's head on the labelled development set, and the fitter the
leave-one-model-out / leave-one-condition-out evaluation refits per fold."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._base import OUTCOMES
from ..outcome import (
    DEFAULT_C,
    FEATURES_VERSION,
    HEAD_FORMAT,
    columns,
    decide,
    feature_names,
    fit_head,
    outcome_features,
    predict_proba,
)
from .devset import shipped_devset_path


def features_of(encoder: Any, rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Every outcome feature of every row, cached on disk by the rows' text (the MiniLM pass is
    most of an evaluation's time)."""
    from ..._cache import cache_dir

    texts = json.dumps([[r["prompt"], r["answer"]] for r in rows]).encode()
    key = hashlib.sha256(texts + f"{FEATURES_VERSION}/{len(feature_names())}".encode()).hexdigest()[:20]
    path = cache_dir("judges", "outcome_features") / f"{key}.npy"
    if path.is_file():
        return np.asarray(np.load(path))
    x = outcome_features(encoder, [r["prompt"] for r in rows], [r["answer"] for r in rows])
    np.save(path, x)
    return x


def head_fitter(
    c: float = DEFAULT_C, names: Sequence[str] | None = None
) -> Callable[[np.ndarray, list[str]], Callable[[np.ndarray], list[str]]]:
    """Fit a head per fold and decide as the judge does (:func:`~..outcome.decide`): the
    ``refusal_anywhere`` and ``bare`` columns of ``x`` (features ``names``, default
    :func:`feature_subset`) are the rules."""
    used = list(names or feature_subset())
    rule_col, bare_col = used.index("refusal_anywhere"), used.index("bare")

    def fit(x: np.ndarray, labels: list[str]) -> Callable[[np.ndarray], list[str]]:
        head = fit_head(x, labels, c)
        return lambda z: list(
            decide(
                predict_proba(head, z), [bool(v) for v in z[:, rule_col]], [bool(v) for v in z[:, bare_col]]
            )
        )

    return fit


#: the feature groups a head can read (``benchmarks/outcome_levers.py`` measures each). The
#: shipped head reads the hand features only: the embeddings raise F1 when the held-out rows share
#: prompts with the training rows (leave one condition out) and lower it on prompts the head has
#: not seen (docs/judges/outcomes.md), i.e. they memorise prompts
GROUPS = ("hand", "answer_emb", "pair_emb")
SHIPPED_GROUPS = ("hand",)


def feature_subset(groups: Sequence[str] = SHIPPED_GROUPS) -> list[str]:
    names = feature_names()
    emb = {g: [n for n in names if n.startswith(f"{g}_")] for g in ("answer_emb", "pair_emb")}
    hand = [n for n in names if not any(n in v for v in emb.values())]
    return [n for g in groups for n in (hand if g == "hand" else emb[g])]


def train_outcome_head(
    encoder: Any,
    rows: Sequence[dict[str, Any]],
    c: float = DEFAULT_C,
    groups: Sequence[str] = SHIPPED_GROUPS,
) -> dict[str, Any]:
    """The shipped head: fitted on every labelled row, with a check sample the tests re-score."""
    names = feature_subset(groups)
    x = features_of(encoder, rows)[:, columns(names)]
    labels = [str(r["label"]) for r in rows]
    params = fit_head(x, labels, c)
    p = predict_proba(params, x)
    check = list(range(0, len(rows), max(1, len(rows) // 40)))
    src = shipped_devset_path()
    return {
        "format": HEAD_FORMAT,
        "version": 1,
        "features_version": FEATURES_VERSION,
        "encoder": getattr(encoder, "source", "?"),
        "outcomes": list(OUTCOMES),
        "features": names,
        "mean": [round(v, 7) for v in params["mean"]],
        "scale": [round(v, 7) for v in params["scale"]],
        "coef": [[round(v, 7) for v in row] for row in params["coef"]],
        "intercept": [round(v, 7) for v in params["intercept"]],
        "c": c,
        "trained_on": {
            "n": len(rows),
            "labels": {o: labels.count(o) for o in OUTCOMES},
            "devset_sha256": hashlib.sha256(src.read_bytes()).hexdigest() if src.is_file() else None,
            "training_accuracy": round(
                float(np.mean([OUTCOMES[int(i)] == g for i, g in zip(p.argmax(1), labels, strict=True)])), 6
            ),
        },
        "check_sample": {
            "ids": [rows[i]["id"] for i in check],
            "probabilities": [[round(float(v), 5) for v in p[i]] for i in check],
        },
    }
