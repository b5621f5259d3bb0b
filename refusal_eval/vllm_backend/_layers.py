"""The edit inside vLLM's decoder layers: fixed-size buffers, filled in place.

vLLM decoder layers (Qwen2, Llama, Gemma2, Mistral, ...) take and return ``(hidden, residual)``
over the flattened token stream ``[num_tokens, d]``; the residual stream leaving a layer is
their sum. :func:`install_slots` turns each decoder layer into a subclass of its own class
whose ``forward`` edits that sum with the math of :mod:`refusal_eval.ablation`
(:func:`~refusal_eval.ablation.ablate_latents`, :func:`~refusal_eval.ablation.project_out`),
then hands on ``(edited, 0)``. Every tensor it reads is a non-persistent buffer created here at
the spec's fixed shape (latent ids padded to ``max_latents`` with a 0/1 mask; a zero direction
vector projects nothing), so a new condition is an in-place write (:func:`apply_state`) and a
compiled graph never re-traces. With nothing set, the edit is the identity (mask 0, direction 0).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..ablation import ablate_latents, project_out, unit_vector
from ..coders import SparseCoder, coder_class
from ..errors import RefusalEvalError
from ..hooks import HookPoint, Site
from ._spec import EditSpec, SaeSlot


@dataclass(frozen=True)
class EditState:
    """What one ``generate()`` call runs under: latents per SAE layer, and/or a direction
    (projected out at the input of ``direction_layers`` (all if None) and out of the final
    residual). Plain lists, so it crosses process boundaries as msgpack."""

    latents: Mapping[int, Sequence[int]]
    direction: Sequence[float] | None = None
    direction_layers: Sequence[int] | None = None

    @property
    def key(self) -> str:
        """A canonical form: two states with the same key edit the model identically."""
        return json.dumps(
            {
                "latents": {
                    str(k): sorted({int(i) for i in v}) for k, v in sorted(self.latents.items()) if v
                },
                "direction": None if self.direction is None else [float(x) for x in self.direction],
                "layers": None if self.direction_layers is None else sorted(self.direction_layers),
            }
        )


class _EditedLayer(nn.Module):
    """Mixin placed before a vLLM decoder layer class (see :func:`_edited_class`)."""

    _re_coder: SparseCoder | None
    _re_site: Site
    _re_dir_in: bool
    _re_dir_out: bool
    re_idx: Tensor  # (max_latents,) latent ids, padded with 0
    re_mask: Tensor  # (max_latents,) 1 ablate, 0 padding
    re_dir_in: Tensor  # (d,) unit direction projected out of this layer's input, or 0
    re_dir_out: Tensor  # (d,) the same on the final residual (last layer only)

    def forward(
        self, positions: Tensor, hidden_states: Tensor, residual: Tensor | None, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        coder = self._re_coder
        if self._re_dir_in or (coder is not None and self._re_site == "resid_pre"):
            x = hidden_states if residual is None else hidden_states + residual
            if self._re_dir_in:
                x = project_out(x, self.re_dir_in)
            if coder is not None and self._re_site == "resid_pre":
                x = ablate_latents(coder, x, self.re_idx, self.re_mask)
            hidden_states, residual = x, (None if residual is None else torch.zeros_like(x))
        h, r = super().forward(positions, hidden_states, residual, *args, **kwargs)
        if self._re_dir_out or (coder is not None and self._re_site == "resid_post"):
            x = h + r
            if coder is not None and self._re_site == "resid_post":
                x = ablate_latents(coder, x, self.re_idx, self.re_mask)
            if self._re_dir_out:
                x = project_out(x, self.re_dir_out)
            return x, torch.zeros_like(x)
        return h, r


_EDITED: dict[type, type] = {}


def _edited_class(base: type) -> type:
    if issubclass(base, _EditedLayer):
        return base
    if base not in _EDITED:
        _EDITED[base] = type(f"RefusalEvalEdited{base.__name__}", (_EditedLayer, base), {})
    return _EDITED[base]


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a vLLM ``*ForCausalLM`` (pipeline stages hold placeholders)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise RefusalEvalError(
            f"cannot find the decoder layers of vLLM model {type(model).__name__}",
            "use a decoder model whose vLLM class keeps them in .model.layers (Qwen2, Llama, Gemma2)",
        )
    return list(layers)


def _present(layer: nn.Module) -> bool:
    return type(layer).__name__ != "PPMissingLayer"


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise RefusalEvalError(f"unknown SAE dtype {name!r}", "use float32, bfloat16 or float16 SAEs")
    return dtype


def _install_sae(layer: nn.Module, slot: SaeSlot, max_latents: int, device: torch.device) -> None:
    dtype = _dtype(slot.dtype)

    def buf(name: str, *shape: int, kind: torch.dtype = dtype) -> Tensor:
        layer.register_buffer(name, torch.zeros(*shape, dtype=kind, device=device), persistent=False)
        out: Tensor = getattr(layer, name)
        return out

    tensors: dict[str, Any] = {
        "W_enc": buf("re_W_enc", slot.d_in, slot.d_sae),
        "b_enc": buf("re_b_enc", slot.d_sae),
        "W_dec": buf("re_W_dec", slot.d_sae, slot.d_in),
        "b_dec": buf("re_b_dec", slot.d_in),
    }
    cls = coder_class(slot.architecture)
    if "threshold" in cls.tensor_fields():
        tensors["threshold"] = buf("re_threshold", slot.d_sae)
    own = {f.name for f in dataclasses.fields(cls)}  # e.g. TopK's k, rescale_acts_by_decoder_norm
    extra = {name: getattr(slot, name) for name in ("k", "rescale_acts_by_decoder_norm") if name in own}
    buf("re_idx", max_latents, kind=torch.long)
    buf("re_mask", max_latents)
    site: Site = "resid_pre" if slot.site == "resid_pre" else "resid_post"
    # the coder's tensors ARE the buffers: filling them in place is what a new SAE costs
    layer._re_coder = cls(  # type: ignore[assignment]
        **tensors, **extra, hook=HookPoint(slot.layer, site),
        apply_b_dec_to_input=slot.apply_b_dec_to_input, source="vllm-slot",
    )  # fmt: skip
    layer._re_site = site  # type: ignore[assignment]


def install_slots(model: nn.Module, spec: EditSpec) -> None:
    """Give ``model``'s decoder layers the edit and its zeroed buffers (call once, at build)."""
    layers = decoder_layers(model)
    n = len(layers)
    by_layer = {s.layer: s for s in spec.saes}
    bad = sorted(set(by_layer) - set(range(n)))
    if bad:
        raise RefusalEvalError(
            f"SAE layer(s) {bad} are out of range: the model has {n} layers (0..{n - 1})",
            "use SAEs trained on this model",
        )
    for i, layer in enumerate(layers):
        if not _present(layer):
            continue
        device = next(layer.parameters()).device
        layer.__class__ = _edited_class(type(layer))
        layer._re_coder = None  # type: ignore[assignment]
        layer._re_site = "resid_post"  # type: ignore[assignment]
        layer._re_dir_in = spec.direction  # type: ignore[assignment]
        layer._re_dir_out = spec.direction and i == n - 1  # type: ignore[assignment]
        d = _width(layer)
        if spec.direction:
            layer.register_buffer(
                "re_dir_in", torch.zeros(d, dtype=torch.float32, device=device), persistent=False
            )
            if i == n - 1:
                layer.register_buffer(
                    "re_dir_out", torch.zeros(d, dtype=torch.float32, device=device), persistent=False
                )
        if i in by_layer:
            slot = by_layer[i]
            if slot.d_in != d:
                raise RefusalEvalError(
                    f"SAE for layer {i} has d_in={slot.d_in} but the model width is {d}",
                    "use SAEs trained on this model (refusal-eval train-sae makes them)",
                )
            _install_sae(layer, slot, spec.max_latents, device)


def _width(layer: nn.Module) -> int:
    value = getattr(layer, "hidden_size", None)
    if isinstance(value, int):
        return value
    norm = getattr(layer, "input_layernorm", None)
    weight = getattr(norm, "weight", None)
    if isinstance(weight, Tensor):
        return int(weight.shape[-1])
    raise RefusalEvalError(
        f"cannot tell the width of vLLM layer {type(layer).__name__}",
        "use a decoder whose layers have hidden_size or input_layernorm",
    )


# --- worker side: fill the buffers in place ---------------------------------------------------
Packed = Mapping[str, Any]  # {"data": bytes, "shape": [...], "dtype": "float32"}: msgpack-safe


def pack(tensor: Tensor) -> dict[str, Any]:
    """A tensor as plain bytes + shape + dtype (crosses vLLM's process boundary as msgpack)."""
    t = tensor.detach().cpu().contiguous()
    return {"data": t.view(torch.uint8).numpy().tobytes(), "shape": list(t.shape), "dtype": str(t.dtype)[6:]}


def unpack(packed: Packed) -> Tensor:
    raw = torch.frombuffer(bytearray(packed["data"]), dtype=torch.uint8)
    return raw.view(_dtype(str(packed["dtype"]))).reshape([int(n) for n in packed["shape"]])


def _slots(model: nn.Module) -> dict[int, _EditedLayer]:
    return {
        i: layer
        for i, layer in enumerate(decoder_layers(model))
        if isinstance(layer, _EditedLayer) and layer._re_coder is not None
    }


def load_sae_weights(model: nn.Module, weights: Mapping[int, Mapping[str, Tensor | Packed]]) -> list[int]:
    """Copy SAE tensors (``{layer: {"W_enc": tensor or pack(tensor), ...}}``) into the slots;
    returns the layers."""
    slots = _slots(model)
    missing = sorted(set(weights) - set(slots))
    if missing:
        raise RefusalEvalError(
            f"the vLLM model has no SAE slot at layer(s) {missing} (slots: {sorted(slots)})",
            "build the engine with an EditSpec naming these SAEs",
        )
    with torch.no_grad():
        for layer, tensors in weights.items():
            coder = slots[layer]._re_coder
            assert coder is not None
            for name, given in tensors.items():
                value = given if isinstance(given, Tensor) else unpack(given)
                target: Tensor = getattr(coder, name)
                if tuple(value.shape) != tuple(target.shape):
                    raise RefusalEvalError(
                        f"SAE tensor {name} at layer {layer} has shape {tuple(value.shape)}, "
                        f"the slot {tuple(target.shape)}",
                        "load the SAEs the engine was built for",
                    )
                target.copy_(value)
    return sorted(weights)


def apply_state(model: nn.Module, state: EditState) -> None:
    """Write ``state`` into every slot (layers it does not name are cleared)."""
    slots = _slots(model)
    unknown = sorted(set(int(k) for k, v in state.latents.items() if v) - set(slots))
    if unknown:
        raise RefusalEvalError(
            f"latents given for layer(s) {unknown} but the vLLM model has SAE slots only at {sorted(slots)}",
            "build the engine with SAEs for those layers",
        )
    layers = decoder_layers(model)
    with torch.no_grad():
        for layer_id, layer in slots.items():
            ids = sorted({int(i) for i in state.latents.get(layer_id, ())})
            idx, mask = layer.re_idx, layer.re_mask
            if len(ids) > idx.numel():
                raise RefusalEvalError(
                    f"{len(ids)} latents at layer {layer_id} exceed the engine's {idx.numel()} latent slots",
                    f"pass max_latents={len(ids)} (or more) in model_args",
                )
            d_sae = layer._re_coder.d_sae if layer._re_coder is not None else 0
            if ids and not 0 <= min(ids) <= max(ids) < d_sae:
                raise RefusalEvalError(
                    f"latent ids out of range at layer {layer_id} (d_sae={d_sae})",
                    f"use ids in 0..{d_sae - 1}",
                )
            idx.zero_()
            mask.zero_()
            idx[: len(ids)] = torch.tensor(ids, dtype=torch.long, device=idx.device)
            mask[: len(ids)] = 1
        unit = None if state.direction is None else unit_vector(torch.tensor(list(state.direction)))
        targets = set(range(len(layers))) if state.direction_layers is None else set(state.direction_layers)
        for i, block in enumerate(layers):
            if not _present(block):
                continue
            for name, on in (("re_dir_in", i in targets), ("re_dir_out", True)):
                buffer = getattr(block, name, None)
                if buffer is None:
                    if unit is not None and name == "re_dir_in" and on:
                        raise RefusalEvalError(
                            "the vLLM engine was built without direction slots",
                            "build it with EditSpec(direction=True)",
                        )
                    continue
                buffer.zero_()
                if unit is not None and on:
                    if unit.shape != buffer.shape:
                        raise RefusalEvalError(
                            f"direction has shape {tuple(unit.shape)}, model width is {buffer.shape[0]}",
                            "use a direction computed on this model",
                        )
                    buffer.copy_(unit)
