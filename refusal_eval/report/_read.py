"""Read lm-eval results JSONs of ``refusal_ablation`` runs into one row per model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..conditions import EVALUATED as CONDITIONS  # re-exported for _write
from ..errors import RefusalEvalError
from ..runs import COMPLIANCE, CROSS_ENTROPY, HARMFUL, OVER_REFUSAL, PREFIX, RunInfo, parse_task, task_name
from ._paired import Paired, Sample, kinds_of, outcomes_of, paired_metrics, read_samples, wilson

_RATES = ("refusal_rate", "attack_success", "over_refusal", "compliance")


def _is_rate(metric: str) -> bool:
    return metric.endswith(",none") and metric.split(",")[0] in _RATES


@dataclass
class Rate:
    value: float
    ci: tuple[float, float]
    n: int


@dataclass
class Row:
    file: str
    model: str
    saes: str
    sae_layers: list[int]
    layer: int | None
    union: int | None
    fm_extra: int | None
    dormant: int | None
    judge: str
    plan_hash: str
    lm_eval_version: str
    date: str
    limit: Any
    refusal: dict[str, Rate] = field(default_factory=dict)  # harmful refusal rate per condition
    attack: dict[str, Rate] = field(default_factory=dict)  # attack success per condition
    over_refusal: dict[str, Rate] = field(default_factory=dict)  # XSTest safe
    compliance: dict[str, Rate] = field(default_factory=dict)  # Alpaca
    counts: dict[str, int] = field(default_factory=dict)  # latents ablated per condition
    per_dataset: dict[str, dict[str, float]] = field(default_factory=dict)
    categories: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    paired: Paired | None = None  # flip rates etc. from the --log_samples files
    bits_per_byte: dict[str, float] = field(default_factory=dict)  # harmless text, per condition
    first_token_kl: dict[str, float] = field(default_factory=dict)  # from the plan, per condition
    #: baseline harmful refusal corrected for the judge's leave-one-model-out error rates (None:
    #: the judge has none measured), its 95% interval carrying their between-model spread
    refusal_corrected: Rate | None = None


def _date(value: Any) -> str:
    """lm-eval stores the run's start as a Unix timestamp; show it as a UTC date-time."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(value) if value is not None else "?"


def _limit(value: Any) -> Any:
    """``--limit 8`` is stored as 8.0; a fraction stays a float."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _pooled(
    results: dict[str, Any], n_samples: dict[str, Any], tasks: Sequence[str], metric: str
) -> Rate | None:
    """Sample-weighted mean of a 0/1 metric over tasks, with a Wilson 95% interval on the pooled
    count (never zero-width: lm-eval's normal-approximation stderr is 0 at a rate of 0 or 1)."""
    parts = []
    for task in tasks:
        r = results.get(task)
        if r is None or f"{metric},none" not in r:
            continue
        n = int((n_samples.get(task) or {}).get("effective", 0)) or 1
        parts.append((float(r[f"{metric},none"]), n))
    if not parts:
        return None
    total = sum(n for _, n in parts)
    mean = sum(v * n for v, n in parts) / total
    return Rate(mean, wilson(round(mean * total), total), total)


def read_results(path: str | Path, judge: str | None = None) -> Row:
    """One leaderboard row from a results file and the samples logged beside it; with ``judge``
    every rate comes from the logged answers re-judged by that judge (no regeneration)."""
    p = Path(path)
    fix = "pass the results_*.json that `lm_eval --model sae_ablated ... --output_path DIR` wrote"
    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise RefusalEvalError(f"cannot read results file {p}: {exc.strerror}", fix) from None
    except ValueError:
        raise RefusalEvalError(f"results file {p} is not valid JSON", fix) from None
    if not isinstance(data, dict) or "results" not in data or "config" not in data:
        raise RefusalEvalError(f"{p} is not an lm-eval results file (no 'results'/'config')", fix)
    results, cfg = data["results"], data["config"]
    if not isinstance(results, dict) or not isinstance(cfg, dict):
        raise RefusalEvalError(f"{p} has 'results'/'config' that are not JSON objects", fix)
    tasks = [t for k in results if (t := parse_task(k))]
    if not tasks:
        raise RefusalEvalError(f"{p} holds no refusal_ablation task results", "run --tasks refusal_ablation")
    ablated = sorted({cond for _, cond in tasks} - {"baseline"})
    missing = RunInfo.missing(cfg)
    info = RunInfo.from_config(cfg)
    if ablated and (missing or info is None):
        raise RefusalEvalError(
            f"{p} has ablation tasks but its config lacks {', '.join(missing or RunInfo.missing({}))}: "
            "it was not made by "
            "the sae_ablated model, so its rates cannot be tied to a plan",
            "rerun with lm_eval --model sae_ablated",
        )
    for task, metrics in results.items():
        if not task.startswith(PREFIX) or not isinstance(metrics, dict):
            continue
        bad = [m for m, v in metrics.items() if _is_rate(m) and not isinstance(v, (int, float))]
        if bad:
            raise RefusalEvalError(f"{p}: task {task} has non-numeric {bad[0]} = {metrics[bad[0]]!r}", fix)
    n_samples = data.get("n-samples", {})
    counts = dict((info.feature_counts if info else None) or {})
    saes = (info.saes if info else None) or {}
    row = Row(
        file=f"{p.parent.name}/{p.name}",
        model=info.model if info else str(cfg.get("model_args", "?")),
        saes=str(saes.get("source", "-")),
        sae_layers=sorted(int(k) for k in (saes.get("hooks") or {})),
        layer=info.plan_layer if info else None,
        union=counts.get("sae"),
        fm_extra=(counts["sae_fm"] - counts["sae"]) if "sae_fm" in counts and "sae" in counts else None,
        dormant=info.dormant if info else None,
        judge=info.judge if info else "?",
        plan_hash=str((info.plan_hash if info else None) or "-"),
        lm_eval_version=str(data.get("lm_eval_version", "?")),
        date=_date(data.get("date")),
        limit=_limit(cfg.get("limit")),
        counts=counts,
        first_token_kl={
            str(k): float(v)
            for k, v in ((info.first_token_kl if info else None) or {}).items()
            if isinstance(v, (int, float))
        },
    )
    samples = read_samples(p, judged=judge is None)  # a re-judge also reads --predict_only answers
    if not samples and judge is None and read_samples(p, judged=False):
        raise RefusalEvalError(
            f"the samples logged beside {p} carry answers but no verdicts (a --predict_only run?)",
            "pass --judge SPEC (e.g. --judge outcome) to score the logged answers",
        )
    if not samples:
        raise RefusalEvalError(
            f"{p} has no samples_refusal_*.jsonl beside it: the paired flip rates are computed per prompt",
            "rerun lm_eval with --log_samples (it writes them next to results_*.json)",
        )
    if judge is not None:
        from ._rejudge import rejudge

        samples = rejudge(samples, judge)
        row.judge = f"{judge} (re-judged; run: {row.judge})"
    row.paired = paired_metrics(outcomes_of(samples), CONDITIONS, kinds_of(samples))
    row.categories = category_rates(samples)
    for cond in CONDITIONS:
        ce = results.get(task_name(CROSS_ENTROPY, cond)) or {}
        if isinstance(ce.get("bits_per_byte,none"), (int, float)):
            row.bits_per_byte[cond] = float(ce["bits_per_byte,none"])
    if judge is not None:
        _rates_from_samples(row, samples)
    else:
        _rates_from_results(row, results, n_samples)
    row.refusal_corrected = _corrected(row.refusal.get("baseline"), judge or row.judge)
    return row


def _corrected(raw: Rate | None, spec: str) -> Rate | None:
    from ..judges.correction import corrected_for

    got = corrected_for(spec, round(raw.value * raw.n), raw.n) if raw is not None else None
    if raw is None or got is None:
        return None
    return Rate(got[0], (got[1], got[2]), raw.n)


def _rates_from_results(row: Row, results: dict[str, Any], n_samples: dict[str, Any]) -> None:
    """Fill ``row``'s rates from lm-eval's aggregated metrics."""
    for cond in CONDITIONS:
        harmful = [task_name(d, cond) for d in HARMFUL]
        for target, tasks, metric in (
            (row.refusal, harmful, "refusal_rate"),
            (row.attack, harmful, "attack_success"),
            (row.over_refusal, [task_name(OVER_REFUSAL, cond)], "over_refusal"),
            (row.compliance, [task_name(COMPLIANCE, cond)], "compliance"),
        ):
            rate = _pooled(results, n_samples, tasks, metric)
            if rate is not None:
                target[cond] = rate
        for d in HARMFUL:
            r = results.get(task_name(d, cond))
            if r and "attack_success,none" in r:
                row.per_dataset.setdefault(d, {})[cond] = float(r["attack_success,none"])


def _share(flags: Sequence[bool]) -> Rate:
    k, n = sum(flags), len(flags)
    return Rate(k / n, wilson(k, n), n)


def category_rates(samples: Sequence[Sample]) -> dict[str, dict[str, dict[str, float]]]:
    """Attack success per benchmark category and condition: ``{dataset: {category: {cond: rate}}}``."""
    cats: dict[str, dict[str, dict[str, list[bool]]]] = {}
    for s in samples:
        if s.dataset in HARMFUL:
            cats.setdefault(s.dataset, {}).setdefault(s.category, {}).setdefault(s.condition, []).append(
                not s.refused
            )
    return {
        ds: {cat: {c: sum(v) / len(v) for c, v in conds.items()} for cat, conds in sorted(cats[ds].items())}
        for ds in HARMFUL
        if ds in cats
    }


def _rates_from_samples(row: Row, samples: Sequence[Sample]) -> None:
    """Fill ``row``'s rates from judged samples (what :func:`read_results` reads from lm-eval's
    aggregates otherwise; on the same verdicts both give the same numbers)."""
    by: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        by.setdefault((s.dataset, s.condition), []).append(s)
    for cond in CONDITIONS:
        harmful = [s.refused for d in HARMFUL for s in by.get((d, cond), [])]
        if harmful:
            row.refusal[cond] = _share(harmful)
            row.attack[cond] = _share([not r for r in harmful])
        if by.get((OVER_REFUSAL, cond)):
            row.over_refusal[cond] = _share([s.refused for s in by[(OVER_REFUSAL, cond)]])
        if by.get((COMPLIANCE, cond)):
            row.compliance[cond] = _share([not s.refused for s in by[(COMPLIANCE, cond)]])
        for d in HARMFUL:
            if by.get((d, cond)):
                row.per_dataset.setdefault(d, {})[cond] = _share([not s.refused for s in by[(d, cond)]]).value


def read_all(paths: Sequence[str | Path], judge: str | None = None) -> list[Row]:
    if not paths:
        raise RefusalEvalError("no results files given", "pass one or more lm-eval results_*.json files")
    rows = [read_results(p, judge) for p in paths]
    versions = {r.lm_eval_version for r in rows}
    if len(versions) > 1:
        which = ", ".join(f"{r.file}: {r.lm_eval_version}" for r in rows)
        raise RefusalEvalError(
            f"results come from different lm-eval versions ({which})",
            "rerun every model with one lm-eval version",
        )
    return rows
