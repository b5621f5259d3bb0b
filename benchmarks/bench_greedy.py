"""Stage 2 (greedy filtering) on the default model: the fast scorer vs a deliberately naive one.

Naive reference = the method's pseudo-code taken literally: for every (prompt, seed, block) two
forward passes (P(refusal | current) and P(refusal | current minus block)), one subset and one
prompt per forward, full logits for every position, and a hook that runs the full SAE
encode/decode at every position (``decode(f with f_S = 0) + (x - decode(f))``).
Fast = ``refusal_eval.search``: rows batched across prompts and seeds, P(current) carried over,
memo, layers below the first SAE skipped, last-position logits only, sparse-delta ablation.
Both must select identical minimal sets.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_greedy.py \
        --saes qwen2.5-coder-0.5b-instruct-res-2k --prompts 8 --top-k 20
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time

import torch

from refusal_eval import load_model, load_saes
from refusal_eval.chat import encode_chat
from refusal_eval.data import load_prompts
from refusal_eval.hooks import decoder_layers
from refusal_eval.scoring import first_token_logprobs, refusal_score, refusal_token_ids
from refusal_eval.search.direction import decoder_candidates, last_token_residuals, mean_diff_directions
from refusal_eval.search.greedy import greedy_minimal_sets, seed_order
from refusal_eval.search.scorer import SubsetScorer


@contextlib.contextmanager
def naive_hook(model, saes, latents):
    handles = []
    for layer, coder in saes.items():
        ids = torch.tensor(sorted(i for la, i in latents if la == layer), dtype=torch.long)
        if len(ids) == 0:
            continue

        def hook(_m, _a, out, coder=coder, ids=ids):
            x = out.float()
            f = coder.encode(x)
            recon = coder.decode(f)
            f_abl = f.clone()
            f_abl[..., ids] = 0
            return (coder.decode(f_abl) + (x - recon)).to(out.dtype)

        handles.append(decoder_layers(model)[layer].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def naive_p(model, tok, prompt, saes, latents, refusal_ids) -> float:
    enc = encode_chat(tok, [prompt])
    with naive_hook(model, saes, latents):
        logits = model(**enc, use_cache=False).logits[0, -1]
    return float(torch.softmax(logits.float(), -1)[refusal_ids].sum())


def naive_greedy(model, tok, prompts, saes, candidates, refusal_ids, tau, block_size, seeds, eps):
    out = []
    for prompt in prompts:
        kept_sets = []
        for seed in seeds:
            order = seed_order(candidates, seed)
            current, keep = set(candidates), []
            for j in range(0, len(order), block_size):
                block = order[j : j + block_size]
                p_all = naive_p(model, tok, prompt, saes, current, refusal_ids)
                p_back = naive_p(model, tok, prompt, saes, current - set(block), refusal_ids)
                if (p_back - p_all) / max(p_all, eps) >= tau:
                    keep.extend(block)
                else:
                    current -= set(block)
            kept_sets.append(set(keep))
        out.append(tuple(sorted(set.intersection(*kept_sets))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--saes", default="qwen2.5-coder-0.5b-instruct-res-2k")
    ap.add_argument("--layers", type=int, nargs="*", default=None)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--direction-layer", type=int, default=14)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dtype", default="bfloat16", help="bfloat16 (default) or float32")
    args = ap.parse_args()
    chat = load_model("default", dtype=args.dtype)
    saes = load_saes(args.saes, layers=args.layers, model=chat)
    tok, model = chat.tokenizer, chat.model
    ids = refusal_token_ids(tok, chat.refusal_tokens)
    harmful = [p.text for p in load_prompts("harmful_train")]
    harmless = random.Random(0).sample([p.text for p in load_prompts("harmless_train")], 32)
    score = refusal_score(first_token_logprobs(model, tok, harmful, batch_size=32), ids)
    refused = [p for p, s in zip(harmful, score.tolist(), strict=True) if s > 0][: args.prompts]
    res_h = last_token_residuals(model, tok, refused[:32])
    res_b = last_token_residuals(model, tok, harmless)
    direction = mean_diff_directions(res_h, res_b)[args.direction_layer]
    cands = [(c.layer, c.latent) for c in decoder_candidates(saes, direction, args.top_k)]
    kw = {"tau": 0.3, "block_size": 5, "seeds": (0, 1, 2), "eps": 1e-6}
    print(f"{len(refused)} refused prompts, {len(cands)} candidates on layers {sorted(saes)}, "
          f"{torch.get_num_threads()} threads, {args.dtype}, batch {args.batch_size}")  # fmt: skip

    t0 = time.perf_counter()
    scorer = SubsetScorer(model, tok, refused, saes, ids, batch_size=args.batch_size, progress=False)
    fast = greedy_minimal_sets(list(range(len(refused))), cands, scorer.p_refusal, **kw)
    t_fast = time.perf_counter() - t0
    print(f"fast:  {t_fast:7.1f}s  ({scorer.forward_rows} rows run)")

    t0 = time.perf_counter()
    naive = naive_greedy(model, tok, refused, saes, cands, ids, **kw)
    t_naive = time.perf_counter() - t0
    print(f"naive: {t_naive:7.1f}s")
    same = [r.minimal for r in fast] == naive
    sizes = [len(r.minimal) for r in fast]
    print(f"speed-up {t_naive / t_fast:.1f}x; identical minimal sets: {same}; sizes {sizes}")
    if not same:
        for r, n in zip(fast, naive, strict=True):
            if r.minimal != n:
                print("  differs:", r.minimal, "vs", n)


if __name__ == "__main__":
    main()
