"""The three-stage search on a tiny model with a planted refusal mechanism (see planted.py)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from planted import (
    BACKUP,
    HYDRA,
    NECESSARY,
    TRIGGERS,
    PlantedChat,
    planted_config,
    planted_prompts,
    planted_saes,
)

from refusal_eval.errors import RefusalEvalError
from refusal_eval.search import pipeline, stage3, stages
from refusal_eval.search.pipeline import PromptSets, run_search
from refusal_eval.search.plan import AblationPlan, write_plan

CFG = planted_config(chunk_prompts=5)


def _prompts() -> PromptSets:
    return PromptSets(
        planted_prompts(12, True, 0), planted_prompts(12, False, 1), planted_prompts(6, True, 2), names={}
    )


@pytest.fixture(scope="module")
def planted_work(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def planted_run(planted_work):
    body, tensors = run_search(
        PlantedChat(), planted_saes(), CFG, prompts=_prompts(), work_dir=planted_work, progress=False
    )
    return body.to_json(), tensors


def _pairs(items) -> set[tuple[int, int]]:
    return {(int(x[0]), int(x[1])) for x in items}


def test_screen_keeps_every_refused_harmful_prompt(planted_run):
    body, _ = planted_run
    assert body["screen"]["refused_harmful"] == list(range(12))
    assert body["screen"]["refused_validation"] == list(range(6))
    assert body["screen"]["answered_harmless"] == list(range(12))


def test_stage1_ranks_planted_latents_first(planted_run):
    cands = planted_run[0]["stage1"]["candidates"]
    layer0 = [c for c in cands if c[0] == 0]
    layer1 = [c for c in cands if c[0] == 1]
    assert {c[1] for c in layer0[:3]} == {0, 1, 2}
    assert layer1[0][1] == HYDRA[1]
    assert layer0[0][2] == pytest.approx(1 / 3.25**0.5, abs=1e-4)  # cos(e1, S u + S/2 e4)


def test_stage2_returns_exactly_the_necessary_latents(planted_run):
    s2 = planted_run[0]["stage2"]
    assert s2["n_prompts"] == 12
    for p in s2["prompts"]:
        assert _pairs(p["minimal"]) == NECESSARY
        assert all(_pairs(s) == NECESSARY for s in p["per_seed"])
        assert p["p_clean"] > 0.99 and p["p_full"] < 0.05 and p["p_minimal"] < 0.05
    assert _pairs(s2["union"]) == NECESSARY
    assert s2["flipped_by_proxy"] == 12


def test_stage3_fm_surfaces_the_backup_latent(planted_run):
    s3 = planted_run[0]["stage3"]
    assert tuple(s3["fm_ranked"][0][:2]) == BACKUP
    assert s3["fm"]["test_accuracy"] == 1.0 and s3["probe"]["test_accuracy"] == 1.0
    assert _pairs(planted_run[0]["sets"]["sae_fm"]) == NECESSARY | {BACKUP}


def test_dormant_detector_flags_the_hydra(planted_run):
    dormant = planted_run[0]["stage3"]["dormant"]
    assert {tuple(d["latent"]) for d in dormant} == {HYDRA}
    assert sorted(d["prompt"] for d in dormant) == list(range(12))
    harmful = _prompts().harmful
    triggers = {f"w{t - 6}" for t in TRIGGERS}
    for d in dormant:
        assert d["fires_when_active_ablated"] and d["p_restored"] > 0.5
        # it wakes up only from the first harm word on (token 0 is <|user|>)
        first = 1 + next(i for i, w in enumerate(harmful[d["prompt"]].split()) if w in triggers)
        assert d["fires_at"] and all(t >= first for t, _tok, _act in d["fires_at"])


def test_cross_layer_hydra_detector_wakes_exactly_the_hydra(planted_run):
    woken = planted_run[0]["stage3"]["woken"]
    # with the layer-0 minimal latents ablated, only the hydra turns on at layer 1
    assert woken["woken_by_layer"] == {"0": 0, "1": 12} and woken["n_tested"] == 12
    assert woken["n_min_effect"] == woken["n_relative"] == 12
    assert len(woken["strongest"]) == 8 and all(e["latent"] == list(HYDRA) for e in woken["strongest"])
    assert woken["strongest"][0]["effect"] >= woken["strongest"][-1]["effect"] > 0.5
    assert {tuple(h["latent"]) for h in woken["hydra"]} == {HYDRA}
    assert sorted(h["prompt"] for h in woken["hydra"]) == list(range(12))
    for h in woken["hydra"]:
        assert h["in_minimal"] and h["activation_before"] == 0.0 and h["activation_after"] > 0
        assert h["p_without"] > 0.5 > h["p_with"] and h["effect"] > 0.5
        assert all(before == 0.0 < after for _t, _tok, before, after in h["fires_at"])
    assert _pairs(planted_run[0]["sets"]["sae_hydra"]) == NECESSARY  # the hydra is already in S_min
    assert planted_run[0]["stage1"]["selected_by"] == "arditi"


def test_side_effects_first_token_kl_per_condition(planted_run, tmp_path):
    from refusal_eval._cache import StageCache
    from refusal_eval.search.artifacts import Stage1, latents
    from refusal_eval.search.stages import Context, run_side_effects

    body, tensors = planted_run
    side = body["side_effects"]
    assert set(side) == {"sae", "sae_fm", "sae_probe", "sae_random", "sae_hydra", "random", "direction"}
    # the planted harmless prompts carry no trigger: nothing any condition removes is there
    assert all(v["n"] == 12 and v["first_token_kl"] == 0.0 for v in side.values())
    # on trigger prompts the refusal latents and the direction do move the first token; the
    # random latents (never active) do not
    chat, cache = PlantedChat(), StageCache(tmp_path)
    triggered = _prompts().harmful
    ctx = Context(chat, planted_saes(), CFG, triggered, triggered, [], [10], cache, cache, False)
    sets = {k: latents(v) for k, v in body["sets"].items()}
    kl = run_side_effects(ctx, sets, Stage1.from_json(body["stage1"]), tensors["directions"])
    assert kl["sae"].first_token_kl > 1 and kl["direction"].first_token_kl > 1
    assert kl["random"].first_token_kl < 1e-12


def test_verification_attack_success_per_condition(planted_run):
    v = planted_run[0]["verification"]
    assert v["search"]["minimal"]["attack_success"] == 1.0
    assert v["search"]["sae"]["attack_success"] == 1.0
    assert v["search"]["direction"]["attack_success"] == 1.0
    assert v["search"]["random"]["attack_success"] == 0.0  # same-size random latents do nothing
    assert v["validation"]["sae"]["attack_success"] == 1.0
    # harmful compliance by the default outcome judge, beside the search judge's refusals
    for split in ("search", "validation"):
        for cond, got in v[split].items():
            assert isinstance(got["harmful"], int) and 0 <= got["harmful"] <= got["n"], (split, cond)
    assert v["validation"]["sae"]["n"] == 6
    assert "minimal" not in v["validation"]


def test_same_inputs_same_bytes(planted_run, tmp_path):
    body, tensors = planted_run
    again, tensors2 = run_search(
        PlantedChat(), planted_saes(), CFG, prompts=_prompts(), work_dir=tmp_path / "w", progress=False
    )
    h1 = write_plan(body, tensors, tmp_path / "a" / "plan.json")
    h2 = write_plan(again, tensors2, tmp_path / "b" / "plan.json")
    assert h1 == h2
    assert (tmp_path / "a/plan.json").read_bytes() == (tmp_path / "b/plan.json").read_bytes()
    assert (tmp_path / "a/plan.safetensors").read_bytes() == (tmp_path / "b/plan.safetensors").read_bytes()


def test_resume_after_interruption_equals_uninterrupted(planted_run, tmp_path, monkeypatch):
    body, tensors = planted_run
    calls = {"n": 0}
    real_fit = pipeline.run_stage3

    def interrupted(*args, **kw):
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_stage3", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_search(PlantedChat(), planted_saes(), CFG, prompts=_prompts(), work_dir=tmp_path, progress=False)
    finished = sorted(p.name for p in tmp_path.rglob("*.json"))
    assert finished[:4] == [
        "screen.json",
        "stage1.json",
        "stage2_prompts0000-0004.json",
        "stage2_prompts0005-0009.json",
    ]
    assert "stage3.json" not in finished

    # resumed: finished stages are read back, never recomputed
    monkeypatch.setattr(pipeline, "run_stage3", real_fit)
    monkeypatch.setattr("refusal_eval.search.stages.greedy_minimal_sets", _must_not_run)
    monkeypatch.setattr("refusal_eval.search.stages.layer_scan", _must_not_run)
    resumed, tensors2 = run_search(
        PlantedChat(), planted_saes(), CFG, prompts=_prompts(), work_dir=tmp_path, progress=False
    )
    a = write_plan(body, tensors, tmp_path / "a" / "plan.json")
    b = write_plan(resumed, tensors2, tmp_path / "b" / "plan.json")
    assert a == b and calls["n"] == 1


def _must_not_run(*_a, **_k):
    raise AssertionError("a cached stage was recomputed")


def test_a_later_stage_setting_reuses_the_stages_before_it(planted_run, planted_work, tmp_path, monkeypatch):
    """Stages are cached by what they read: another FM init reruns stage 3's fits only (not its
    dormant and hydra tests), another tau reruns stage 2 on (the same plan a fresh search with
    that tau finds)."""
    body, _ = planted_run
    work = tmp_path / "work"
    shutil.copytree(planted_work, work)
    walks = {"n": 0}
    real_walk = stages.greedy_minimal_sets

    def counted(*a, **k):
        walks["n"] += 1
        return real_walk(*a, **k)

    monkeypatch.setattr(stages, "layer_scan", _must_not_run)
    monkeypatch.setattr(stages, "greedy_minimal_sets", _must_not_run)
    tests = {name: getattr(stage3, name) for name in ("find_hydras", "find_dormant")}
    for name in tests:
        monkeypatch.setattr(stage3, name, _must_not_run)
    fm = CFG.replace(fm_init_std=0.05)
    reused, _ = run_search(
        PlantedChat(), planted_saes(), fm, prompts=_prompts(), work_dir=work, progress=False
    )
    again = reused.to_json()
    assert again["stage2"] == body["stage2"] and reused.config["fm_init_std"] == 0.05
    assert again["stage3"]["woken"] == body["stage3"]["woken"] and body["stage3"]["woken"]["hydra"]
    assert again["stage3"]["dormant"] == body["stage3"]["dormant"] and body["stage3"]["dormant"]
    assert again["stage3"]["fm"] != body["stage3"]["fm"]  # the fits did run again
    for name, real in tests.items():
        monkeypatch.setattr(stage3, name, real)
    monkeypatch.setattr(stages, "greedy_minimal_sets", counted)
    tau = CFG.replace(tau=0.5)
    rerun, t1 = run_search(
        PlantedChat(), planted_saes(), tau, prompts=_prompts(), work_dir=work, progress=False
    )
    assert walks["n"] > 0  # stage 2 ran again for the new tau (stage 1 did not)
    monkeypatch.undo()
    fresh, t2 = run_search(
        PlantedChat(), planted_saes(), tau, prompts=_prompts(), work_dir=tmp_path / "f", progress=False
    )
    assert write_plan(rerun, t1, tmp_path / "a" / "plan.json") == write_plan(
        fresh, t2, tmp_path / "b" / "plan.json"
    )


def test_another_chunk_size_never_reads_a_chunk_of_other_prompts(planted_run, planted_work, tmp_path):
    """chunk_prompts is compute-only (not in the key): stage-2 chunks are named by their prompts,
    so a resume with another chunk size recomputes them rather than misreading them."""
    body, _ = planted_run
    work = tmp_path / "work"
    shutil.copytree(planted_work, work)
    three = CFG.replace(chunk_prompts=3)
    again, _ = run_search(
        PlantedChat(), planted_saes(), three, prompts=_prompts(), work_dir=work, progress=False
    )
    chunks = sorted(p.name for p in work.rglob("stage2_*.json"))
    assert "stage2_prompts0000-0002.json" in chunks and "stage2_prompts0000-0004.json" in chunks
    got = again.to_json()
    assert got["stage2"] == body["stage2"] and got["sets"] == body["sets"]  # the plan records chunk_prompts


def test_plan_round_trip_and_conditions(planted_run, tmp_path):
    body, tensors = planted_run
    h = write_plan(body, tensors, tmp_path / "plan.json")
    plan = AblationPlan.load(tmp_path / "plan.json")
    assert plan.hash == h == hashlib.sha256((tmp_path / "plan.json").read_bytes()).hexdigest()
    saes = planted_saes()
    assert plan.latent_sets("sae") == {0: [0, 1, 2], 1: [0]}
    assert plan.ablations(saes, "baseline") == []
    assert len(plan.ablations(saes, "direction")) == 1
    assert [a.union for a in plan.condition("sae_fm").ablations(saes)] == [(0, 1, 2, 3), (0,)]
    assert plan.counts()["sae"] == 4 and plan.counts()["random"] == 4


def test_plan_rejects_tampered_tensors_and_other_versions(planted_run, tmp_path):
    from refusal_eval.errors import RefusalEvalError

    body, tensors = planted_run
    write_plan(body, tensors, tmp_path / "plan.json")
    st = tmp_path / "plan.safetensors"
    st.write_bytes(st.read_bytes()[:-4] + b"\1\2\3\4")
    with pytest.raises(RefusalEvalError, match="sha256 differs"):
        AblationPlan.load(tmp_path / "plan.json")
    (tmp_path / "bad.json").write_text('{"format": "refusal_eval.plan", "version": 99}')
    with pytest.raises(RefusalEvalError, match="version 99"):
        AblationPlan.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(RefusalEvalError, match="not valid JSON"):
        AblationPlan.load(tmp_path / "junk.json")


def _cli_files(tmp_path):
    p = _prompts()
    files = {}
    for name, prompts in (("harmful", p.harmful), ("harmless", p.harmless), ("validation", p.validation)):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("\n".join(prompts) + "\n")
    cfg = tmp_path / "search.toml"
    cfg.write_text(
        'top_k = 5\nblock_size = 1\nrefusal_tokens = ["w4"]\njudge = "prefix:w4"\nmax_new_tokens = 3\n'
        "fm_lr = 0.05\nfm_epochs = 60\nextra_k = 1\nbatch_size = 8\nchunk_prompts = 5\n"
    )
    return files, cfg


@pytest.mark.parametrize("stream", [False, True], ids=["held", "streamed"])
def test_search_cli_writes_a_plan_and_a_summary(tmp_path, capsys, isolated_cache, planted_dirs, stream):
    from refusal_eval.cli import main

    model_dir, sae_dir = planted_dirs
    files, cfg = _cli_files(tmp_path)
    out = tmp_path / "plans" / "plan.json"
    args = ["search", "--model", model_dir, "--saes", sae_dir, "--dtype", "float32", "--config", str(cfg)]
    args += ["--stream-saes"] if stream else []  # SAE files read per layer, rows from slices
    args += ["--harmful", str(files["harmful"]), "--harmless", str(files["harmless"])]
    args += ["--set", f"validation={files['validation']}", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "union 4" in text and "dormant 12" in text and "direction layer" in text
    assert "attack success on validation (6 refused prompts)" in text
    assert "harmful compliance on validation (outcome judge): " in text
    plan = AblationPlan.load(out)
    assert plan.latent_sets("sae") == {0: [0, 1, 2], 1: [0]}
    assert plan.body.data["harmful"].name == str(files["harmful"])
    assert list((isolated_cache / "search").iterdir())  # stages cached for a resume
    cost = json.loads(out.with_suffix(".cost.json").read_text())  # what each stage cost, beside it
    assert cost["format"] == "refusal_eval.search_cost" and cost["plan_sha256"] == plan.hash
    assert list(cost["stages"]) == ["screen", "stage1", "stage2", "stage3", "verification", "side_effects"]
    assert all(s["forwards"] > 0 and s["tokens"] > 0 and not s["from_cache"] for s in cost["stages"].values())
    assert main(args) == 0  # a rerun reads every stage back: nothing runs, the plan is the same
    again = json.loads(out.with_suffix(".cost.json").read_text())
    assert all(s["from_cache"] for s in again["stages"].values()) and again["plan_sha256"] == plan.hash


def test_search_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys, isolated_cache, planted_dirs):
    from refusal_eval.cli import main

    model_dir, sae_dir = planted_dirs
    files, cfg = _cli_files(tmp_path)
    base = ["search", "--model", model_dir, "--saes", sae_dir, "--dtype", "float32", "--config", str(cfg)]
    out = ["--out", str(tmp_path / "p.json")]
    cases = [
        (["--harmful", str(files["harmless"]), "--harmless", str(files["harmless"])], "refused none"),
        (["--harmful", str(tmp_path / "empty.txt")], "holds no prompts"),
        (["--set", "tau=high"], "tau='high' is not a valid"),
        (["--harmful", str(files["harmful"]), "--set", "layer=7"], "layer=7 is outside the model's 2 layers"),
    ]
    (tmp_path / "empty.txt").write_text("\n\n")
    for extra, message in cases:
        assert main(base + extra + out) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(err) == 1 and message in err[0] and "(fix: " in err[0], err
        assert "Traceback" not in err[0]
    assert not (tmp_path / "p.json").exists()


def test_latent_cards_name_roles_counts_and_where_the_hydra_fires(planted_run, tmp_path):
    from refusal_eval.report.cards import cards_markdown, plan_latents, top_contexts

    body, tensors = planted_run
    write_plan(body, tensors, tmp_path / "plan.json")
    plan = AblationPlan.load(tmp_path / "plan.json")
    roles = plan_latents(plan)
    assert set(roles) == NECESSARY
    assert roles[HYDRA]["roles"] == {"union", "dormant", "hydra"} and roles[HYDRA]["minimal_sets"] == 12
    assert roles[HYDRA]["hydra_prompts"] == 12 and roles[(0, 0)]["roles"] == {"union"}
    saes = planted_saes()
    prompts = [("harmful", p) for p in _prompts().harmful] + [("harmless", p) for p in _prompts().harmless]
    ctx = top_contexts(PlantedChat(), saes, list(roles), prompts, top=3)
    assert len(ctx[(0, 0)]) == 3 and all(c.source == "harmful" for c in ctx[(0, 0)])
    assert ctx[(0, 0)][0].activation >= ctx[(0, 0)][-1].activation > 0
    assert ctx[HYDRA] == []  # nothing ablated: the hydra is dormant on every prompt
    text = cards_markdown(plan, saes, ctx, links={body["saes"]["layers"]["1"]["id"]: "planted/1-res"})
    assert "| [L1/0](#l1-0) | dormant, hydra, union |" in text and "12 / 12 | 12 |" in text
    assert "never fires on these prompts" in text and "neuronpedia.org/planted/1-res/0" in text
    assert "[[" in text.split("## L0-0")[1]


def test_plan_verifies_its_content_and_does_not_depend_on_its_file_name(planted_run, tmp_path):
    import copy
    import json

    from refusal_eval._codec import canonical_json
    from refusal_eval.errors import RefusalEvalError

    body, tensors = planted_run
    h1 = write_plan(body, tensors, tmp_path / "a" / "first.json")
    h2 = write_plan(body, tensors, tmp_path / "b" / "second.json")
    assert h1 == h2  # the tensor file's name is not part of the plan
    assert AblationPlan.load(tmp_path / "b" / "second.json").hash == h2

    def tampered(edit, name):
        raw = json.loads((tmp_path / "a" / "first.json").read_text())
        edit(raw)
        (tmp_path / "a" / f"{name}.json").write_bytes(canonical_json(raw))
        (tmp_path / "a" / f"{name}.safetensors").write_bytes(
            (tmp_path / "a" / "first.safetensors").read_bytes()
        )
        return tmp_path / "a" / f"{name}.json"

    def swap_latent(raw):
        raw["sets"]["sae"][0][1] = 7

    with pytest.raises(RefusalEvalError, match="was edited after it was written"):
        AblationPlan.load(tampered(swap_latent, "edited"))
    with pytest.raises(RefusalEvalError, match="carries no content hash"):
        AblationPlan.load(tampered(lambda raw: raw.pop("content_sha256"), "unhashed"))

    def rewritten(change, name):
        b = copy.deepcopy(body)
        change(b)
        write_plan(b, tensors, tmp_path / "c" / f"{name}.json")
        return tmp_path / "c" / f"{name}.json"

    empty = AblationPlan.load(rewritten(lambda b: b["sets"].update(sae=[]), "empty"))
    with pytest.raises(RefusalEvalError, match="empty 'sae' latent set"):
        empty.ablations(planted_saes(), "sae")
    assert len(empty.ablations(planted_saes(), "sae_fm")) == 2  # other conditions still work
    with pytest.raises(RefusalEvalError, match="names direction layer 99, but its tensors hold 2 layers"):
        AblationPlan.load(rewritten(lambda b: b["stage1"].update(layer=99), "layer"))
    with pytest.raises(RefusalEvalError, match="is malformed") as err:
        AblationPlan.load(rewritten(lambda b: b["sets"]["sae"][0].__setitem__(1, "abc"), "strid"))
    assert "\n" not in str(err.value)
    with pytest.raises(RefusalEvalError, match="is malformed"):
        AblationPlan.load(rewritten(lambda b: b.pop("stage2"), "nosection"))


def test_a_plans_latents_on_sae_lens_saes(planted_run, tmp_path):
    """One call from a plan to sae-lens SAE objects and the latent ids to look at."""
    import sae_lens

    body, tensors = planted_run
    write_plan(body, tensors, tmp_path / "plan.json")
    plan, saes = AblationPlan.load(tmp_path / "plan.json"), planted_saes()
    got = plan.sae_lens_saes(saes, "sae")
    assert (
        {layer: ids for layer, (_, ids) in got.items()} == plan.latent_sets("sae") == {0: [0, 1, 2], 1: [0]}
    )
    sae, ids = got[0]
    assert isinstance(sae, sae_lens.SAE) and sae.cfg.d_sae == saes[0].d_sae
    assert torch.equal(sae.W_dec.detach()[ids], saes[0].W_dec[ids])  # the same weights
    with pytest.raises(RefusalEvalError, match=r"uses layer\(s\) \[1\] but no SAE is loaded"):
        plan.sae_lens_saes({0: saes[0]}, "sae")


def test_planted_minimal_sets_are_one_minimal_and_the_seeds_agree(planted_run):
    """Every planted necessary latent is needed (restoring any one of them brings refusal back),
    a decoy added to the set is not, and the three block orders keep identical sets."""
    from refusal_eval.search.minimality import one_minimality, seed_agreement, summarize
    from refusal_eval.search.scorer import SubsetScorer

    chat, s2 = PlantedChat(), planted_run[0]["stage2"]
    texts = _prompts().harmful
    refused = [texts[p["harmful_index"]] for p in s2["prompts"]]
    scorer = SubsetScorer(chat.model, chat.tokenizer, refused, planted_saes(), [10], progress=False)
    found = [(i, sorted(_pairs(p["minimal"])), p["p_minimal"]) for i, p in enumerate(s2["prompts"])]
    checks = one_minimality(found, scorer.p_refusal, tau=CFG.tau)
    assert all(c.one_minimal for c in checks) and summarize(checks)["needed_latent_share"] == 1.0
    assert all(min(c.p_without) > 0.5 for c in checks)  # any one restored: refused again
    decoy = (0, 4)
    padded = one_minimality([(0, [*sorted(NECESSARY), decoy], found[0][2])], scorer.p_refusal, tau=CFG.tau)
    assert dict(zip(padded[0].minimal, padded[0].needed, strict=True)) == {
        **dict.fromkeys(NECESSARY, True),
        decoy: False,
    }
    agreement = seed_agreement([[_pairs(s) for s in p["per_seed"]] for p in s2["prompts"]])
    assert agreement == {
        "prompts": 12.0,
        "mean_pairwise_jaccard": 1.0,
        "mean_seed_to_minimal_jaccard": 1.0,
        "share_identical": 1.0,
    }


def test_minimality_counts_on_a_hand_made_score():
    from refusal_eval.search.minimality import jaccard, one_minimality, seed_agreement

    a, b, c = (0, 1), (0, 2), (1, 3)

    def score(rows, starts):  # refusal breaks only when a and b are both ablated
        assert starts == [0, 0, 0, 1]  # the set from its lowest layer; each restored row from its own
        return [0.1 if {a, b} <= set(latents) else 0.9 for _, latents in rows]

    (check,) = one_minimality([(0, [a, b, c], 0.1)], score, tau=0.3)
    assert check.needed == (True, True, False) and not check.one_minimal
    assert check.p_without == (0.9, 0.9, 0.1)
    assert jaccard([a, b], [b, c]) == pytest.approx(1 / 3) and jaccard([], []) == 1.0
    got = seed_agreement([[[a, b], [a, b, c], [a, b]]])
    assert got["mean_pairwise_jaccard"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert got["mean_seed_to_minimal_jaccard"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert got["share_identical"] == 0.0


def test_a_cache_miss_keys_and_hashes_the_search_once(isolated_cache, monkeypatch):
    """plan=auto hands the inputs it keyed its lookup with to the search: the SAEs are
    fingerprinted once, and the search runs on exactly those inputs."""
    from refusal_eval.search import auto

    calls: list[int] = []
    real_block = pipeline._sae_block

    def counting_block(saes):  # type: ignore[no-untyped-def]
        calls.append(len(saes))
        return real_block(saes)

    class Reached(Exception):
        pass

    seen: list[str] = []

    def stop(chat, saes, inputs, *rest):  # type: ignore[no-untyped-def]
        seen.append(inputs.key)
        raise Reached

    monkeypatch.setattr(pipeline, "_sae_block", counting_block)
    monkeypatch.setattr(pipeline, "_run_stages", stop)
    with pytest.raises(Reached):
        auto.resolve_plan(PlantedChat(), planted_saes(), "auto", CFG, progress=False)
    assert calls == [len(planted_saes())]
    assert seen == [pipeline.search_inputs(PlantedChat(), planted_saes(), CFG).key]


def test_a_search_over_streamed_saes_holds_one_whole_layer_and_finds_the_same_plan(planted_run, tmp_path):
    """Streamed SAEs (issue 26: memory = model + one whole SAE + ablated rows): every whole layer is
    read alone, stage 2 ablates through candidate rows only, and the plan is byte-identical."""
    import copy
    import weakref

    from refusal_eval._codec import canonical_json
    from refusal_eval.saes import StreamedSAEs

    coders = planted_saes()
    alive: weakref.WeakSet = weakref.WeakSet()
    peak, rows_loads = [0], []

    def load(layer, latents):
        if latents is not None:
            rows_loads.append((layer, tuple(latents)))
            return coders[layer].subset(latents)
        peak[0] = max(peak[0], len(alive) + 1)  # whole coders alive once this one is read
        whole = copy.deepcopy(coders[layer])
        alive.add(whole)
        return whole

    streamed = StreamedSAEs(load, [0, 1], source="code")
    body, tensors = run_search(
        PlantedChat(), streamed, CFG, prompts=_prompts(), work_dir=tmp_path, progress=False
    )
    assert canonical_json(body.to_json()) == canonical_json(planted_run[0])
    assert torch.equal(tensors["directions"], planted_run[1]["directions"])
    assert peak[0] == 1 and streamed.whole_loads  # never two whole layers at once
    cands = {(c[0], c[1]) for c in planted_run[0]["stage1"]["candidates"]}
    # stage 2 held exactly the candidates' rows of each layer, never a whole layer through rows
    stage2 = {layer: set(ids) for layer, ids in rows_loads if len(ids) == sum(c[0] == layer for c in cands)}
    assert stage2 == {layer: {i for la, i in cands if la == layer} for layer in (0, 1)}
    assert all(len(ids) < coders[layer].d_sae for layer, ids in rows_loads)


def test_generate_with_auto_takes_vllm_only_where_it_is_installed_on_a_host_without_cuda(monkeypatch):
    from refusal_eval.search import engines

    monkeypatch.setattr(engines, "vllm_installed", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engines.pick_generate_with("auto") == "vllm"
    assert engines.pick_generate_with("auto", stream_saes=True) == "hf"  # vLLM holds every layer
    with pytest.raises(RefusalEvalError, match="streams its SAEs generates on the HF model"):
        engines.pick_generate_with("vllm", stream_saes=True)
    assert engines.pick_generate_with("hf") == "hf"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert engines.pick_generate_with("auto") == "hf"  # the engine would take the HF model's memory
    assert engines.pick_generate_with("vllm") == "vllm"  # asked for: kept
    monkeypatch.setattr(engines, "vllm_installed", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engines.pick_generate_with("auto") == "hf"
    with pytest.raises(
        RefusalEvalError, match=r"unknown generate_with='gpu' \(fix: use one of auto, hf, vllm\)"
    ):
        engines.pick_generate_with("gpu")


def test_sae_max_kl_adds_a_verified_sae_kl_condition_from_the_cached_stages(
    planted_run, planted_work, tmp_path, monkeypatch
):
    """``sae_max_kl`` is a stage-3 setting: stages 1-2 and the causal tests are read back, and
    the plan gains a ``sae_kl`` set, its pruning record, its verification and its side effect.
    The planted harmless prompts carry no trigger, so the union costs no KL: nothing is dropped."""
    body, _ = planted_run
    assert "sae_kl" not in body["sets"] and "kl_pruning" not in body["stage3"]
    work = tmp_path / "work"
    shutil.copytree(planted_work, work)
    monkeypatch.setattr(stages, "layer_scan", _must_not_run)
    monkeypatch.setattr(stages, "greedy_minimal_sets", _must_not_run)
    for name in ("find_hydras", "find_dormant"):
        monkeypatch.setattr(stage3, name, _must_not_run)
    got, _ = run_search(
        PlantedChat(),
        planted_saes(),
        CFG.replace(sae_max_kl=0.01),
        prompts=_prompts(),
        work_dir=work,
        progress=False,
    )
    plan = got.to_json()
    pruning = plan["stage3"]["kl_pruning"]
    assert pruning["bound"] == 0.01 and pruning["dropped"] == 0 and pruning["points"] == [[0, 0.0]]
    assert _pairs(pruning["kept"]) == _pairs(plan["sets"]["sae_kl"]) == NECESSARY
    assert sorted(_pairs(pruning["order"])) == sorted(NECESSARY)
    for split in ("search", "validation"):
        assert plan["verification"][split]["sae_kl"] == plan["verification"][split]["sae"]
    assert plan["side_effects"]["sae_kl"]["first_token_kl"] == 0.0
    assert {k: v for k, v in plan["sets"].items() if k != "sae_kl"} == body["sets"]


def test_sae_max_kl_prunes_when_harmless_prompts_carry_the_trigger(tmp_path):
    """Four of the harmless prompts carry a trigger, so ablating the union moves their first
    token: the pruning drops latents in harmless-share order (the three refusal latents fire on
    a quarter of the harmless prompts, the dormant hydra on none) until the KL bound holds, and
    the plan verifies the smaller set; a plan without the option names the setting to ask for."""
    from refusal_eval.search.plan import AblationPlan

    base = _prompts()
    harmless = base.harmless + planted_prompts(4, True, 7)
    prompts = PromptSets(base.harmful, harmless, base.validation, names={})
    got, tensors = run_search(
        PlantedChat(),
        planted_saes(),
        CFG.replace(sae_max_kl=0.05),
        prompts=prompts,
        work_dir=tmp_path,
        progress=False,
    )
    plan = got.to_json()
    pruning = plan["stage3"]["kl_pruning"]
    assert plan["config"]["sae_max_kl"] == 0.05
    points = dict((int(k), v) for k, v in pruning["points"])
    assert points[0] > 0.05  # the whole union moves the triggered harmless prompts
    assert 0 < pruning["dropped"] < len(NECESSARY)
    assert points[pruning["dropped"] - 1] > 0.05 >= points.get(pruning["dropped"], 0.0)
    shares = {(la, i): s for la, i, s in pruning["order"]}
    assert shares[HYDRA] == 0.0 and all(shares[x] > 0 for x in NECESSARY - {HYDRA})
    kept = _pairs(plan["sets"]["sae_kl"])
    assert kept < NECESSARY and len(kept) == len(NECESSARY) - pruning["dropped"]
    assert plan["side_effects"]["sae_kl"]["first_token_kl"] <= 0.05
    assert set(plan["verification"]["validation"]) >= {"sae", "sae_kl", "direction"}
    path = tmp_path / "plan.json"
    write_plan(got, tensors, path)
    assert AblationPlan.load(path).latent_sets("sae_kl") == {
        la: [i for l2, i in sorted(kept) if l2 == la] for la, _ in kept
    }
    write_plan(
        pipeline.run_search(
            PlantedChat(), planted_saes(), CFG, prompts=prompts, work_dir=tmp_path, progress=False
        )[0],
        tensors,
        tmp_path / "p2.json",
    )
    with pytest.raises(RefusalEvalError, match="--set sae_max_kl=VALUE"):
        AblationPlan.load(tmp_path / "p2.json").latent_sets("sae_kl")
