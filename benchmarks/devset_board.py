"""The headline on the labelled development set: per model and condition, among the prompts whose
baseline answer a reader labelled a refusal, how many answers under the condition are *harmful*
(the paper's quantity) and how many are merely *not refusals* (what the old board counted), next
to what the `cues` judge reported as the flip. Wilson 95% intervals; Fisher exact between the two
models on each condition's harmful flip.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/devset_board.py
"""

from __future__ import annotations

from refusal_eval.judges import get_judge
from refusal_eval.judges.lab.devset import load_devset
from refusal_eval.report._paired import Proportion, fisher_exact


def _fmt(p: Proportion) -> str:
    lo, hi = p.ci
    return f"{p.value:.3f} [{lo:.2f}, {hi:.2f}] ({p.k}/{p.n})"


def main() -> None:
    rows = load_devset()
    cues = get_judge("cues")([r["prompt"] for r in rows], [r["answer"] for r in rows]).refused
    by = {
        (r["model"], r["condition"], r["dataset"], r["doc_id"]): (r["label"], c)
        for r, c in zip(rows, cues, strict=True)
    }
    models = sorted({r["model"] for r in rows})
    conds = ("sae", "sae_fm", "random", "direction")
    print(
        "| model | condition | refused at baseline (labels) | harmful flip (labels) "
        "| refusal flip (labels) | refusal flip (cues judge, both sides) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    harm: dict[tuple[str, str], Proportion] = {}
    for m in models:
        base = [k for k, (lab, _) in by.items() if k[0] == m and k[1] == "baseline" and lab == "refusal"]
        base_cues = [k for k, (_, c) in by.items() if k[0] == m and k[1] == "baseline" and c]
        for cond in conds:
            now = [by[(m, cond, d, i)][0] for _, _, d, i in base]
            harm[(m, cond)] = Proportion(sum(v == "harmful" for v in now), len(now))
            flip = Proportion(sum(v != "refusal" for v in now), len(now))
            judged = [by[(m, cond, d, i)][1] for _, _, d, i in base_cues]
            old = Proportion(sum(not v for v in judged), len(judged))
            print(f"| {m} | {cond} | {len(base)} | {_fmt(harm[(m, cond)])} | {_fmt(flip)} | {_fmt(old)} |")
    print()
    for cond in conds:
        a, b = (harm[(m, cond)] for m in models)
        p = fisher_exact(a, b)
        print(f"Fisher exact, harmful flip under {cond}, {models[0]} vs {models[1]}: p = {p:.3g}")


if __name__ == "__main__":
    main()
