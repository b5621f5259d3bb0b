"""SAE quality numbers on a tiny model with SAEs whose answers are known in closed form."""

from __future__ import annotations

import pytest
import torch
from conftest import D_MODEL, tiny_tokenizer

from refusal_eval.coders import StandardCoder
from refusal_eval.hooks import HookPoint
from refusal_eval.models import ChatModel
from refusal_eval.saes import sae_quality


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
