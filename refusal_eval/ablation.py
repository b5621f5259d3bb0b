"""THE intervention module: every backend ablates through here. Pure torch, loads nothing.

Zero-ablating a latent set S of an SAE at a residual hook replaces the residual ``x`` with
``decode(f with f_S := 0) + (x - decode(f))`` (the SAE error term is kept). Decoding is linear,
so that equals the *sparse delta* ``x - f_S(x) @ W_dec[S]``, which only needs the encoder columns
of S (exact for standard and JumpReLU SAEs; TopK SAEs run the full encode to know f_S).

The edit is applied at every position, on the prompt pass and on every cached decode step of
``generate``. Several layers are edited in forward order, each seeing the residual already
edited upstream. A batch may carry one latent set per row, and a direction ablation may apply
to some rows only: :func:`by_row` merges one ablation list per row (e.g. rows of different
evaluation conditions generated in one batch) into ablations of that form.

Direction ablation (Arditi et al. 2024) projects a unit vector out of the residual stream
entering each decoder layer and out of the final residual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .coders import SparseCoder
from .errors import RefusalEvalError
from .hooks import check_layer, decoder_layers

LatentSet = Sequence[int]
RowLatentSets = Sequence[Sequence[int]]


@dataclass(frozen=True)
class LatentAblation:
    """Zero-ablate latents of one SAE. ``rows`` holds one shared set, or one set per batch row."""

    coder: SparseCoder
    rows: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, coder: SparseCoder, latents: LatentSet | RowLatentSets) -> LatentAblation:
        items: list[Any] = list(latents)
        if items and all(isinstance(r, (Sequence, Tensor)) and not isinstance(r, str) for r in items):
            rows = tuple(tuple(sorted({int(i) for i in r})) for r in items)
        else:
            rows = (tuple(sorted({int(i) for i in items})),)
        return cls(coder, rows)

    @property
    def union(self) -> tuple[int, ...]:
        return tuple(sorted(set().union(*self.rows)))


@dataclass(frozen=True)
class DirectionAblation:
    """Project ``direction`` (normalised here) out at the input of ``layers`` (all if None)
    and out of the final residual; in the batch rows ``rows`` marks True (every row if None)."""

    direction: Tensor
    layers: tuple[int, ...] | None = None
    rows: tuple[bool, ...] | None = None


Ablation = LatentAblation | DirectionAblation


@dataclass
class PositionFilter:
    """Prompt positions the latent edits leave unablated: ``keep`` is ``(batch, prompt_len)``,
    True = spare (e.g. :func:`refusal_eval.positions.spared_positions`). It applies to a forward
    whose input has exactly that shape (the prompt pass); decode steps (new tokens) are always
    edited. Mutable, so one installed edit serves batch after batch."""

    keep: Tensor | None = None


@runtime_checkable
class SupportsAblations(Protocol):
    """Anything that can turn itself into ablations given the SAEs (e.g. an ablation plan)."""

    def ablations(self, saes: Mapping[int, SparseCoder]) -> list[Ablation]: ...


PlanOrSets = SupportsAblations | Ablation | Sequence[Ablation] | Mapping[int, LatentSet | RowLatentSets]


def as_ablations(plan_or_sets: PlanOrSets, saes: Mapping[int, SparseCoder] | None = None) -> list[Ablation]:
    """Normalise the accepted inputs of :func:`ablate` into a list of ablations."""
    if isinstance(plan_or_sets, (LatentAblation, DirectionAblation)):
        return [plan_or_sets]
    if isinstance(plan_or_sets, SupportsAblations):
        return plan_or_sets.ablations(saes or {})
    if isinstance(plan_or_sets, Mapping):
        out: list[Ablation] = []
        for layer, latents in sorted(plan_or_sets.items()):
            if saes is None or int(layer) not in saes:
                have = sorted(saes) if saes else []
                raise RefusalEvalError(
                    f"no SAE loaded for layer {layer} (SAEs cover layers {have})",
                    "load an SAE for that layer or drop it from the latent sets",
                )
            out.append(LatentAblation.of(saes[int(layer)], latents))
        return out
    return list(plan_or_sets)


def by_row(row_ablations: Sequence[Sequence[Ablation]]) -> list[Ablation]:
    """The ablations that apply ``row_ablations[r]`` to batch row ``r`` and nothing else to it:
    per SAE one :class:`LatentAblation` with a latent set per row (empty where the row ablates
    nothing there), per direction one :class:`DirectionAblation` with its rows marked. A row's
    own ablations must be shared ones (one latent set, every row). Where all rows ask for the
    same thing the result is the shared ablation itself, so the edit is bit for bit the same."""
    n = len(row_ablations)
    latents: dict[int, tuple[SparseCoder, list[set[int]]]] = {}  # by coder identity
    directions: dict[tuple[int, tuple[int, ...] | None], tuple[Tensor, list[bool]]] = {}
    for r, ablations in enumerate(row_ablations):
        for ab in ablations:
            if isinstance(ab, DirectionAblation):
                if ab.rows is not None:
                    raise RefusalEvalError(
                        "by_row takes shared ablations per row, got a per-row direction ablation",
                        "give each row its own DirectionAblation without rows",
                    )
                key = (id(ab.direction), ab.layers)
                marked = directions.setdefault(key, (ab.direction, [False] * n))[1]
                marked[r] = True
                continue
            if len(ab.rows) != 1:
                raise RefusalEvalError(
                    "by_row takes shared ablations per row, got per-row latent sets",
                    "give each row one latent set per SAE",
                )
            sets = latents.setdefault(id(ab.coder), (ab.coder, [set() for _ in range(n)]))[1]
            sets[r] |= set(ab.rows[0])
    out: list[Ablation] = []
    for coder, sets in latents.values():
        rows = [tuple(sorted(s)) for s in sets]
        out.append(LatentAblation(coder, (rows[0],) if len(set(rows)) == 1 else tuple(rows)))
    for (_, layers), (direction, marked) in directions.items():
        out.append(DirectionAblation(direction, layers, None if all(marked) else tuple(marked)))
    return out


def _hidden_size(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    text_cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    return getattr(text_cfg, "hidden_size", None)


def validate(model: nn.Module, ablations: Sequence[Ablation]) -> None:
    """Raise a RefusalEvalError naming the fix if an ablation does not fit the model."""
    d_model = _hidden_size(model)
    for ab in ablations:
        if isinstance(ab, DirectionAblation):
            if d_model is not None and ab.direction.shape != (d_model,):
                raise RefusalEvalError(
                    f"direction has shape {tuple(ab.direction.shape)}, model width is {d_model}",
                    "use a direction computed on this model",
                )
            for layer in ab.layers or ():
                check_layer(model, layer)
            continue
        coder = ab.coder
        if d_model is not None and coder.d_in != d_model:
            raise RefusalEvalError(
                f"SAE {coder.source} has d_in={coder.d_in} but the model width is {d_model}",
                "use SAEs trained on this model (refusal-eval train-sae makes them)",
            )
        check_layer(model, coder.layer)
        bad = [i for i in ab.union if not 0 <= i < coder.d_sae]
        if bad:
            raise RefusalEvalError(
                f"latent ids {bad[:5]} are out of range for SAE {coder.source} (d_sae={coder.d_sae})",
                f"latent ids must be in 0..{coder.d_sae - 1}",
            )
        coder.positions(ab.union)  # a held coder names the fix if a latent is not held


# --- the math, shared by every backend (HF hooks here, vLLM decoder layers in refusal_eval.vllm) ---
def ablate_latents(coder: SparseCoder, x: Tensor, idx: Tensor, mask: Tensor | None = None) -> Tensor:
    """``x`` with the latents at columns ``idx`` of ``coder`` zero-ablated, the SAE error term
    kept: the sparse delta ``x - sum_i mask_i f_i(x) W_dec[i]``. ``idx`` indexes the held
    tensors (``coder.positions(latent_ids)``; the ids themselves for a whole coder). ``mask``
    (1 ablate, 0 keep; broadcast against ``(..., len(idx))``) lets a fixed-size, padded ``idx``
    carry any latent set."""
    acts = coder.encode_latents(x, idx)
    if mask is not None:
        acts = acts * mask
    delta = coder.decode_latents(acts, idx)
    out: Tensor = (x.to(delta.dtype) - delta).to(x.dtype)
    return out


def project_out(x: Tensor, unit: Tensor) -> Tensor:
    """``x`` with its component along the float32 unit vector ``unit`` removed (a zero vector
    leaves ``x`` unchanged, bit for bit)."""
    xf = x.float()
    out: Tensor = (xf - (xf @ unit)[..., None] * unit).to(x.dtype)
    return out


def unit_vector(direction: Tensor) -> Tensor:
    d = direction.detach().to(dtype=torch.float32)
    unit: Tensor = d / d.norm().clamp_min(1e-12)
    return unit


class _LatentEdit:
    """A compiled LatentAblation: union of latents + one row mask (+ spared positions)."""

    def __init__(self, ab: LatentAblation, device: torch.device, spare: PositionFilter | None = None) -> None:
        self.spare = spare
        self.coder = ab.coder.to(device=device)
        union = ab.union
        pos = {latent: j for j, latent in enumerate(union)}
        self.idx = torch.tensor(self.coder.positions(union), dtype=torch.long, device=device)
        self.n_rows = len(ab.rows)
        mask = torch.zeros(self.n_rows, len(union), dtype=self.coder.W_dec.dtype, device=device)
        for r, row in enumerate(ab.rows):
            mask[r, [pos[i] for i in row]] = 1.0
        # (rows, 1, |U|): broadcasts over positions; a shared set broadcasts over rows too.
        self.mask = mask[:, None, :]
        self.all_rows = bool(mask.all())
        # rows that ablate nothing here get x back as is (not x - 0, which an autocast delta
        # would round to its dtype): mixed-condition batches keep their baseline rows exact
        empty = [not row for row in ab.rows]
        self.untouched = torch.tensor(empty, device=device) if self.n_rows > 1 and any(empty) else None

    def __call__(self, x: Tensor) -> Tensor:
        if self.n_rows > 1 and x.shape[0] != self.n_rows:
            raise RefusalEvalError(
                f"per-row latent sets were given for {self.n_rows} rows but the batch has {x.shape[0]}",
                "pass one latent set per batch row (or one shared set)",
            )
        mask = None if self.all_rows else self.mask
        keep = self.spare.keep if self.spare is not None else None
        if keep is not None and x.dim() == 3 and x.shape[1] == keep.shape[1] and x.shape[0] != keep.shape[0]:
            raise RefusalEvalError(
                f"spared positions are given for {keep.shape[0]} prompts, the forward has {x.shape[0]} rows",
                "spare positions with one sequence per prompt (no beams or num_return_sequences)",
            )
        if keep is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(keep.shape):
            edited = (~keep.to(x.device, torch.bool)).to(self.coder.W_dec.dtype)[
                :, :, None
            ]  # (batch, seq, 1)
            mask = edited if mask is None else mask * edited
        out = ablate_latents(self.coder, x, self.idx, mask)
        if self.untouched is None:
            return out
        return torch.where(self.untouched.view(-1, *([1] * (x.dim() - 1))), x, out)


class _DirectionEdit:
    def __init__(self, ab: DirectionAblation, device: torch.device) -> None:
        self.unit = unit_vector(ab.direction).to(device)
        # the rows it projects; the others are returned as they came
        self.rows = None if ab.rows is None else torch.tensor(ab.rows, dtype=torch.bool, device=device)

    def __call__(self, x: Tensor) -> Tensor:
        if self.rows is None:
            return project_out(x, self.unit)
        if x.shape[0] != len(self.rows):
            raise RefusalEvalError(
                f"a direction ablation marks {len(self.rows)} rows but the batch has {x.shape[0]}",
                "mark one entry per batch row",
            )
        return torch.where(self.rows.view(-1, *([1] * (x.dim() - 1))), project_out(x, self.unit), x)


Hook = Callable[..., Any]


def _edit_output(edit: Callable[[Tensor], Tensor]) -> Hook:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (edit(output[0]), *output[1:])
        return edit(output)

    return hook


def _edit_input(edit: Callable[[Tensor], Tensor]) -> Hook:
    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (edit(args[0]), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = edit(kwargs["hidden_states"])
        return args, kwargs

    return hook


def install(
    model: nn.Module, ablations: Sequence[Ablation], spare: PositionFilter | None = None
) -> list[RemovableHandle]:
    """Register the hooks for ``ablations`` and return their handles (see :func:`ablate`)."""
    validate(model, ablations)
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    handles: list[RemovableHandle] = []
    try:
        for ab in ablations:
            if isinstance(ab, DirectionAblation):
                direction = _DirectionEdit(ab, device)
                targets = ab.layers if ab.layers is not None else range(len(layers))
                for layer in targets:
                    handles.append(
                        layers[layer].register_forward_pre_hook(_edit_input(direction), with_kwargs=True)
                    )
                handles.append(layers[-1].register_forward_hook(_edit_output(direction)))
                continue
            if not ab.union:
                continue  # ablating nothing changes nothing, bit for bit
            edit = _LatentEdit(ab, device, spare)
            module = layers[ab.coder.layer]
            if ab.coder.hook.site == "resid_pre":
                handles.append(module.register_forward_pre_hook(_edit_input(edit), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_edit_output(edit)))
    except BaseException:
        for h in handles:
            h.remove()
        raise
    return handles


@contextlib.contextmanager
def ablate(
    model: nn.Module,
    plan_or_sets: PlanOrSets,
    saes: Mapping[int, SparseCoder] | None = None,
    *,
    spare: PositionFilter | None = None,
) -> Iterator[list[Ablation]]:
    """Apply ablations to ``model`` inside the ``with`` block; hooks are always removed.

    ``plan_or_sets`` is ``{layer: latents}`` or ``{layer: [latents_row0, latents_row1, ...]}``
    (with ``saes`` mapping layer -> SAE), a :class:`LatentAblation` / :class:`DirectionAblation`
    or a list of them, or a plan object with an ``ablations(saes)`` method. ``spare`` leaves
    the prompt positions it marks unablated by the latent edits (the direction edit is global).
    """
    ablations = as_ablations(plan_or_sets, saes)
    handles = install(model, ablations, spare)
    try:
        yield ablations
    finally:
        for h in handles:
            h.remove()
