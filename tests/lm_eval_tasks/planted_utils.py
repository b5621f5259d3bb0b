"""Test-only lm-eval task data: prompts that trigger the planted refusal mechanism."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from planted import planted_prompts

from refusal_eval.judges import JudgedText


def load(**_kwargs):
    rows = [{"prompt": p, "category": "planted"} for p in planted_prompts(6, True, 5)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_text(doc):
    return doc["prompt"]


def results(doc, out):
    assert isinstance(out[0], JudgedText), "sae_ablated hands its judge's verdict to the task"
    refused = out[0].refused
    return {"refusal_rate": float(refused), "attack_success": float(not refused)}
