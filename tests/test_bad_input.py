"""Bad inputs a hostile-but-fair user tries: each is one clear error or the correct result."""

from __future__ import annotations

import json

import pytest

from refusal_eval.data import load_prompts
from refusal_eval.errors import RefusalEvalError


def test_prompt_files_are_parsed_by_their_format(tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text('id,prompt,category\n1,"How, exactly, do I bake bread?",food\n2,Tell me a joke,fun\n')
    assert [p.text for p in load_prompts(str(csv_file))] == [
        "How, exactly, do I bake bread?",
        "Tell me a joke",
    ]
    js = tmp_path / "p.json"
    js.write_text(json.dumps(["a", {"instruction": "b"}, {"goal": " c "}]))
    assert [p.text for p in load_prompts(str(js))] == ["a", "b", "c"]
    txt = tmp_path / "p.txt"
    txt.write_text("\ufefffirst\n\n second \n")
    assert [p.text for p in load_prompts(str(txt))] == ["first", "second"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "cols.csv",
            "id,text_of_it\n1,hello\n",
            r"has no text column \(its columns: \['id', 'text_of_it'\]\)",
        ),
        ("latin.txt", "caf\xe9 au lait\n".encode("latin-1"), "is not UTF-8 text"),
        ("bin.txt", b"abc\x00\x01\x02", "is binary"),
        ("obj.json", json.dumps({"prompt": "x"}), "holds a JSON dict, not a list"),
        ("bad.json", json.dumps([{"text": "x"}]), "item 0 is neither a string nor has a text field"),
        ("p.yaml", "- a\n", "unknown format '.yaml'"),
        ("empty.csv", "prompt\n", "holds no prompts"),
    ],
)
def test_bad_prompt_files_are_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RefusalEvalError, match=message) as err:
        load_prompts(str(path))
    assert "\n" not in str(err.value) and "(fix: " in str(err.value)


def test_prompts_longer_than_the_context_fail_before_generating(qwen_tiny):
    from conftest import tiny_tokenizer

    from refusal_eval.chat import context_length, generate

    tok = tiny_tokenizer()
    tok.padding_side = "left"
    limit = context_length(qwen_tiny)
    assert limit is not None
    long = " ".join(["w5"] * limit)
    with pytest.raises(
        RefusalEvalError, match=r"prompt 1 is \d+ tokens; with 8 new tokens that exceeds"
    ) as err:
        generate(qwen_tiny, tok, ["w1 w2", long], max_new_tokens=8, progress=False)
    assert f"context of {limit}" in str(err.value)
    assert len(generate(qwen_tiny, tok, ["w1 w2"], max_new_tokens=2, progress=False)) == 1


def test_version_config_and_cache_commands(capsys, isolated_cache):
    from refusal_eval._version import __version__
    from refusal_eval.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"refusal-eval {__version__}"
    assert main(["config", "--set", "tau=0.5"]) == 0
    out = capsys.readouterr().out
    assert f"# cache root: {isolated_cache}" in out and "tau = 0.5" in out and "top_k = 50" in out
    assert main(["config", "--defaults"]) == 0
    assert "wake_top_n = 16" in capsys.readouterr().out
    # a registered model's own settings, under --set
    assert main(["config", "--model", "default", "--set", "n_harmful=8"]) == 0
    out = capsys.readouterr().out
    assert "top_k = 20" in out and "n_harmful = 8" in out and "qwen2.5-coder-0.5b-instruct-res-2k" in out
    assert main(["config", "--model", "nope"]) == 2
    assert "--model nope is not a registered offline model (fix: name one of" in capsys.readouterr().err
    (isolated_cache / "plans").mkdir(parents=True)
    (isolated_cache / "plans" / "p.json").write_bytes(b"x" * 2**20)
    assert main(["cache", "list"]) == 0
    assert "plans           1.0 MiB" in capsys.readouterr().out
    assert main(["cache", "clear", "plans"]) == 0 and not (isolated_cache / "plans").exists()
    assert main(["cache", "clear", "wheels"]) == 2
    assert "unknown cache kind(s) ['wheels']" in capsys.readouterr().err


def test_search_refuses_an_unwritable_out_before_loading_anything(tmp_path, capsys, monkeypatch):
    from refusal_eval.cli import _registry, main

    def must_not_load(*_a, **_k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(_registry, "load_cli_model", must_not_load)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["search", "--out", str(blocker / "plan.json")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write to {blocker}" in err and "choose a writable --out" in err


def test_every_option_documents_its_default():
    from refusal_eval.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        text = " ".join(p.format_help().split())
        for action in p._actions:
            if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
                assert "default" in (action.help or "") or f"default: {action.default}" in text, (
                    name,
                    action.dest,
                )


def test_license_metadata_declares_the_shipped_data_licenses():
    from importlib.metadata import metadata

    md = metadata("refusal_eval")
    declared = md.get("License-Expression") or md.get("License") or ""
    assert {"MIT", "CC-BY-4.0", "CC-BY-NC-4.0"} <= set(declared.replace("(", " ").replace(")", " ").split())
    assert "LICENSE" in (md.get_all("License-File") or [])


def test_truncated_sae_weights_are_one_clear_error(tmp_path):
    from conftest import make_sae_lens

    from refusal_eval.saes import load_saes

    make_sae_lens("topk", layer=1, d_sae=32).save_model(str(tmp_path / "layer_1"))
    weights = tmp_path / "layer_1" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(RefusalEvalError, match="are truncated or corrupt") as err:
        load_saes(str(tmp_path / "layer_1"))
    assert "\n" not in str(err.value)


def test_non_utf8_arguments_are_one_line(capsys):
    from refusal_eval.cli import main

    assert main(["info", "--model", "x\udcff"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("refusal-eval: error: unknown model")


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_detection_honours_both_variables(monkeypatch, variable, isolated_cache):
    from refusal_eval import load_model

    for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv(variable, "1")
    with pytest.raises(RefusalEvalError, match=f"unset {variable} to download it"):
        load_model("nobody/no-such-model")


def test_positions_refuses_bad_counts_before_loading_anything(tmp_path, capsys):
    from refusal_eval.cli import main

    assert main(["positions", str(tmp_path / "plan.json"), "--n", "0"]) == 2
    err = capsys.readouterr().err
    assert "--n must be >= 1 and --max-new-tokens >= 0, got 0 and 32" in err and "(fix: " in err
    assert main(["positions", str(tmp_path / "missing.json")]) == 2  # no such plan: one line too
    assert "error:" in capsys.readouterr().err


def test_sae_firing_refuses_bad_budgets_and_empty_prompt_lists_before_loading_anything(capsys):
    from refusal_eval.cli import main

    assert main(["sae-firing", "no-such-release", "--tokens", "0"]) == 2
    err = capsys.readouterr().err
    assert "--tokens and --batch-size must be at least 1, got 0 and 32" in err and "(fix: " in err
    assert main(["sae-firing", "no-such-release", "--prompts", " , "]) == 2
    assert "--prompts names no prompt set: ' , '" in capsys.readouterr().err
