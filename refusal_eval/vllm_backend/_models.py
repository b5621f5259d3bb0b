"""vLLM model classes with the refusal_eval edit built in, registered by the
``vllm.general_plugins`` entry point (:func:`refusal_eval.vllm_backend.register`).

Each class subclasses vLLM's own (same weights, same loader, same compiled forward) and, after
construction, installs the edit slots its config's ``refusal_eval_edit`` spec names. An engine
selects one with ``hf_overrides={"architectures": ["RefusalEval<Base>"], ...}``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._layers import install_slots
from ._spec import SPEC_KEY, EditSpec

#: vLLM architecture -> module that defines it (a registry: add a line to support another)
BASES: dict[str, str] = {
    "Qwen2ForCausalLM": "vllm.model_executor.models.qwen2",
    "LlamaForCausalLM": "vllm.model_executor.models.llama",
    "MistralForCausalLM": "vllm.model_executor.models.mistral",
    "Gemma2ForCausalLM": "vllm.model_executor.models.gemma2",
}
PREFIX = "RefusalEval"


def edited_name(architecture: str) -> str:
    return PREFIX + architecture


def _spec_of(vllm_config: Any) -> EditSpec:
    raw = getattr(vllm_config.model_config.hf_config, SPEC_KEY, None)
    return EditSpec() if raw is None else EditSpec.from_json(str(raw))


def _make(architecture: str) -> type:
    base = getattr(importlib.import_module(BASES[architecture]), architecture)

    def __init__(self: Any, *, vllm_config: Any, prefix: str = "") -> None:
        base.__init__(self, vllm_config=vllm_config, prefix=prefix)
        install_slots(self, _spec_of(vllm_config))

    return type(edited_name(architecture), (base,), {"__init__": __init__, "__module__": __name__})


def __getattr__(name: str) -> type:
    """``RefusalEval<Base>`` classes are made on first access (vLLM imports them lazily)."""
    arch = name.removeprefix(PREFIX)
    if name.startswith(PREFIX) and arch in BASES:
        cls = _make(arch)
        globals()[name] = cls
        return cls
    raise AttributeError(name)
