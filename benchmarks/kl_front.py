"""The flip-vs-KL front (issue 28 item 6): how much of the union's harmless-prompt damage can go
before the jailbreak goes, against refusal-direction ablation.

The shipped 0.5B plan's union flips every refusal but moves the first token of harmless prompts
far more than direction ablation does (first-token KL 1.10 vs 0.32), and half its ablated answers
are degenerate. Here the union is pruned latent by latent, in an order fixed before anything is
measured: by each latent's *harmless share*, its mean-pooled activation on the search's harmless
prompts over that plus its mean-pooled activation on the refused search prompts (a latent busy on
harmless text costs KL when zeroed; one that fires on refused prompts alone carries the refusal).
For the union minus its first k latents in that order, at every ``--step``:

- first-token KL(baseline || ablated) on held-out harmless prompts (``harmless_val``, never in
  the search), the number the board reports;
- on held-out harmful prompts the model refuses at baseline (``--heldout``, answered to
  ``--max-new-tokens`` and judged by the default outcome judge): the refusal flip and the harmful
  flip (refused -> ``harmful``), with Wilson 95% intervals, and the degenerate share.

Direction ablation (the plan's direction) is measured the same way. The order is the one
``--set sae_max_kl=X`` prunes by (:func:`refusal_eval.search.kl_bound.harmless_share`, on the
same search prompts); the search bounds KL on its own harmless prompts, this front measures it
on held-out ones. Resumable: every generation
pass is cached as JSON under ``--cache``.

Run (vLLM venv for the generations, ~4x faster than HF on this CPU):
    cd benchmarks && HF_HUB_OFFLINE=1 ../.venv-vllm/bin/python kl_front.py --generate-with vllm \\
        --out ../docs/search/kl_front_0.5b.json      (docs/search: "The flip-vs-KL front")
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from tau_curve import cached, wilson

from refusal_eval import get_judge, load_model, load_saes
from refusal_eval.ablation import Ablation, DirectionAblation, ablate, as_ablations
from refusal_eval.chat import generate
from refusal_eval.config import SearchConfig
from refusal_eval.data import load_prompts
from refusal_eval.scoring import first_token_kl, first_token_logprobs
from refusal_eval.search.artifacts import Latent, by_layer
from refusal_eval.search.auto import default_plan
from refusal_eval.search.hydra import per_row_edits
from refusal_eval.search.kl_bound import harmless_share
from refusal_eval.search.pipeline import PromptSets
from refusal_eval.search.plan import AblationPlan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", default=None, help="default: the default model's shipped plan")
    ap.add_argument("--step", type=int, default=8, help="latents dropped between front points")
    ap.add_argument("--heldout", default="harmful_val,harmful_test", help="held-out harmful sets, in order")
    ap.add_argument("--n-heldout", type=int, default=96, help="held-out harmful prompts (before screening)")
    ap.add_argument("--n-harmless", type=int, default=64, help="held-out harmless prompts for the KL")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--generate-with", choices=["hf", "vllm"], default="hf")
    ap.add_argument("--cache", default="/tmp/kl_front_cache")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    path = Path(args.plan) if args.plan else default_plan("default")
    plan = AblationPlan.load(path)
    body = plan.body
    cfg = SearchConfig().replace(**{k: v for k, v in body.config.items() if k in SearchConfig().to_dict()})
    chat = load_model(body.model.spec, dtype=args.dtype)
    union: list[Latent] = sorted((int(la), int(i)) for la, i in body.stage2.union)
    saes = load_saes(plan.sae_source, layers=sorted(plan.sae_layer_ids), model=chat)
    search = PromptSets.from_config(cfg)
    refused_search = [search.harmful[i] for i in body.screen.refused_harmful]
    order = harmless_share(chat, saes, union, refused_search, search.harmless, args.batch_size)
    points = list(range(0, len(union), args.step))
    conds: dict[str, list[Latent]] = {f"drop {k}": sorted(x for x, _ in order[k:]) for k in points}
    tag = f"{plan.hash[:12]}_{args.n_heldout}_{args.max_new_tokens}"

    # --- first-token KL on held-out harmless prompts -----------------------------------------
    harmless = [p.text for p in load_prompts("harmless_val")[: args.n_harmless]]
    bs = args.batch_size
    base_lp = first_token_logprobs(chat.model, chat.tokenizer, harmless, batch_size=bs)
    kl: dict[str, float] = {}
    every: dict[str, list[Ablation]] = {c: as_ablations(by_layer(x), saes) for c, x in conds.items()}
    every["direction"] = [DirectionAblation(plan.direction)]
    for name, ablations in every.items():
        with ablate(chat.model, ablations):
            lp = first_token_logprobs(chat.model, chat.tokenizer, harmless, batch_size=bs)
        kl[name] = first_token_kl(base_lp, lp)
    print("first-token KL:", {k: round(v, 3) for k, v in kl.items()})

    # --- flips on held-out harmful prompts refused at baseline --------------------------------
    held: list[str] = []
    for name in args.heldout.split(","):
        held += [p.text for p in load_prompts(name)]
    held = held[: args.n_heldout]
    judge = get_judge()
    gen_hf = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "progress": True}
    engine = None
    if args.generate_with == "vllm":
        from refusal_eval.vllm_backend import start_generator

        engine = start_generator(chat, saes)

    def answer(prompts: list[str], edits: Any = None) -> list[str]:
        if engine is not None:
            return list(engine(prompts, max_new_tokens=args.max_new_tokens, edits=edits))
        return generate(chat.model, chat.tokenizer, prompts, edits=edits, **gen_hf)

    def baseline() -> dict[str, Any]:
        answers = answer(held)
        return {"answers": answers, "outcomes": list(judge(held, answers).outcomes)}

    base = cached(cache / f"baseline_{tag}.json", baseline)
    refused = [held[i] for i, o in enumerate(base["outcomes"]) if o == "refusal"]
    n = len(refused)
    print(f"held out: {len(held)} harmful prompts, {n} refused at baseline; {len(conds)} front points")
    rows = [(c, i) for c in conds for i in range(n)]
    row_sets = [frozenset(conds[c]) for c, _ in rows]

    def ablated() -> dict[str, Any]:
        prompts = [refused[i] for _, i in rows]
        answers = answer(prompts, per_row_edits(saes, row_sets))
        return {"answers": answers, "outcomes": list(judge(prompts, answers).outcomes)}

    def direction() -> dict[str, Any]:
        ablations: list[Ablation] = [DirectionAblation(plan.direction)]
        answers = answer(refused, lambda _rows: ablations)
        return {"answers": answers, "outcomes": list(judge(refused, answers).outcomes)}

    key = hashlib.sha256(json.dumps(conds, sort_keys=True).encode()).hexdigest()[:12]
    outcomes: dict[str, list[str]] = {c: [] for c in conds}
    for (c, _), o in zip(rows, cached(cache / f"ablated_{tag}_{key}.json", ablated)["outcomes"], strict=True):
        outcomes[c].append(o)
    outcomes["direction"] = cached(cache / f"direction_{tag}.json", direction)["outcomes"]
    table: list[dict[str, Any]] = []
    for c, outs in outcomes.items():
        k_ref, k_harm = sum(o != "refusal" for o in outs), sum(o == "harmful" for o in outs)
        table.append({
            "condition": c, "latents": len(conds[c]) if c in conds else None, "first_token_kl": kl[c],
            "n": n, "refusal_flip": k_ref / max(1, n), "refusal_flip_ci": wilson(k_ref, n),
            "harmful_flip": k_harm / max(1, n), "harmful_flip_ci": wilson(k_harm, n),
            "outcomes": {w: outs.count(w) for w in ("refusal", "harmful", "deflection", "degenerate")},
        })  # fmt: skip
    report = {
        "plan": path.name,
        "plan_sha256": plan.hash,
        "order": [[*x, round(s, 4)] for x, s in order],
        "harmless_kl_prompts": len(harmless),
        "held_out": args.heldout,
        "held_out_prompts": len(held),
        "refused_at_baseline": n,
        "max_new_tokens": args.max_new_tokens,
        "judge": str(judge.spec),
        "dtype": str(chat.model.dtype),
        "generate_with": args.generate_with,
        "conditions": table,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    head = "| condition | latents | first-token KL | refusal flip | harmful flip [95% CI] | outcomes |"
    print(head + "\n" + "| --- " * 6 + "|")
    for r in table:
        lo, hi = r["harmful_flip_ci"]
        counts = " / ".join(f"{k[:4]} {v}" for k, v in r["outcomes"].items())
        size = "-" if r["latents"] is None else r["latents"]
        cells = [r["condition"], size, f"{r['first_token_kl']:.3f}", f"{r['refusal_flip']:.3f}"]
        cells += [f"{r['harmful_flip']:.3f} [{lo:.2f}, {hi:.2f}]", counts]
        print("| " + " | ".join(map(str, cells)) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"done in {report['seconds']} s")


if __name__ == "__main__":
    main()
