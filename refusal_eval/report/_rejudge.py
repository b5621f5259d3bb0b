"""Re-judge a logged run: score the answers in its ``--log_samples`` files with another judge,
with no regeneration (``refusal-eval leaderboard --judge SPEC``). Judges improve; answers stay."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ._paired import Sample


def rejudge(samples: Sequence[Sample], spec: str) -> list[Sample]:
    """``samples`` with ``refused`` (and, from a judge that sees them, the harmful sets'
    outcomes) replaced by judge ``spec``'s verdicts (one batch)."""
    from ..judges import get_judge
    from ..runs import HARMFUL

    verdict = get_judge(spec)([s.prompt for s in samples], [s.answer for s in samples])
    outcomes: list[str | None] = list(verdict.outcomes) or [None] * len(samples)
    return [
        dataclasses.replace(s, refused=bool(v), outcome=o if s.dataset in HARMFUL else None)
        for s, v, o in zip(samples, verdict.refused, outcomes, strict=True)
    ]
