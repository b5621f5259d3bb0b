"""Search-time proxies and stage-1 helpers on tiny models and synthetic numbers."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_tokenizer

from refusal_eval.chat import encode_chat
from refusal_eval.scoring import first_token_kl, last_position_logits, refusal_score
from refusal_eval.search.direction import (
    LayerScore,
    last_token_residuals,
    layer_scan,
    mean_diff_directions,
    select_layer,
)


def test_refusal_score_is_log_odds_of_refusal_tokens():
    probs = torch.full((1, 10), 0.05)
    probs[0, 3], probs[0, 7] = 0.3, 0.2  # p(R) = 0.5 over tokens {3, 7}
    probs[0, 0] = 1 - probs[0, 1:].sum()
    score = refusal_score(probs.log(), [3, 7])
    assert score.item() == pytest.approx(math.log(0.5) - math.log(0.5), abs=1e-5)
    score = refusal_score(probs.log(), [3])
    assert score.item() == pytest.approx(math.log(0.3 / 0.7), abs=1e-5)


def test_first_token_kl():
    a = torch.log_softmax(torch.randn(4, 9), -1)
    b = torch.log_softmax(torch.randn(4, 9), -1)
    assert first_token_kl(a, a) == pytest.approx(0.0, abs=1e-7)
    expected = (a.exp() * (a - b)).sum(-1).mean().item()
    assert first_token_kl(a, b) == pytest.approx(expected) and expected > 0


def test_last_position_logits_match_full_forward(qwen_tiny):
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    enc = encode_chat(tok, ["w1 w2 w3 w4 w5", "w9"])
    assert enc["attention_mask"][1, 0] == 0  # left padded
    with torch.no_grad():
        full = qwen_tiny(**enc).logits[:, -1]
        last = last_position_logits(qwen_tiny, enc)
    torch.testing.assert_close(last, full)


def test_last_token_residuals_and_mean_diff(qwen_tiny):
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    res = last_token_residuals(qwen_tiny, tok, ["w1 w2", "w3", "w4 w5 w6"], batch_size=2)
    assert res.shape == (3, 3, 64)
    enc = encode_chat(tok, ["w3"])
    seen = {}
    h = qwen_tiny.model.layers[1].register_forward_hook(lambda _m, _a, o: seen.setdefault("x", o))
    with torch.no_grad():
        qwen_tiny(**enc)
    h.remove()
    # the padded batch gives the same last-token residual as the prompt alone
    torch.testing.assert_close(res[1, 1], seen["x"][0, -1], atol=1e-4, rtol=1e-4)
    dirs = mean_diff_directions(res[:, :2], res[:, 2:])
    torch.testing.assert_close(dirs, res[:, :2].mean(1) - res[:, 2])


def test_select_layer_applies_kl_and_depth_filters():
    scores = [
        LayerScore(0, -1.0, 0.05, 0.1),
        LayerScore(1, -5.0, 0.50, 0.1),  # strongest but breaks harmless prompts
        LayerScore(2, -2.0, 0.08, 0.1),  # best that passes
        LayerScore(4, -9.0, 0.01, 0.1),  # too deep (not below 80% of 5 layers)
    ]
    assert select_layer(scores, 5).layer == 2
    assert select_layer(scores, 5, max_kl=1.0).layer == 1
    assert select_layer([LayerScore(0, -1.0, 0.5, 0.1)], 4).layer == 0  # fallback: none pass KL


# the default model's real scan (docs/saes/layer_scan_qwen0.5b.json, baseline score -0.30): only
# the early layers 4-6 pass the KL filter, and direction ablation there barely moves refusal
QWEN05_SCAN = [
    (4, 0.06, 0.041), (5, -0.48, 0.054), (6, -0.74, 0.063), (10, -1.82, 0.184), (12, -3.14, 0.27),
    (14, -2.88, 0.154), (15, -2.76, 0.137), (18, -5.06, 0.37), (19, -4.02, 0.178), (22, -3.12, 0.073),
]  # fmt: skip


def _scan(rows):
    return [LayerScore(layer, score, kl, 0.1) for layer, score, kl in rows]


def test_select_layer_effectiveness_filter_and_recorded_fallback():
    scores = _scan(QWEN05_SCAN)
    plain = select_layer(scores, 24)  # no baseline: the classic rule, which picks the weak layer 6
    assert (plain.layer, plain.selected_by) == (6, "arditi")
    # best eligible drop (< 19.2 deep) is layer 18: 4.77; half of it is 2.38, so 4-6 are not
    # effective, no effective layer passes KL < 0.1, and the effective layer with least KL wins
    choice = select_layer(scores, 24, min_drop_frac=0.5, baseline_score=-0.30)
    assert (choice.layer, choice.selected_by, choice.baseline_score) == (15, "fallback_min_kl", -0.30)
    # a layer that is effective *and* passes KL is an Arditi pick, never a fallback
    kind = select_layer(_scan([*QWEN05_SCAN, (16, -3.5, 0.08)]), 24, min_drop_frac=0.5, baseline_score=-0.30)
    assert (kind.layer, kind.selected_by) == (16, "arditi")
    # nothing lowers the refusal score at all: lowest score by depth alone, said so
    flat = select_layer(_scan([(1, 0.5, 0.01), (2, 0.4, 0.5)]), 24, min_drop_frac=0.5, baseline_score=0.0)
    assert (flat.layer, flat.selected_by) == (2, "depth_only")


def test_select_layer_on_the_15b_scan_keeps_layer_22():
    rows = [(13, -3.54, 0.049), (14, -5.4, 0.28), (19, -6.7, 0.243), (21, -5.6, 0.059), (22, -5.78, 0.051)]
    choice = select_layer(_scan(rows), 28, min_drop_frac=0.5, baseline_score=1.72)
    assert (choice.layer, choice.selected_by) == (22, "arditi")


def test_layer_scan_scores_only_the_layers_it_may_pick(qwen_tiny):
    """The deep layers (>= max_depth_frac of the depth) cannot be chosen, so the search does not
    pay two forwards each to score them; the choice and the shared scores equal a full scan's."""
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    harmful, harmless = ["w1 w2 w3", "w4 w5", "w6"], ["w7 w8", "w9", "w2 w9"]
    n_layers = qwen_tiny.config.num_hidden_layers
    kw = {"select_prompts": 3, "max_depth_frac": 0.5, "batch_size": 2}
    calls: list[int] = []
    h = qwen_tiny.model.layers[0].register_forward_pre_hook(lambda *_: calls.append(1))
    part = layer_scan(qwen_tiny, tok, harmful, harmless, [3, 7], **kw)
    n_part, calls[:] = len(calls), []
    full = layer_scan(qwen_tiny, tok, harmful, harmless, [3, 7], score_all=True, **kw)
    h.remove()
    assert [s.layer for s in part.scores] == [layer for layer in range(n_layers) if layer < 0.5 * n_layers]
    assert [s.layer for s in full.scores] == list(range(n_layers))
    assert part.choice == full.choice
    assert part.scores == full.scores[: len(part.scores)]
    # 2 residual passes + 2 baselines + 2 per scored layer, each a batch of 2 and one of 1
    assert n_part == 2 * (4 + 2 * len(part.scores)) and len(calls) == 2 * (4 + 2 * n_layers)
