"""Fitting the refusal judges' heads on the human-labelled XSTest completions (lab code: what
``refusal-eval train-judge`` and the judge measurements run; the judges themselves only read the
head files this writes)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...data import XSTEST_COMPLETION_FILES, xstest_completions
from ..embedding import ENCODER_HUB_ID, HEAD_FORMAT, EmbeddingJudge, MiniLM
from ..hybrid import DEFAULT_C, MIN_SCALE, encoder_dim, feature_names, hybrid_features, predict
from ..hybrid import HEAD_FORMAT as HYBRID_FORMAT

REFUSAL_LABELS = ("2_full_refusal", "3_partial_refusal")


def labelled_completions() -> list[dict[str, Any]]:
    """Every human-labelled XSTest completion: id, source file, prompt, completion, refused."""
    rows = []
    for source in XSTEST_COMPLETION_FILES:
        for i, r in enumerate(xstest_completions(source)):
            rows.append(
                {
                    "id": f"{source}/{i}",
                    "source": source,
                    "prompt": r["prompt"],
                    "completion": r["completion"],
                    "refused": r["final_label"] in REFUSAL_LABELS,
                }
            )
    return rows


def heldout_split(rows: Sequence[dict[str, Any]], frac: float = 0.3, seed: int = 0) -> set[str]:
    """Stratified (by label and source) held-out ids, deterministic."""
    rng = random.Random(seed)
    held: set[str] = set()
    groups: dict[tuple[str, bool], list[str]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["refused"]), []).append(r["id"])
    for key in sorted(groups):
        ids = sorted(groups[key])
        rng.shuffle(ids)
        held.update(ids[: round(len(ids) * frac)])
    return held


def check_sample(heldout: set[str], n: int = 60, seed: int = 0) -> list[str]:
    """A fixed sample of held-out ids whose accuracy the head file records (a quick self-test)."""
    return sorted(random.Random(seed).sample(sorted(heldout), min(n, len(heldout))))


def sample_accuracy(judge: EmbeddingJudge, ids: Sequence[str]) -> float:
    rows = {r["id"]: r for r in labelled_completions()}
    picked = [rows[i] for i in ids]
    verdict = judge([r["prompt"] for r in picked], [r["completion"] for r in picked])
    hits = sum(bool(v == r["refused"]) for v, r in zip(verdict.refused, picked, strict=True))
    return hits / len(picked)


def train_head(encoder: MiniLM, *, c: float = 1.0, seed: int = 0) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    rows = labelled_completions()
    held = heldout_split(rows, seed=seed)
    x = encoder.encode([r["completion"] for r in rows]).numpy()
    y = [int(r["refused"]) for r in rows]
    train = [i for i, r in enumerate(rows) if r["id"] not in held]
    test = [i for i, r in enumerate(rows) if r["id"] in held]
    clf = LogisticRegression(C=c, max_iter=5000).fit(x[train], [y[i] for i in train])
    pred = clf.predict(x[test])
    acc = float(sum(int(p) == y[i] for p, i in zip(pred, test, strict=True)) / len(test))
    head = {
        "format": HEAD_FORMAT,
        "version": 1,
        "encoder": ENCODER_HUB_ID,
        "input": "completion text only, max 256 tokens",
        "coef": [round(float(v), 7) for v in clf.coef_[0]],
        "intercept": round(float(clf.intercept_[0]), 7),
        "c": c,
        "seed": seed,
        "trained_on": {
            "files": list(XSTEST_COMPLETION_FILES),
            "n": len(train),
            "positive": "full or partial refusal",
        },
        "heldout": {
            "n": len(test),
            "accuracy": round(acc, 6),
            "ids_sha256": hashlib.sha256("\n".join(sorted(held)).encode()).hexdigest(),
        },
    }
    ids = check_sample(held, seed=seed)
    head["check_sample"] = {"ids": ids, "accuracy": sample_accuracy(EmbeddingJudge(encoder, head), ids)}
    return head


def fit_logistic(x: np.ndarray, y: Sequence[bool], c: float = DEFAULT_C) -> dict[str, Any]:
    """Standardise ``x`` and fit an L2 logistic regression; returns the head's parameters."""
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(0)
    # near-constant columns (three MiniLM dimensions sit at ~1e-9) would be blown up into noise
    scale = np.maximum(x.std(0), MIN_SCALE)
    clf = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, [int(v) for v in y])
    return {
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": clf.coef_[0].tolist(),
        "intercept": float(clf.intercept_[0]),
        "c": c,
    }


def train_hybrid_head(
    encoder: MiniLM, rows: Sequence[dict[str, Any]], c: float = DEFAULT_C
) -> dict[str, Any]:
    """Fit the shipped head on every labelled row; record a check sample the tests re-score."""
    x = hybrid_features(encoder, [r["completion"] for r in rows])
    gold = [bool(r["refused"]) for r in rows]
    params = fit_logistic(x, gold, c)
    p = predict(params, x)
    check = list(range(0, len(rows), max(1, len(rows) // 40)))
    return {
        "format": HYBRID_FORMAT,
        "version": 1,
        "encoder": ENCODER_HUB_ID,
        "features": feature_names(encoder_dim(x)),
        **{k: [round(v, 7) for v in params[k]] for k in ("mean", "scale", "coef")},
        "intercept": round(params["intercept"], 7),
        "c": c,
        "trained_on": {
            "files": sorted({str(r["source"]) for r in rows}),
            "n": len(rows),
            "positive": "full or partial refusal",
            "training_accuracy": round(float(np.mean((p >= 0.5) == np.array(gold))), 6),
        },
        "check_sample": {
            "ids": [rows[i]["id"] for i in check],
            "probabilities": [round(float(p[i]), 5) for i in check],
        },
    }
