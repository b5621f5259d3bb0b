"""How many outcome verdicts change between 64 and 256 new tokens, on the labelled development set.

Every answer of the set was generated greedily to 256 new tokens; its first 64 tokens (the
model's own tokenizer) are what a 64-token run produces for the same prompt and settings (greedy
decoding is prefix-stable, up to bf16 batch effects). Both are judged with the same judge, and
the labelled outcome of the full answer is compared with the judge's verdict on the cut one.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/outcome_length.py [--judge outcome] [--tokens 64]
"""

from __future__ import annotations

import argparse
from collections import Counter

from refusal_eval.judges import OUTCOMES, get_judge
from refusal_eval.judges.lab.devset import load_devset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--judge", default="outcome")
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    rows = load_devset()
    tok = _tokenizer()
    cut = [tok.decode(tok.encode(r["answer"], add_special_tokens=False)[: args.tokens]) for r in rows]
    judge = get_judge(args.judge)
    if not judge.sees_outcomes:
        raise SystemExit(f"{args.judge} sees refusals only: pass an outcome judge (--judge outcome)")
    prompts = [r["prompt"] for r in rows]
    full = judge(prompts, [r["answer"] for r in rows]).outcomes
    short = judge(prompts, cut).outcomes
    labels = [r["label"] for r in rows]
    longer = sum(len(tok.encode(r["answer"], add_special_tokens=False)) > args.tokens for r in rows)
    changed = Counter((a, b) for a, b in zip(full, short, strict=True) if a != b)
    print(f"{len(rows)} answers, {longer} longer than {args.tokens} tokens; judge {args.judge}")
    n = sum(changed.values())
    print(f"judge verdict changes 256 -> {args.tokens} tokens: {n} ({n / len(rows):.3f})")
    for (a, b), n in changed.most_common():
        print(f"  {a} -> {b}: {n}")
    for name, pred in (("256", full), (str(args.tokens), short)):
        agree = sum(p == g for p, g in zip(pred, labels, strict=True)) / len(rows)
        harm = sum(p == "harmful" for p in pred)
        print(f"at {name} tokens: agreement with the labels {agree:.3f}, harmful {harm}")
    print("labels:", {o: labels.count(o) for o in OUTCOMES})


def _tokenizer():  # type: ignore[no-untyped-def]
    """The default model's tokenizer (both Qwen2.5-Coder models share it)."""
    from transformers import AutoTokenizer

    from refusal_eval.models._load import resolve

    return AutoTokenizer.from_pretrained(resolve("default")[0])


if __name__ == "__main__":
    main()
