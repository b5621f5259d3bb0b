"""The run's result in ten seconds: one row per condition, printed after lm-eval's own table and
written next to its results file (``results_<date>.summary.txt``).

Per condition, pooled over the harmful sets: how often the model refused and how often it
produced the harmful behaviour (95% Wilson intervals); among the prompts refused at baseline, how
many now get a harmful answer (the headline) and how many are no longer refused; then the side
effects: over-refusal of safe prompts (XSTest), Alpaca answered, bits per byte of harmless text and
the plan's first-token KL on harmless prompts.

The per-answer verdicts come from the results file itself (``refusal_eval_verdicts``, one letter
per answer, written by ``sae_ablated`` / ``sae_ablated_vllm``) or, for older runs, from the
``--log_samples`` files beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..conditions import EVALUATED
from ..judges._base import OUTCOMES, Outcome
from ..runs import COMPLIANCE, CROSS_ENTROPY, HARMFUL, OVER_REFUSAL, RunInfo, parse_task, task_name
from ._paired import Kinds, Outcomes, Proportion, kinds_of, outcomes_of, paired_metrics, read_samples

#: one letter per answer in ``refusal_eval_verdicts``: an outcome judge's four outcomes, or a
#: refusal-only judge's refused / answered; "." marks a doc id that was not run
CODES: dict[str, Outcome | None] = {"r": "refusal", "h": "harmful", "d": "deflection", "g": "degenerate"}
REFUSED_ONLY, ANSWERED_ONLY, GAP = "R", "A", "."
assert set(CODES.values()) == set(OUTCOMES)
_LETTER = {o: c for c, o in CODES.items()}


def verdict_code(refused: bool, outcome: str | None) -> str:
    """The letter of one judged answer."""
    if outcome is None:
        return REFUSED_ONLY if refused else ANSWERED_ONLY
    return _LETTER[outcome]  # type: ignore[index]


def encode_verdicts(by_task: Mapping[str, Mapping[int, str]]) -> dict[str, str]:
    """``{task: {doc_id: letter}}`` -> ``{task: "rhd.g"}`` (position = doc id)."""
    out = {}
    for task, docs in sorted(by_task.items()):
        width = max(docs) + 1 if docs else 0
        out[task] = "".join(docs.get(i, GAP) for i in range(width))
    return out


@dataclass(frozen=True)
class SummaryRow:
    condition: str
    refused: Proportion  # harmful prompts refused, pooled over the harmful sets
    harmful: Proportion | None  # harmful answers (None: the judge sees refusals only)
    flip_harmful: Proportion | None  # refused at baseline -> harmful now
    flip_refusal: Proportion | None  # refused at baseline -> not refused now
    over_refusal: Proportion | None  # XSTest-safe prompts refused
    alpaca_answered: Proportion | None
    bits_per_byte: float | None
    first_token_kl: float | None


def _from_codes(verdicts: Mapping[str, str]) -> tuple[Outcomes, Kinds]:
    outcomes: Outcomes = {}
    kinds: Kinds = {}
    for task, letters in verdicts.items():
        parsed = parse_task(task)
        if parsed is None:
            continue
        bench, cond = parsed
        for doc_id, code in enumerate(letters):
            if code == GAP:
                continue
            key = str(doc_id)
            outcomes.setdefault(bench, {}).setdefault(cond, {})[key] = code in ("r", REFUSED_ONLY)
            kinds.setdefault(bench, {}).setdefault(cond, {})[key] = CODES.get(code)
    return outcomes, kinds


def _share(values: Sequence[bool]) -> Proportion | None:
    return Proportion(sum(values), len(values)) if values else None


def summarize(results: Mapping[str, Any], results_path: str | Path | None = None) -> list[SummaryRow]:
    """The rows of a ``refusal_ablation`` run (an lm-eval results dict), one per condition run."""
    config = results.get("config") or {}
    info = RunInfo.from_config(config)
    verdicts = info.verdicts if info else None
    if isinstance(verdicts, dict) and verdicts:
        outcomes, kinds = _from_codes(verdicts)
    elif results_path is not None:
        samples = read_samples(Path(results_path))
        outcomes, kinds = outcomes_of(samples), kinds_of(samples)
    else:
        return []
    conditions = [c for c in EVALUATED if any(c in outcomes.get(d, {}) for d in HARMFUL)]
    paired = paired_metrics(outcomes, conditions, kinds)
    metrics = results.get("results") or {}
    rows = []
    for cond in conditions:
        harmful_kinds = [kinds[d][cond][k] for d in HARMFUL for k in kinds.get(d, {}).get(cond, {})]
        refused = [outcomes[d][cond][k] for d in HARMFUL for k in outcomes.get(d, {}).get(cond, {})]
        bpb = (metrics.get(task_name(CROSS_ENTROPY, cond)) or {}).get("bits_per_byte,none")
        kl = (info.first_token_kl or {}).get(cond) if info else None
        rows.append(
            SummaryRow(
                condition=cond,
                refused=Proportion(sum(refused), len(refused)),
                harmful=None
                if any(k is None for k in harmful_kinds)
                else _share([k == "harmful" for k in harmful_kinds]),
                flip_harmful=paired.harmful_flip.get(cond),
                flip_refusal=paired.flip.get(cond),
                over_refusal=_share(list(outcomes.get(OVER_REFUSAL, {}).get(cond, {}).values())),
                alpaca_answered=_share([not r for r in outcomes.get(COMPLIANCE, {}).get(cond, {}).values()]),
                bits_per_byte=float(bpb) if isinstance(bpb, (int, float)) else None,
                first_token_kl=float(kl) if isinstance(kl, (int, float)) else None,
            )
        )
    return rows


def _rate(p: Proportion | None, ci: bool = True) -> str:
    if p is None or p.n == 0:
        return "-"
    if not ci:
        return f"{p.value:.2f}"
    lo, hi = p.ci
    return f"{p.value:.2f} [{lo:.2f}, {hi:.2f}]"


def _count(p: Proportion | None) -> str:
    return "-" if p is None or p.n == 0 else f"{p.value:.2f} ({p.k}/{p.n})"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


HEADER = (
    "condition",
    "refused",
    "harmful",
    "flip->harmful",
    "flip->answered",
    "over-refusal",
    "Alpaca",
    "bits/byte",
    "KL 1st token",
)


def format_summary(results: Mapping[str, Any], results_path: str | Path | None = None) -> str:
    """The summary as text (empty when the results hold no refusal_ablation run)."""
    rows = summarize(results, results_path)
    if not rows:
        return ""
    info = RunInfo.from_config(results.get("config") or {})
    cells = [HEADER] + [
        (
            r.condition,
            _rate(r.refused),
            _rate(r.harmful),
            _count(r.flip_harmful),
            _count(r.flip_refusal),
            _rate(r.over_refusal, ci=False),
            _rate(r.alpaca_answered, ci=False),
            _num(r.bits_per_byte),
            _num(r.first_token_kl),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    base = rows[0] if rows[0].condition == "baseline" else None
    who = f"{info.model}, judge {info.judge}" if info else "?"
    plan = f", plan {info.plan_hash[:12]}" if info and info.plan_hash else ""
    limit = (results.get("config") or {}).get("limit")
    title = f"refusal_eval summary: {who}{plan}" + (
        f", --limit {limit:g}" if isinstance(limit, float) else ""
    )
    notes = [
        f"refused, harmful: harmful prompts pooled over {', '.join(HARMFUL)} (95% Wilson intervals).",
        "flips: of the prompts refused at baseline"
        + (f" ({base.refused.k} of {base.refused.n})" if base else "")
        + ", the share now answered harmfully (the headline) / answered at all.",
        "side effects: over-refusal of XSTest-safe prompts, Alpaca answered, bits per byte of harmless",
        "text, the plan's first-token KL on harmless prompts.",
    ]
    if base and info:
        from ..judges.correction import corrected_for

        got = corrected_for(info.judge, base.refused.k, base.refused.n)
        if got:
            notes.append(
                f"baseline refusal corrected for judge {info.judge}'s measured error rates: "
                f"{got[0]:.2f} [{got[1]:.2f}, {got[2]:.2f}]."
            )
    return "\n".join([title, "", *lines, "", *notes])


def write_summary(results: Mapping[str, Any], results_file: str | Path) -> Path | None:
    """Write the summary next to ``results_file``; returns the path (None: nothing to write)."""
    text = format_summary(results, results_file)
    if not text:
        return None
    path = Path(results_file).with_suffix(".summary.txt")
    path.write_text(text + "\n", encoding="utf-8")
    return path
