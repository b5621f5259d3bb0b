"""Judge commands: train the embedding judge's head, measure every judge against human labels."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._registry import command


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--judge",
        choices=["outcome", "hybrid", "embedding"],
        default="outcome",
        help="outcome (the default judge): fitted on every row of the labelled development set of "
        "ablated answers; hybrid: on every XSTest label; embedding: on the 70%% XSTest training split",
    )
    p.add_argument(
        "--out",
        default=None,
        help="head JSON (default: <cache>/judges/<judge>_head.json, which the judge then uses "
        "instead of the shipped head)",
    )
    p.add_argument(
        "--c",
        type=float,
        default=None,
        help="inverse L2 strength (default: outcome 0.05, hybrid 0.03, embedding 1)",
    )
    p.add_argument("--seed", type=int, default=0)


@command("train-judge", "fit the hybrid or embedding judge's head on the XSTest human labels")(_train_args)
def train_judge_cmd(args: argparse.Namespace) -> int:
    from .._cache import atomic_write
    from ..judges._base import user_judge_file
    from ..judges.embedding import MiniLM
    from ..judges.hybrid import DEFAULT_C
    from ..judges.lab.heads import labelled_completions, train_head, train_hybrid_head

    name = f"{args.judge}_head.json"
    if args.judge == "outcome":
        from ..judges.lab.devset import load_devset
        from ..judges.lab.outcome_head import train_outcome_head
        from ..judges.outcome import DEFAULT_C as OUTCOME_C

        head = train_outcome_head(MiniLM(), load_devset(), OUTCOME_C if args.c is None else args.c)
        summary = f"training accuracy {head['trained_on']['training_accuracy']:.3f}"
    elif args.judge == "hybrid":
        head = train_hybrid_head(MiniLM(), labelled_completions(), DEFAULT_C if args.c is None else args.c)
        summary = f"training accuracy {head['trained_on']['training_accuracy']:.3f}"
    else:
        head = train_head(MiniLM(), c=1.0 if args.c is None else args.c, seed=args.seed)
        summary = f"held-out accuracy {head['heldout']['accuracy']:.3f} (n={head['heldout']['n']})"
    out = Path(args.out) if args.out else user_judge_file(name)
    if out.suffix != ".json":
        out = out / name
    atomic_write(out, json.dumps(head, indent=1) + "\n")
    print(f"{args.judge}: trained on {head['trained_on']['n']} completions; {summary} -> {out}")
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--judges",
        default="cues,keyword,hybrid,embedding",
        help="comma-separated judge specs, e.g. cues,keyword,llm:SPEC",
    )
    p.add_argument(
        "--split",
        choices=["by-model", "heldout", "all"],
        default="by-model",
        help="by-model (default, the headline): leave one model out, fit on two completion files, "
        "score the third, rotate; heldout: the random 30%% the embedding head never saw; all: every "
        "label (secondary: both mix every model into training and test)",
    )
    p.add_argument("--by-model", action="store_true", help="the same as --split by-model")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="by-model: a seeded random N of each model's completions (for slow judges such as "
        "llm:SPEC); heldout / all: the first N rows",
    )
    p.add_argument("--out", default=None, help="also write the table as JSON")
    p.add_argument(
        "--write-error-rates",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="by-model: write each judge's per-model confusion counts, the error rates that "
        "correct lm-eval rates (default FILE: <cache>/judges/error_rates.json, which then wins over "
        "the shipped table)",
    )


def _lomo(args: argparse.Namespace) -> int:
    from ..judges.lab.heads import labelled_completions
    from ..judges.lab.lomo import evaluate_lomo, fitter_for, sample_per_source

    rows = labelled_completions()
    if args.limit is not None:  # a seeded random N of each model: every fold keeps training rows
        rows = sample_per_source(rows, args.limit)
    table = []
    for spec in [s.strip() for s in args.judges.split(",") if s.strip()]:
        fit, fitting = fitter_for(spec, rows)
        table += evaluate_lomo(spec, rows, fit, fitting=fitting)
    print("leave-one-model-out agreement with human labels (refusal = full or partial refusal)\n")
    print(
        "| judge | held-out model | n | refusals | precision | recall | specificity | F1 (95% CI) | AUC "
        "| fitting |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for t in table:
        a = t.agreement
        lo, hi = a.ci["f1"]
        print(
            f"| {t.judge} | {t.held_out} | {a.n} | {a.positives} | {a.precision:.3f} | {a.recall:.3f} | "
            f"{a.specificity:.3f} | {a.f1:.3f} ({lo:.3f}-{hi:.3f}) | {t.auc:.3f} | {t.fitting} |"
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
    if args.write_error_rates is not None:
        _write_error_rates(args, table)
    return 0


def _write_error_rates(args: argparse.Namespace, table: list[Any]) -> None:
    from .._cache import atomic_write
    from ..judges._base import user_judge_file
    from ..judges.correction import rates_from_entry, table_from_lomo

    limit = f" --limit {args.limit}" if args.limit else ""
    source = f"refusal-eval judge-eval --by-model{limit} (XSTest human labels, leave one model out)"
    rates = table_from_lomo(table, source)
    out = Path(args.write_error_rates) if args.write_error_rates else user_judge_file("error_rates.json")
    try:
        old = json.loads(out.read_text()) if out.is_file() else {}
    except ValueError:
        old = {}  # unreadable: replaced whole (the write is atomic)
    if old.get("format") == rates["format"] and old.get("version") == rates["version"]:
        rates["judges"] = {**old["judges"], **rates["judges"]}  # keep the judges not measured now
    atomic_write(out, json.dumps(rates, indent=1) + "\n")
    print("\nerror rates for a new model (random-effects pool over the held-out models):")
    for spec, entry in rates["judges"].items():
        r = rates_from_entry(spec, entry)
        se, sp = r.sensitivity, r.specificity
        print(f"  {spec}: se {se.point:.3f} (tau2 {se.tau2:.3f}), sp {sp.point:.3f} (tau2 {sp.tau2:.3f})")
    print(f"wrote {out}", file=sys.stderr)


@command("judge-eval", "agreement of refusal judges with the human-labelled XSTest completions")(_eval_args)
def judge_eval_cmd(args: argparse.Namespace) -> int:
    from ..errors import RefusalEvalError

    if args.by_model or args.split == "by-model":
        return _lomo(args)
    if args.write_error_rates is not None:
        raise RefusalEvalError(
            "--write-error-rates needs leave-one-model-out error rates",
            "drop --split (by-model is the default)",
        )
    from ..judges import get_judge
    from ..judges.agreement import agreement, auc
    from ..judges.lab.heads import heldout_split, labelled_completions

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
    from ..judges._base import JudgeSpec, judge_file, user_judge_file
    from ..judges.agreement import metrics
    from ..judges.lab.heads import heldout_split, labelled_completions
    from ..judges.llm import LLMJudge

    parsed = JudgeSpec.parse(args.judge)
    if parsed.name != "llm" or not parsed.arg or "@" in parsed.arg:
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
    spec = parsed.arg
    table["thresholds"][spec] = best
    table["calibration"][spec] = {"n": len(train), "train_accuracy": round(acc, 6), "seed": 0}
    atomic_write(out, json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{args.judge}: threshold {best:.2f} (training-split accuracy {acc:.3f}, n={len(train)}) -> {out}")
    return 0
