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
