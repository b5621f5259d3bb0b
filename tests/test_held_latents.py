"""Ablation memory O(|S| x d_in): SAEs that hold only the latents a plan ablates.

A 65,536-wide JumpReLU SAE on disk (sae-lens format) is loaded with ``latents=``: only the
requested rows are in memory, the fingerprint equals the whole SAE's, and ablated forwards and
generations equal those of the whole SAE, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import D_MODEL, make_coder, make_sae_lens

from refusal_eval import ablate
from refusal_eval.coders import JumpReLUCoder
from refusal_eval.errors import RefusalEvalError
from refusal_eval.saes import load_saes
from refusal_eval.search.plan import sae_weights_hash

WIDE = 65_536
LATENTS = [3, 4, 5, 900, 40_000, 65_535]  # runs and singletons, both ends of the range


@pytest.fixture(autouse=True)
def _own_cache(isolated_cache):
    """Held loads cache the whole SAE's fingerprint: keep it out of the user's cache."""
    return isolated_cache


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("wide")
    for layer, seed in ((1, 0), (2, 1)):
        sae = make_sae_lens("jumprelu", d_sae=WIDE, layer=layer, seed=seed)
        with torch.no_grad():  # low thresholds so the chosen latents fire on the tiny model
            sae.threshold.uniform_(0.0, 0.05)
            sae.b_enc.normal_(0.3, 0.1)
        sae.save_model(str(root / f"layer_{layer}"))
    return root


def test_held_coder_holds_only_the_requested_rows(wide_dir):
    held = load_saes(str(wide_dir), latents={1: LATENTS, 2: [7]})
    assert held.layers == [1, 2]
    c = held[1]
    assert isinstance(c, JumpReLUCoder)
    assert (c.d_sae, c.n_held, c.held) == (WIDE, len(LATENTS), tuple(LATENTS))
    sizes = {name: tuple(getattr(c, name).shape) for name in c.tensor_fields()}
    assert sizes == {
        "W_enc": (D_MODEL, 6), "b_enc": (6,), "W_dec": (6, D_MODEL), "b_dec": (D_MODEL,), "threshold": (6,),
    }  # fmt: skip
    # own memory: one kept view into the memory-mapped file would keep all of it mapped
    mapped = [line for line in Path("/proc/self/maps").read_text().splitlines() if str(wide_dir) in line]
    assert mapped == []
    held_bytes = sum(getattr(c, n).numel() * 4 for n in c.tensor_fields())
    assert held_bytes == (2 * 6 * D_MODEL + 2 * 6 + D_MODEL) * 4  # 3.4 KB of the whole SAE's 33.8 MB
    assert held.describe()["held"] == {"1": 6, "2": 1}


def test_held_rows_and_fingerprint_equal_the_whole_sae(wide_dir):
    whole = load_saes(str(wide_dir), layers=[1])[1]
    held = load_saes(str(wide_dir), latents={1: LATENTS})[1]
    idx = torch.tensor(LATENTS)
    assert torch.equal(held.W_enc, whole.W_enc[:, idx])
    assert torch.equal(held.W_dec, whole.W_dec[idx])
    assert torch.equal(held.threshold, whole.threshold[idx])  # type: ignore[attr-defined]
    assert torch.equal(held.b_dec, whole.b_dec)
    assert sae_weights_hash(held) == sae_weights_hash(whole)
    assert whole.subset(LATENTS).weights_sha256() == sae_weights_hash(whole)
    bf16 = load_saes(str(wide_dir), latents={1: LATENTS}, dtype=torch.bfloat16)[1]
    assert (
        bf16.weights_sha256()
        == load_saes(str(wide_dir), layers=[1], dtype=torch.bfloat16)[1].weights_sha256()
    )


def test_the_cached_fingerprint_follows_the_file(tmp_path, isolated_cache):
    path = tmp_path / "sae"
    make_sae_lens("jumprelu", d_sae=128, layer=1, seed=0).save_model(str(path))
    first = load_saes(str(path), latents={1: [1]})[1].weights_sha256()
    assert len(list((isolated_cache / "sae_hashes").glob("*.json"))) == 1
    assert load_saes(str(path), latents={1: [2]})[1].weights_sha256() == first  # read from the cache
    make_sae_lens("jumprelu", d_sae=128, layer=1, seed=5).save_model(str(path))  # new weights
    again = load_saes(str(path), latents={1: [1]})[1].weights_sha256()
    assert again != first
    assert again == load_saes(str(path))[1].weights_sha256()


def test_ablation_through_held_rows_equals_the_whole_sae(wide_dir, qwen_tiny):
    whole = load_saes(str(wide_dir), layers=[1, 2])
    sets = {1: LATENTS, 2: [7, 8]}
    held = load_saes(str(wide_dir), latents=sets)
    ids = torch.randint(3, 90, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = qwen_tiny(ids).logits
        with ablate(qwen_tiny, sets, whole):
            want = qwen_tiny(ids).logits
            want_gen = qwen_tiny.generate(ids, max_new_tokens=6, do_sample=False)
        with ablate(qwen_tiny, sets, held):
            got = qwen_tiny(ids).logits
            got_gen = qwen_tiny.generate(ids, max_new_tokens=6, do_sample=False)
        # per-row sets: row 0 ablates a subset of the held latents, row 1 all of them
        rows = {1: [[3, 40_000], LATENTS]}
        with ablate(qwen_tiny, rows, whole):
            want_rows = qwen_tiny(ids).logits
        with ablate(qwen_tiny, rows, held):
            got_rows = qwen_tiny(ids).logits
    assert not torch.allclose(want, base, atol=1e-4)  # the ablation does something
    assert torch.equal(got, want)
    assert torch.equal(got_gen, want_gen)
    assert torch.equal(got_rows, want_rows)


def test_a_latent_that_is_not_held_names_the_fix(wide_dir, qwen_tiny):
    held = load_saes(str(wide_dir), latents={1: LATENTS})
    with (
        pytest.raises(
            RefusalEvalError, match=r"latent\(s\) \[6\] of SAE .* are not held \(this coder holds 6"
        ),
        ablate(qwen_tiny, {1: [5, 6]}, held),
    ):
        pass
    with pytest.raises(RefusalEvalError, match="encode needs every latent"):
        held[1].encode(torch.zeros(D_MODEL))
    from refusal_eval.saes import to_sae_lens

    with pytest.raises(RefusalEvalError, match="to_sae_lens needs every latent"):
        to_sae_lens(held[1])  # a sae-lens SAE has every latent: a held coder cannot be one
    with pytest.raises(RefusalEvalError, match=r"latent ids \[65536\] are out of range .*d_sae=65536"):
        load_saes(str(wide_dir), latents={1: [65_536]})


def test_topk_is_held_whole_and_says_so(tmp_path, caplog):
    make_sae_lens("topk", d_sae=512, layer=1, k=8).save_model(str(tmp_path / "topk"))
    with caplog.at_level("INFO"):
        saes = load_saes(str(tmp_path / "topk"), latents={1: [1, 2]})
    assert saes[1].held is None and saes[1].n_held == 512
    assert saes.describe()["held"] == {"1": "all"}
    assert "held whole (its encoder reads every latent)" in caplog.text
    with pytest.raises(RefusalEvalError, match="a topk SAE cannot hold a subset"):
        saes[1].subset([1])


def test_subset_of_a_standard_coder_ablates_like_the_whole(qwen_tiny):
    whole = make_coder("standard", d_sae=300, layer=1)
    held = whole.subset([10, 11, 250])
    x = torch.randn(4, 5, D_MODEL)
    from refusal_eval.ablation import ablate_latents

    want = ablate_latents(whole, x, torch.tensor([10, 250]))
    got = ablate_latents(held, x, torch.tensor(held.positions([10, 250])))
    assert torch.equal(got, want)
    with pytest.raises(RefusalEvalError, match="held latents disagree with the tensors"):
        JumpReLUCoder(
            held.W_enc, held.b_enc, held.W_dec, held.b_dec, held.hook, held=(1, 2), full_d_sae=300,
            threshold=torch.zeros(3),
        )  # fmt: skip
