"""The SAE view the ablation engine works on: plain tensors, no sae-lens object needed.

A :class:`SparseCoder` holds the weights of one residual-stream SAE in sae-lens layout
(``W_enc`` is ``d_in x d_sae``, ``W_dec`` is ``d_sae x d_in``) and knows how to compute the
activations of any *subset* of its latents. Architectures subclass it, one file each, and
register under their sae-lens architecture name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from .._registry import Registry
from ..errors import RefusalEvalError
from ..hooks import HookPoint


@dataclass(eq=False)
class SparseCoder:
    """One SAE on one hook point. Subclasses define the activation function."""

    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    hook: HookPoint
    apply_b_dec_to_input: bool = True
    source: str = "code"
    metadata: dict[str, Any] = field(default_factory=dict)

    architecture: ClassVar[str] = ""
    #: True when f_i(x) depends only on encoder column i (so a subset can be encoded alone).
    separable: ClassVar[bool] = True

    def __post_init__(self) -> None:
        d_in, d_sae = self.W_enc.shape
        if self.W_dec.shape != (d_sae, d_in):
            raise RefusalEvalError(
                f"SAE weights disagree: W_enc {tuple(self.W_enc.shape)} vs W_dec {tuple(self.W_dec.shape)}",
                "check the SAE checkpoint; W_dec must be d_sae x d_in",
            )

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def layer(self) -> int:
        return self.hook.layer

    # --- the activation function, per architecture -------------------------------------
    def activation(self, pre: Tensor, idx: Tensor | None) -> Tensor:
        """Latent activations from pre-activations of the latents ``idx`` (all if None)."""
        raise NotImplementedError

    # --- encode / decode ----------------------------------------------------------------
    def _sae_in(self, x: Tensor) -> Tensor:
        x = x.to(self.W_enc.dtype)
        return x - self.b_dec if self.apply_b_dec_to_input else x

    def encode(self, x: Tensor) -> Tensor:
        """All latent activations, ``(..., d_sae)``."""
        return self.activation(self._sae_in(x) @ self.W_enc + self.b_enc, None)

    def encode_latents(self, x: Tensor, idx: Tensor) -> Tensor:
        """Activations of the latents ``idx`` only, ``(..., len(idx))``.

        Separable architectures touch only the encoder columns in ``idx``; others (TopK)
        must run the full encode to know which latents survive.
        """
        if not self.separable:
            return self.encode(x)[..., idx]
        pre = self._sae_in(x) @ self.W_enc[:, idx] + self.b_enc[idx]
        return self.activation(pre, idx)

    def decode_latents(self, acts: Tensor, idx: Tensor) -> Tensor:
        """``sum_i acts_i * W_dec[i]`` over the latents ``idx`` (no ``b_dec``)."""
        return acts @ self.W_dec[idx]

    def decode(self, acts: Tensor) -> Tensor:
        return self.decode_latents(acts, torch.arange(self.d_sae, device=acts.device)) + self.b_dec

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SparseCoder:
        """A copy with every tensor moved (float tensors also cast when ``dtype`` is given)."""
        moved = {
            name: getattr(self, name).to(device=device, dtype=dtype)
            for name in self.tensor_fields()
            if getattr(self, name) is not None
        }
        return _replace(self, **moved)

    @classmethod
    def tensor_fields(cls) -> tuple[str, ...]:
        return ("W_enc", "b_enc", "W_dec", "b_dec")


def _replace(obj: SparseCoder, **changes: Any) -> SparseCoder:
    import dataclasses

    return dataclasses.replace(obj, **changes)


_ARCHITECTURES: Registry[type[SparseCoder]] = Registry("SAE architecture")
C = TypeVar("C", bound=type[SparseCoder])


def register_architecture(*names: str) -> Callable[[C], C]:
    """Class decorator: make a SparseCoder subclass loadable under sae-lens architecture names."""

    def wrap(cls: C) -> C:
        cls.architecture = names[0]
        for name in names:
            _ARCHITECTURES.add(name, cls)
        return cls

    return wrap


def coder_class(architecture: str) -> type[SparseCoder]:
    found = _ARCHITECTURES.find(architecture)
    if found is None:
        raise RefusalEvalError(
            f"SAE architecture {architecture!r} is not supported",
            f"use one of {_ARCHITECTURES.names()}",
        )
    return found


def architectures() -> list[str]:
    return _ARCHITECTURES.names()
