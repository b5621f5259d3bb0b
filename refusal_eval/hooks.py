"""Hook points on Hugging Face decoder models, and the names sae-lens uses for them.

``blocks.L.hook_resid_post`` (TransformerLens / sae-lens) is the output of ``model.layers.L``
(Hugging Face); ``blocks.L.hook_resid_pre`` is that layer's input.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from .errors import RefusalEvalError

Site = Literal["resid_post", "resid_pre"]

_TL_NAME = re.compile(r"^blocks\.(\d+)\.hook_(resid_post|resid_pre)$")
_HF_NAME = re.compile(r"^(?:.*\.)?layers\.(\d+)(?:\.(input))?$")

# Where decoder layers live, tried in order (a registry rather than an if-chain).
DECODER_LAYER_PATHS: list[str] = [
    "model.layers",  # Llama, Qwen2, Gemma2, Mistral, ...
    "model.language_model.layers",  # multimodal wrappers
    "transformer.h",  # GPT-2 style
    "gpt_neox.layers",
    "model.decoder.layers",  # OPT
]


@dataclass(frozen=True, order=True)
class HookPoint:
    layer: int
    site: Site = "resid_post"

    @property
    def tl_name(self) -> str:
        return f"blocks.{self.layer}.hook_{self.site}"

    @property
    def hf_name(self) -> str:
        suffix = "" if self.site == "resid_post" else ".input"
        return f"model.layers.{self.layer}{suffix}"

    @classmethod
    def parse(cls, name: str) -> HookPoint:
        """Accept either naming: ``blocks.12.hook_resid_post`` or ``model.layers.12``."""
        if m := _TL_NAME.match(name):
            return cls(int(m.group(1)), m.group(2))  # type: ignore[arg-type]
        if m := _HF_NAME.match(name):
            return cls(int(m.group(1)), "resid_pre" if m.group(2) else "resid_post")
        raise RefusalEvalError(
            f"unsupported SAE hook {name!r}: only residual-stream SAEs are supported",
            "use an SAE on blocks.L.hook_resid_post / model.layers.L (or hook_resid_pre)",
        )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder blocks."""
    for path in DECODER_LAYER_PATHS:
        obj: object = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise RefusalEvalError(
        f"cannot find the decoder layers of {type(model).__name__}",
        "add its attribute path to refusal_eval.hooks.DECODER_LAYER_PATHS",
    )


def check_layer(model: nn.Module, layer: int) -> None:
    n = len(decoder_layers(model))
    if not 0 <= layer < n:
        raise RefusalEvalError(
            f"layer {layer} is out of range: the model has {n} layers (0..{n - 1})",
            "pick a layer index between 0 and the model depth minus one",
        )


class _Stop(Exception):
    """Raised by a hook to end a forward pass early (caught by :func:`forward_until`)."""


def forward_until(model: nn.Module, enc: Mapping[str, Tensor], layer: int, *, before: bool = False) -> Tensor:
    """Run the forward only as far as decoder layer ``layer`` and return the residual stream
    entering it (``before``) or leaving it: the one stop-at-layer helper. Hooks registered
    earlier on that layer still fire (activation captures, ablations)."""
    seen: dict[str, Tensor] = {}
    block = decoder_layers(model)[layer]

    def grab_in(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen["h"] = args[0] if args else kwargs["hidden_states"]
        raise _Stop

    def grab_out(_m: nn.Module, _a: Any, out: Any) -> None:
        seen["h"] = out[0] if isinstance(out, tuple) else out
        raise _Stop

    if before:
        handle = block.register_forward_pre_hook(grab_in, with_kwargs=True)
    else:
        handle = block.register_forward_hook(grab_out)
    try:
        with contextlib.suppress(_Stop):
            model(**enc, use_cache=False)
    finally:
        handle.remove()
    return seen["h"]
