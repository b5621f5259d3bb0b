"""JumpReLU SAE (Gemma Scope): f = relu(pre) * (pre > threshold)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._base import SparseCoder, register_architecture


@register_architecture("jumprelu")
@dataclass(eq=False)
class JumpReLUCoder(SparseCoder):
    threshold: Tensor = field(default_factory=lambda: torch.zeros(0))

    def activation(self, pre: Tensor, idx: Tensor | None) -> Tensor:
        thr = self.threshold if idx is None else self.threshold[idx]
        return pre.relu() * (pre > thr).to(pre.dtype)

    @classmethod
    def tensor_fields(cls) -> tuple[str, ...]:
        return (*super().tensor_fields(), "threshold")

    @classmethod
    def latent_fields(cls) -> tuple[str, ...]:
        return (*super().latent_fields(), "threshold")
