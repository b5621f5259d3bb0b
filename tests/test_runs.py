"""The run vocabulary: task names built and parsed in one place, the provenance record."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from refusal_eval.conditions import EVALUATED
from refusal_eval.runs import (
    BENCHMARKS,
    HARMFUL,
    HARMLESS,
    RunInfo,
    condition_of_task,
    harmful_group,
    parse_task,
    samples_task,
    task_name,
)

TASKS = Path(__file__).resolve().parents[1] / "tasks" / "refusal_ablation"


def _shipped_task_names() -> list[str]:
    names = []
    for path in sorted(TASKS.glob("refusal_*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc.get("task"), str):  # a group lists its tasks
            names.append(doc["task"])
    return names


def test_every_shipped_task_parses_and_rebuilds() -> None:
    names = _shipped_task_names()
    assert len(names) == len(EVALUATED) * (len(BENCHMARKS) + 1 + 3)  # + ce + three lengths
    for name in names:
        parsed = parse_task(name)
        assert parsed is not None, name
        assert task_name(*parsed) == name
    assert parse_task("refusal_jbb_sae_fm") == ("jbb", "sae_fm")  # not ("jbb_sae", "fm")
    assert parse_task("refusal_xstest_safe_sae_fm") == ("xstest_safe", "sae_fm")
    assert parse_task("refusal_length_32_random") == ("length_32", "random")
    assert {parse_task(n)[1] for n in names} == set(EVALUATED)  # type: ignore[index]


def test_groups_and_user_tasks_do_not_parse() -> None:
    for name in ("refusal_ablation", harmful_group("sae"), "refusal_length", "refusal_jbb", "refusal_x_sae"):
        assert parse_task(name) is None, name
    # a user task whose name merely ends like a condition is never ablated by name
    assert condition_of_task("wino_sae") is None and condition_of_task("my_toxicity_random") is None
    assert condition_of_task("refusal_mytask_sae_fm") == "sae_fm"  # the refusal_ prefix opts in
    assert condition_of_task("refusal_sae") is None  # a prefix and a condition, no task


def test_benchmark_kinds_partition_and_samples_file_names() -> None:
    assert HARMFUL == ("jbb", "harmbench", "strongreject", "advbench")
    assert set(HARMFUL) | set(HARMLESS) == {b.name for b in BENCHMARKS} and not set(HARMFUL) & set(HARMLESS)
    for b in BENCHMARKS:
        assert (TASKS / b.template).is_file(), b.template
    name = "samples_refusal_jbb_sae_fm_2026-12-02T00-19-26.363398.jsonl"
    assert samples_task(name) == "refusal_jbb_sae_fm" and samples_task("results_x.json") is None


def test_hub_loader_applies_each_benchmark_filter_and_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    import tasks.refusal_ablation.utils as utils  # type: ignore[import-not-found]

    asked: list[tuple[Any, ...]] = []

    def fake(hub_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
        asked.append((hub_id, config, split))
        if hub_id == "walledai/XSTest":
            return [
                {"prompt": p, "type": "t", "label": label} for p, label in (("a", "safe"), ("b", "unsafe"))
            ]
        return [{"instruction": f"i{k}", "input": "" if k % 2 else "x"} for k in range(300)]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    xs = utils.load("xstest_safe", data_source="hub")["test"]
    assert list(xs["prompt"]) == ["a"] and list(xs["category"]) == ["t"]
    alpaca = utils.load("alpaca", data_source="hub")["test"]
    assert len(alpaca) == 100 and all(int(p[1:]) % 2 for p in alpaca["prompt"])  # no-input rows only
    assert asked == [("walledai/XSTest", None, "test"), ("tatsu-lab/alpaca", None, "train")]


def test_run_info_round_trips_through_a_results_config() -> None:
    info = RunInfo(
        model="m",
        judge="outcome",
        device="cpu",
        version="0.1.0",
        batch_size=16,
        plan_hash="ab" * 32,
        feature_counts={"sae": 3},
        first_token_kl={"sae": 0.5},
    )
    config = info.to_config()
    assert config["refusal_eval_model"] == "m" and config["refusal_eval_batch_size"] == 16
    assert "refusal_eval_hydra" not in config  # plan fields only when there is a plan
    assert config["refusal_eval_model_revision"] is None  # always said, even when unknown
    assert all(k.startswith("refusal_eval_") for k in config)
    assert RunInfo.from_config({"model_args": "x", **config}) == info
    assert RunInfo.from_config({"model_args": "x"}) is None
    assert RunInfo.missing(config) == []
    assert RunInfo.missing({"refusal_eval_model": "m"}) == [
        "refusal_eval_plan_hash",
        "refusal_eval_feature_counts",
    ]
    old = RunInfo.from_config({"refusal_eval_model": "m"})  # a run from before judge/device were kept
    assert old is not None and (old.judge, old.device, old.version) == ("?", "?", "?")
    assert {f.name for f in dataclasses.fields(RunInfo)} >= {"model", "judge", "plan_hash", "version"}


def test_cross_entropy_results_are_lm_evals_counts_and_check_the_condition() -> None:
    import pickle

    from lm_eval.api.task import ConfigurableTask

    import tasks.refusal_ablation.utils as utils  # type: ignore[import-not-found]
    from refusal_eval.errors import RefusalEvalError
    from refusal_eval.runs import Scored

    text = "a  b\nc déjà vu"
    words, size = ConfigurableTask.count_words(text), ConfigurableTask.count_bytes(text)
    got = utils.ce_results({"text": text, "condition": "sae"}, [Scored(-3.0, "sae")])
    assert got == {
        "word_perplexity": (-3.0, words),
        "byte_perplexity": (-3.0, size),
        "bits_per_byte": (-3.0, size),
    }
    with pytest.raises(RefusalEvalError, match="'sae' cross-entropy task was scored by a model"):
        utils.ce_results({"text": text, "condition": "sae"}, [-3.0])  # a plain float: not ablated
    with pytest.raises(RefusalEvalError):
        utils.ce_results({"text": text, "condition": "sae"}, [Scored(-3.0, "direction")])
    assert utils.ce_results({"text": "x", "condition": "baseline"}, [-1.0])["bits_per_byte"] == (-1.0, 1)
    back = pickle.loads(pickle.dumps(Scored(-2.5, "sae_fm")))
    assert (float(back), back.condition) == (-2.5, "sae_fm")
