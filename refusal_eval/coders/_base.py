"""The SAE view the ablation engine works on: plain tensors, no sae-lens object needed.

A :class:`SparseCoder` holds the weights of one residual-stream SAE in sae-lens layout
(``W_enc`` is ``d_in x d_sae``, ``W_dec`` is ``d_sae x d_in``) and knows how to compute the
activations of any *subset* of its latents. Architectures subclass it, one file each, and
register under their sae-lens architecture name.

A coder may *hold* only some of its latents (:meth:`SparseCoder.subset`, or
``load_saes(..., latents=...)``): its tensors then carry just those latents' encoder columns,
biases, thresholds and decoder rows (plus ``b_dec``), ``held`` names them, and ``d_sae`` stays
the SAE's width. Ablating |S| latents of a separable SAE needs nothing else, so an ablation
plan's memory is O(|S| x d_in) whatever the SAE's width. Latent ids are always the SAE's own;
:meth:`SparseCoder.positions` maps them to columns of the held tensors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
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
    #: the SAE latents these tensors hold, sorted (None: all of them, in order)
    held: tuple[int, ...] | None = None
    #: the SAE's width when only some latents are held
    full_d_sae: int = 0
    #: :meth:`weights_sha256` of the whole SAE, when the held tensors cannot recompute it
    full_sha256: str | None = None

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
        if self.held is not None:
            ids = list(self.held)
            ok = ids == sorted(set(ids)) and all(0 <= i < self.full_d_sae for i in ids)
            if len(ids) != d_sae or not ok:
                raise RefusalEvalError(
                    f"held latents disagree with the tensors: {len(self.held)} sorted ids in "
                    f"0..{self.full_d_sae - 1} wanted, W_enc holds {d_sae} columns",
                    "build held coders with SparseCoder.subset or load_saes(..., latents=...)",
                )

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        """The SAE's width (latent ids run over 0..d_sae-1), held or not."""
        return self.full_d_sae if self.held is not None else int(self.W_enc.shape[1])

    @property
    def n_held(self) -> int:
        """Latents whose weights these tensors carry (``d_sae`` unless a subset is held)."""
        return int(self.W_enc.shape[1])

    def positions(self, latents: Sequence[int]) -> list[int]:
        """Columns of the held tensors for the SAE latent ids ``latents`` (identity when whole)."""
        if self.held is None:
            return [int(i) for i in latents]
        where = {latent: j for j, latent in enumerate(self.held)}
        missing = sorted({int(i) for i in latents} - set(where))
        if missing:
            raise RefusalEvalError(
                f"latent(s) {missing[:5]} of SAE {self.source} are not held "
                f"(this coder holds {len(self.held)} of its {self.d_sae} latents)",
                "load the SAE with those latents (load_saes(..., latents=...)) or whole (latents=None)",
            )
        return [where[int(i)] for i in latents]

    @classmethod
    def latent_fields(cls) -> tuple[str, ...]:
        """Per-latent vectors (indexed like ``b_enc``); ``W_enc`` columns and ``W_dec`` rows too."""
        return ("b_enc",)

    def subset(self, latents: Sequence[int]) -> SparseCoder:
        """A coder holding only ``latents`` (SAE ids): what ablating any subset of them needs."""
        if not self.separable:
            raise RefusalEvalError(
                f"a {self.architecture} SAE cannot hold a subset of its latents: each latent's "
                "activation depends on all the others' pre-activations",
                "load it whole (latents=None); only JumpReLU and standard SAEs shrink to their latents",
            )
        ids = sorted({int(i) for i in latents})
        cols = torch.tensor(self.positions(ids), dtype=torch.long, device=self.W_enc.device)
        per_latent = {name: getattr(self, name)[cols] for name in self.latent_fields()}
        return _replace(
            self, W_enc=self.W_enc[:, cols], W_dec=self.W_dec[cols], **per_latent,
            held=tuple(ids), full_d_sae=self.d_sae, full_sha256=self.weights_sha256(),
        )  # fmt: skip

    def weights_sha256(self) -> str:
        """Fingerprint of the whole SAE's weights (plans and the plan=auto key record it): the
        float32 bytes of each tensor field, named, in order. A held coder returns the one its
        loader computed from the whole SAE."""
        if self.held is not None:
            if self.full_sha256 is None:
                raise RefusalEvalError(
                    f"SAE {self.source} holds a subset of its latents and no fingerprint of the whole",
                    "build it with SparseCoder.subset or load_saes(..., latents=...)",
                )
            return self.full_sha256
        digest = hashlib.sha256()
        for name in self.tensor_fields():
            tensor = getattr(self, name)
            if tensor is not None:
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().to(torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

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

    def _check_whole(self, what: str) -> None:
        if self.held is not None:
            raise RefusalEvalError(
                f"{what} needs every latent of SAE {self.source}, which holds {self.n_held} of {self.d_sae}",
                "load the SAE whole (load_saes without latents=) for the search and reports",
            )

    def encode(self, x: Tensor) -> Tensor:
        """All latent activations, ``(..., d_sae)``."""
        self._check_whole("encode")
        return self.activation(self._sae_in(x) @ self.W_enc + self.b_enc, None)

    def encode_latents(self, x: Tensor, idx: Tensor) -> Tensor:
        """Activations of the held columns ``idx`` only, ``(..., len(idx))`` (columns are latent
        ids for a whole coder; see :meth:`positions`).

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
        self._check_whole("decode")
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
