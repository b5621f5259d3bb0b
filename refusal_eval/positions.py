"""Which part of a chat-formatted prompt each token belongs to: ``system``, ``template`` or
``user`` (answers add ``generated``).

The paper finds that much of the refusal circuit's redundancy lives on special-token positions
(``<bos>``, the template). To test that on any model, ablations can spare the non-content
positions (``ablate(..., spare=PositionFilter(...))``, ``ablate_positions=content`` on
``sae_ablated``), and ``refusal-eval positions`` reports where a plan's latents fire by class.

The classes come from the chat template itself, read once with marker messages: the text
before the user content (the system turn, default or given, and the role headers) and after it
(the end of turn and the generation prompt). Special tokens and role headers are ``template``;
the system message's own text is ``system``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .errors import RefusalEvalError

PositionClass = Literal["system", "template", "user", "generated"]
POSITION_CLASSES: tuple[PositionClass, ...] = ("system", "template", "user", "generated")
#: what ``ablate_positions=`` may say: every position, or the content (user + generated) only
ABLATE_POSITIONS = ("all", "content")
_MARK_U, _MARK_S = "\x00user\x00", "\x00system\x00"


@dataclass(frozen=True)
class TemplateLayout:
    """The fixed text around a single-turn prompt in one tokenizer's chat template."""

    default_prefix: str  # before the user content when no system message is given
    before_system: str  # before a given system message ("" when the template has no system turn)
    system_to_user: str  # between a system message and the user content
    after_user: str  # end of the user turn + generation prompt

    @classmethod
    def of(cls, tokenizer: Any) -> TemplateLayout:
        def render(messages: list[dict[str, str]]) -> str:
            return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

        plain = render([{"role": "user", "content": _MARK_U}])
        prefix, after = plain[: plain.index(_MARK_U)], plain[plain.index(_MARK_U) + len(_MARK_U) :]
        try:
            both = render([{"role": "system", "content": _MARK_S}, {"role": "user", "content": _MARK_U}])
        except Exception:  # templates without a system role (Gemma) raise
            return cls(prefix, "", "", after)
        if _MARK_S not in both or both.index(_MARK_S) > both.index(_MARK_U):
            return cls(prefix, "", "", after)  # the system text is folded into the user turn
        s = both.index(_MARK_S)
        return cls(prefix, both[:s], both[s + len(_MARK_S) : both.index(_MARK_U)], after)

    def spans(self, text: str, system: bool | None = None) -> dict[str, tuple[int, int]]:
        """Character spans of the system and user content in one rendered prompt. ``system``
        says whether a system message was given (None: read it off the text; templates that fold
        the system text into the user turn, e.g. Gemma 3 and Mistral with a blank line, cannot
        tell it from a user paragraph, so callers that know should say)."""
        end = len(text) - len(self.after_user)
        prefix, before, between = self.default_prefix, self.before_system, self.system_to_user
        # the template's default system message (Qwen's "You are Qwen, ..."), if it writes one
        default_system = bool(before) and prefix.startswith(before) and prefix.endswith(between)
        found = bool(before) and text.startswith(before) and text.find(between, len(before)) >= 0
        given_system = found if system is None else system
        if (
            text.endswith(self.after_user)
            and text.startswith(prefix)
            and (default_system or not given_system)
        ):
            out = {"user": (len(prefix), end)}
            if default_system and len(prefix) > len(before) + len(between):
                out["system"] = (len(before), len(prefix) - len(between))
            return out
        opener = text.find(self.system_to_user, len(self.before_system)) if self.before_system else -1
        if not text.endswith(self.after_user) or not text.startswith(self.before_system) or opener < 0:
            if text.endswith(self.after_user) and not text.startswith(self.default_prefix):
                raise RefusalEvalError(
                    "the prompt does not start like this tokenizer's chat template (truncated on the "
                    "left, or several turns / few-shot examples)",
                    "keep prompts single-turn and within the context (ablate_positions=content needs it)",
                )
            raise RefusalEvalError(
                "the prompt does not follow the chat template (one user turn + the generation prompt)",
                "pass chat-formatted single-turn prompts (refusal_eval.chat.format_chat)",
            )
        return {"system": (len(self.before_system), opener), "user": (opener + len(self.system_to_user), end)}


def token_ends(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """The character offset where each token's text ends in ``decode(ids)`` (no fast-tokenizer
    offsets needed: a prefix decode per token; prompts are a few hundred tokens)."""
    return [len(tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=False)) for i in range(len(ids))]


def position_classes(
    tokenizer: Any, ids: Sequence[int], layout: TemplateLayout | None = None, *, system: bool | None = None
) -> list[str]:
    """The class of each token of one chat-formatted prompt (``ids`` without padding);
    ``system``: whether a system message was given (see :meth:`TemplateLayout.spans`)."""
    layout = layout or TemplateLayout.of(tokenizer)
    text = tokenizer.decode(list(ids), skip_special_tokens=False)
    spans = layout.spans(text, system)
    out: list[str] = []
    start = 0
    for end in token_ends(tokenizer, ids):
        mid = (start + max(end, start + 1)) / 2  # a token belongs where its text's middle lies
        name = next((k for k, (a, b) in spans.items() if a <= mid < b), "template")
        out.append(name)
        start = end
    return out


def spared_positions(
    tokenizer: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    layout: TemplateLayout | None = None,
    *,
    system: bool | None = None,
) -> Tensor:
    """``(batch, seq)`` True where a prompt token is not content (system or template): the
    positions ``ablate_positions=content`` leaves unablated. Padding counts as spared."""
    layout = layout or TemplateLayout.of(tokenizer)
    keep = torch.ones(input_ids.shape, dtype=torch.bool)
    for row in range(input_ids.shape[0]):
        valid = attention_mask[row].bool() if attention_mask is not None else torch.ones_like(keep[row])
        cols = valid.nonzero().flatten().tolist()
        classes = position_classes(tokenizer, input_ids[row, cols].tolist(), layout, system=system)
        for col, name in zip(cols, classes, strict=True):
            keep[row, col] = name not in ("user", "generated")
    return keep.to(input_ids.device)


def check_ablate_positions(value: str) -> str:
    if value not in ABLATE_POSITIONS:
        raise RefusalEvalError(
            f"ablate_positions={value!r} is not one of {list(ABLATE_POSITIONS)}",
            "pass ablate_positions=all (every position) or ablate_positions=content (user + generated)",
        )
    return value
