"""The one artifact codec: plans of both versions, strict decoding with the path of a bad
field, and the command-line string forms the config reads."""

from __future__ import annotations

import dataclasses
import inspect
import json
from importlib import resources
from pathlib import Path
from typing import Literal

import pytest

from refusal_eval import RefusalEvalError
from refusal_eval._codec import DecodeError, canonical_json, decode, encode
from refusal_eval.config import SearchConfig
from refusal_eval.search import artifacts
from refusal_eval.search.artifacts import MinimalSet, PlanBody, Stage2
from refusal_eval.search.plan import V1_ABSENT, VERSION, AblationPlan, content_hash
from refusal_eval.search.upgrade import key_of, upgrade_plan

PLANS = Path(str(resources.files("refusal_eval") / "plans"))
SHIPPED = sorted(p for p in PLANS.glob("*.json") if not p.name.endswith(".cost.json"))
FORMAT_FIELDS = ("format", "version", "tensors", "content_sha256")


def _raw(path: Path) -> dict:
    return json.loads(path.read_bytes())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_plans_are_version_2_and_round_trip(path):
    raw = _raw(path)
    assert raw["version"] == VERSION == 2
    body = {k: v for k, v in raw.items() if k not in FORMAT_FIELDS}
    typed = PlanBody.from_json(body)
    assert canonical_json(typed.to_json()) == canonical_json(body)
    # every field is written: nothing a reader must guess
    assert set(body) == {f.name for f in dataclasses.fields(PlanBody)}
    assert set(body["stage1"]) == {f.name for f in dataclasses.fields(artifacts.Stage1)}


def _as_v1(raw: dict) -> dict:
    """What version 1 wrote for the same search: the explicit nulls left out."""
    out = json.loads(json.dumps(raw))
    out["version"] = 1
    for k, v in V1_ABSENT["plan"].items():
        if out.get(k) == v:
            del out[k]
    s3 = out["stage3"]
    for fit in (s3["fm"], s3["probe"]):
        if fit["losses"] is None:
            del fit["losses"]
    if s3["woken"] is None:
        del s3["woken"]
    for conds in out["verification"].values():
        for verified in conds.values():
            for k in V1_ABSENT["verified"]:
                if verified.get(k) is None:
                    verified.pop(k, None)
    return out


def test_a_version_1_plan_loads_and_upgrades_to_the_shipped_bytes(tmp_path):
    shipped = PLANS / "qwen2.5-coder-0.5b-instruct-res-2k.json"
    raw = _raw(shipped)
    v1 = _as_v1(raw)
    assert v1 != raw
    typed_v2 = AblationPlan.load(shipped).body
    # version 1's key: the same inputs under format 1 (the shipped plan was re-keyed from it)
    v1["key"] = key_of(typed_v2, 1)
    v1.pop("content_sha256")
    v1["content_sha256"] = content_hash(v1)
    old = tmp_path / "old.json"
    old.write_bytes(canonical_json(v1))
    old.with_suffix(".safetensors").write_bytes(shipped.with_suffix(".safetensors").read_bytes())
    loaded = AblationPlan.load(old).body
    assert loaded == dataclasses.replace(typed_v2, key=v1["key"])
    version, _, rekeyed = upgrade_plan(old, tmp_path / "new.json")
    assert (version, rekeyed) == (1, True)
    assert (tmp_path / "new.json").read_bytes() == shipped.read_bytes()
    assert key_of(typed_v2, 1) != key_of(typed_v2, 2) == typed_v2.key


def test_a_plan_whose_inputs_do_not_give_its_key_keeps_it(tmp_path):
    shipped = PLANS / "qwen2.5-coder-0.5b-instruct-res-2k.json"
    v1 = _as_v1(_raw(shipped))
    v1["key"] = "0" * 64
    v1.pop("content_sha256")
    v1["content_sha256"] = content_hash(v1)
    old = tmp_path / "old.json"
    old.write_bytes(canonical_json(v1))
    old.with_suffix(".safetensors").write_bytes(shipped.with_suffix(".safetensors").read_bytes())
    _, _, rekeyed = upgrade_plan(old, tmp_path / "new.json")
    assert not rekeyed
    assert AblationPlan.load(tmp_path / "new.json").body.key == "0" * 64


def test_a_malformed_plan_names_the_field(tmp_path):
    shipped = PLANS / "qwen2.5-coder-0.5b-instruct-res-2k.json"
    raw = _raw(shipped)
    raw["stage2"]["prompts"][1]["p_clean"] = "high"
    raw.pop("content_sha256")
    raw["content_sha256"] = content_hash(raw)
    bad = tmp_path / "bad.json"
    bad.write_bytes(canonical_json(raw))
    bad.with_suffix(".safetensors").write_bytes(shipped.with_suffix(".safetensors").read_bytes())
    with pytest.raises(RefusalEvalError, match=r"PlanBody\.stage2\.prompts\[1\]\.p_clean: expected float"):
        AblationPlan.load(bad)


def test_decoding_is_strict_and_says_where():
    good = {
        "prompt": 0,
        "harmful_index": 3,
        "p_clean": 0.9,
        "p_full": 0.1,
        "per_seed": [[[10, 4]]],
        "minimal": [[10, 4]],
        "p_minimal": 0.2,
    }
    m = decode(MinimalSet, good)
    assert m.minimal == ((10, 4),) and isinstance(m.per_seed, tuple)
    assert encode(m) == good
    cases = {
        "prompt": (True, "value.prompt: expected int, got True"),
        "harmful_index": (2.5, "value.harmful_index: expected int, got 2.5"),
        "minimal": ([[10, 4, 1]], r"value.minimal\[0\]: expected 2 items, got 3"),
        "p_full": (None, "value.p_full: expected float, got None"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(DecodeError, match=message):
            decode(MinimalSet, {**good, key: value})
    with pytest.raises(DecodeError, match="missing field 'p_minimal'"):
        decode(MinimalSet, {k: v for k, v in good.items() if k != "p_minimal"})
    with pytest.raises(DecodeError, match=r"unknown field\(s\) \['extra'\]"):
        decode(MinimalSet, {**good, "extra": 1})
    assert decode(MinimalSet, {**good, "prompt": 2.0}).prompt == 2  # an integral float is an int
    stage2 = decode(Stage2, {**encode_stage2(), "counts": [["10", 4, 1]]}, "s", strings=True)
    assert stage2.counts == ((10, 4, 1),)
    assert decode(dict[int, Literal["a", "b"]], {"3": "a"}) == {3: "a"}
    with pytest.raises(DecodeError, match=r"expected one of 'a' \| 'b', got 'c'"):
        decode(dict[int, Literal["a", "b"]], {"3": "c"})


def encode_stage2() -> dict:
    return {
        "n_prompts": 0,
        "prompts": [],
        "union": [],
        "counts": [],
        "mean_minimal_size": 0.0,
        "flipped_by_proxy": 0,
    }


def test_config_reads_command_line_strings_through_the_codec():
    cfg = SearchConfig().replace(seeds="1, 2,3", n_harmful="none", verify="false", tau="0.25")
    assert (cfg.seeds, cfg.n_harmful, cfg.verify, cfg.tau) == ((1, 2, 3), None, False, 0.25)
    with pytest.raises(RefusalEvalError, match=r"search config top_k='many' is not a valid"):
        SearchConfig().replace(top_k="many")
    with pytest.raises(RefusalEvalError, match="search config verify=3 is not a valid"):
        SearchConfig().replace(verify=3)


def test_artifacts_hold_no_hand_written_decoder():
    source = inspect.getsource(artifacts)
    assert source.count("def from_json") == 1  # the codec-driven one on the shared base
    assert source.count("def to_json") == 1


def test_the_vllm_edit_spec_round_trips_and_names_a_bad_field():
    from refusal_eval.vllm_backend._spec import EditSpec, SaeSlot

    spec = EditSpec(saes=(SaeSlot(10, "resid_post", "jumprelu", 896, 12, "float32"),), max_latents=64)
    assert EditSpec.from_json(spec.to_json()) == spec
    raw = json.loads(spec.to_json())
    raw["saes"][0]["d_sae"] = "wide"
    with pytest.raises(RefusalEvalError, match=r"refusal_eval_edit\.saes\[0\]\.d_sae: expected int"):
        EditSpec.from_json(json.dumps(raw))
    with pytest.raises(RefusalEvalError, match="version 0 \\(this refusal_eval reads 1\\)"):
        EditSpec.from_json(json.dumps({**raw, "version": 0}))
    with pytest.raises(RefusalEvalError, match="malformed refusal_eval_edit"):
        EditSpec.from_json("{not json")


def test_the_search_has_a_public_face():
    import refusal_eval.search as search

    for name in search.__all__:
        assert getattr(search, name) is not None
    assert search.AblationPlan is AblationPlan and search.PlanBody is PlanBody
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        search.nope  # noqa: B018


def test_a_hub_plan_names_the_sae_ids_it_was_searched_with():
    """The one rule both the lm-eval model and the CLI use: the plan's own hub release gives its
    own ids (Gemma Scope has several SAEs per layer); anything else resolves ids as usual."""
    from refusal_eval.saes import shipped_releases

    shipped = AblationPlan.load(SHIPPED[0])
    layers = sorted(shipped.sae_layer_ids)
    assert shipped.sae_source in shipped_releases()
    assert shipped.sae_ids_for(shipped.sae_source, layers) is None
    ids = {layer: f"layer_{layer}/width_65k/average_l0_{layer + 50}" for layer in layers}
    saes = dataclasses.replace(
        shipped.body.saes,
        source="gemma-scope-2b-pt-res",
        layers={x: dataclasses.replace(info, id=ids[x]) for x, info in shipped.body.saes.layers.items()},
    )
    hub = dataclasses.replace(shipped, body=dataclasses.replace(shipped.body, saes=saes))
    assert hub.sae_ids_for("gemma-scope-2b-pt-res", layers[1:]) == [ids[x] for x in layers[1:]]
    assert hub.sae_ids_for("gemma-scope-2b-pt-res-canonical", layers) is None  # another release
    assert hub.sae_ids_for("gemma-scope-2b-pt-res", [*layers, 99]) is None  # a layer it has no SAE on
