"""The cross-layer hydra test per layer pair (issue 28 item 1): which SAE layer's part of a
prompt's minimal set wakes which later layer's latents, and do the woken ones carry refusal?

The search's own test (``refusal_eval.search.hydra``) ablates each refused prompt's whole
minimal set S below layer j and reads layer j. Here S is split by layer: for every source layer
i, only ``S ∩ layer i`` is ablated and every later SAE layer j is read (pooled activations, the
search's threshold). A latent is *woken by (i, j)* when it is silent at baseline and active then.
The ``--top-n`` most active woken latents per prompt and pair are tested exactly as the search
tests them (``effect = P(refusal | S minus w) - P(refusal | S plus w)``, a hydra when the effect
reaches ``hydra_min_effect`` and a relative tau).

A check that this reproduces the search: the whole-S wake counts per layer are recomputed and
printed beside the plan's ``stage3.woken.woken_by_layer``.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/hydra_pairs.py --plan PLAN.json \
        --out docs/search/hydra_pairs_2k.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from refusal_eval import load_model, load_saes
from refusal_eval.config import SearchConfig
from refusal_eval.saes._stream import widths
from refusal_eval.search.activations import pooled_activations
from refusal_eval.search.artifacts import Latent
from refusal_eval.search.hydra import per_row_edits
from refusal_eval.search.pipeline import PromptSets
from refusal_eval.search.plan import AblationPlan
from refusal_eval.search.scorer import SubsetScorer


def woken_between(
    before: torch.Tensor, after: torch.Tensor, cols: list[int], rows: list[int], threshold: float
) -> list[tuple[int, int, float]]:
    """(prompt, column, activation after) of every latent silent before and active after."""
    idx = torch.tensor(cols)
    out = []
    for p in rows:
        b, a = before[p, idx], after[p, idx]
        for h in torch.nonzero((b <= threshold) & (a > threshold)).flatten().tolist():
            out.append((p, cols[h], float(a[h])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", required=True)
    ap.add_argument("--saes", default=None, help="the plan's SAEs (default: the source it records)")
    ap.add_argument("--top-n", type=int, default=4, help="woken latents tested per prompt and pair")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    plan = AblationPlan.load(args.plan)
    body = plan.body
    cfg = SearchConfig().replace(**{k: v for k, v in body.config.items() if k in SearchConfig().to_dict()})
    chat = load_model(body.model.spec, dtype=args.dtype)
    layers = sorted(plan.sae_layer_ids)
    saes = load_saes(args.saes or plan.sae_source, layers=layers, model=chat)
    harmful = PromptSets.from_config(cfg).harmful
    found = [m for m in body.stage2.prompts if m.minimal]
    prompts = [harmful[m.harmful_index] for m in found]
    sets = [frozenset(m.minimal) for m in found]
    index: list[Latent] = [(layer, i) for layer in layers for i in range(widths(saes)[layer])]
    columns = {layer: [c for c, (la, _) in enumerate(index) if la == layer] for layer in layers}
    thr = cfg.wake_threshold
    pool: dict[str, Any] = {"pool": cfg.pool, "batch_size": cfg.batch_size}
    print(
        f"{len(prompts)} prompts with a minimal set, SAE layers {layers}, dtype {chat.model.dtype}",
        flush=True,
    )

    before = pooled_activations(chat.model, chat.tokenizer, prompts, saes, **pool).dense()
    whole = pooled_activations(
        chat.model, chat.tokenizer, prompts, saes, edits=per_row_edits(saes, sets), **pool
    ).dense()
    check = {}
    for j in layers:
        rows = [p for p, s in enumerate(sets) if s and min(la for la, _ in s) < j]
        check[j] = len(woken_between(before, whole, columns[j], rows, thr))
    recorded = body.stage3.woken.woken_by_layer if body.stage3.woken else None
    print(f"whole-S woken by layer: recomputed {check}, plan {recorded}", flush=True)

    scorer = SubsetScorer(
        chat.model, chat.tokenizer, prompts, saes, list(body.refusal_ids),
        batch_size=cfg.batch_size, skip_prefix=cfg.skip_prefix, progress=False,
    )  # fmt: skip
    pairs: list[dict[str, Any]] = []
    for i in layers:
        part = [frozenset(x for x in s if x[0] == i) for s in sets]
        rows = [p for p, s in enumerate(part) if s]
        if not rows:
            pairs.extend({"from": i, "to": j, "prompts": 0} for j in layers if j > i)
            continue
        after = pooled_activations(
            chat.model, chat.tokenizer, prompts, saes, edits=per_row_edits(saes, part), **pool
        ).dense()
        for j in (j for j in layers if j > i):
            woken = woken_between(before, after, columns[j], rows, thr)
            tests: list[tuple[int, Latent]] = []
            for p in rows:
                mine = sorted((w for w in woken if w[0] == p), key=lambda w: (-w[2], w[1]))[: args.top_n]
                tests.extend((p, index[c]) for _, c, _ in mine)
            starts = [w[0] for _, w in tests]  # the pair differs only from w's layer up
            without = scorer.p_refusal([(p, sets[p] - {w}) for p, w in tests], starts) if tests else []
            with_ = scorer.p_refusal([(p, sets[p] | {w}) for p, w in tests], starts) if tests else []
            effects = [hi - lo for hi, lo in zip(without, with_, strict=True)]
            hydra = [
                {"prompt": p, "latent": list(w), "in_minimal": w in sets[p], "effect": e}
                for (p, w), e, hi in zip(tests, effects, without, strict=True)
                if e >= cfg.hydra_min_effect and e / max(hi, cfg.eps) >= cfg.tau
            ]
            pairs.append({
                "from": i, "to": j, "prompts": len(rows), "woken": len(woken), "tested": len(tests),
                "max_effect": max(effects, default=None), "hydra": hydra,
            })  # fmt: skip
            top = max(effects, default=float("nan"))
            print(f"{i} -> {j}: {len(rows)} prompts, woken {len(woken)}, tested {len(tests)}, "
                  f"max effect {top:.3f}, hydra {len(hydra)}", flush=True)  # fmt: skip
    report = {
        "plan": str(args.plan),
        "plan_sha256": plan.hash,
        "dtype": str(chat.model.dtype),
        "threshold": thr,
        "top_n": args.top_n,
        "min_effect": cfg.hydra_min_effect,
        "tau": cfg.tau,
        "n_prompts": len(prompts),
        "whole_set_woken_by_layer": {"recomputed": check, "plan": recorded},
        "pairs": pairs,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"done in {report['seconds']} s")


if __name__ == "__main__":
    main()
