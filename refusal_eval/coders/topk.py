"""TopK SAE: keep the k largest pre-activations (after ReLU). Not separable: a latent's
activation depends on the others, so subsets are read off the full encode."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._base import SparseCoder, register_architecture


@register_architecture("topk")
@dataclass(eq=False)
class TopKCoder(SparseCoder):
    k: int = 64
    #: sae-lens option: treat the decoder as if unit-norm (acts scaled by ||W_dec_i||).
    rescale_acts_by_decoder_norm: bool = False

    separable = False

    def encode(self, x: Tensor) -> Tensor:
        pre = self._sae_in(x) @ self.W_enc + self.b_enc
        if self.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return self.activation(pre, None)

    def activation(self, pre: Tensor, idx: Tensor | None) -> Tensor:
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    def decode_latents(self, acts: Tensor, idx: Tensor) -> Tensor:
        w = self.W_dec[idx]
        if self.rescale_acts_by_decoder_norm:
            acts = acts / w.norm(dim=-1)
        return acts @ w
