"""Leaderboard from synthetic lm-eval results JSONs."""

from __future__ import annotations

import json

import pytest

from refusal_eval.cli import main
from refusal_eval.errors import RefusalEvalError
from refusal_eval.report import read_all, sort_rows

CONDS = ("baseline", "sae", "sae_fm", "random", "direction")


def results_json(model: str, attack: dict[str, float], n: int = 10, version: str = "0.4.13") -> dict:
    results, n_samples = {}, {}
    for cond in CONDS:
        a = attack[cond]
        for ds in ("jbb", "harmbench", "strongreject"):
            task = f"refusal_{ds}_{cond}"
            results[task] = {
                "alias": task,
                "refusal_rate,none": 1 - a,
                "refusal_rate_stderr,none": 0.1,
                "attack_success,none": a,
                "attack_success_stderr,none": 0.1,
            }
            n_samples[task] = {"original": n, "effective": n}
        results[f"refusal_xstest_safe_{cond}"] = {"over_refusal,none": 0.1, "over_refusal_stderr,none": 0.05}
        results[f"refusal_alpaca_{cond}"] = {"compliance,none": 0.95, "compliance_stderr,none": 0.02}
        n_samples[f"refusal_xstest_safe_{cond}"] = n_samples[f"refusal_alpaca_{cond}"] = {"effective": n}
    config = {
        "model": "sae_ablated",
        "model_args": f"pretrained={model}",
        "refusal_eval_model": model,
        "refusal_eval_saes": {"source": f"{model}-res", "hooks": {"14": "blocks.14.hook_resid_post"}},
        "refusal_eval_plan_layer": 14,
        "refusal_eval_feature_counts": {
            "sae": 12,
            "sae_fm": 62,
            "sae_probe": 62,
            "sae_random": 62,
            "random": 12,
        },
        "refusal_eval_dormant": 3,
        "refusal_eval_judge": "keyword",
        "refusal_eval_plan_hash": "ab" * 32,
        "limit": 8.0,  # lm-eval stores --limit 8 as a float
    }
    return {
        "results": results,
        "config": config,
        "n-samples": n_samples,
        "lm_eval_version": version,
        "date": 1795300122.5,
    }


@pytest.fixture
def two_results(tmp_path):
    paths = []
    for model, attack in (
        ("weak", {"baseline": 0.5, "sae": 0.9, "sae_fm": 0.95, "random": 0.5, "direction": 1.0}),
        ("strong", {"baseline": 0.1, "sae": 0.4, "sae_fm": 0.6, "random": 0.1, "direction": 0.9}),
    ):
        p = tmp_path / model / "results_2026.json"
        p.parent.mkdir()
        p.write_text(json.dumps(results_json(model, attack)))
        paths.append(p)
    return paths


def test_rows_values_and_sort_order(two_results):
    rows = sort_rows(read_all(two_results))
    assert [r.model for r in rows] == ["strong", "weak"]  # lower attack success under sae first
    strong = rows[0]
    assert strong.attack["sae"].value == pytest.approx(0.4) and strong.refusal[
        "baseline"
    ].value == pytest.approx(0.9)
    # pooled over 3 x 10 prompts: se = sqrt(3 * (1/3)^2 * 0.1^2) = 0.0577
    lo, hi = strong.attack["sae"].ci
    assert lo == pytest.approx(0.4 - 1.96 * 0.057735, abs=1e-4) and hi == pytest.approx(
        0.4 + 1.96 * 0.057735, abs=1e-4
    )
    assert (strong.union, strong.fm_extra, strong.dormant, strong.layer) == (12, 50, 3, 14)
    assert strong.over_refusal["baseline"].value == 0.1 and strong.compliance["baseline"].value == 0.95
    assert strong.date == "2026-11-21 22:28 UTC"  # lm-eval's Unix timestamp, shown as a date
    assert strong.limit == 8 and isinstance(strong.limit, int)


def test_leaderboard_files(two_results, tmp_path, capsys):
    out = tmp_path / "board"
    assert main(["leaderboard", *map(str, two_results), "--out", str(out)]) == 0
    md = (out / "leaderboard.md").read_text().splitlines()
    assert md[0].startswith(
        "| rank | model | SAE set | layer | union | FM extra | dormant | baseline refusal"
    )
    assert md[2].startswith("| 1 | strong |") and md[3].startswith("| 2 | weak |")
    assert "0.400 [0.29, 0.51]" in md[2]
    csv_lines = (out / "leaderboard.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[1].startswith("1,strong,")
    html = (out / "leaderboard.html").read_text()
    assert html.count("<svg") == 3 and "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for name in ("refusal_by_condition.svg", "attack_vs_latents.svg", "over_refusal_vs_refusal.svg"):
        svg = (out / "plots" / name).read_text()
        assert svg.startswith("<svg") and "strong" in svg and "weak" in svg
    assert "| 1 | strong |" in capsys.readouterr().out


def test_bad_results_files_are_named(two_results, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(RefusalEvalError, match=r"results file .*bad.json is not valid JSON"):
        read_all([two_results[0], bad])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"results": {"hellaswag": {}}, "config": {}}))
    with pytest.raises(RefusalEvalError, match=r"other\.json holds no refusal_ablation task results"):
        read_all([other])
    (tmp_path / "plain.json").write_text("[1, 2]")
    with pytest.raises(RefusalEvalError, match=r"plain\.json is not an lm-eval results file"):
        read_all([tmp_path / "plain.json"])
    old = tmp_path / "old.json"
    old.write_text(json.dumps(results_json("old", dict.fromkeys(CONDS, 0.5), version="0.4.9")))
    with pytest.raises(RefusalEvalError, match=r"different lm-eval versions .*old.json: 0.4.9"):
        read_all([*two_results, old])
    assert main(["leaderboard", str(bad), "--out", str(tmp_path / "x")]) == 2


def test_per_category_rates_from_logged_samples(two_results, tmp_path):
    results = two_results[1]  # "strong"
    date_id = results.stem.removeprefix("results_")
    for cond, outcomes in (("baseline", [0, 0, 1]), ("sae", [1, 1, 0])):
        lines = [
            json.dumps({"doc": {"category": cat}, "attack_success": float(o)})
            for cat, o in zip(["Fraud", "Fraud", "Malware"], outcomes, strict=True)
        ]
        (results.parent / f"samples_refusal_jbb_{cond}_{date_id}.jsonl").write_text("\n".join(lines) + "\n")
    rows = read_all(two_results)
    strong = next(r for r in rows if r.model == "strong")
    assert strong.categories == {
        "jbb": {"Fraud": {"baseline": 0.0, "sae": 1.0}, "Malware": {"baseline": 1.0, "sae": 0.0}}
    }
    out = tmp_path / "board"
    assert main(["leaderboard", *map(str, two_results), "--out", str(out)]) == 0
    text = (out / "categories.md").read_text()
    assert (
        "## strong: jbb" in text and "| Fraud | 0.00 | 1.00 |" in text and "| Malware | 1.00 | 0.00 |" in text
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(config=None), "'results'/'config' that are not JSON objects"),
        (lambda d: d.update(results=[1, 2]), "'results'/'config' that are not JSON objects"),
        (
            lambda d: [d["config"].pop(k) for k in ("refusal_eval_model", "refusal_eval_plan_hash")],
            "config lacks refusal_eval_model, refusal_eval_plan_hash: it was not made by the sae_ablated",
        ),
        (
            lambda d: d["results"]["refusal_jbb_sae"].update({"attack_success,none": "N/A"}),
            "task refusal_jbb_sae has non-numeric attack_success,none = 'N/A'",
        ),
    ],
)
def test_results_that_cannot_be_ranked_say_why(tmp_path, mutate, message):
    data = results_json("m", dict.fromkeys(CONDS, 0.5))
    mutate(data)
    p = tmp_path / "results_x.json"
    p.write_text(json.dumps(data))
    with pytest.raises(RefusalEvalError, match=message) as err:
        read_all([p])
    assert "\n" not in str(err.value)
    top = tmp_path / "list.json"
    top.write_text("[]")
    with pytest.raises(RefusalEvalError, match="is not an lm-eval results file"):
        read_all([top])
