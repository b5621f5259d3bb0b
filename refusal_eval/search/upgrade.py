"""Rewrite an older plan in the current format, without searching again.

The search's results are kept as they are; the fields version 1 left out are written in
(:func:`~.plan.upgrade_v1`), and the plan's key is recomputed from the inputs the plan records
(the key includes the format version, so ``plan=auto`` finds the new file and no stage cache of
the old format is reused). The old key is checked first: a plan whose recorded inputs do not
give its own key (one searched before later config keys existed) keeps its key, which no
current search computes, so ``plan=auto`` never serves it: it is used by path (``plan=PATH``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from safetensors.torch import load_file

from ..config import SearchConfig
from .artifacts import PlanBody
from .pipeline import search_key
from .plan import VERSION, AblationPlan, write_plan


def key_of(body: PlanBody, version: int) -> str:
    """The search key of the inputs ``body`` records, under plan format ``version``."""
    model = {"name": body.model.name, "revision": body.model.revision, "dtype": body.model.dtype}
    saes = {"layers": {layer: {"sha256": info.sha256} for layer, info in body.saes.layers.items()}}
    cfg = SearchConfig().replace(**body.config)
    data = {k: {"sha256": v.sha256} for k, v in body.data.items()}
    return search_key(model, saes, cfg, data, body.refusal_ids, version=version)


def upgrade_plan(src: str | Path, out: str | Path) -> tuple[int, str, bool]:
    """Write ``src`` as a current-format plan at ``out``; return (the old version, the new hash,
    whether it was re-keyed so that ``plan=auto`` finds it)."""
    import json

    src, out = Path(src), Path(out)
    plan = AblationPlan.load(src)  # checks the content and tensor hashes of either version
    old_version = int(json.loads(src.read_bytes())["version"])
    body = plan.body
    rekeyed = old_version != VERSION and key_of(body, old_version) == body.key
    if rekeyed:
        body = dataclasses.replace(body, key=key_of(body, VERSION))
    tensors = load_file(str(src.with_suffix(".safetensors")))
    return old_version, write_plan(body, tensors, out), rekeyed
