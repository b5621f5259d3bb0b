"""The outcome judge's levers, one at a time, on the labelled development set: which readers
(rules, hand features, answer embedding, prompt x answer embedding) and which L2 strength hold
leave one model out and leave one condition out.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/outcome_levers.py
"""

from __future__ import annotations

from refusal_eval.judges import get_judge
from refusal_eval.judges.embedding import MiniLM
from refusal_eval.judges.lab.devset import load_devset
from refusal_eval.judges.lab.outcome_eval import out_of_fold
from refusal_eval.judges.lab.outcome_head import feature_subset, features_of, head_fitter
from refusal_eval.judges.outcome import columns

VARIANTS = {
    "hand": (("hand",), 0.05),
    "hand+answer": (("hand", "answer_emb"), 0.05),
    "hand+pair": (("hand", "pair_emb"), 0.05),
    "hand+answer+pair C=0.01": (("hand", "answer_emb", "pair_emb"), 0.01),
    "hand+answer+pair C=0.05": (("hand", "answer_emb", "pair_emb"), 0.05),
    "hand+answer+pair C=0.2": (("hand", "answer_emb", "pair_emb"), 0.2),
}


def main() -> None:
    import sys

    rows = load_devset(sys.argv[1] if len(sys.argv) > 1 else None)
    x_all = features_of(MiniLM(), rows)
    rules = get_judge("outcome:rules")([r["prompt"] for r in rows], [r["answer"] for r in rows]).outcomes
    print("| variant | held out | harmful P | R | F1 | 4-way acc | worst flip error |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    splits = [by for by in ("model", "condition") if len({r[by] for r in rows}) > 1]
    for by in splits:
        res = out_of_fold(rows, x_all, None, list(rules), by)
        h = res.harmful
        print(f"| rules | {by} | {h.precision:.3f} | {h.recall:.3f} | {h.f1:.3f} | {res.accuracy:.3f} "
              f"| {res.worst_flip_error():.3f} |")  # fmt: skip
    for name, (groups, c) in VARIANTS.items():
        x = x_all[:, columns(feature_subset(groups))]
        for by in splits:
            res = out_of_fold(rows, x, head_fitter(c, feature_subset(groups)), ["harmful"] * len(rows), by)
            h = res.harmful
            print(f"| {name} | {by} | {h.precision:.3f} | {h.recall:.3f} | {h.f1:.3f} | {res.accuracy:.3f} "
                  f"| {res.worst_flip_error():.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
