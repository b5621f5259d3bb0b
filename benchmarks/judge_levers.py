"""Leave-one-model-out F1 of each lever tried for a better default judge (docs/judges/README.md).

Rules (nothing fitted) and logistic heads over feature blocks, each head refitted per fold on the
two training files, exactly as ``refusal-eval judge-eval --by-model`` does for ``hybrid``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/judge_levers.py
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from refusal_eval.judges.cues import FEATURE_NAMES, cue_features, cue_refusal, soft_opening
from refusal_eval.judges.embedding import MiniLM
from refusal_eval.judges.hybrid import DEFAULT_C, first_line, predict
from refusal_eval.judges.keyword import keyword_refusal, late_refusal
from refusal_eval.judges.lab.heads import fit_logistic, labelled_completions

ROWS = labelled_completions()
GOLD = np.array([bool(r["refused"]) for r in ROWS])
model_of = np.array([r["source"] for r in ROWS])
MODELS = sorted(set(model_of))


def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = float((pred & gold).sum())
    return 2 * tp / float(pred.sum() + gold.sum())


def show(name: str, pred: np.ndarray) -> None:
    per = [f1(pred[model_of == m], GOLD[model_of == m]) for m in MODELS]
    cells = " | ".join(f"{v:.3f}" for v in per)
    print(f"| {name} | {f1(pred, GOLD):.3f} | {cells} | {min(per):.3f} |")


def rule(name: str, fn: Callable[[str], bool]) -> None:
    show(name, np.array([fn(r["completion"]) for r in ROWS]))


def head(name: str, x: np.ndarray, c: float = DEFAULT_C) -> None:
    pred = np.zeros(len(ROWS), bool)
    for m in MODELS:
        train, test = model_of != m, model_of == m
        pred[test] = predict(fit_logistic(x[train], list(GOLD[train]), c), x[test]) >= 0.5
    show(name, pred)


def main() -> None:
    encoder = MiniLM()
    answers = [r["completion"] for r in ROWS]
    answer = encoder.encode(answers).numpy().astype(np.float64)
    first = encoder.encode([first_line(a) for a in answers]).numpy().astype(np.float64)
    prompt = encoder.encode([r["prompt"] for r in ROWS]).numpy().astype(np.float64)
    cues = np.array([cue_features(a) for a in answers])
    cosine = (answer * prompt).sum(1, keepdims=True)
    no_drafted = [i for i, n in enumerate(FEATURE_NAMES) if not n.startswith(("lecture", "premise"))]

    print(f"| lever | pooled F1 | {' | '.join(MODELS)} | worst |")
    print("| --- | --- |" + " --- |" * len(MODELS) + " --- |")
    rule("keyword (stock openings)", keyword_refusal)
    rule("keyword + late refusal (whole answer)", lambda t: keyword_refusal(t) or late_refusal(t))
    rule("keyword + soft openings", lambda t: keyword_refusal(t) or soft_opening(t))
    rule("cues (soft openings + cues in first 2 sentences)", cue_refusal)
    head("cue features only, logistic (C=1)", cues, 1.0)
    head("embedding: answer MiniLM (C=0.03)", answer)
    head("+ first-line MiniLM", np.hstack([answer, first]))
    head("+ cue features (= hybrid)", np.hstack([answer, first, cues]))
    head("hybrid without lecture/premise cues", np.hstack([answer, first, cues[:, no_drafted]]))
    head("hybrid + prompt-answer cosine", np.hstack([answer, first, cues, cosine]))
    for c in (0.01, 0.1, 0.3):
        head(f"hybrid, C={c}", np.hstack([answer, first, cues]), c)


if __name__ == "__main__":
    main()
