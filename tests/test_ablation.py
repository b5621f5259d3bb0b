"""The ablation engine: exactness of the sparse delta, per-row sets, hooks, generation."""

from __future__ import annotations

import pytest
import torch
from conftest import D_MODEL, make_coder, make_sae_lens, tiny_model

from refusal_eval import DirectionAblation, LatentAblation, RefusalEvalError, ablate
from refusal_eval.ablation import _DirectionEdit, _LatentEdit, by_row
from refusal_eval.hooks import decoder_layers
from refusal_eval.saes import from_sae_lens

ARCHS = [
    ("standard", {}),
    ("jumprelu", {}),
    ("topk", {"k": 16}),
    ("topk", {"k": 16, "rescale_acts_by_decoder_norm": True}),
]


@pytest.mark.parametrize(("arch", "extra"), ARCHS)
def test_sparse_delta_equals_decode_with_error_term(arch, extra):
    sae = make_sae_lens(arch, **extra)
    coder = from_sae_lens(sae, "code")
    x = torch.randn(3, 7, D_MODEL)
    f = sae.encode(x)
    # Pick latents that are active somewhere plus some that are not.
    active = (f > 0).flatten(0, 1).any(0).nonzero().flatten()
    assert len(active) > 10
    S = sorted(set(active[:8].tolist()) | set(range(0, 256, 37)))
    f_zeroed = f.clone()
    f_zeroed[..., S] = 0
    expected = sae.decode(f_zeroed) + (x - sae.decode(f))
    got = _LatentEdit(LatentAblation.of(coder, S), torch.device("cpu"))(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # and the coder's own encode matches sae-lens exactly
    torch.testing.assert_close(coder.encode(x), f, atol=1e-6, rtol=1e-6)
    assert not torch.equal(got, x)


def test_per_row_sets_give_per_row_results():
    coder = make_coder("standard")
    x = torch.randn(3, 5, D_MODEL)
    rows = [[1, 2, 3], [], [7, 200]]
    batched = _LatentEdit(LatentAblation.of(coder, rows), torch.device("cpu"))(x)
    for r, latents in enumerate(rows):
        single = _LatentEdit(LatentAblation.of(coder, latents or [0]), torch.device("cpu"))
        expected = x[r : r + 1] if not latents else single(x[r : r + 1])
        torch.testing.assert_close(batched[r : r + 1], expected)
    assert torch.equal(batched[1], x[1])  # the empty row is untouched bit for bit
    # ... also when the delta comes in a narrower dtype (an SAE in bf16, or under autocast),
    # which x - 0 would round the row to
    narrow = _LatentEdit(LatentAblation.of(coder.to(dtype=torch.bfloat16), rows), torch.device("cpu"))(x)
    assert torch.equal(narrow[1], x[1]) and not torch.equal(narrow[0], x[0])


def test_per_row_sets_must_match_batch():
    coder = make_coder("standard")
    edit = _LatentEdit(LatentAblation.of(coder, [[1], [2]]), torch.device("cpu"))
    with pytest.raises(RefusalEvalError, match="per-row latent sets were given for 2 rows"):
        edit(torch.randn(3, 4, D_MODEL))


def _n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in decoder_layers(model))


def test_hooks_removed_after_context_and_after_exception(qwen_tiny):
    coder = make_coder("standard", layer=1)
    assert _n_hooks(qwen_tiny) == 0
    with ablate(qwen_tiny, {1: [1, 2]}, {1: coder}):
        assert _n_hooks(qwen_tiny) == 1
    assert _n_hooks(qwen_tiny) == 0
    with pytest.raises(ZeroDivisionError), ablate(qwen_tiny, {1: [1, 2]}, {1: coder}):
        assert _n_hooks(qwen_tiny) == 1
        1 / 0  # noqa: B018
    assert _n_hooks(qwen_tiny) == 0


def _important_coder(model, layer: int, ids: torch.Tensor):
    """An SAE whose latent 0 reads and writes the dominant direction of the residual."""
    captured = {}
    h = decoder_layers(model)[layer].register_forward_hook(
        lambda _m, _a, out: captured.setdefault("x", out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        model(ids)
    h.remove()
    u = captured["x"].mean((0, 1))
    u = u / u.norm()
    coder = make_coder("standard", layer=layer)
    coder.W_enc[:, 0] = u
    coder.b_enc[0] = 0.0
    coder.W_dec[0] = u * 3
    coder.b_dec.zero_()
    return coder


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gemma2"])
def test_generate_with_kv_cache_fires_every_step_and_changes_output(arch):
    model = tiny_model(arch)
    ids = torch.randint(3, 90, (2, 6))
    coder = _important_coder(model, 1, ids)
    calls = []
    decoder_layers(model)[1].register_forward_hook(lambda _m, a, _o: calls.append(a[0].shape[1]))
    gen = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        base = model.generate(ids, **gen)
        calls.clear()
        with ablate(model, {1: [0]}, {1: coder}):
            ablated = model.generate(ids, **gen)
        with ablate(model, {1: []}, {1: coder}):
            empty = model.generate(ids, **gen)
    # one prompt pass of 6 positions, then one cached step per new token
    assert calls[:8] == [6] + [1] * 7
    assert not torch.equal(base, ablated)
    assert torch.equal(base, empty)


def test_rows_of_different_conditions_generate_as_each_condition_alone():
    """One batch whose rows run under different ablations (none, two latent sets at two layers,
    a direction) generates, row for row and bit for bit, what the same batch generates under
    each row's ablations alone; the edits and masks are exact, not approximations."""
    model = tiny_model("qwen2")
    ids = torch.randint(3, 90, (4, 6))
    c0, c1 = _important_coder(model, 0, ids), _important_coder(model, 1, ids)
    direction = DirectionAblation(torch.randn(D_MODEL))
    conditions = {
        "baseline": [],
        "latents": [LatentAblation.of(c0, [0, 3]), LatentAblation.of(c1, [0])],
        "direction": [direction],
        "other": [LatentAblation.of(c1, [0, 5])],
    }
    rows = ["baseline", "latents", "direction", "other"]
    gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        alone = {}
        for name, abls in conditions.items():
            with ablate(model, abls):
                alone[name] = model.generate(ids, **gen)
        merged = by_row([conditions[r] for r in rows])
        with ablate(model, merged):
            mixed = model.generate(ids, **gen)
    for r, name in enumerate(rows):
        assert torch.equal(mixed[r], alone[name][r]), name
    assert len({tuple(alone[n][1].tolist()) for n in rows}) > 1  # the conditions do differ
    by_coder = {ab.coder.layer: ab.rows for ab in merged if isinstance(ab, LatentAblation)}
    assert by_coder == {0: ((), (0, 3), (), ()), 1: ((), (0,), (), (0, 5))}
    (marked,) = [ab for ab in merged if isinstance(ab, DirectionAblation)]
    assert marked.rows == (False, False, True, False)


def test_by_row_of_one_shared_ablation_is_that_ablation():
    coder = make_coder("standard", layer=0)
    d = DirectionAblation(torch.randn(D_MODEL))
    same = by_row([[LatentAblation.of(coder, [2, 1]), d]] * 3)
    assert same == [LatentAblation(coder, ((1, 2),)), DirectionAblation(d.direction, None, None)]
    with pytest.raises(RefusalEvalError, match="got per-row latent sets"):
        by_row([[LatentAblation.of(coder, [[1], [2]])]])
    two_rows = _DirectionEdit(DirectionAblation(d.direction, rows=(True, False)), torch.device("cpu"))
    with pytest.raises(RefusalEvalError, match="a direction ablation marks 2 rows but the batch has 3"):
        two_rows(torch.randn(3, 4, D_MODEL))


def test_empty_set_is_bit_identical(qwen_tiny):
    ids = torch.randint(3, 90, (2, 9))
    coder = make_coder("standard", layer=0)
    with torch.no_grad():
        ref = qwen_tiny(ids).logits
        with ablate(qwen_tiny, {0: []}, {0: coder}):
            same = qwen_tiny(ids).logits
        with ablate(qwen_tiny, {0: [[], []]}, {0: coder}):
            same_rows = qwen_tiny(ids).logits
    assert torch.equal(ref, same) and torch.equal(ref, same_rows)


def test_layers_are_edited_in_order(qwen_tiny):
    """Layer 2's edit sees the residual already edited at layer 0 (2 is the last layer, so its
    edited output is what the final norm receives)."""
    ids = torch.randint(3, 90, (1, 7))
    c0, c2 = make_coder("standard", layer=0, seed=1), make_coder("standard", layer=2, seed=2)

    def final_residual(sets, saes):
        seen = {}
        h = qwen_tiny.model.norm.register_forward_pre_hook(lambda _m, a: seen.setdefault("x", a[0]))
        try:
            with torch.no_grad(), ablate(qwen_tiny, sets, saes):
                qwen_tiny(ids)
        finally:
            h.remove()
        return seen["x"]

    upstream_only = final_residual({0: [1, 5, 9]}, {0: c0})
    both = final_residual({0: [1, 5, 9], 2: [3, 4]}, {0: c0, 2: c2})
    expected = _LatentEdit(LatentAblation.of(c2, [3, 4]), torch.device("cpu"))(upstream_only)
    torch.testing.assert_close(both, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both, upstream_only)
    assert _n_hooks(qwen_tiny) == 0


def test_direction_ablation_projects_every_layer_input(qwen_tiny):
    ids = torch.randint(3, 90, (2, 5))
    d = torch.randn(D_MODEL)
    unit = d / d.norm()
    with ablate(qwen_tiny, DirectionAblation(d)):
        seen: list[torch.Tensor] = []
        handles = [
            layer.register_forward_pre_hook(
                lambda _m, a, kw: seen.append((a[0] if a else kw["hidden_states"]) @ unit), with_kwargs=True
            )
            for layer in decoder_layers(qwen_tiny)
        ]
        norm_in = []
        handles.append(
            qwen_tiny.model.norm.register_forward_pre_hook(lambda _m, a: norm_in.append(a[0] @ unit))
        )
        with torch.no_grad():
            qwen_tiny(ids)
        for h in handles:
            h.remove()
    assert len(seen) == 3
    for proj in [*seen, *norm_in]:
        assert proj.abs().max() < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "sets", "message"),
    [
        ({"d_in": 32}, {1: [0]}, "d_in=32 but the model width is 64"),
        ({"layer": 7}, {7: [0]}, "layer 7 is out of range: the model has 3 layers"),
        ({}, {1: [256]}, r"latent ids \[256\] are out of range .*d_sae=256"),
    ],
)
def test_bad_ablations_are_rejected_with_a_fix(qwen_tiny, kwargs, sets, message):
    coder = (
        make_coder("standard", **kwargs) if "layer" in kwargs else make_coder("standard", layer=1, **kwargs)
    )
    layer = next(iter(sets))
    with pytest.raises(RefusalEvalError, match=message) as err, ablate(qwen_tiny, sets, {layer: coder}):
        pass
    assert "fix:" in str(err.value)
    assert _n_hooks(qwen_tiny) == 0


def test_missing_sae_for_layer(qwen_tiny):
    with (
        pytest.raises(RefusalEvalError, match="no SAE loaded for layer 2"),
        ablate(qwen_tiny, {2: [1]}, {1: make_coder("standard")}),
    ):
        pass
