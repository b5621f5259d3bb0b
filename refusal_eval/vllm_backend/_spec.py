"""What the vLLM model is built to edit: a JSON-able spec fixed before the engine starts.

vLLM compiles the model once, so every tensor the edit reads must exist, at its final shape,
before the first forward. The spec names the SAE slots (layer, site, architecture, width) and
the padded latent capacity; the weights, latent ids and direction are filled in later, in
place (see ``_layers.py``). It travels to the workers inside the HF config
(``hf_overrides={"refusal_eval_edit": spec.to_json()}``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .._codec import DecodeError, decode
from ..coders import SparseCoder
from ..errors import RefusalEvalError

SPEC_KEY = "refusal_eval_edit"
SPEC_VERSION = 1
#: latent slots per SAE layer; a condition needing more names the model_arg to raise it
DEFAULT_MAX_LATENTS = 256


@dataclass(frozen=True)
class SaeSlot:
    layer: int
    site: str  # "resid_post" | "resid_pre"
    architecture: str
    d_in: int
    d_sae: int
    dtype: str  # torch dtype name of the SAE weights, e.g. "float32"
    apply_b_dec_to_input: bool = True
    k: int = 0  # TopK only
    rescale_acts_by_decoder_norm: bool = False  # TopK only

    @classmethod
    def of(cls, coder: SparseCoder) -> SaeSlot:
        return cls(
            layer=coder.layer,
            site=coder.hook.site,
            architecture=coder.architecture,
            d_in=coder.d_in,
            d_sae=coder.n_held,  # the slot's width: a held coder's columns, not the SAE's
            dtype=str(coder.W_enc.dtype).removeprefix("torch."),
            apply_b_dec_to_input=coder.apply_b_dec_to_input,
            k=int(getattr(coder, "k", 0)),
            rescale_acts_by_decoder_norm=bool(getattr(coder, "rescale_acts_by_decoder_norm", False)),
        )


@dataclass(frozen=True)
class EditSpec:
    saes: tuple[SaeSlot, ...] = ()
    max_latents: int = DEFAULT_MAX_LATENTS
    direction: bool = True  # give every layer a direction slot (the ``direction`` condition)
    version: int = field(default=SPEC_VERSION)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EditSpec:
        fix = "let refusal_eval build the engine (sae_ablated_vllm, or vllm_backend.engine_args)"
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise RefusalEvalError(f"malformed {SPEC_KEY} in the vLLM model config: {exc}", fix) from exc
        if not isinstance(raw, dict) or raw.get("version") != SPEC_VERSION:
            version = raw.get("version") if isinstance(raw, dict) else None
            raise RefusalEvalError(
                f"malformed {SPEC_KEY} in the vLLM model config: version {version} "
                f"(this refusal_eval reads {SPEC_VERSION})",
                fix,
            )
        try:
            spec: EditSpec = decode(cls, raw, SPEC_KEY)
        except DecodeError as exc:
            raise RefusalEvalError(
                f"malformed {SPEC_KEY} in the vLLM model config: {exc.where}: {exc.problem}", fix
            ) from exc
        return spec

    @classmethod
    def for_coders(cls, coders: list[SparseCoder], max_latents: int = DEFAULT_MAX_LATENTS) -> EditSpec:
        layers = [c.layer for c in coders]
        if len(set(layers)) != len(layers):
            raise RefusalEvalError(
                f"two SAEs on one layer ({sorted(layers)})", "load one SAE per layer for the vLLM backend"
            )
        return cls(
            saes=tuple(SaeSlot.of(c) for c in sorted(coders, key=lambda c: c.layer)), max_latents=max_latents
        )
