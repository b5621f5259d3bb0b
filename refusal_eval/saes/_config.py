"""The settings of SAE training (:class:`TrainConfig`) and of its text (:class:`CorpusConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Arch = Literal["topk", "jumprelu", "standard"]


@dataclass(frozen=True)
class CorpusConfig:
    n_answered: int = 256  # prompts (half harmful, half harmless) answered by the model itself
    answer_tokens: int = 64
    max_harmless: int | None = None  # cap on harmless train prompts (None: all 18,793)
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    layer: int
    width: int = 4096
    arch: Arch = "topk"
    tokens: int = 1_000_000
    k: int = 64  # TopK
    l1_coefficient: float = 5.0  # standard
    l0_coefficient: float = 1.0  # JumpReLU
    # lr, step size and dead window: sae-lens' defaults (3e-4, 4,096 tokens, 1,000 steps) left
    # 59-66% of the latents of a 1 M-token TopK SAE dead (the window exceeds the whole run, so
    # the auxiliary loss that revives dead latents never starts); these left 13-15% (docs/saes/)
    lr: float = 1e-3
    context_size: int = 128
    batch_tokens: int = 2048
    seed: int = 42
    dead_feature_window: int = 10  # steps without firing before a latent counts as dead
    # TopK's auxiliary loss (dead latents reconstruct the residual error); 1.0 is sae-lens' default
    aux_coefficient: float = 1.0
    n_checkpoints: int = 4  # full trainer checkpoints during the run (only the newest is kept)
    # bf16 autocast for the SAE's own steps (weights and optimizer stay fp32): 1.46x faster steps
    # on an AVX512-BF16 CPU (BENCHMARKS.md), which matters when one forward feeds many SAEs
    autocast: bool = False
