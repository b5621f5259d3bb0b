"""Which engine runs a search's generations (screening and verification; scores and
activations always run on HF): the one owner of ``generate_with``, the word that
``refusal-eval search --generate-with`` and ``sae_ablated_vllm``'s ``generate_with=`` take."""

from __future__ import annotations

import importlib.util

from ..errors import RefusalEvalError

GENERATE_WITH = ("auto", "hf", "vllm")


def vllm_installed() -> bool:
    """Whether ``import vllm`` can work here (found without importing it: that takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def pick_generate_with(value: str, *, stream_saes: bool = False) -> str:
    """``hf`` or ``vllm`` for ``value``. ``auto`` takes vLLM where it is installed and the host has
    no CUDA device: on a CPU it generated the search's answers 4.7x faster than HF (BENCHMARKS.md)
    with a fixed 2 GiB KV cache beside the HF model the search scores with. On a GPU the engine
    would claim the memory that HF model needs, and streamed SAEs (``stream_saes``) are HF only
    (vLLM holds every layer), so ``auto`` means HF there and ``vllm`` is refused."""
    if value not in GENERATE_WITH:
        raise RefusalEvalError(f"unknown generate_with={value!r}", f"use one of {', '.join(GENERATE_WITH)}")
    if value == "vllm" and stream_saes:
        raise RefusalEvalError(
            "a search that streams its SAEs generates on the HF model (vLLM needs every layer's SAE at once)",
            "drop generate_with=vllm (CLI: --generate-with vllm), or sae_latents=stream (CLI: --stream-saes)",
        )
    if value != "auto":
        return value
    import torch  # here: the CLI reads GENERATE_WITH before it needs torch

    return "vllm" if vllm_installed() and not stream_saes and not torch.cuda.is_available() else "hf"
