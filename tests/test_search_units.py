"""Unit tests of the search pieces: greedy filtering on an oracle, FM math, the fast scorer,
and the config merge."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch
from conftest import make_coder, tiny_tokenizer

from refusal_eval.config import DEFAULT_CONFIG_FILE, SearchConfig, load_config, parse_overrides
from refusal_eval.errors import RefusalEvalError
from refusal_eval.hooks import HookPoint
from refusal_eval.search.greedy import greedy_minimal_sets
from refusal_eval.search.interactions import (
    FactorizationMachine,
    fit_fm,
    fit_fm_ensemble,
    fit_probe,
    interaction_scores,
    split,
    top_ranked,
)
from refusal_eval.search.scorer import SubsetScorer

# --- stage 2 on an oracle ----------------------------------------------------------------------
CANDIDATES = [(1, i) for i in range(12)] + [(2, i) for i in range(8)]


def oracle(needed: dict[int, set]):
    """P(refusal) is high unless every needed latent of the prompt is ablated."""
    calls: list[int] = []

    def score(rows):
        calls.append(len(rows))
        return [0.02 if needed[p] <= set(s) else 0.9 for p, s in rows]

    return score, calls


def test_greedy_block_one_finds_exactly_the_needed_latents():
    needed = {0: {(1, 3), (2, 5)}, 1: {(1, 0)}, 2: set(CANDIDATES[:7])}
    score, calls = oracle(needed)
    results = greedy_minimal_sets([0, 1, 2], CANDIDATES, score, block_size=1, seeds=(0, 1, 2))
    assert [set(r.minimal) for r in results] == [needed[0], needed[1], needed[2]]
    assert all(r.p_clean == 0.9 and r.p_full == 0.02 and r.p_minimal == 0.02 for r in results)
    # lockstep: one batch per block step (20 candidates), plus clean/full and the final check
    assert len(calls) == 20 + 2 and calls[1] == 3 * 3


def test_greedy_blocks_keep_whole_blocks_and_seeds_intersect():
    needed = {0: {(1, 3)}}
    score, _ = oracle(needed)
    (res,) = greedy_minimal_sets([0], CANDIDATES, score, block_size=5, seeds=(0, 1, 2))
    assert all(len(s) == 5 and (1, 3) in s for s in res.per_seed)  # the block holding it is kept
    assert set(res.minimal) == set.intersection(*(set(s) for s in res.per_seed))
    assert (1, 3) in res.minimal and len(res.minimal) < 5


def test_greedy_tau_threshold():
    def score(rows):  # restoring (1, 0) raises P by 20% relative, (1, 1) by 50%
        out = []
        for _, s in rows:
            p = 0.1
            p *= 1.0 if (1, 0) in s else 1.2
            p *= 1.0 if (1, 1) in s else 1.5
            out.append(p)
        return out

    (res,) = greedy_minimal_sets([0], [(1, 0), (1, 1)], score, tau=0.3, block_size=1, seeds=(0,))
    assert res.minimal == ((1, 1),)
    (res,) = greedy_minimal_sets([0], [(1, 0), (1, 1)], score, tau=0.1, block_size=1, seeds=(0,))
    assert res.minimal == ((1, 0), (1, 1))


# --- stage 3 math ------------------------------------------------------------------------------
def test_fm_forward_equals_explicit_pairwise_sum():
    fm = FactorizationMachine(6, 3, init_std=0.5, seed=3)
    with torch.no_grad():
        fm.w.normal_()
        fm.w0.fill_(0.7)
    x = torch.randn(4, 6)
    expected = fm.w0 + x @ fm.w
    for i, j in itertools.combinations(range(6), 2):
        expected = expected + (fm.V[i] @ fm.V[j]) * x[:, i] * x[:, j]
    torch.testing.assert_close(fm(x), expected)


def test_fm_gradients_match_the_closed_form():
    fm = FactorizationMachine(5, 2, init_std=0.5, seed=0)
    x = torch.randn(1, 5)
    fm(x).sum().backward()
    xv = (x @ fm.V).detach()
    want_v = x[0, :, None] * xv - fm.V.detach() * x[0, :, None] ** 2  # dy/dv_if
    torch.testing.assert_close(fm.V.grad, want_v)
    torch.testing.assert_close(fm.w.grad, x[0])
    assert fm.w0.grad == 1.0


def test_fm_learns_an_xor_that_a_linear_probe_cannot():
    x = torch.tensor([[a, b] for a in (0.0, 1.0) for b in (0.0, 1.0)] * 16)
    y = ((x[:, 0] + x[:, 1]) == 1).float()  # XOR: needs the pair term
    train, test = split(len(y), 0.25, 0, y)
    res = fit_fm(x, y, train, test, rank=2, lr=0.05, epochs=200, batch_size=8, seed=0)
    assert res.test_accuracy == 1.0 and res.losses[-1] < res.losses[0]
    probe = fit_probe(x, y, train, test, c=100.0)
    assert probe.test_accuracy <= 0.75


def test_fm_ensemble_averages_members_and_one_member_is_one_fm():
    x = torch.tensor([[a, b] for a in (0.0, 1.0) for b in (0.0, 1.0)] * 16)
    y = ((x[:, 0] + x[:, 1]) == 1).float()
    train, test = split(len(y), 0.25, 0, y)
    kw = {"rank": 2, "lr": 0.05, "epochs": 30, "batch_size": 8}
    one, alone = (
        fit_fm_ensemble(x, y, train, test, members=1, seed=3, **kw),
        fit_fm(x, y, train, test, seed=3, **kw),
    )
    assert one.losses == alone.losses and torch.equal(one.members[0].V, alone.model.V)
    three = fit_fm_ensemble(x, y, train, test, members=3, seed=3, **kw)
    fits = [fit_fm(x, y, train, test, seed=3 + m, **kw) for m in range(3)]
    with torch.no_grad():
        logits = torch.stack([f.model(x) for f in fits]).mean(0)
    assert three.test_accuracy == float(((logits[test] > 0).float() == y[test]).float().mean())
    want = torch.stack([interaction_scores(f.model.V.detach(), [0]) for f in fits]).mean(0)
    torch.testing.assert_close(three.scores([0]), want)
    assert three.scores([0])[0] == float("-inf")
    assert three.losses[0] == pytest.approx(sum(f.losses[0] for f in fits) / 3)
    with pytest.raises(ValueError, match="members must be >= 1"):
        fit_fm_ensemble(x, y, train, test, members=0)


def test_split_is_stratified_and_deterministic():
    y = torch.tensor([1.0] * 10 + [0.0] * 10)
    a, b = split(20, 0.2, 7, y)
    assert split(20, 0.2, 7, y)[0].tolist() == a.tolist()
    assert len(b) == 4 and int(y[b].sum()) == 2 and set(a.tolist()).isdisjoint(b.tolist())


def test_interaction_scores_and_ranking():
    V = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [-1.0, 0.0], [0.5, 0.5]])
    s = interaction_scores(V, [0, 1])
    assert s[2] == 2.0 and s[3] == -1.0 and s[4] == 1.0 and s[0] == float("-inf")
    assert top_ranked(s, 2) == [2, 4]
    assert top_ranked(torch.tensor([1.0, 3.0, 3.0]), 2, exclude=[1]) == [2, 0]


# --- the fast scorer ---------------------------------------------------------------------------
def test_scorer_layer_skipping_and_batching_match_one_row_full_forwards(qwen_tiny):
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    saes = {2: make_coder("standard", layer=2, d_sae=32, seed=4)}
    prompts = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9"]
    fast = SubsetScorer(qwen_tiny, tok, prompts, saes, [7, 9], batch_size=4, progress=False)
    slow = SubsetScorer(
        qwen_tiny, tok, prompts, saes, [7, 9], batch_size=1, skip_prefix=False, progress=False
    )
    assert fast.skips and not slow.skips
    rows = [(p, frozenset({(2, i) for i in s})) for p in range(3) for s in ([], [0, 1, 2], list(range(16)))]
    got, want = fast.p_refusal(rows), slow.p_refusal(rows)
    assert got == pytest.approx(want, abs=1e-5)
    assert len({round(v, 6) for v in want}) > 3  # the ablations do change the score
    before = fast.forward_rows
    assert fast.p_refusal(rows[:4]) == got[:4] and fast.forward_rows == before  # memo


def test_scorer_rows_started_above_their_shared_layers_match_full_forwards(qwen_tiny):
    """A row may start at any layer: its prefix carries its latents below that layer (the hydra
    test's pairs, a minimal set with one latent restored). Scores equal full forwards; rows
    sharing the latents below their start share one prefix; only layers from the start run."""
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    saes = {layer: make_coder("standard", layer=layer, d_sae=32, seed=layer) for layer in (0, 1, 2)}
    # layer 2's SAE reads the input of layer 2: ablated after the start's substitution, once
    saes[2] = dataclasses.replace(saes[2], hook=HookPoint(2, "resid_pre"))
    prompts = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9"]
    fast = SubsetScorer(qwen_tiny, tok, prompts, saes, [7, 9], batch_size=4, progress=False)
    slow = SubsetScorer(
        qwen_tiny, tok, prompts, saes, [7, 9], batch_size=1, skip_prefix=False, progress=False
    )
    base = {(0, i) for i in range(8)} | {(1, i) for i in range(4, 12)}
    rows, starts = [], []
    for p in range(3):
        for w in [(2, 3), (2, 5), (2, 7), (1, 20), (1, 5)]:  # a pair differs only from w's layer up
            rows += [(p, frozenset(base - {w})), (p, frozenset(base | {w}))]
            starts += [w[0], w[0]]
    fast.layer_rows = 0
    got = fast.p_refusal(rows, starts)
    want = slow.p_refusal(rows)
    assert got == pytest.approx(want, abs=1e-6)
    # each pair: without vs with w
    moved = sorted(abs(a - b) for a, b in zip(want[::2], want[1::2], strict=True))
    assert sum(d > 1e-5 for d in moved) >= 12, moved  # the pairs do differ, far beyond 1e-6
    # distinct rows per prompt: base (first asked from layer 2: the first start asked wins),
    # three with-rows from layer 2, base + (1, 20) and base - (1, 5) from layer 1
    assert fast.forward_rows - 4 == 3 * 6  # 4: the skip check's two rows, twice
    assert fast.layer_rows == 3 * (4 * 1 + 2 * 2)
    assert fast.prefix_layer_rows == 3 * (2 + 1) + 2 * 1  # + the skip check's two into layer 1
    # prefixes: per prompt, one into layer 2 (base below 2) and one into layer 1 (base below 1),
    # besides the skip check's two unablated ones into layer 1 (its start: max(first, 1))
    assert sorted((p, start, len(below)) for p, start, below in fast._prefixes) == sorted(
        [(p, 2, 16) for p in range(3)] + [(p, 1, 8) for p in range(3)] + [(0, 1, 0), (1, 1, 0)]
    )
    with pytest.raises(ValueError, match="2 starts for 3 rows"):
        fast.p_refusal(rows[:3], [1, 1])
    with pytest.raises(ValueError, match=r"starts must be decoder layers 0..2, got \[1, 3\]"):
        fast.p_refusal(rows[:2], [1, 3])


# --- config ------------------------------------------------------------------------------------
def test_default_config_file_documents_the_defaults():
    assert load_config(DEFAULT_CONFIG_FILE, environ={}) == SearchConfig()
    text = DEFAULT_CONFIG_FILE.read_text()
    for name in SearchConfig.__dataclass_fields__:
        assert name in text, f"{name} missing from default_config.toml"


def test_config_precedence_file_env_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("tau = 0.5\nblock_size = 2\nseeds = [4, 5]\n")
    cfg = load_config(f, {"block_size": "3"}, environ={"REFUSAL_EVAL_TAU": "0.7", "REFUSAL_EVAL_CACHE": "/x"})
    assert (cfg.tau, cfg.block_size, cfg.seeds) == (0.7, 3, (4, 5))
    assert parse_overrides(["layer=14", "pool=mean"]) == {"layer": "14", "pool": "mean"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tua": 1}, "unknown search config key"),
        ({"tau": "lots"}, "tau='lots' is not a valid"),
        ({"pool": "min"}, "pool='min' is not a valid"),
        ({"block_size": 0}, "block_size must be >= 1"),
        ({"top_k": 2.5}, "top_k=2.5 is not a valid"),
        ({"n_harmful": -1}, "n_harmful, n_harmless and n_validation must be >= 1"),
        ({"candidate_direction": "mean"}, "candidate_direction='mean' is not a valid"),
        ({"min_drop_frac": 1.5}, "min_drop_frac must be in"),
        ({"fm_lr": 0}, "fm_lr and fm_init_std must be > 0"),
        ({"layer": -2}, "layer must be >= 0"),
    ],
)
def test_bad_config_values_name_the_key(changes, message):
    with pytest.raises(RefusalEvalError, match=message):
        load_config(overrides=changes, environ={})


def test_malformed_config_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("tau = = 1")
    with pytest.raises(RefusalEvalError, match="malformed"):
        load_config(f, environ={})
    with pytest.raises(RefusalEvalError, match="cannot parse --set"):
        parse_overrides(["tau"])


def test_plan_key_ignores_compute_only_settings():
    from refusal_eval.config import COMPUTE_ONLY
    from refusal_eval.search.pipeline import search_key

    model = {"name": "m", "revision": "r", "dtype": "torch.bfloat16"}
    saes = {"layers": {"14": {"sha256": "s"}}}
    data = {"harmful": {"sha256": "h"}}

    def key(**changes):
        return search_key(model, saes, SearchConfig().replace(**changes), data, [40])

    assert {"batch_size", "chunk_prompts", "skip_prefix"} == COMPUTE_ONLY
    base = key()
    assert key(batch_size=8) == key(chunk_prompts=3) == key(skip_prefix=False) == base
    assert key(tau=0.5) != base and key(top_k=10) != base and key(wake_top_n=4) != base
    assert "batch_size" in SearchConfig().to_dict() and "batch_size" not in SearchConfig().result_dict()


def pooled_from_dense(index, rows):
    """A Pooled holding ``rows`` (columns named by ``index``, layers ascending)."""
    from refusal_eval.search.activations import Pooled

    dense = torch.tensor(rows)
    layers = sorted({layer for layer, _ in index})
    return Pooled.from_dense(
        {la: dense[:, [c for c, (x, _) in enumerate(index) if x == la]] for la in layers}
    )


def test_woken_latents_pure_rule():
    from refusal_eval.search.hydra import effect_rows, woken_latents

    index = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0)]
    before = pooled_from_dense(index, [[1.0, 0.0, 0.0, 0.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    after = pooled_from_dense(index, [[1.0, 0.0, 3.0, 0.5, 2.5, 4.0], [1.0, 0.0, 9.0, 0.0, 0.0, 0.0]])
    assert before.active() == [(0, 0), (1, 2)] and after.active() == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0)]
    sets = [frozenset({(0, 0)}), frozenset({(1, 1)})]
    tests, woken = woken_latents(before, after, sets, threshold=0.0, top_n=1)
    # prompt 0: layer 1 wakes (1,0) and (1,1) (not (1,2): it was active), capped to the largest;
    # layer 2 wakes (2,0). Prompt 1's minimal set starts at layer 1: only layer 2 is above it.
    assert [(t.prompt, t.latent, t.after) for t in tests] == [(0, (1, 0), 3.0), (0, (2, 0), 4.0)]
    assert woken == {0: 0, 1: 2, 2: 1}
    tests, _ = woken_latents(before, after, sets, threshold=1.0, top_n=5)
    assert [t.latent for t in tests] == [(1, 0), (2, 0)]  # 0.5 is not above the threshold
    m = frozenset({(0, 0), (1, 0)})
    t_in = tests[0]
    assert effect_rows(t_in, m) == ((0, frozenset({(0, 0)})), (0, m))  # member: restore it
    assert effect_rows(tests[1], m) == ((0, m), (0, m | {(2, 0)}))  # outsider: ablate it too


def test_atomic_write_leaves_the_old_file_and_no_orphan_when_the_disk_is_full(tmp_path, monkeypatch):
    import os

    from refusal_eval._cache import atomic_write

    target = tmp_path / "plan.json"
    atomic_write(target, "old")
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # like a plain write, not mkstemp's 0600
    real = os.fdopen

    class Full:
        def __init__(self, fd, mode):
            self.fh = real(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, _data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", Full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_registries_refuse_a_taken_name_and_name_the_choices():
    from refusal_eval._registry import Registry
    from refusal_eval.coders import register_architecture
    from refusal_eval.judges import register_judge
    from refusal_eval.models import OfflineModel, register_offline_model

    reg: Registry[int] = Registry("widget", fold_case=True)
    reg.add("Alpha", 1)
    with pytest.raises(ValueError, match="widget 'ALPHA' is already registered"):
        reg.add("ALPHA", 2)
    assert reg.get("alpha") == 1 and reg.find("beta") is None and "ALPHA" in reg
    with pytest.raises(RefusalEvalError, match=r"unknown widget 'beta' \(fix: use one of \['alpha'\]\)"):
        reg.get("beta")
    with pytest.raises(ValueError, match="judge 'keyword' is already registered"):
        register_judge("keyword")(lambda _arg: None)
    with pytest.raises(ValueError, match="SAE architecture 'topk' is already registered"):
        register_architecture("topk")(type("Other", (), {}))
    with pytest.raises(ValueError, match="offline model 'default' is already registered"):
        register_offline_model(OfflineModel("x-model", "h/x", "xp", 1, "0" * 64, "pip", aliases=("default",)))


def test_plan_paths_are_shown_relative_to_the_package_or_cache(isolated_cache, tmp_path):
    from importlib import resources

    from refusal_eval.search.plan import display_path

    shipped = Path(str(resources.files("refusal_eval"))) / "plans" / "x.json"
    assert display_path(shipped) == "package:plans/x.json"
    assert display_path(isolated_cache / "plans" / "k.json") == "cache:plans/k.json"
    assert display_path(tmp_path / "mine.json") == str(tmp_path / "mine.json")


def test_features_never_active_in_training_rows_are_zeroed_not_blown_up():
    """The stage-3 scaling: train max -> 1; a feature seen only in held-out rows becomes 0 (the
    old floor of 1e-6 made it 5e6 there, and its untrained FM factors decided held-out logits)."""
    from refusal_eval.search.stage3 import scale_by_training_max

    x = torch.tensor([[2.0, 0.0, 1.0], [4.0, 0.0, 0.0], [1.0, 5.0, 3.0]])
    train = torch.tensor([0, 1])
    scaled, unseen = scale_by_training_max(x, train)
    assert unseen == [1]
    assert torch.equal(scaled, torch.tensor([[0.5, 0.0, 1.0], [1.0, 0.0, 0.0], [0.25, 0.0, 3.0]]))
    # an FM whose unseen feature would otherwise dominate now predicts held-out rows from seen ones
    torch.manual_seed(0)
    n = 40
    informative = torch.rand(n, 1)
    y = (informative[:, 0] > 0.5).float()
    rare = torch.zeros(n, 1)
    test = torch.arange(30, 40)
    rare[test] = 3.0  # active only in held-out rows
    raw = torch.cat([informative, rare, torch.rand(n, 6)], 1)
    train = torch.arange(30)
    old = raw / raw[train].amax(0).clamp_min(1e-6)
    new, _ = scale_by_training_max(raw, train)
    kw = {"rank": 4, "lr": 0.05, "epochs": 60, "batch_size": 8, "init_std": 0.1}
    assert fit_fm(new, y, train, test, **kw).test_accuracy >= 0.85  # 9 of 10
    assert fit_fm(old, y, train, test, **kw).test_accuracy <= 0.7


def test_pooled_activations_hold_only_latents_that_fired_and_equal_the_dense_pooling(qwen_tiny):
    from refusal_eval.chat import encode_chat
    from refusal_eval.hooks import forward_until
    from refusal_eval.search.activations import capture_outputs, pooled_activations

    tok = tiny_tokenizer()
    tok.padding_side = "left"
    saes = {
        0: make_coder("standard", layer=0, d_sae=32, seed=5),
        2: make_coder("standard", layer=2, d_sae=32, seed=6),
    }
    with torch.no_grad():
        saes[2].b_enc[:8] = -1e4  # latents 0-7 of layer 2 never fire
    prompts = ["w1 w2 w3", "w4 w5 w6 w7 w8", "w9"]
    got = pooled_activations(qwen_tiny, tok, prompts, saes, batch_size=2)
    want = []
    for prompt in prompts:  # one unpadded prompt at a time, max over positions after the first
        enc = encode_chat(tok, [prompt])
        with torch.inference_mode(), capture_outputs(qwen_tiny, [0, 2]) as seen:
            forward_until(qwen_tiny, enc, 2)
            want.append(
                torch.cat([saes[la].encode(seen[la][0, 1:].float()).clamp_min(0).amax(0) for la in (0, 2)])
            )
    torch.testing.assert_close(got.dense(), torch.stack(want), atol=1e-5, rtol=1e-5)
    fired = got.active()
    assert fired and not {(2, i) for i in range(8)} & set(fired)  # the silent latents hold nothing
    assert got.nnz() == int((torch.stack(want) > 0).sum())  # exactly the nonzero pooled values
    live = got.active()[-1]
    assert got.columns([(2, 3), live]).tolist() == [[0.0, got.value(r, live)] for r in range(3)]


def test_each_stage_key_moves_with_its_own_settings_and_those_before_it():
    """A setting reruns the stage that reads it and every later one, never an earlier one: the
    wake settings and the pooling rerun stage 3's dormant/hydra tests, an FM setting only the
    fits after them (a setting filed under the wrong stage would serve stale tests)."""
    from refusal_eval.search.pipeline import stage_keys

    model = {"name": "m", "revision": "r", "dtype": "bf16"}
    saes = {"layers": {"6": {"sha256": "a"}}}
    data = {"harmful": {"sha256": "h"}}
    base = SearchConfig()
    keys = stage_keys(model, saes, base, data, [1])
    order = ["stage1", "stage2", "stage3_tests", "stage3", "verification"]
    assert list(keys) == order
    first_changed = {
        "tau": "stage2",
        "pool": "stage3_tests",
        "wake_threshold": "stage3_tests",
        "wake_top_n": "stage3_tests",
        "hydra_min_effect": "stage3_tests",
        "fm_init_std": "stage3",
        "extra_k": "stage3",
        "verify": "verification",
        "top_k": "stage1",
    }
    values = {"tau": 0.5, "pool": "mean", "wake_threshold": 0.5, "wake_top_n": 3, "hydra_min_effect": 0.2,
              "fm_init_std": 0.05, "extra_k": 7, "verify": False, "top_k": 9}  # fmt: skip
    for name, stage in first_changed.items():
        other = stage_keys(model, saes, base.replace(**{name: values[name]}), data, [1])
        changed = [s for s in order if other[s] != keys[s]]
        assert changed == order[order.index(stage) :], name
