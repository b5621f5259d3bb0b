"""Chat formatting through the tokenizer's own template, and batched greedy generation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm


class ChatLike(Protocol):
    """What the search, the plan and the lm-eval model need of a loaded chat model
    (:class:`refusal_eval.models.ChatModel` is the implementation)."""

    model: Any  # a transformers causal LM
    tokenizer: Any  # its tokenizer, left padding
    spec: str
    revision: str | None
    info: dict[str, Any]
    refusal_tokens: tuple[str, ...]

    @property
    def n_layers(self) -> int: ...

    @property
    def d_model(self) -> int: ...


def format_chat(tokenizer: Any, prompts: Sequence[str], system: str | None = None) -> list[str]:
    """User turn only (plus an optional system turn), generation prompt appended."""
    out: list[str] = []
    for prompt in prompts:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return out


def encode_chat(
    tokenizer: Any, prompts: Sequence[str], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Left-padded input ids and attention mask for chat-formatted prompts."""
    texts = format_chat(tokenizer, prompts)
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(device) for k, v in enc.items()}


def context_length(model: Any) -> int | None:
    """The model's context window (``max_position_embeddings``), if its config says."""
    cfg = getattr(model, "config", None)
    text_cfg = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
    n = getattr(text_cfg, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) else None


def check_context(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 0) -> None:
    """Raise one clear error if a chat-formatted prompt plus ``max_new_tokens`` does not fit the
    model's context (instead of a run that takes hours or fails deep inside the model)."""
    limit = context_length(model)
    if limit is None or not prompts:
        return
    lengths = [
        len(ids) for ids in tokenizer(format_chat(tokenizer, prompts), add_special_tokens=False)["input_ids"]
    ]
    worst = max(range(len(lengths)), key=lambda i: lengths[i])
    if lengths[worst] + max_new_tokens > limit:
        from .errors import RefusalEvalError

        raise RefusalEvalError(
            f"prompt {worst} is {lengths[worst]} tokens; with {max_new_tokens} new tokens that exceeds "
            f"the model's context of {limit}",
            "shorten or drop that prompt, or lower the number of new tokens",
        )


def chat_batches(
    tokenizer: Any,
    prompts: Sequence[str],
    device: torch.device | str,
    *,
    batch_size: int,
    desc: str,
    progress: bool,
) -> Iterator[dict[str, torch.Tensor]]:
    """Encoded, left-padded batches of chat-formatted prompts, with a progress bar."""
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress or len(starts) < 2):
        yield encode_chat(tokenizer, prompts[start : start + batch_size], device)


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    progress: bool = True,
    edits: Callable[[range], Any] | None = None,
) -> list[str]:
    """Greedy completions of chat-formatted ``prompts`` (special tokens stripped).

    ``edits(rows)``, when given, returns the ablations for the prompts at indices ``rows`` of
    each batch (e.g. one latent set per prompt); they apply to that batch's generation only.
    """
    from .ablation import ablate

    check_context(model, tokenizer, prompts, max_new_tokens)
    device = next(model.parameters()).device
    answers: list[str] = []
    batches = chat_batches(
        tokenizer, prompts, device, batch_size=batch_size, desc="generate", progress=progress
    )
    for start, enc in zip(range(0, len(prompts), batch_size), batches, strict=False):
        rows = range(start, min(start + batch_size, len(prompts)))
        edit = ablate(model, edits(rows)) if edits is not None else contextlib.nullcontext()
        with edit:
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        answers.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return answers
