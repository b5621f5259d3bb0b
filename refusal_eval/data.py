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


def _advbench() -> list[Prompt]:
    return [
        Prompt(r["goal"], None, f"advbench/{i}")
        for i, r in enumerate(_csv("benchmarks/advbench_harmful_behaviors.csv"))
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
    "advbench": _advbench,
    "xstest_safe": _xstest("safe"),
    "xstest_unsafe": _xstest("unsafe"),
}

XSTEST_COMPLETION_FILES = ("llama2new", "llama2orig", "mistralguard")


def load_prompts(name: str) -> list[Prompt]:
    """A shipped prompt set by name (see :data:`PROMPT_SETS`), or a local UTF-8 file parsed by
    its suffix: ``.txt`` (one prompt per line), ``.json`` (a list of strings or of objects with a
    text field), ``.csv`` (a header row naming a text column); see :data:`TEXT_FIELDS`."""
    if name in PROMPT_SETS:
        return PROMPT_SETS[name]()
    path = Path(name).expanduser()
    if path.suffix in _READERS or path.exists():
        return _prompt_file(path)
    raise RefusalEvalError(
        f"unknown prompt set {name!r}", f"use one of {sorted(PROMPT_SETS)} or a .txt/.json/.csv file"
    )


#: the fields / CSV columns a prompt's text is taken from, first match wins
TEXT_FIELDS = ("prompt", "instruction", "goal", "Goal", "Behavior", "forbidden_prompt")
_FIX = (
    "write one prompt per line (.txt), a JSON list of strings or of objects with one of the fields "
    f"{', '.join(TEXT_FIELDS)} (.json), or a CSV whose header names one of them (.csv)"
)


def _txt(text: str, path: Path) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def _json(text: str, path: Path) -> list[str]:
    try:
        rows = json.loads(text)
    except ValueError as exc:
        raise RefusalEvalError(f"prompt file {path} is not valid JSON ({exc})", _FIX) from None
    if not isinstance(rows, list):
        raise RefusalEvalError(f"prompt file {path} holds a JSON {type(rows).__name__}, not a list", _FIX)
    texts: list[str] = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            texts.append(row)
            continue
        field = next((k for k in TEXT_FIELDS if isinstance(row, dict) and isinstance(row.get(k), str)), None)
        if field is None:
            raise RefusalEvalError(
                f"prompt file {path}: item {i} is neither a string nor has a text field", _FIX
            )
        texts.append(row[field])
    return texts


def _csv_file(text: str, path: Path) -> list[str]:
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise RefusalEvalError(f"prompt file {path} is not valid CSV ({exc})", _FIX) from None
    header = list(rows[0]) if rows else next(csv.reader(io.StringIO(text)), [])
    column = next((k for k in TEXT_FIELDS if k in header), None)
    if column is None:
        raise RefusalEvalError(f"prompt file {path} has no text column (its columns: {header})", _FIX)
    return [r[column] or "" for r in rows]


_READERS: dict[str, Callable[[str, Path], list[str]]] = {".txt": _txt, ".json": _json, ".csv": _csv_file}


def _prompt_file(path: Path) -> list[Prompt]:
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise RefusalEvalError(f"prompt file {path} has an unknown format {path.suffix!r}", _FIX)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise RefusalEvalError(f"cannot read prompt file {path}: {exc.strerror}", _FIX) from None
    except UnicodeDecodeError as exc:
        raise RefusalEvalError(
            f"prompt file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})",
            "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None
    if "\0" in text:
        raise RefusalEvalError(f"prompt file {path} is binary (it holds NUL bytes)", _FIX)
    texts = reader(text.lstrip("\ufeff"), path)
    prompts = [Prompt(t.strip(), None, f"{path.name}/{i}") for i, t in enumerate(texts) if t and t.strip()]
    if not prompts:
        raise RefusalEvalError(f"prompt file {path} holds no prompts", _FIX)
    return prompts


def xstest_completions(source: str) -> list[dict[str, str]]:
    """Human-labelled completions.

    ``final_label`` is 1_full_compliance, 2_full_refusal or 3_partial_refusal.
    """
    if source not in XSTEST_COMPLETION_FILES:
        raise RefusalEvalError(
            f"unknown XSTest completion file {source!r}", f"use one of {list(XSTEST_COMPLETION_FILES)}"
        )
    return _csv(f"xstest/xstest_v2_completions_{source}.csv")


def harmless_answers(n: int | None = 100) -> list[str]:
    """Plain harmless text for cross-entropy side effects: human-labelled full-compliance answers
    to XSTest's *safe* prompts (CC BY 4.0), all three completion files, ordered by file and id."""
    out: list[str] = []
    for source in XSTEST_COMPLETION_FILES:
        for row in xstest_completions(source):
            text = (row.get("completion") or "").strip()
            if (
                text
                and row.get("final_label") == "1_full_compliance"
                and not row["type"].startswith("contrast")
            ):
                out.append(text)
    return out if n is None else out[:n]


def prompt_set_hash(prompts: Sequence[Prompt | str]) -> str:
    digest = hashlib.sha256()
    for p in prompts:
        digest.update((p.text if isinstance(p, Prompt) else p).encode())
        digest.update(b"\0")
    return digest.hexdigest()
