"""refusal_eval's ablations inside vLLM (see ``docs/vllm.md``).

- :func:`register` is the ``vllm.general_plugins`` entry point: it registers ``RefusalEval<Base>``
  model classes (vLLM's Qwen2, Llama, Mistral, Gemma2 with edit slots, ``_models.py``) in every
  vLLM process.
- :func:`engine_args` turns SAEs and a model directory into ``LLM(...)`` keyword arguments that
  select such a class and size its slots (``_spec.py``).
- :class:`VllmEditor` drives a running engine: loads the SAE weights into the slots, and sets
  the ablations of each ``generate()`` call through the worker extension (``_worker.py``).
- :class:`VllmGenerator` runs a search's generations on such an engine (``_generator.py``).

The math is :mod:`refusal_eval.ablation`'s, applied by ``_layers.py`` on the token stream.
"""

from __future__ import annotations

from ._compat import patch_vllm_version
from ._editor import VllmEditor, cpu_defaults, edit_state, engine_args
from ._generator import VllmGenerator, start_generator
from ._layers import EditState, apply_state, install_slots, load_sae_weights
from ._spec import DEFAULT_MAX_LATENTS, SPEC_KEY, EditSpec, SaeSlot

__all__ = [
    "DEFAULT_MAX_LATENTS",
    "SPEC_KEY",
    "EditSpec",
    "EditState",
    "SaeSlot",
    "VllmEditor",
    "VllmGenerator",
    "apply_state",
    "cpu_defaults",
    "edit_state",
    "engine_args",
    "install_slots",
    "load_sae_weights",
    "patch_vllm_version",
    "register",
    "start_generator",
]


def register() -> None:
    """The ``vllm.general_plugins`` entry point (may run several times, in several processes)."""
    from vllm import ModelRegistry

    from ._models import BASES, edited_name
    from ._models import __name__ as models_module

    for arch in BASES:
        name = edited_name(arch)
        if name not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(name, f"{models_module}:{name}")
    patch_vllm_version()
