"""A search plan in a few lines: what each stage found (printed by ``refusal-eval search``)."""

from __future__ import annotations

from collections.abc import Sequence

from ..search.artifacts import Latent, PlanBody


def _per_layer(latents: Sequence[Latent]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for layer, _ in latents:
        counts[layer] = counts.get(layer, 0) + 1
    return dict(sorted(counts.items()))


def summary(body: PlanBody, plan_hash: str | None = None) -> str:
    """A short human summary of a plan."""
    s1, s2, s3 = body.stage1, body.stage2, body.stage3
    lines = [
        f"model {body.model.name}  SAEs {body.saes.source} layers {sorted(body.saes.layers)}",
        f"searched {s2.n_prompts} refused harmful prompts (of {body.screen.n_harmful}); "
        f"direction layer {s1.layer} ({s1.selected_by})",
        f"candidates {len(s1.candidates)}  minimal sets: mean size {s2.mean_minimal_size:.1f}, "
        f"union {len(s2.union)} (by layer {_per_layer(s2.union)})  "
        f"FM extras {len(body.sets['sae_fm']) - len(s2.union)}  dormant {len(s3.dormant)}",
        f"FM held-out accuracy {s3.fm.test_accuracy:.3f}  probe {s3.probe.test_accuracy:.3f}"
        f"  ({s3.n_features} features)",
    ]
    if s3.woken is not None:
        w = s3.woken
        strongest = f", strongest effect {w.strongest[0].effect:.3f}" if w.strongest else ""
        lines.append(
            f"hydra {len(w.hydra)} of {w.n_tested} woken latents tested "
            f"(woken by layer {w.woken_by_layer}, threshold {w.threshold}{strongest})"
        )
    if s3.kl_pruning is not None:
        k = s3.kl_pruning
        measured = ", ".join(f"{d}: {v:.3f}" for d, v in k.points)
        lines.append(
            f"sae_kl: {len(k.kept)} of {len(k.order)} latents kept, {k.dropped} harmless-busiest dropped "
            f"for first-token KL <= {k.bound} (KL by latents dropped: {measured})"
        )
    for split, conds in body.verification.items():
        parts = [
            f"{c} {v.attack_success:.2f}" for c, v in conds.items() if v.n and v.attack_success is not None
        ]
        n = next((v.n for v in conds.values() if v.n), 0)
        lines.append(f"attack success on {split} ({n} refused prompts): " + ", ".join(parts))
        harmful = [f"{c} {v.harmful / v.n:.2f}" for c, v in conds.items() if v.n and v.harmful is not None]
        if harmful:
            lines.append(f"harmful compliance on {split} (outcome judge): " + ", ".join(harmful))
    if body.side_effects:
        kl = ", ".join(f"{c} {v.first_token_kl:.3f}" for c, v in body.side_effects.items())
        n = next(iter(body.side_effects.values())).n
        lines.append(f"first-token KL on {n} harmless prompts: {kl}")
    if plan_hash:
        lines.append(f"plan sha256 {plan_hash}")
    return "\n".join(lines)
