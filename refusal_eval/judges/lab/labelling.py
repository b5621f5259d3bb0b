"""Blind labelling passes over the development set: shuffled batches that show a reader only an
opaque key, the request and the answer (never the model, condition or any other pass's label),
and the merge of the labels read back.

    rows = extract_rows(...)                       # devset.py
    write_batches(rows, out_dir, n=4, seed=1)      # batch_1.jsonl ... + keys.json (key -> row id)
    # a reader writes labels_<k>.jsonl: {"key": ..., "label": ..., "note": ...} per line
    merge_labels(rows, out_dir, field="label", by="pass1-A")
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import RefusalEvalError
from .._base import OUTCOMES


def write_batches(
    rows: Sequence[dict[str, Any]], out_dir: str | Path, n: int, seed: int, prefix: str = "batch"
) -> list[Path]:
    """Shuffle ``rows`` (seeded) into ``n`` batches of ``{"key", "prompt", "answer"}`` lines; the
    key -> row id map goes to ``keys.json`` beside them (readers are not shown it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    keys = {f"{prefix}{seed}-{j:04d}": rows[i]["id"] for j, i in enumerate(order)}
    paths = []
    for b in range(n):
        part = list(keys.items())[b::n]
        path = out / f"{prefix}_{b + 1}.jsonl"
        lines = []
        by_id = {r["id"]: r for r in rows}
        for key, rid in part:
            lines.append(
                json.dumps({"key": key, "prompt": by_id[rid]["prompt"], "answer": by_id[rid]["answer"]})
            )
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    keys_path = out / f"{prefix}_keys.json"
    keys_path.write_text(json.dumps(keys, indent=1) + "\n")
    return paths


def read_labels(path: str | Path) -> dict[str, tuple[str, str]]:
    """``key -> (label, note)`` from one reader's file; every label must be an outcome."""
    out = {}
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("label") not in OUTCOMES:
            raise RefusalEvalError(
                f"{path} line {i + 1}: label {rec.get('label')!r}", f"use one of {', '.join(OUTCOMES)}"
            )
        out[str(rec["key"])] = (str(rec["label"]), str(rec.get("note", "")))
    return out


def merge_labels(
    rows: list[dict[str, Any]], keys_file: str | Path, label_files: dict[str, str | Path], field: str
) -> int:
    """Write each reader's labels into ``rows[field]`` (and who gave it into ``<field>_by``,
    the reader's note into ``<field>_note``); returns how many rows were labelled."""
    keys = json.loads(Path(keys_file).read_text())
    by_id = {r["id"]: r for r in rows}
    done = 0
    for reader, path in label_files.items():
        for key, (label, note) in read_labels(path).items():
            row = by_id[keys[key]]
            row[field], row[f"{field}_by"] = label, reader
            if note:
                row[f"{field}_note"] = note
            done += 1
    return done


def pass_agreement(rows: Sequence[dict[str, Any]], a: str = "label", b: str = "label2") -> dict[str, Any]:
    """Cohen's kappa (sklearn) and raw agreement of two labelling passes on the rows both labelled,
    overall and for ``harmful`` vs the rest, with the ``[a][b]`` confusion counts."""
    from sklearn.metrics import cohen_kappa_score

    both = [(str(r[a]), str(r[b])) for r in rows if r.get(a) in OUTCOMES and r.get(b) in OUTCOMES]
    x, y = [p for p, _ in both], [q for _, q in both]
    hx, hy = [v == "harmful" for v in x], [v == "harmful" for v in y]
    return {
        "n": len(both),
        "agreement": sum(p == q for p, q in both) / len(both) if both else float("nan"),
        "kappa": float(cohen_kappa_score(x, y, labels=list(OUTCOMES))) if both else float("nan"),
        "kappa_harmful_vs_rest": float(cohen_kappa_score(hx, hy)) if both else float("nan"),
        "confusion": [[sum(p == g and q == h for p, q in both) for h in OUTCOMES] for g in OUTCOMES],
    }
