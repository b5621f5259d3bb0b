"""Test driver for ``torchrun --nproc_per_node N tests/_launch_lm_eval.py PLANTED_DIR PLAN [lm_eval args]``:
the lm_eval CLI in each process, with the planted model's word-level tokenizer loaded as saved
(see the ``planted_dirs`` fixture) and the plan search replaced by a copy of ``PLAN`` that
records which rank ran it (in ``PLAN.searched``); each rank's generation requests are counted
(in ``PLAN.served``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import transformers

model_dir, prepared = sys.argv[1], Path(sys.argv[2])
real = transformers.AutoTokenizer.from_pretrained


def from_pretrained(path, *a, **kw):  # type: ignore[no-untyped-def]
    if str(path) == model_dir:
        return transformers.PreTrainedTokenizerFast.from_pretrained(path)
    return real(path, *a, **kw)


def fake_search(chat, saes, cfg, out, **_kw):  # type: ignore[no-untyped-def]
    """The prepared plan, re-keyed to this search's inputs (as a real search would write it)."""
    from safetensors.torch import load_file

    from refusal_eval.search.pipeline import search_inputs
    from refusal_eval.search.plan import write_plan

    with open(f"{prepared}.searched", "a") as f:
        f.write(f"rank {os.environ.get('RANK')}\n")
    body = json.loads(prepared.read_text())
    for field in ("format", "version", "tensors", "content_sha256"):
        body.pop(field, None)
    body["key"] = search_inputs(chat, saes, cfg).key
    write_plan(body, load_file(prepared.with_suffix(".safetensors")), Path(out))


transformers.AutoTokenizer.from_pretrained = from_pretrained
import refusal_eval.search.auto as auto  # noqa: E402

auto.search_to_file = fake_search
from refusal_eval.plugins.hf import SAEAblatedLM  # noqa: E402

generate = SAEAblatedLM.generate_until


def counted(self, requests, *a, **kw):  # type: ignore[no-untyped-def]
    """Records how many generation requests this rank served (in ``PLAN.served``)."""
    with open(f"{prepared}.served", "a") as f:
        f.write(f"{os.environ.get('RANK')} {len(requests)}\n")
    return generate(self, requests, *a, **kw)


SAEAblatedLM.generate_until = counted
from lm_eval.__main__ import cli_evaluate  # noqa: E402

sys.argv = ["lm_eval", *sys.argv[3:]]
cli_evaluate()
