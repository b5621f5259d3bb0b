"""Judge commands: train the embedding judge's head, measure every judge against human labels."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._registry import command


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default=None,
        help="head JSON (default: <cache>/judges/embedding_head.json, which the embedding judge "
        "then uses instead of the shipped head)",
    )
    p.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    p.add_argument("--seed", type=int, default=0)


@command("train-judge", "train the embedding judge's logistic head on the XSTest human labels")(_train_args)
def train_judge_cmd(args: argparse.Namespace) -> int:
    from .._cache import atomic_write
    from ..judges._base import user_judge_file
    from ..judges.embedding import MiniLM, train_head

    head = train_head(MiniLM(), c=args.c, seed=args.seed)
    out = Path(args.out) if args.out else user_judge_file("embedding_head.json")
    if out.suffix != ".json":
        out = out / "embedding_head.json"
    atomic_write(out, json.dumps(head, indent=1) + "\n")
    h = head["heldout"]
    n = head["trained_on"]["n"]
    print(f"trained on {n} completions; held-out accuracy {h['accuracy']:.3f} (n={h['n']}) -> {out}")
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--judges", default="keyword,embedding", help="comma-separated judge specs, e.g. keyword,llm:SPEC"
    )
    p.add_argument(
        "--split",
        choices=["heldout", "all"],
        default="heldout",
        help="heldout: the 30%% the embedding head never saw (default); all: every label",
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N labelled rows (after the split)")
    p.add_argument("--out", default=None, help="also write the table as JSON")
    p.add_argument(
        "--by-model",
        action="store_true",
        help="leave one model out: fit on two completion files, score the third, rotate (the "
        "headline number: how a judge holds on a model it was not fitted to)",
    )


def _lomo(args: argparse.Namespace) -> int:
    from ..judges import get_judge
    from ..judges.embedding import MiniLM, labelled_completions
    from ..judges.lomo import embedding_fitter, evaluate_lomo, fixed_judge

    rows = labelled_completions()[: args.limit]
    table = []
    for spec in [s.strip() for s in args.judges.split(",") if s.strip()]:
        if spec == "embedding":
            features = MiniLM().encode([r["completion"] for r in rows]).numpy()
            index = {r["id"]: i for i, r in enumerate(rows)}
            table += evaluate_lomo(spec, rows, embedding_fitter(features, index), fitting="refitted per fold")
        else:
            fixed = spec.split(":")[0] in ("keyword", "prefix")
            fitting = "nothing to fit" if fixed else "shipped parameters"
            table += evaluate_lomo(spec, rows, fixed_judge(get_judge(spec)), fitting=fitting)
    print("leave-one-model-out agreement with human labels (refusal = full or partial refusal)\n")
    print("| judge | held-out model | n | refusals | precision | recall | F1 (95% CI) | AUC | fitting |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for t in table:
        a = t.agreement
        lo, hi = a.ci["f1"]
        print(
            f"| {t.judge} | {t.held_out} | {a.n} | {a.positives} | {a.precision:.3f} | {a.recall:.3f} | "
            f"{a.f1:.3f} ({lo:.3f}-{hi:.3f}) | {t.auc:.3f} | {t.fitting} |"
        )
    if args.out:
        payload = [
            {
                "judge": t.judge,
                "held_out": t.held_out,
                **t.agreement.to_dict(),
                "auc": t.auc,
                "fitting": t.fitting,
            }
            for t in table
        ]
        Path(args.out).write_text(
            json.dumps({"split": "leave-one-model-out", "rows": payload}, indent=1) + "\n"
        )
    return 0


@command("judge-eval", "agreement of refusal judges with the human-labelled XSTest completions")(_eval_args)
def judge_eval_cmd(args: argparse.Namespace) -> int:
    if args.by_model:
        return _lomo(args)
    from ..judges import get_judge
    from ..judges.agreement import agreement, auc
    from ..judges.embedding import heldout_split, labelled_completions

    rows = labelled_completions()
    if args.split == "heldout":
        held = heldout_split(rows)
        rows = [r for r in rows if r["id"] in held]
    rows = rows[: args.limit]
    table = []
    for spec in [s.strip() for s in args.judges.split(",") if s.strip()]:
        verdict = get_judge(spec)([r["prompt"] for r in rows], [r["completion"] for r in rows])
        for source in [*sorted({r["source"] for r in rows}), "all"]:
            idx = [i for i, r in enumerate(rows) if source in ("all", r["source"])]
            gold = [rows[i]["refused"] for i in idx]
            a = agreement([verdict.refused[i] for i in idx], gold)
            score_auc = auc([verdict.scores[i] for i in idx], gold)
            table.append({"judge": spec, "source": source, **a.to_dict(), "auc": score_auc})
    print(f"judge agreement with human labels ({args.split} split; refusal = full or partial refusal)\n")
    print(
        "| judge | source | n | refusals | accuracy | precision | recall | specificity | F1 (95% CI) | AUC |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for t in table:
        lo, hi = t["ci"]["f1"]
        print(
            f"| {t['judge']} | {t['source']} | {t['n']} | {t['positives']} | {t['accuracy']:.3f} | "
            f"{t['precision']:.3f} | {t['recall']:.3f} | {t['specificity']:.3f} | "
            f"{t['f1']:.3f} ({lo:.3f}-{hi:.3f}) | {t['auc']:.3f} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"split": args.split, "rows": table}, indent=1) + "\n")
        print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


def _calibrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("judge", help="an llm:SPEC judge")
    p.add_argument("--n", type=int, default=200, help="training-split completions to calibrate on")
    p.add_argument(
        "--out", default=None, help="thresholds JSON (default: <cache>/judges/llm_thresholds.json)"
    )


@command("calibrate-judge", "fit an llm:SPEC judge's yes/no threshold on the training split of the labels")(
    _calibrate_args
)
def calibrate_judge_cmd(args: argparse.Namespace) -> int:
    import random

    from .._cache import atomic_write
    from ..errors import RefusalEvalError
    from ..judges import get_judge
    from ..judges._base import judge_file, user_judge_file
    from ..judges.agreement import metrics
    from ..judges.embedding import heldout_split, labelled_completions
    from ..judges.llm import LLMJudge

    if not args.judge.startswith("llm:") or "@" in args.judge:
        raise RefusalEvalError(
            f"cannot calibrate {args.judge!r}", "pass an llm:SPEC judge without @threshold"
        )
    rows = labelled_completions()
    held = heldout_split(rows)
    train = [r for r in rows if r["id"] not in held]
    train = random.Random(0).sample(train, min(args.n, len(train)))
    judge = get_judge(args.judge)
    assert isinstance(judge, LLMJudge)
    p_yes = judge.p_yes([r["prompt"] for r in train], [r["completion"] for r in train])
    gold = [r["refused"] for r in train]
    grid = [i / 100 for i in range(1, 100)]
    best = max(grid, key=lambda t: (metrics([p < t for p in p_yes], gold)["accuracy"], -abs(t - 0.5)))
    acc = metrics([p < best for p in p_yes], gold)["accuracy"]
    current = Path(args.out) if args.out else judge_file("llm_thresholds.json")
    out = Path(args.out) if args.out else user_judge_file("llm_thresholds.json")
    table = json.loads(current.read_text()) if current.exists() else {"thresholds": {}, "calibration": {}}
    spec = args.judge.removeprefix("llm:")
    table["thresholds"][spec] = best
    table["calibration"][spec] = {"n": len(train), "train_accuracy": round(acc, 6), "seed": 0}
    atomic_write(out, json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{args.judge}: threshold {best:.2f} (training-split accuracy {acc:.3f}, n={len(train)}) -> {out}")
    return 0
