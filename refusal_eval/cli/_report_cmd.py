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
