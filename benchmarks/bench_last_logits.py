"""Last-position logits on the default model: int ``logits_to_keep`` vs index tensor vs full.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_last_logits.py
"""

from __future__ import annotations

import time

import torch

from refusal_eval import load_model
from refusal_eval.chat import encode_chat
from refusal_eval.data import load_prompts


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    t0 = time.perf_counter()
    chat = load_model("default")
    print(f"cached model load: {time.perf_counter() - t0:.2f}s")
    enc = encode_chat(chat.tokenizer, [p.text for p in load_prompts("harmful_train")[:16]])
    last = torch.tensor([enc["input_ids"].shape[1] - 1])
    m = chat.model
    with torch.inference_mode():
        full = timed(lambda: m(**enc, use_cache=False))
        keep_int = timed(lambda: m(**enc, use_cache=False, logits_to_keep=1))
        keep_idx = timed(lambda: m(**enc, use_cache=False, logits_to_keep=last))
        same = torch.equal(m(**enc, logits_to_keep=last).logits[:, -1], m(**enc).logits[:, -1])
    print(f"batch {tuple(enc['input_ids'].shape)}, bf16, {torch.get_num_threads()} threads")
    print(f"full logits:               {full:.2f}s")
    print(f"logits_to_keep=1 (int):    {keep_int:.2f}s")
    print(f"logits_to_keep=tensor([L-1]): {keep_idx:.2f}s  (identical logits: {same})")
    print(f"int / tensor: {keep_int / keep_idx:.1f}x")


if __name__ == "__main__":
    main()
