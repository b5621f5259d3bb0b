"""Which extras add jailbreaks (issue 28 item 3): the FM's interaction ranking, the probe's weights
or random latents, added to the minimal-set union at several ``extra_k``, scored by the harmful
flip on held-out prompts the model refuses.

From a plan: the union (stage 2), ``stage3.fm_ranked`` and ``stage3.probe_ranked`` (best first) and
the random control's 50 extras (``sets.sae_random`` minus the union; for a smaller k a seeded
sample of them). Held out: the plan's validation prompts (never used to pick latents). Each is
answered at baseline (``--max-new-tokens``, the board's 256) and judged by the default outcome
judge; those judged ``refusal`` are answered again under every condition, all in one batched
generation (one latent set per row). Reported per condition: refusal flip (refused -> not
refused) and harmful flip (refused -> ``harmful``), with Wilson 95% intervals.

Resumable: the baseline and the ablated pass are cached as JSON under ``--cache``.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/extras_compare.py --plan PLAN.json \
        --out docs/search/extras_compare_2k.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

from tau_curve import cached, wilson

from refusal_eval import get_judge, load_model, load_saes
from refusal_eval.chat import generate
from refusal_eval.config import SearchConfig
from refusal_eval.data import load_prompts
from refusal_eval.search.artifacts import Latent
from refusal_eval.search.hydra import per_row_edits
from refusal_eval.search.plan import AblationPlan


def conditions(plan: AblationPlan, ks: list[int], seed: int = 0) -> dict[str, list[Latent]]:
    """``{name: latents}``: the union, then union + each ranking's first k, per k."""
    body = plan.body
    union = [tuple(x) for x in body.stage2.union]
    fm = [(layer, i) for layer, i, _ in body.stage3.fm_ranked]
    probe = [(layer, i) for layer, i, _ in body.stage3.probe_ranked]
    randoms = sorted(set(map(tuple, body.sets["sae_random"])) - set(union))
    out: dict[str, list[Latent]] = {"union": sorted(union)}
    for k in ks:
        rnd = randoms if k >= len(randoms) else random.Random(seed).sample(randoms, k)
        for name, extra in (("fm", fm[:k]), ("probe", probe[:k]), ("random", rnd)):
            out[f"{name}@{k}"] = sorted(set(union) | set(extra))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", required=True)
    ap.add_argument("--extra-k", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--cache", default="/tmp/extras_compare_cache")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    plan = AblationPlan.load(args.plan)
    body = plan.body
    cfg = SearchConfig().replace(**{k: v for k, v in body.config.items() if k in SearchConfig().to_dict()})
    chat = load_model(body.model.spec, dtype=args.dtype)
    saes = load_saes(
        plan.sae_source, layers=sorted(plan.sae_layer_ids), latents=plan.held_latents(), model=chat
    )
    conds = conditions(plan, args.extra_k)
    judge = get_judge()
    held = [p.text for p in load_prompts(cfg.validation)[: cfg.n_validation]]
    gen = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "progress": True}
    tag = f"{plan.hash[:12]}_{len(held)}_{args.max_new_tokens}"

    def baseline() -> dict[str, Any]:
        answers = generate(chat.model, chat.tokenizer, held, **gen)
        return {"answers": answers, "outcomes": list(judge(held, answers).outcomes)}

    base = cached(cache / f"baseline_{tag}.json", baseline)
    refused = [i for i, o in enumerate(base["outcomes"]) if o == "refusal"]
    texts = [held[i] for i in refused]
    print(f"held out: {len(held)} prompts, {len(refused)} refused at baseline; conditions {list(conds)}")
    rows = [(c, i) for c in conds for i in range(len(texts))]
    row_sets = [frozenset(conds[c]) for c, _ in rows]

    def ablated() -> dict[str, Any]:
        prompts = [texts[i] for _, i in rows]
        answers = generate(chat.model, chat.tokenizer, prompts, edits=per_row_edits(saes, row_sets), **gen)
        return {"answers": answers, "outcomes": list(judge(prompts, answers).outcomes)}

    key = hashlib.sha256(json.dumps(conds, sort_keys=True).encode()).hexdigest()[:12]
    abl = cached(cache / f"ablated_{tag}_{key}.json", ablated)
    n = len(texts)
    table = []
    for c in conds:
        outs = [o for (cc, _), o in zip(rows, abl["outcomes"], strict=True) if cc == c]
        k_ref, k_harm = sum(o != "refusal" for o in outs), sum(o == "harmful" for o in outs)
        table.append({
            "condition": c, "latents": len(conds[c]), "n": n,
            "refusal_flip": k_ref / max(1, n), "refusal_flip_ci": wilson(k_ref, n),
            "harmful_flip": k_harm / max(1, n), "harmful_flip_ci": wilson(k_harm, n),
            "outcomes": {w: outs.count(w) for w in ("refusal", "harmful", "deflection", "degenerate")},
        })  # fmt: skip
    report = {
        "plan": Path(args.plan).name,
        "plan_sha256": plan.hash,
        "fm_test_accuracy": body.stage3.fm.test_accuracy,
        "probe_test_accuracy": body.stage3.probe.test_accuracy,
        "held_out": cfg.validation,
        "held_out_prompts": len(held),
        "refused_at_baseline": n,
        "max_new_tokens": args.max_new_tokens,
        "judge": str(judge.spec),
        "dtype": str(chat.model.dtype),
        "conditions": table,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print("| condition | latents | refusal flip | harmful flip [95% CI] | ref / harm / defl / degen |")
    print("| --- | --- | --- | --- | --- |")
    for r in table:
        lo, hi = r["harmful_flip_ci"]
        counts = " / ".join(str(v) for v in r["outcomes"].values())
        print(f"| {r['condition']} | {r['latents']} | {r['refusal_flip']:.3f} | {r['harmful_flip']:.3f} "
              f"[{lo:.2f}, {hi:.2f}] | {counts} |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"done in {report['seconds']} s")


if __name__ == "__main__":
    main()
