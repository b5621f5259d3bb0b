"""Standard (ReLU) SAE: f = relu(W_enc^T (x - b_dec) + b_enc)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ._base import SparseCoder, register_architecture


@register_architecture("standard")
@dataclass(eq=False)
class StandardCoder(SparseCoder):
    def activation(self, pre: Tensor, idx: Tensor | None) -> Tensor:
        return pre.relu()
