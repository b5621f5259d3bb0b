"""The ablation-plan artifact: versioned JSON plus a safetensors file for the directions.

``PLAN.json`` holds everything the search did (model, SAEs, config, data hashes, every stage's
result, verification) and the latent set of each evaluation condition; ``PLAN.safetensors``
holds the per-layer refusal directions. JSON is written with sorted keys and rounded floats, so
the same inputs and seed give the same bytes. :class:`AblationPlan` reads a plan back and turns
a condition into ablations for the one ablation module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from .._cache import atomic_write
from .._codec import DecodeError, canonical_json
from ..ablation import Ablation, DirectionAblation, LatentAblation
from ..coders import SparseCoder
from ..conditions import LATENT_CONDITIONS, check_condition
from ..errors import RefusalEvalError
from .artifacts import PlanBody, by_layer

FORMAT = "refusal_eval.plan"
#: 2: every field written (null where not measured); 1 left out what it had not measured
VERSION = 2
#: what plan version 1 left out, and what its absence meant (``upgrade_v1`` writes it in)
V1_ABSENT: dict[str, dict[str, Any]] = {
    "stage1": {"baseline_refusal_score": None, "candidate_direction": "best"},
    "fit": {"losses": None},
    "stage3": {"woken": None},
    "woken": {"n_min_effect": None, "n_relative": None, "strongest": None},
    "verified": {"examples": None, "harmful": None},
    "plan": {"side_effects": None},
}


def upgrade_v1(body: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 plan body with every field it left out written in (a copy; the search's
    results are untouched, so only the format fields and the explicit nulls differ)."""
    out: dict[str, Any] = json.loads(json.dumps(dict(body)))
    for k, v in V1_ABSENT["plan"].items():
        out.setdefault(k, v)
    for k, v in V1_ABSENT["stage1"].items():
        out["stage1"].setdefault(k, v)
    s3 = out["stage3"]
    for fit in (s3["fm"], s3["probe"]):
        for k, v in V1_ABSENT["fit"].items():
            fit.setdefault(k, v)
    for k, v in V1_ABSENT["stage3"].items():
        s3.setdefault(k, v)
    if s3["woken"] is not None:
        for k, v in V1_ABSENT["woken"].items():
            s3["woken"].setdefault(k, v)
    for conds in out.get("verification", {}).values():
        for verified in conds.values():
            for k, v in V1_ABSENT["verified"].items():
                verified.setdefault(k, v)
    out["version"] = VERSION
    return out


#: the fields ``write_plan`` adds around the body
_FORMAT_FIELDS = ("format", "version", "tensors", "content_sha256")


def tensor_bytes(tensors: Mapping[str, Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in sorted(tensors.items())})


def write_plan(body: PlanBody | Mapping[str, Any], tensors: Mapping[str, Tensor], out: Path) -> str:
    """Write ``out`` (JSON) and ``out.with_suffix('.safetensors')``; return the plan hash."""
    blob = tensor_bytes(tensors)
    tensor_path = out.with_suffix(".safetensors")
    full = {
        **(body.to_json() if isinstance(body, PlanBody) else body),
        "format": FORMAT,
        "version": VERSION,
        "tensors": {"sha256": hashlib.sha256(blob).hexdigest()},
    }
    full["content_sha256"] = content_hash(full)
    data = canonical_json(full)
    atomic_write(tensor_path, blob)
    atomic_write(out, data)
    return hashlib.sha256(data).hexdigest()


def display_path(path: Path) -> str:
    """Where a plan lives, without machine-specific prefixes: ``package:plans/NAME.json`` for a
    plan shipped in refusal_eval, ``cache:plans/NAME.json`` for one in the user cache, else the
    path itself."""
    from importlib import resources

    from .._cache import cache_root

    resolved = path.resolve()
    for label, root in (("package", Path(str(resources.files("refusal_eval")))), ("cache", cache_root())):
        try:
            return f"{label}:{resolved.relative_to(root.resolve()).as_posix()}"
        except ValueError:
            continue
    return str(path)


def content_hash(plan: Mapping[str, Any]) -> str:
    """sha256 of a plan's canonical JSON without its own ``content_sha256`` field: a plan edited
    by hand (one latent id changed) no longer matches it and is refused."""
    return hashlib.sha256(
        canonical_json({k: v for k, v in plan.items() if k != "content_sha256"})
    ).hexdigest()


@dataclass(frozen=True)
class AblationPlan:
    body: PlanBody
    directions: Tensor  # (n_layers, d_model)
    path: Path
    hash: str

    @classmethod
    def load(cls, path: str | Path) -> AblationPlan:
        p = Path(path)
        fix = "rerun `refusal-eval search ... --out PLAN.json` to make a fresh plan"
        try:
            data = p.read_bytes()
            body = json.loads(data)
        except OSError as exc:
            raise RefusalEvalError(
                f"cannot read plan {p}: {exc.strerror}", "pass an existing PLAN.json"
            ) from None
        except ValueError:
            raise RefusalEvalError(f"plan {p} is not valid JSON", fix) from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise RefusalEvalError(f"{p} is not a refusal_eval ablation plan", fix)
        if body.get("version") not in (1, VERSION):
            raise RefusalEvalError(
                f"plan {p} has version {body.get('version')}, this refusal_eval reads 1 and {VERSION}", fix
            )
        if body.get("content_sha256") is None:
            raise RefusalEvalError(f"plan {p} carries no content hash, so it cannot be checked", fix)
        if content_hash(body) != body["content_sha256"]:
            raise RefusalEvalError(f"plan {p} was edited after it was written (content sha256 differs)", fix)
        try:
            fields = upgrade_v1(body) if body["version"] == 1 else body
            tensor_sha = str(fields["tensors"]["sha256"])
            typed = PlanBody.from_json({k: v for k, v in fields.items() if k not in _FORMAT_FIELDS})
        except DecodeError as exc:
            raise RefusalEvalError(f"plan {p} is malformed ({exc.where}: {exc.problem})", fix) from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise RefusalEvalError(f"plan {p} is malformed ({type(exc).__name__}: {exc})", fix) from None
        tpath = p.with_suffix(".safetensors")
        try:
            blob = tpath.read_bytes()
        except OSError:
            raise RefusalEvalError(
                f"plan tensors {tpath} are missing", "keep PLAN.safetensors next to PLAN.json"
            ) from None
        if hashlib.sha256(blob).hexdigest() != tensor_sha:
            raise RefusalEvalError(f"plan tensors {tpath} do not match {p} (sha256 differs)", fix)
        from safetensors.torch import load

        directions = load(blob)["directions"]
        if not 0 <= typed.stage1.layer < directions.shape[0]:
            raise RefusalEvalError(
                f"plan {p} names direction layer {typed.stage1.layer}, but its tensors hold "
                f"{directions.shape[0]} layers",
                fix,
            )
        return cls(typed, directions, p, hashlib.sha256(data).hexdigest())

    # --- what the plan says ------------------------------------------------------------------
    @property
    def layer(self) -> int:
        return self.body.stage1.layer

    @property
    def sae_layers(self) -> list[int]:
        """The SAE layers whose latents the ``sae`` set ablates."""
        return sorted(self.latent_sets("sae"))

    @property
    def hydra_count(self) -> int | None:
        """Cross-layer hydra latents found (``None``: the plan predates the detector)."""
        woken = self.body.stage3.woken
        return None if woken is None else len(woken.hydra)

    @property
    def first_token_kl(self) -> dict[str, float]:
        """Mean first-token KL(baseline || condition) on harmless prompts (empty for older plans)."""
        return {c: v.first_token_kl for c, v in (self.body.side_effects or {}).items()}

    @property
    def dormant_count(self) -> int:
        return len(self.body.stage3.dormant)

    @property
    def sae_source(self) -> str:
        return self.body.saes.source

    @property
    def sae_layer_ids(self) -> dict[int, str]:
        """The SAE layers the plan was made with, and their ids."""
        return {layer: info.id for layer, info in self.body.saes.layers.items()}

    def sae_ids_for(self, source: str, layers: Sequence[int]) -> list[str] | None:
        """The hub ids the plan was searched with, for ``layers``, when ``source`` is the plan's
        own hub release (a release has several SAEs per layer, e.g. Gemma Scope's widths, and
        the plan fits only its own). None for a local source, another release or a layer the
        plan has no SAE on: then the ids come from the source as usual."""
        from ..saes import is_local_source

        if is_local_source(source) or source != self.sae_source or not set(layers) <= set(self.sae_layer_ids):
            return None
        return [self.sae_layer_ids[x] for x in layers]

    @property
    def direction(self) -> Tensor:
        return self.directions[self.layer]

    def latent_sets(self, condition: str) -> dict[int, list[int]]:
        if not check_condition(condition).latent_set:
            raise RefusalEvalError(
                f"condition {condition!r} has no latent set", f"use one of {LATENT_CONDITIONS}"
            )
        if condition not in self.body.sets:
            made_by = check_condition(condition).made_by
            if made_by is not None:
                raise RefusalEvalError(
                    f"plan {self.path} has no {condition!r} set (its search was not asked for one)",
                    f"search again with --set {made_by}=VALUE (lm-eval: search_{made_by}=VALUE)",
                )
            raise RefusalEvalError(
                f"plan {self.path} has no {condition!r} set (it was made by an older search)",
                "rerun `refusal-eval search` for a plan with every condition",
            )
        return by_layer(self.body.sets[condition])

    def held_latents(self) -> dict[int, list[int]]:
        """``{layer: latents}`` that any of the plan's latent conditions ablates: all an SAE must
        hold to run every condition (``load_saes(..., latents=plan.held_latents())``)."""
        union: dict[int, set[int]] = {}
        for condition in LATENT_CONDITIONS:
            for layer, ids in by_layer(self.body.sets.get(condition, ())).items():
                union.setdefault(layer, set()).update(ids)
        return {layer: sorted(ids) for layer, ids in sorted(union.items())}

    def counts(self) -> dict[str, int]:
        return {c: len(self.body.sets[c]) for c in LATENT_CONDITIONS if c in self.body.sets}

    def sae_lens_saes(
        self, saes: Mapping[int, SparseCoder], condition: str = "sae"
    ) -> dict[int, tuple[Any, list[int]]]:
        """``{layer: (sae_lens.SAE, latent ids)}`` of one condition: the plan's latents on sae-lens
        SAE objects with the loaded weights (for sae-lens / SAEDashboard / Neuronpedia tooling)."""
        from ..saes import to_sae_lens

        sets = self.latent_sets(condition)
        missing = sorted(set(sets) - set(saes))
        if missing:
            raise RefusalEvalError(
                f"the plan's {condition!r} set uses layer(s) {missing} but no SAE is loaded there",
                f"load the plan's SAEs: {self.sae_source}",
            )
        return {layer: (to_sae_lens(saes[layer]), ids) for layer, ids in sets.items()}

    def ablations(self, saes: Mapping[int, SparseCoder], condition: str = "sae") -> list[Ablation]:
        """The ablations of one condition (``baseline`` -> none)."""
        check_condition(condition)
        if condition == "baseline":
            return []
        if condition == "direction":
            return [DirectionAblation(self.direction)]
        sets = self.latent_sets(condition)
        if not sets:
            raise RefusalEvalError(
                f"plan {self.path} has an empty {condition!r} latent set: ablating it equals the baseline",
                "rerun the search (e.g. with more prompts or a lower tau), or evaluate other conditions",
            )
        out: list[Ablation] = []
        for layer, latents in sets.items():
            if layer not in saes:
                raise RefusalEvalError(
                    f"the plan ablates layer {layer} but no SAE is loaded there (have {sorted(saes)})",
                    f"load the plan's SAEs: {self.sae_source}",
                )
            out.append(LatentAblation.of(saes[layer], latents))
        return out

    def condition(self, name: str) -> _Condition:
        return _Condition(self, name)

    def check_fits(self, model_info: Mapping[str, Any], sae_hashes: Mapping[int, str]) -> None:
        """Raise unless this plan was made for this model revision and these SAE weights."""
        want = self.body.model
        if want.revision and model_info.get("revision") and want.revision != model_info["revision"]:
            raise RefusalEvalError(
                f"plan {self.path} was made for {want.name} revision {want.revision[:12]}, "
                f"not {model_info.get('name')} revision {str(model_info['revision'])[:12]}",
                "use plan=auto or a plan searched on this model",
            )
        for layer, meta in self.body.saes.layers.items():
            have = sae_hashes.get(layer)
            if have is not None and have != meta.sha256:
                raise RefusalEvalError(
                    f"plan {self.path} was made with different SAE weights at layer {layer}",
                    "load the SAEs the plan names, or rerun the search",
                )


@dataclass(frozen=True)
class _Condition:
    plan: AblationPlan
    name: str

    def ablations(self, saes: Mapping[int, SparseCoder]) -> list[Ablation]:
        return self.plan.ablations(saes, self.name)


def sae_weights_hash(coder: SparseCoder) -> str:
    """The whole SAE's weight fingerprint (held coders carry it from their loader)."""
    return coder.weights_sha256()
