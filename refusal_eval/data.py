"""Prompt sets by name, read from the copies shipped in the package (no network).

``load_prompts("harmful_train")`` returns a list of :class:`Prompt`. :func:`prompt_set_hash`
fingerprints a set so artifacts can record exactly which prompts they were made from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import RefusalEvalError


@dataclass(frozen=True)
class Prompt:
    text: str
    category: str | None = None
    id: str | None = None


def _read(rel: str) -> str:
    return (resources.files("refusal_eval") / "data" / rel).read_text(encoding="utf-8")


def _split(kind: str, split: str) -> Callable[[], list[Prompt]]:
    def load() -> list[Prompt]:
        rows = json.loads(_read(f"splits/{kind}_{split}.json"))
        return [
            Prompt(r["instruction"], r.get("category"), f"{kind}_{split}/{i}") for i, r in enumerate(rows)
        ]

    return load


def _csv(rel: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_read(rel))))


def _jbb() -> list[Prompt]:
    return [
        Prompt(r["Goal"], r["Category"], f"jbb/{r['']}") for r in _csv("benchmarks/jbb_behaviors_harmful.csv")
    ]


def _harmbench_test() -> list[Prompt]:
    return [
        Prompt(r["Behavior"], r["SemanticCategory"], r["BehaviorID"])
        for r in _csv("benchmarks/harmbench_behaviors_text_test.csv")
        if r["FunctionalCategory"] == "standard"
    ]


def _strongreject() -> list[Prompt]:
    return [
        Prompt(r["forbidden_prompt"], r["category"], f"strongreject/{i}")
        for i, r in enumerate(_csv("benchmarks/strongreject_dataset.csv"))
    ]


def _xstest(label: str) -> Callable[[], list[Prompt]]:
    def load() -> list[Prompt]:
        return [
            Prompt(r["prompt"], r["type"], f"xstest/{r['id']}")
            for r in _csv("xstest/xstest_prompts.csv")
            if r["label"] == label
        ]

    return load


PROMPT_SETS: dict[str, Callable[[], list[Prompt]]] = {
    **{f"{k}_{s}": _split(k, s) for k in ("harmful", "harmless") for s in ("train", "val", "test")},
    "jbb": _jbb,
    "harmbench_test": _harmbench_test,
    "strongreject": _strongreject,
    "xstest_safe": _xstest("safe"),
    "xstest_unsafe": _xstest("unsafe"),
}

XSTEST_COMPLETION_FILES = ("llama2new", "llama2orig", "mistralguard")


def load_prompts(name: str) -> list[Prompt]:
    """A shipped prompt set by name (see :data:`PROMPT_SETS`), or a local file: ``.txt`` (one
    prompt per line) or ``.json`` (a list of strings or of objects with ``prompt`` /
    ``instruction`` / ``goal``)."""
    if name in PROMPT_SETS:
        return PROMPT_SETS[name]()
    path = Path(name).expanduser()
    if path.suffix in (".txt", ".json") or path.exists():
        return _prompt_file(path)
    raise RefusalEvalError(
        f"unknown prompt set {name!r}", f"use one of {sorted(PROMPT_SETS)} or a .txt/.json file"
    )


def _prompt_file(path: Path) -> list[Prompt]:
    fix = "write one prompt per line (.txt) or a JSON list of strings / {'prompt': ...} objects"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RefusalEvalError(f"cannot read prompt file {path}: {exc.strerror}", fix) from None
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise ValueError
            texts = [r if isinstance(r, str) else next(r[k] for k in _TEXT_KEYS if k in r) for r in rows]
        except (ValueError, TypeError, StopIteration):
            raise RefusalEvalError(f"prompt file {path} is malformed", fix) from None
    else:
        texts = [line.strip() for line in text.splitlines()]
    prompts = [Prompt(t, None, f"{path.name}/{i}") for i, t in enumerate(texts) if t and t.strip()]
    if not prompts:
        raise RefusalEvalError(f"prompt file {path} holds no prompts", fix)
    return prompts


_TEXT_KEYS = ("prompt", "instruction", "goal", "Goal", "Behavior", "forbidden_prompt")


def xstest_completions(source: str) -> list[dict[str, str]]:
    """Human-labelled completions.

    ``final_label`` is 1_full_compliance, 2_full_refusal or 3_partial_refusal.
    """
    if source not in XSTEST_COMPLETION_FILES:
        raise RefusalEvalError(
            f"unknown XSTest completion file {source!r}", f"use one of {list(XSTEST_COMPLETION_FILES)}"
        )
    return _csv(f"xstest/xstest_v2_completions_{source}.csv")


def prompt_set_hash(prompts: Sequence[Prompt | str]) -> str:
    digest = hashlib.sha256()
    for p in prompts:
        digest.update((p.text if isinstance(p, Prompt) else p).encode())
        digest.update(b"\0")
    return digest.hexdigest()
