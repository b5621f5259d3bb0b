"""The ``sae_kl`` condition: the union pruned until harmless prompts barely notice its ablation.

The union of the minimal sets flips refusal but moves the first token of harmless prompts far
more than refusal-direction ablation does (the 0.5B plan's side effects: first-token KL 1.10
against 0.32 on its harmless search prompts), and
many of its ablated answers are degenerate. Latents that are busy on harmless text cost KL when
zeroed; those that fire on refused prompts alone carry the refusal. So the union is ordered by
each latent's *harmless share* (its mean-pooled activation on the harmless prompts over that plus
its mean-pooled activation on the refused ones), highest first, and the fewest leading latents
are dropped that bring the first-token KL on the search's harmless prompts to ``sae_max_kl``.
The order is fixed before any KL is measured; the drop count is found by bisection, which assumes
the KL falls as latents go (every measured point is kept in the plan, so a non-monotone front is
visible). An empty kept set (a bound only nothing meets) leaves the plan without ``sae_kl``.
``benchmarks/kl_front.py`` orders the union the same way and measures the whole front on held-out
prompts (docs/search, "The flip-vs-KL front").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import Tensor

from ..ablation import ablate, as_ablations
from ..chat import ChatLike
from ..coders import SparseCoder
from ..saes._stream import rows_of
from ..scoring import first_token_kl, first_token_logprobs
from .activations import pooled_activations
from .artifacts import KlPruning, Latent, by_layer


def harmless_share(
    chat: ChatLike,
    saes: Mapping[int, SparseCoder],
    union: Sequence[Latent],
    refused: Sequence[str],
    harmless: Sequence[str],
    batch_size: int,
) -> list[tuple[Latent, float]]:
    """``union`` with each latent's harmless share, highest (the first to drop) first; ties by
    latent, so the order is a function of the activations alone."""

    def mean_pooled(prompts: Sequence[str]) -> Tensor:
        pooled = pooled_activations(
            chat.model, chat.tokenizer, prompts, saes, pool="mean", batch_size=batch_size
        )
        return pooled.columns(list(union)).mean(0)

    act_r, act_b = mean_pooled(refused), mean_pooled(harmless)
    share = act_b / (act_b + act_r).clamp_min(1e-12)
    return sorted(zip(union, share.tolist(), strict=True), key=lambda t: (-t[1], t[0]))


def fewest_to_drop(n: int, kl_of: Callable[[int], float], bound: float) -> tuple[int, dict[int, float]]:
    """Pure: the smallest ``k`` in ``0..n`` with ``kl_of(k) <= bound``, by bisection over ``k``
    (``kl_of(n)``, nothing ablated, is 0 and never asked); returns it and every point measured."""
    seen: dict[int, float] = {}

    def ok(k: int) -> bool:
        if k == n:
            return True
        seen[k] = kl_of(k)
        return seen[k] <= bound

    if ok(0):
        return 0, seen
    lo, hi = 0, n  # kl_of(lo) > bound, hi passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi, seen


def kl_pruned(
    chat: ChatLike,
    saes: Mapping[int, SparseCoder],
    union: Sequence[Latent],
    refused: Sequence[str],
    harmless: Sequence[str],
    *,
    bound: float,
    batch_size: int,
) -> KlPruning:
    """The union less its most harmless-busy latents (share from ``refused`` vs ``harmless``),
    down to first-token KL <= ``bound`` on ``harmless``: the search's own harmless prompts, the
    ones the plan's side effects report KL on, so the plan's ``sae_kl`` KL is <= ``bound`` by
    construction (an in-sample number; ``benchmarks/kl_front.py`` measures held-out ones)."""
    order = harmless_share(chat, saes, union, refused, harmless, batch_size)
    held = rows_of(saes, sorted(union))
    base = first_token_logprobs(chat.model, chat.tokenizer, harmless, batch_size=batch_size)

    def kl_of(k: int) -> float:
        kept = sorted(x for x, _ in order[k:])
        with ablate(chat.model, as_ablations(by_layer(kept), held)):
            lp = first_token_logprobs(chat.model, chat.tokenizer, harmless, batch_size=batch_size)
        return first_token_kl(base, lp)

    dropped, points = fewest_to_drop(len(order), kl_of, bound)
    return KlPruning(
        bound=bound,
        order=tuple((*x, round(s, 6)) for x, s in order),
        dropped=dropped,
        kept=tuple(sorted(x for x, _ in order[dropped:])),
        points=tuple(sorted(points.items())),
    )
