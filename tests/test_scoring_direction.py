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
