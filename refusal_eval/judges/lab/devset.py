"""The outcome-labelled development set: ablated answers to harmful requests, one of the four
outcomes each (docs/judges/rubric.md), with the provenance to regenerate every row.

Rows are extracted from lm-eval ``--log_samples`` runs (``results/devset/run.sh``) by
:func:`extract_rows`; labels are added by reading (first pass ``label``, blind second pass
``label2`` on a subset, disagreements resolved into ``label`` with the reason in ``resolved``).
The committed set is ``refusal_eval/data/outcomes/devset.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ...errors import RefusalEvalError
from ...report._paired import read_samples
from ...runs import HARMFUL, RunInfo, task_name
from .._base import OUTCOMES

DEVSET_FORMAT = 1
#: the fields every labelled row carries (provenance first)
PROVENANCE = ("id", "model", "condition", "dataset", "task", "doc_id", "generation", "results_file")


def shipped_devset_path() -> Path:
    return Path(str(resources.files("refusal_eval") / "data" / "outcomes" / "devset.jsonl"))


def _generation(results: dict[str, Any], task: str) -> dict[str, Any]:
    cfg = results.get("configs", {}).get(task, {})
    kwargs = dict(cfg.get("generation_kwargs") or {})
    conf = results.get("config", {})
    info = RunInfo.from_config(conf)
    return {
        "max_gen_toks": kwargs.get("max_gen_toks"),
        "do_sample": kwargs.get("do_sample"),
        "backend": conf.get("model"),
        "model_args": conf.get("model_args"),
        "plan_hash": info.plan_hash if info else None,
        "lm_eval_version": results.get("lm_eval_version"),
    }


def extract_rows(results_path: str | Path, root: str | Path = ".") -> list[dict[str, Any]]:
    """Every logged answer to a harmful prompt next to one results file, as unlabelled rows."""
    path = Path(results_path)
    results = json.loads(path.read_text())
    info = RunInfo.from_config(results.get("config", {}))
    model = info.model if info else str(results.get("model_name"))
    rows = []
    for s in read_samples(path):
        if s.dataset not in HARMFUL:
            continue
        task = task_name(s.dataset, s.condition)
        rows.append(
            {
                "id": f"{model}/{task}/{s.key}",
                "model": model,
                "condition": s.condition,
                "dataset": s.dataset,
                "task": task,
                "doc_id": s.key,
                "generation": _generation(results, task),
                "results_file": str(path.resolve().relative_to(Path(root).resolve())),
                "prompt": s.prompt,
                "answer": s.answer,
                "category": s.category,
                "run_refused": s.refused,
            }
        )
    return rows


def load_devset(path: str | Path | None = None, *, labelled: bool = True) -> list[dict[str, Any]]:
    """The labelled rows (every row must carry a ``label`` in :data:`OUTCOMES`)."""
    src = Path(path) if path else shipped_devset_path()
    fix = "regenerate it with results/devset/run.sh and label it (docs/judges/outcomes.md)"
    try:
        rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise RefusalEvalError(f"cannot read the outcome set {src}: {exc}", fix) from None
    for i, r in enumerate(rows):
        missing = [k for k in (*PROVENANCE, "prompt", "answer") if k not in r]
        if missing:
            raise RefusalEvalError(f"{src} row {i + 1} lacks {missing}", fix)
        if labelled and r.get("label") not in OUTCOMES:
            raise RefusalEvalError(
                f"{src} row {i + 1} ({r['id']}) has label {r.get('label')!r}", f"use one of {OUTCOMES}"
            )
    return rows


def write_rows(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    from ..._cache import atomic_write

    atomic_write(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
