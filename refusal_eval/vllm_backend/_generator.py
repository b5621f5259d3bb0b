"""The search's generations on a vLLM engine (``TextGenerator`` of :mod:`refusal_eval.search.stages`).

Screening and verification are ~90% of a search's time and all greedy generation; the forward
passes that score refusal, read SAE activations and fit the FM stay on the HF model. The
engine holds one latent set per call, so prompts are grouped by the ablations ``edits``
gives them (one group for a shared set; one per distinct minimal set for per-prompt sets) and
each group runs as one ``generate()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..ablation import Ablation
from ..chat import format_chat
from ._editor import VllmEditor, cpu_defaults, edit_state, engine_args
from ._layers import EditState


class VllmGenerator:
    """Greedy answers from ``llm`` (built with :func:`engine_args` for ``saes``), prompts
    chat-formatted and answers decoded by ``tokenizer`` (the HF tokenizer the search uses)."""

    def __init__(self, llm: Any, editor: VllmEditor, tokenizer: Any) -> None:
        self.llm, self.editor, self.tokenizer = llm, editor, tokenizer

    def __call__(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        edits: Callable[[range], Sequence[Ablation]] | None = None,
    ) -> list[str]:
        from vllm import SamplingParams, TokensPrompt

        groups: dict[str, tuple[EditState, list[int]]] = {}
        for i in range(len(prompts)):
            state = edit_state(edits(range(i, i + 1)) if edits is not None else [])
            groups.setdefault(state.key, (state, []))[1].append(i)
        texts = format_chat(self.tokenizer, prompts)
        params = SamplingParams(max_tokens=max_new_tokens, temperature=0, skip_special_tokens=True)
        answers = [""] * len(prompts)
        for state, idx in groups.values():
            self.editor.set(state)
            ids = [self.tokenizer(texts[i], add_special_tokens=False)["input_ids"] for i in idx]
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=t) for t in ids], params, use_tqdm=False)
            for i, out in zip(idx, outs, strict=True):
                tokens = list(out.outputs[0].token_ids)
                answers[i] = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return answers


def start_generator(chat: Any, saes: Any, **engine_kwargs: Any) -> VllmGenerator:
    """A vLLM engine for ``chat``'s weights (``chat.source``, a local directory or hub id) with
    slots for ``saes``, wrapped for the search (``refusal-eval search --generate-with vllm``)."""
    from vllm import LLM

    dtype = str(chat.info.get("dtype", "bfloat16")).removeprefix("torch.")
    llm = LLM(model=chat.source, dtype=dtype, **engine_args(chat.source, saes), **cpu_defaults(engine_kwargs))
    editor = VllmEditor(llm)
    editor.load_saes(saes)
    return VllmGenerator(llm, editor, chat.tokenizer)
