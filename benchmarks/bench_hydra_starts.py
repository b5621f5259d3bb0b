"""The hydra test with rows started at their woken latent's layer vs from the first SAE layer.

A test's two rows (the prompt's minimal set S without and with the woken latent w at layer j)
ablate the same latents below j, so both can start at j from one cached residual per (prompt,
S below j) instead of running every layer from the first SAE layer (``SubsetScorer`` starts).
This runs the search's own ``find_hydras`` on a shipped plan's refused prompts twice in one
process, the reference scorer ignoring ``starts`` (every row from the first SAE layer, as before),
and prints wall time, decoder-layer rows run (rows and their cached prefixes), and whether the two
agree: the same hydras and tested counts, and how far any scored P(refusal) moved.

Run: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_hydra_starts.py \
        --plan refusal_eval/plans/qwen2.5-coder-0.5b-instruct-res-2k.json --prompts 12
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from refusal_eval import load_model, load_saes
from refusal_eval.config import SearchConfig
from refusal_eval.search.activations import pooled_activations
from refusal_eval.search.artifacts import Woken
from refusal_eval.search.hydra import find_hydras
from refusal_eval.search.pipeline import PromptSets
from refusal_eval.search.plan import AblationPlan
from refusal_eval.search.scorer import Row, SubsetScorer


class FromFirst(SubsetScorer):
    """The reference: every row runs from the first SAE layer, whatever start it is given."""

    def p_refusal(
        self, rows: Sequence[Row], starts: Sequence[int] | None = None, *, desc: str | None = None
    ) -> list[float]:
        return super().p_refusal(rows, None, desc=desc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", required=True)
    ap.add_argument("--prompts", type=int, default=12, help="the plan's first N refused prompts")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    plan = AblationPlan.load(args.plan)
    body = plan.body
    cfg = SearchConfig().replace(**{k: v for k, v in body.config.items() if k in SearchConfig().to_dict()})
    chat = load_model(body.model.spec, dtype=args.dtype)
    layers = sorted(plan.sae_layer_ids)
    saes = load_saes(plan.sae_source, layers=layers, model=chat)
    harmful = PromptSets.from_config(cfg).harmful
    found = [m for m in body.stage2.prompts if m.minimal][: args.prompts]
    prompts = [harmful[m.harmful_index] for m in found]
    sets = [frozenset(m.minimal) for m in found]
    sae_layers = list(body.stage1.sae_layers)
    before = pooled_activations(
        chat.model, chat.tokenizer, prompts, saes, pool=cfg.pool, batch_size=cfg.batch_size
    )
    print(f"{len(prompts)} prompts, SAE layers {sae_layers}, {chat.model.dtype}", flush=True)

    sub = {la: saes[la] for la in sae_layers}
    results: dict[str, tuple[float, int, Woken, dict[Row, float]]] = {}
    for name, cls in (("from first layer", FromFirst), ("from w's layer", SubsetScorer)):
        scorer = cls(
            chat.model, chat.tokenizer, prompts, sub, list(body.refusal_ids),
            batch_size=cfg.batch_size, progress=False,
        )  # fmt: skip
        t0 = time.perf_counter()
        # the scorer holds every latent of its layers (whole SAEs), so it serves any woken set
        woken = find_hydras(chat, saes, prompts, sets, before, lambda _latents, s=scorer: s, cfg)
        wall = time.perf_counter() - t0
        layer_rows = scorer.layer_rows + scorer.prefix_layer_rows
        results[name] = (wall, layer_rows, woken, dict(scorer._memo))
        print(
            f"{name}: {wall:.1f} s, {woken.n_tested} tests, {scorer.forward_rows} rows, "
            f"{layer_rows} layer-rows ({scorer.prefix_layer_rows} for prefixes), {len(woken.hydra)} hydras",
            flush=True,
        )
    (w0, l0, k0, m0), (w1, l1, k1, m1) = results.values()
    same = (k0.tested_by_layer, [(h.prompt, h.latent) for h in k0.hydra]) == (
        k1.tested_by_layer,
        [(h.prompt, h.latent) for h in k1.hydra],
    )
    diffs = sorted(abs(m0[r] - m1[r]) for r in m0)
    print(f"speed-up {w0 / w1:.2f}x wall, {l0 / l1:.2f}x layer-rows; same tests and hydras: {same}; "
          f"|dP(refusal)| over {len(diffs)} rows: median {diffs[len(diffs) // 2]:.1e}, "
          f"99th percentile {diffs[len(diffs) * 99 // 100]:.1e}, max {diffs[-1]:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
