"""``refusal-eval leaderboard``: compare refusal mechanics across models from lm-eval results."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._registry import command


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="lm-eval results_*.json files (one per model run)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--judge",
        default=None,
        help="re-judge the logged answers (--log_samples files) with this judge instead of using "
        "the run's verdicts, e.g. --judge cues (no regeneration)",
    )


@command("leaderboard", "leaderboard (md, csv, html + plots) from lm-eval refusal_ablation results")(_args)
def leaderboard_cmd(args: argparse.Namespace) -> int:
    from ..report import markdown, read_all, write_leaderboard

    rows = read_all(args.results, args.judge)
    written = write_leaderboard(rows, Path(args.out))
    print(markdown(rows))
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def _summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="an lm-eval results_*.json of a refusal_ablation run")
    p.add_argument("--write", action="store_true", help="also write results_<date>.summary.txt beside it")


@command("summary", "the one-row-per-condition summary of a refusal_ablation run")(_summary_args)
def summary_cmd(args: argparse.Namespace) -> int:
    import json

    from ..errors import RefusalEvalError
    from ..report.summary import format_summary, write_summary

    path = Path(args.results)
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RefusalEvalError(
            f"cannot read results file {path}: {exc}", "pass a results_*.json lm-eval wrote"
        ) from None
    text = format_summary(results, path)
    if not text:
        raise RefusalEvalError(
            f"{path} holds no judged refusal_ablation answers",
            "pass the results of an lm_eval --model sae_ablated run (older runs need --log_samples)",
        )
    print(text)
    if args.write:
        print(f"wrote {write_summary(results, path)}")
    return 0
