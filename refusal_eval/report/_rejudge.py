"""Re-judge a logged run: score the answers in its ``--log_samples`` files with another judge,
with no regeneration (``refusal-eval leaderboard --judge SPEC``). Judges improve; answers stay."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ._paired import Sample


def rejudge(samples: Sequence[Sample], spec: str) -> list[Sample]:
    """``samples`` with ``refused`` replaced by judge ``spec``'s verdicts (one batch)."""
    from ..judges import get_judge

    verdict = get_judge(spec)([s.prompt for s in samples], [s.answer for s in samples])
    return [dataclasses.replace(s, refused=bool(v)) for s, v in zip(samples, verdict.refused, strict=True)]
