"""``refusal-eval outcome-eval``: outcome judges against the labelled development set, leave one
model out and leave one condition out (docs/judges/outcomes.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._registry import command


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--judges",
        default="outcome,outcome:rules,cues,keyword",
        help="comma-separated judge specs; `outcome` refits its head per fold, a judge that sees "
        "refusals only counts every fluent non-refusal as harmful (the old flip reading)",
    )
    p.add_argument("--devset", default=None, help="labelled JSONL (default: the shipped set)")
    p.add_argument("--c", type=float, default=None, help="the outcome head's inverse L2 strength")
    p.add_argument("--out", default=None, help="also write the results as JSON")


def _rule_outcomes(spec: str, rows: list[dict[str, Any]]) -> list[str]:
    """A fixed judge's outcomes; a refusal-only judge: refusal / degenerate / else harmful."""
    from ..judges import get_judge

    v = get_judge(spec)([r["prompt"] for r in rows], [r["answer"] for r in rows])
    if v.outcomes:
        return list(v.outcomes)
    return [
        "refusal" if r else "degenerate" if d else "harmful"
        for r, d in zip(v.refused, v.degenerate, strict=True)
    ]


def evaluate(specs: list[str], rows: list[dict[str, Any]], c: float | None) -> list[dict[str, Any]]:
    from ..judges.lab.outcome_eval import out_of_fold
    from ..judges.lab.outcome_head import feature_subset, features_of, head_fitter
    from ..judges.outcome import DEFAULT_C, columns

    x = None
    out = []
    for spec in specs:
        fitted = spec == "outcome" or (
            spec.startswith("outcome:") and spec.removeprefix("outcome:") not in ("rules",)
        )
        if fitted:
            from ..judges.embedding import MiniLM

            x = features_of(MiniLM(), rows)[:, columns(feature_subset())] if x is None else x
            rule: list[str] = ["harmful"] * len(rows)
            fitter = head_fitter(DEFAULT_C if c is None else c)
        else:
            rule, fitter = _rule_outcomes(spec, rows), None
        for by in ("model", "condition", "prompt"):
            res = out_of_fold(rows, x if x is not None else _empty(len(rows)), fitter, rule, by)
            out.append({"judge": spec, "by": by, "result": res})
    return out


def _empty(n: int) -> Any:
    import numpy as np

    return np.zeros((n, 1))


@command("outcome-eval", "outcome judges vs the labelled ablated answers, leave one model / condition out")(
    _args
)
def outcome_eval_cmd(args: argparse.Namespace) -> int:
    from ..judges.lab.devset import load_devset

    rows = load_devset(args.devset)
    specs = [s.strip() for s in args.judges.split(",") if s.strip()]
    table = evaluate(specs, rows, args.c)
    print(f"outcome judges vs {len(rows)} labelled answers (harmful vs the other three outcomes)\n")
    print(
        "| judge | held out by | harmful precision | recall | F1 | refusal F1 | 4-way accuracy "
        "| worst flip error (>= 20 refused) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for t in table:
        r = t["result"]
        print(
            f"| {t['judge']} | {t['by']} | {r.harmful.precision:.3f} | {r.harmful.recall:.3f} | "
            f"{r.harmful.f1:.3f} | {r.refusal.f1:.3f} | {r.accuracy:.3f} | {r.worst_flip_error():.3f} |"
        )
    print("\nharmful flip rate per model x condition, labelled vs estimated (held out by model):\n")
    print("| judge | model | condition | n refused (labels) | labelled | estimated |")
    print("| --- | --- | --- | --- | --- | --- |")
    for t in table:
        if t["by"] != "model":
            continue
        for cell in t["result"].flips:
            print(
                f"| {t['judge']} | {cell.model} | {cell.condition} | {cell.n_refused_labelled} | "
                f"{cell.labelled:.3f} | {cell.estimated:.3f} |"
            )
    if args.out:
        payload = [
            {
                "judge": t["judge"],
                "held_out_by": t["by"],
                "harmful": {
                    **vars(t["result"].harmful),
                    "precision": t["result"].harmful.precision,
                    "recall": t["result"].harmful.recall,
                    "f1": t["result"].harmful.f1,
                },
                "refusal_f1": t["result"].refusal.f1,
                "accuracy": t["result"].accuracy,
                "confusion": t["result"].confusion,
                "flips": [vars(c) for c in t["result"].flips],
                "worst_flip_error": t["result"].worst_flip_error(),
                "per_fold_f1": {k: v.f1 for k, v in t["result"].per_fold.items()},
            }
            for t in table
        ]
        Path(args.out).write_text(json.dumps({"n": len(rows), "rows": payload}, indent=1) + "\n")
    return 0
