"""The HF backend's generation batch size on this CPU: tokens/s of the `sae` condition for batch
sizes 1, 4, 8 and 16, side by side in one process (same 16 JailbreakBench prompts, every row
generating exactly the same number of new tokens, EOS ignored). What `sae_ablated` uses when the
user sets no batch size (``plugins/_common.py:DEFAULT_BATCH``).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_batch_size.py [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from refusal_eval import ablate, load_model, load_saes
from refusal_eval.chat import encode_chat
from refusal_eval.data import load_prompts
from refusal_eval.search.auto import default_plan
from refusal_eval.search.plan import AblationPlan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--sizes", default="1,4,8,16")
    args = ap.parse_args()
    chat = load_model("default")
    saes = load_saes(chat.info["default_saes"], model=chat)
    plan = AblationPlan.load(default_plan())
    prompts = [p.text for p in load_prompts("jbb")[: args.prompts]]
    print(f"{len(prompts)} JBB prompts, {args.max_new_tokens} new tokens each, sae condition, bf16")
    print("| batch size | seconds | new tokens / s |\n| --- | --- | --- |")
    warm = encode_chat(chat.tokenizer, prompts[:2])
    with torch.inference_mode():
        chat.model.generate(
            **warm, max_new_tokens=4, do_sample=False, pad_token_id=chat.tokenizer.pad_token_id
        )
    for size in [int(v) for v in args.sizes.split(",")]:
        batches = [encode_chat(chat.tokenizer, prompts[i : i + size]) for i in range(0, len(prompts), size)]
        with torch.inference_mode(), ablate(chat.model, plan.condition("sae"), saes):
            t = time.perf_counter()
            for enc in batches:
                chat.model.generate(
                    **enc,
                    max_new_tokens=args.max_new_tokens,
                    min_new_tokens=args.max_new_tokens,
                    do_sample=False,
                    pad_token_id=chat.tokenizer.pad_token_id,
                )
            dt = time.perf_counter() - t
        print(f"| {size} | {dt:.1f} | {len(prompts) * args.max_new_tokens / dt:.1f} |")


if __name__ == "__main__":
    main()
