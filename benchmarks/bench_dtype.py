"""bf16 vs fp32 forward time of the default model on this CPU, side by side in one process.

What ``dtype="auto"`` decides from: whether the CPU has native bf16 (AVX512-BF16 or AMX). The
same batch (8 prompts x 128 tokens) is run alternately in each precision; the best of the
repeats is reported.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_dtype.py
"""

from __future__ import annotations

import time

import torch

from refusal_eval.models import load_model
from refusal_eval.models._load import fast_bf16, parse_dtype


def main(batch: int = 8, tokens: int = 128, repeats: int = 2) -> None:
    torch.set_num_threads(2)
    flags = {
        n: bool(getattr(torch.cpu, n)()) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    }
    print(
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {flags}, native bf16: {fast_bf16('cpu')}"
    )
    print(f'dtype="auto" here: {parse_dtype("auto", "cpu")}')
    models = {d: load_model("default", dtype=d).model for d in ("float32", "bfloat16")}
    ids = torch.randint(100, 10_000, (batch, tokens), generator=torch.Generator().manual_seed(0))
    last = torch.tensor([tokens - 1])
    best = {d: float("inf") for d in models}
    with torch.inference_mode():
        for _ in range(repeats):
            for d, model in models.items():
                t0 = time.perf_counter()
                model(
                    input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, logits_to_keep=last
                )
                best[d] = min(best[d], time.perf_counter() - t0)
    for d, s in best.items():
        print(f"{d}: {s:.2f} s per forward of {batch}x{tokens} tokens ({batch * tokens / s:.0f} tok/s)")
    print(f"bf16 / fp32 time: {best['bfloat16'] / best['float32']:.2f}x")


if __name__ == "__main__":
    main()
