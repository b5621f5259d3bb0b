"""What each judge costs: seconds to judge the 2,000 harmful-prompt answers of the committed
leaderboard run (both models, every condition), after the judge is built (model files loaded).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_judges.py --judges keyword,cues,embedding,hybrid
"""

from __future__ import annotations

import argparse
import time

from judges_on_leaderboard import load

from refusal_eval.judges import get_judge


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--judges", default="keyword,cues,embedding,hybrid")
    args = ap.parse_args()
    rows = load()
    prompts, answers = [r["prompt"] for r in rows], [r["answer"] for r in rows]
    print("| judge | answers | seconds | answers / s |\n| --- | --- | --- | --- |")
    for spec in args.judges.split(","):
        judge = get_judge(spec)
        judge(prompts[:8], answers[:8])  # warm-up (lazy imports, first batch)
        start = time.perf_counter()
        judge(prompts, answers)
        took = time.perf_counter() - start
        print(f"| {spec} | {len(rows)} | {took:.2f} | {len(rows) / took:,.0f} |")


if __name__ == "__main__":
    main()
