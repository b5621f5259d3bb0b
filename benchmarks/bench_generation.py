"""Generation throughput on the default model: `sae` condition vs `baseline` (same prompts, batch 8).

Both run through the same `refusal_eval.chat.generate` loop; `sae` installs the plan's latent
ablation (sparse delta on every prompt and decode step). Target: sae >= 0.9x baseline tokens/s.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_generation.py --plan docs/plans/qwen0.5b.json
"""

from __future__ import annotations

import argparse
import time

import torch

from refusal_eval import ablate, load_model, load_saes
from refusal_eval.chat import encode_chat
from refusal_eval.data import load_prompts
from refusal_eval.search.plan import AblationPlan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--saes", default="qwen2.5-coder-0.5b-instruct-res-2k")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    chat = load_model("default")
    saes = load_saes(args.saes, model=chat)
    plan = AblationPlan.load(args.plan)
    prompts = [p.text for p in load_prompts("jbb")[: args.prompts]]
    batches = [encode_chat(chat.tokenizer, prompts[i : i + 8]) for i in range(0, len(prompts), 8)]
    n_new = args.max_new_tokens

    @torch.inference_mode()
    def run(max_new: int) -> None:
        for enc in batches:  # every row generates exactly max_new tokens (EOS ignored)
            chat.model.generate(
                **enc, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False,
                pad_token_id=chat.tokenizer.pad_token_id,
            )  # fmt: skip

    run(4)  # warm-up

    def tokens_per_s(condition: str) -> float:
        best = 0.0
        for _ in range(args.repeats):
            with ablate(chat.model, plan.condition(condition), saes):
                t0 = time.perf_counter()
                run(n_new)
                best = max(best, len(prompts) * n_new / (time.perf_counter() - t0))
        return best

    base = tokens_per_s("baseline")
    sae = tokens_per_s("sae")
    counts = plan.counts()
    threads = torch.get_num_threads()
    print(f"{len(prompts)} JBB prompts, batch 8, {n_new} new tokens each, {threads} threads")
    print(f"baseline: {base:.1f} tok/s   sae ({counts['sae']} latents): {sae:.1f} tok/s")
    print(f"ratio sae / baseline: {sae / base:.2f}x")


if __name__ == "__main__":
    main()
