"""The ``sae_kl`` condition (issue 28 item 6): the union pruned by harmless share to a KL bound."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import make_coder, tiny_tokenizer

from refusal_eval.ablation import ablate, as_ablations
from refusal_eval.config import SearchConfig
from refusal_eval.scoring import first_token_kl, first_token_logprobs
from refusal_eval.search.artifacts import by_layer
from refusal_eval.search.kl_bound import fewest_to_drop, harmless_share, kl_pruned


@pytest.mark.parametrize("bound", [0.005, 0.05, 0.3, 0.55, 0.99, 1.0, 2.0])
def test_fewest_to_drop_finds_the_smallest_count_under_the_bound(bound):
    curve = [1.0, 0.9, 0.8, 0.6, 0.5, 0.4, 0.2, 0.1, 0.04, 0.01]  # KL after dropping k of 10
    asked: list[int] = []

    def kl_of(k: int) -> float:
        asked.append(k)
        return curve[k]

    k, points = fewest_to_drop(len(curve), kl_of, bound)
    want = next((i for i, v in enumerate(curve) if v <= bound), len(curve))
    assert k == want
    assert points == {i: curve[i] for i in asked}  # every measured point is returned
    assert len(asked) <= 1 + 4  # k=0, then a bisection over 10
    assert 10 not in asked  # nothing ablated: KL 0, never measured
    if 0 < k < len(curve):  # the bisection's bracket: the count before k was measured over the bound
        assert points[k - 1] > bound >= points[k]
    if k == len(curve):  # only dropping everything meets it: the bracket's last measured count fails
        assert points[k - 1] > bound


def test_fewest_to_drop_of_nothing_measures_nothing():
    assert fewest_to_drop(0, lambda k: pytest.fail("measured"), 0.1) == (0, {})


def _chat(model):
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    return SimpleNamespace(model=model, tokenizer=tok)


def test_kl_pruned_drops_the_harmless_busiest_latents_until_the_bound_holds(qwen_tiny):
    chat = _chat(qwen_tiny)
    saes = {1: make_coder("standard", layer=1, d_sae=64, seed=3)}
    union = [(1, i) for i in range(0, 64, 2)]  # 32 latents
    refused = [f"w{10 + i} w{20 + i} w{30 + i}" for i in range(6)]
    harmless = [f"w{40 + i} w{45 + i}" for i in range(8)]
    base = first_token_logprobs(chat.model, chat.tokenizer, harmless, batch_size=4)

    def kl(kept) -> float:
        with ablate(chat.model, as_ablations(by_layer(sorted(kept)), saes)):
            lp = first_token_logprobs(chat.model, chat.tokenizer, harmless, batch_size=4)
        return first_token_kl(base, lp)

    whole = kl(union)
    assert whole > 0
    bound = whole / 3
    got = kl_pruned(chat, saes, union, refused, harmless, bound=bound, batch_size=4)
    order = [(la, i) for la, i, _ in got.order]
    assert order == [x for x, _ in harmless_share(chat, saes, union, refused, harmless, 4)]
    shares = [s for *_, s in got.order]
    assert shares == sorted(shares, reverse=True) and all(0 <= s <= 1 for s in shares)
    assert sorted(order) == union
    assert got.kept == tuple(sorted(order[got.dropped :]))
    assert 0 < got.dropped < len(union)
    points = dict(got.points)
    # the kept set meets the bound, recomputed here; one latent fewer dropped did not
    assert kl(got.kept) == pytest.approx(points[got.dropped]) and kl(got.kept) <= bound
    assert points[got.dropped - 1] > bound
    assert points[0] == pytest.approx(whole)


def test_sae_max_kl_is_in_the_key_only_when_set_and_only_from_stage_3_on():
    from refusal_eval.search.pipeline import stage_keys

    assert "sae_max_kl" not in SearchConfig().result_dict()  # the shipped plans' keys stay
    assert SearchConfig(sae_max_kl=0.3).result_dict()["sae_max_kl"] == 0.3
    # plans record it only when set (a shipped plan's config reads as one searched without it);
    # `refusal-eval config` (to_dict) still shows it
    assert "sae_max_kl" not in SearchConfig().plan_dict() and SearchConfig().to_dict()["sae_max_kl"] is None
    assert SearchConfig(sae_max_kl=0.3).plan_dict()["sae_max_kl"] == 0.3
    model = {"name": "m", "revision": "r", "dtype": "bf16"}
    saes = {"layers": {"6": {"sha256": "a"}}}
    data = {"harmful": {"sha256": "h"}}
    keys = stage_keys(model, saes, SearchConfig(), data, [1])
    other = stage_keys(model, saes, SearchConfig(sae_max_kl=0.3), data, [1])
    assert [s for s in keys if keys[s] != other[s]] == ["stage3", "verification"]
    with pytest.raises(Exception, match="sae_max_kl must be > 0"):
        SearchConfig().replace(sae_max_kl=0)


def test_the_plan_summary_names_the_pruning():
    from refusal_eval.report.plan_summary import summary
    from refusal_eval.search.artifacts import KlPruning

    k = KlPruning(0.3, ((0, 1, 0.9), (0, 2, 0.5), (1, 3, 0.1)), 1, ((0, 2), (1, 3)), ((0, 0.8), (1, 0.2)))
    line = "sae_kl: 2 of 3 latents kept, 1 harmless-busiest dropped for first-token KL <= 0.3"
    assert line + " (KL by latents dropped: 0: 0.800, 1: 0.200)" in _summary_with(summary, k)


def _summary_with(summary, pruning) -> str:
    import dataclasses
    import json
    from pathlib import Path

    from refusal_eval.search.artifacts import PlanBody

    path = Path(__file__).parents[1] / "refusal_eval/plans/qwen2.5-coder-0.5b-instruct-res-2k.json"
    raw = {
        k: v
        for k, v in json.loads(path.read_text()).items()
        if k not in ("format", "version", "tensors", "content_sha256")
    }
    body = PlanBody.from_json(raw)
    assert "sae_kl" not in summary(body)  # a plan searched without the option says nothing of it
    return summary(dataclasses.replace(body, stage3=dataclasses.replace(body.stage3, kl_pruning=pruning)))
