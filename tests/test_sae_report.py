"""SAE quality numbers on a tiny model with SAEs whose answers are known in closed form."""

from __future__ import annotations

import pytest
import torch
from conftest import D_MODEL, tiny_tokenizer

from refusal_eval.coders import StandardCoder
from refusal_eval.hooks import HookPoint
from refusal_eval.models import ChatModel
from refusal_eval.saes import firing_counts, firing_summary, heldout_prompts, sae_quality


def _chat(model) -> ChatModel:
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    return ChatModel(model=model, tokenizer=tok, spec="tiny", source="code")


def _texts() -> list[str]:
    gen = torch.Generator().manual_seed(0)
    return [
        " ".join(f"w{int(i)}" for i in torch.randint(6, 90, (int(n),), generator=gen))
        for n in torch.randint(4, 20, (12,), generator=gen)
    ]


def _identity_coder(layer: int) -> StandardCoder:
    eye = torch.eye(D_MODEL)
    return StandardCoder(
        W_enc=torch.cat([eye, -eye], 1),
        b_enc=torch.zeros(2 * D_MODEL),
        W_dec=torch.cat([eye, -eye], 0),
        b_dec=torch.zeros(D_MODEL),
        hook=HookPoint(layer),
    )


def test_exact_sae_explains_everything(qwen_tiny):
    q = sae_quality(_chat(qwen_tiny), _identity_coder(1), _texts(), batch_size=5, progress=False)
    assert q.fve == pytest.approx(1.0, abs=1e-5)
    assert q.mean_l0 == pytest.approx(D_MODEL, abs=0.01)  # each coordinate is + or -, never both
    assert q.dead_fraction == 0.0
    assert q.ce_spliced == pytest.approx(q.ce_clean, abs=1e-4)
    assert q.n_tokens == sum(len(t.split()) - 1 for t in _texts())  # position 0 left out


def test_useless_sae_is_scored_as_such(qwen_tiny):
    coder = _identity_coder(1)
    coder.W_dec.zero_()
    coder.W_enc[:, D_MODEL:] = 0  # half the latents can never fire
    q = sae_quality(_chat(qwen_tiny), coder, _texts(), batch_size=5, progress=False)
    assert q.fve < 0.0
    assert q.dead_fraction == pytest.approx(0.5)
    assert q.ce_spliced > q.ce_clean + 0.1


def test_several_coders_in_one_report_score_exactly_as_each_alone(qwen_tiny):
    """sae-report over a release: one clean forward serves every layer; each layer's splice is
    its own forward, so the numbers equal one report per coder (splices never leak across)."""
    from refusal_eval.saes import sae_qualities

    broken = _identity_coder(0)  # first in the stack: a splice leaking into other passes would show
    broken.W_dec[: D_MODEL // 2].zero_()  # half the coordinates' positive parts are lost
    coders = [_identity_coder(2), broken, _identity_coder(1)]
    chat, texts = _chat(qwen_tiny), _texts()
    together = sae_qualities(chat, coders, texts, batch_size=5, progress=False)
    alone = [sae_quality(chat, c, texts, batch_size=5, progress=False) for c in coders]
    assert [q.layer for q in together] == [2, 0, 1]
    for a, b in zip(together, alone, strict=True):
        numbers = {k: v for k, v in b.to_dict().items() if k != "architecture"}
        assert {k: a.to_dict()[k] for k in numbers} == pytest.approx(numbers, rel=1e-6, abs=1e-9)
    assert abs(together[1].ce_spliced - together[1].ce_clean) > 1e-3  # the broken splice tells
    assert together[2].ce_spliced == pytest.approx(together[2].ce_clean, abs=1e-4)


def _random_coder(layer: int, seed: int) -> StandardCoder:
    gen = torch.Generator().manual_seed(seed)
    w_enc = torch.randn(D_MODEL, 48, generator=gen)
    w_enc[:, :12] = 0  # with the negative bias these 12 can never fire
    return StandardCoder(
        W_enc=w_enc,
        b_enc=-3.0 * torch.ones(48),
        W_dec=torch.randn(48, D_MODEL, generator=gen),
        b_dec=torch.zeros(D_MODEL),
        hook=HookPoint(layer),
    )


def test_firing_counts_equal_a_token_by_token_count_and_stop_at_the_deepest_layer(qwen_tiny):
    chat = _chat(qwen_tiny)
    seqs = [chat.tokenizer(t, add_special_tokens=False)["input_ids"] for t in _texts()]
    coders = [_random_coder(0, 1), _random_coder(1, 2)]
    ran: list[int] = []
    last = qwen_tiny.model.layers[-1].register_forward_hook(lambda *_: ran.append(1))
    counts, n = firing_counts(chat, coders, seqs, batch_size=5, progress=False)
    last.remove()
    assert not ran  # the tiny model has 2 layers: the deepest SAE is on layer 1, the last is not run
    assert n == sum(len(s) - 1 for s in seqs)  # position 0 left out
    # the expected counts: each sequence alone, unpadded, every token after position 0
    want = {c.layer: torch.zeros(48, dtype=torch.long) for c in coders}
    for ids in seqs:
        with torch.no_grad():
            hs = qwen_tiny(torch.tensor([ids]), output_hidden_states=True).hidden_states
        for c in coders:
            want[c.layer] += (c.encode(hs[c.layer + 1][0, 1:].float()) > 0).sum(0)
    for c in coders:
        assert (counts[c.layer][:12] == 0).all() and (counts[c.layer][12:] > 0).all()
        torch.testing.assert_close(counts[c.layer], want[c.layer], atol=2, rtol=0)  # padding rounding


def test_firing_summary_tells_dead_from_rare():
    counts = torch.tensor([0, 0, 1, 5, 300_000, 200_000, 100_000, 100_000, 9, 0])
    f = firing_summary(3, counts, 1_000_000)
    assert (f.layer, f.d_sae, f.n_tokens) == (3, 10, 1_000_000)
    assert f.dead_fraction == pytest.approx(0.3)
    assert f.rare_fraction == pytest.approx(0.3)  # 1, 5 and 9 in a million: below 1e-5
    assert f.median_frequency == pytest.approx(0.1)  # of the 7 that fired: 1, 5, 9, 1e5, ...


def test_heldout_prompts_stop_at_the_token_budget(qwen_tiny, monkeypatch):
    from refusal_eval.data import Prompt

    chat = _chat(qwen_tiny)
    fake = {"a": [Prompt(text=f"w{i} w{i + 1}") for i in range(10, 40)]}
    monkeypatch.setattr("refusal_eval.saes._firing.load_prompts", lambda name: fake[name])
    seqs = heldout_prompts(chat, ["a"], 20)
    got = sum(len(s) - 1 for s in seqs)
    assert got >= 20 and got - (len(seqs[-1]) - 1) < 20  # the last prompt crossed the budget
