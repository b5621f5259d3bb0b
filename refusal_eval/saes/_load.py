"""Load residual-stream SAEs as :class:`SparseCoder` s, one per layer.

``source`` is one of
- a release shipped inside refusal_eval (e.g. ``qwen2.5-coder-0.5b-instruct-res-2k``),
- a local sae-lens directory (``cfg.json`` + ``sae_weights.safetensors``), or a directory of
  such directories (one per layer),
- a sae-lens pretrained release (``gemma-scope-2b-pt-res-canonical``, ``llama_scope_lxr_8x``, ...)
  with ``ids`` or ``layers`` (ids are then looked up in sae-lens's pretrained directory).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..coders import SparseCoder, coder_class
from ..errors import RefusalEvalError
from ..hooks import HookPoint
from ._slices import read_latents, sae_lens_cfg

log = logging.getLogger(__name__)

#: sae-lens releases whose ids follow a per-layer template (add releases here, not if-chains).
#: Keys are release names or fnmatch patterns (the first match wins, so specific ones go first).
RELEASE_ID_TEMPLATES: dict[str, str] = {
    "gemma-scope-2b-pt-res-canonical": "layer_{layer}/width_16k/canonical",
    "gemma-scope-2b-pt-res": "layer_{layer}/width_16k/average_l0_71",
    "gemma-scope-9b-pt-res-canonical": "layer_{layer}/width_16k/canonical",
    "llama_scope_lxr_8x": "l{layer}r_8x",
    "llama_scope_lxr_32x": "l{layer}r_32x",
    # Gemma Scope 2 (Gemma 3, -pt and -it): every layer in -all (small/big L0), a few in -res
    "gemma-scope-2-*-res-all": "layer_{layer}_width_16k_l0_small",
    "gemma-scope-2-*-res": "layer_{layer}_width_16k_l0_medium",
    # SAEs trained on chat models: andyrdt's (dictionary_learning BatchTopK -> JumpReLU), Goodfire's
    "*-andyrdt": "resid_post_layer_{layer}_trainer_1",
    "goodfire-*": "layer_{layer}",
}
_WIDTH_IN_ID = re.compile(r"width_(\w+?)(?=[/_]|$)")


def release_template(release: str) -> str:
    """The id template of a release ("" if none is listed)."""
    import fnmatch

    return next(
        (t for pattern, t in RELEASE_ID_TEMPLATES.items() if fnmatch.fnmatchcase(release, pattern)), ""
    )


@dataclass
class SAEBundle(Mapping[int, SparseCoder]):
    """SAEs keyed by layer, plus where they came from (recorded in plans and results)."""

    coders: dict[int, SparseCoder]
    source: str
    ids: dict[int, str] = field(default_factory=dict)

    def __getitem__(self, layer: int) -> SparseCoder:
        return self.coders[layer]

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.coders))

    def __len__(self) -> int:
        return len(self.coders)

    @property
    def layers(self) -> list[int]:
        return sorted(self.coders)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ids": {str(k): v for k, v in sorted(self.ids.items())},
            "hooks": {str(k): c.hook.tl_name for k, c in sorted(self.coders.items())},
            "d_sae": {str(k): c.d_sae for k, c in sorted(self.coders.items())},
            "architecture": {str(k): c.architecture for k, c in sorted(self.coders.items())},
            # latents whose weights are in memory: "all", or how many of d_sae (load_saes latents=)
            "held": {
                str(k): "all" if c.held is None else len(c.held) for k, c in sorted(self.coders.items())
            },
        }


def hook_of(metadata: Any) -> HookPoint:
    """The hook point recorded in a sae-lens cfg (``hook_name``, else ``hf_hook_name``)."""
    for key in ("hook_name", "hf_hook_name"):
        name = metadata.get(key) if hasattr(metadata, "get") else None
        if name:
            return HookPoint.parse(str(name))
    raise RefusalEvalError(
        "the SAE config records no hook_name", "set cfg.metadata.hook_name to blocks.L.hook_resid_post"
    )


def from_sae_lens(sae: Any, source: str, dtype: torch.dtype = torch.float32) -> SparseCoder:
    """Convert a sae-lens SAE object (weights copied) into a SparseCoder."""
    cls = coder_class(_checked(sae.cfg, source).architecture())
    tensors = {name: getattr(sae, name).detach().to(dtype).clone() for name in cls.tensor_fields()}
    return _coder(sae.cfg, tensors, source)


def _checked(cfg: Any, source: str) -> Any:
    """``cfg`` if it describes a residual-stream SAE refusal_eval can run unchanged."""
    if getattr(cfg, "normalize_activations", "none") not in ("none", None):
        raise RefusalEvalError(
            f"SAE {source} uses normalize_activations={cfg.normalize_activations!r}",
            "fold the normalisation into the weights (sae-lens fold_activation_norm_scaling_factor)",
        )
    if getattr(cfg, "reshape_activations", "none") != "none":
        raise RefusalEvalError(
            f"SAE {source} is not a residual-stream SAE", "use SAEs on resid_post / model.layers.L"
        )
    return cfg


def _coder(cfg: Any, tensors: dict[str, Any], source: str, **held: Any) -> SparseCoder:
    """A SparseCoder from a sae-lens config and its tensors (``held``: the subset fields)."""
    extra: dict[str, Any] = {}
    if hasattr(cfg, "k"):
        extra["k"] = int(cfg.k)
    if hasattr(cfg, "rescale_acts_by_decoder_norm"):
        extra["rescale_acts_by_decoder_norm"] = bool(cfg.rescale_acts_by_decoder_norm)
    return coder_class(cfg.architecture())(
        **tensors,
        **extra,
        **held,
        hook=hook_of(cfg.metadata),
        apply_b_dec_to_input=bool(cfg.apply_b_dec_to_input),
        source=source,
        metadata=dict(cfg.metadata.items()),
    )


def shipped_releases() -> dict[str, Path]:
    """Releases shipped inside the package: ``refusal_eval/data/saes/<release>/layer_<L>/``."""
    root = resources.files("refusal_eval") / "data" / "saes"
    if not root.is_dir():
        return {}
    return {p.name: Path(str(p)) for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")}


def is_local_source(source: str) -> bool:
    """A shipped release or a local directory (ids are folder names), not a hub release."""
    return source in shipped_releases() or Path(source).expanduser().is_dir()


def _load_dir(
    path: Path, device: str, dtype: torch.dtype, latents: Sequence[int] | None = None
) -> SparseCoder:
    from sae_lens import SAE
    from safetensors import SafetensorError

    if latents is not None:
        cfg = _checked(sae_lens_cfg(path), str(path))
        cls = coder_class(cfg.architecture())
        if cls.separable:
            ids = sorted({int(i) for i in latents})
            tensors, sha = read_latents(
                path, cfg, cls.tensor_fields(), cls.latent_fields(), ids, dtype, device
            )
            d_sae = int(cfg.d_sae)
            return _coder(cfg, tensors, str(path), held=tuple(ids), full_d_sae=d_sae, full_sha256=sha)
        log.info("%s: a %s SAE is held whole (its encoder reads every latent)", path, cls.architecture)

    cfg_file = path / "cfg.json"
    try:
        json.loads(cfg_file.read_text())
        sae = SAE.load_from_disk(str(path), device=device)
    except SafetensorError as exc:
        raise RefusalEvalError(
            f"the SAE weights in {path} are truncated or corrupt ({exc})",
            "re-download or re-copy sae_weights.safetensors (refusal-eval convert-sae writes a fresh one)",
        ) from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise RefusalEvalError(
            f"cannot load the SAE in {path}: {exc}",
            "point at a sae-lens directory with cfg.json and sae_weights.safetensors",
        ) from exc
    return from_sae_lens(sae, str(path), dtype)


def _sae_dirs(root: Path) -> list[Path]:
    if (root / "cfg.json").is_file():
        return [root]
    dirs = sorted(p.parent for p in root.glob("*/cfg.json"))
    if not dirs:
        raise RefusalEvalError(
            f"no SAE found in {root} (no cfg.json in it or its subfolders)",
            "pass a sae-lens SAE directory or a folder of them",
        )
    return dirs


_LAYER_IN_ID = re.compile(r"(?:^|[/_.])(?:layer_|l|blocks\.)(\d+)(?=[r/._]|$)")
_L0_IN_ID = re.compile(r"average_l0_(\d+)")


def id_layer(sae_id: str) -> int | None:
    """The residual layer a sae-lens id names (``layer_12/width_16k/canonical``, ``l12r_8x``)."""
    m = _LAYER_IN_ID.search(sae_id)
    return int(m.group(1)) if m else None


def release_ids(release: str) -> list[str]:
    """Every SAE id of a sae-lens release, from sae-lens's own pretrained directory (no download)."""
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        entry = get_pretrained_saes_directory().get(release)
    except Exception:
        entry = None
    if entry is None:
        raise RefusalEvalError(
            f"unknown SAE release {release!r}: not shipped with refusal_eval, not a local directory, "
            "and not in sae-lens's pretrained directory",
            f"use one of {sorted(shipped_releases())}, a local sae-lens directory, or a sae-lens release",
        )
    return list(entry.saes_map)


def resolve_release_ids(
    release: str, layers: Sequence[int] | None, available: Sequence[str]
) -> dict[int, str]:
    """Pick one SAE id per requested layer: the id our template names if the release has it,
    else the same width's canonical id, else the same width's id whose average L0 is nearest the
    template's, else the first id for that layer."""
    by_layer: dict[int, list[str]] = {}
    for sae_id in available:
        layer = id_layer(sae_id)
        if layer is not None:
            by_layer.setdefault(layer, []).append(sae_id)
    if not layers:
        raise RefusalEvalError(
            f"which SAEs of release {release!r}? it has layers {sorted(by_layer)}",
            "pass sae_layers=... (lm-eval) or --layers ... (CLI)",
        )
    missing = sorted(set(layers) - set(by_layer))
    if missing:
        raise RefusalEvalError(
            f"release {release!r} has no SAE for layer(s) {missing} (it has {sorted(by_layer)})",
            "pick layers the release covers",
        )
    template = release_template(release)
    width = m.group(1) if (m := _WIDTH_IN_ID.search(template)) else None
    want_l0 = int(m.group(1)) if (m := _L0_IN_ID.search(template)) else None
    out: dict[int, str] = {}
    for layer in layers:
        ids = sorted(by_layer[layer])
        exact = template.format(layer=layer) if template else None
        same_width = [i for i in ids if width is None or _width_of(i) == width] or ids
        canonical = [i for i in same_width if i.endswith("canonical")]
        if exact in ids:
            out[layer] = exact
        elif canonical:
            out[layer] = canonical[0]
        elif want_l0 is not None and any(_L0_IN_ID.search(i) for i in same_width):
            l0s = [(int(m.group(1)), i) for i in same_width if (m := _L0_IN_ID.search(i))]
            out[layer] = min((abs(l0 - want_l0), i) for l0, i in l0s)[1]
        else:
            out[layer] = same_width[0]
    return out


def _width_of(sae_id: str) -> str | None:
    m = _WIDTH_IN_ID.search(sae_id)
    return m.group(1) if m else None


def _load_release(
    release: str,
    layers: Sequence[int] | None,
    ids: Sequence[str] | None,
    device: str,
    dtype: torch.dtype,
    latents: Mapping[int, Sequence[int]] | None = None,
) -> tuple[dict[int, SparseCoder], dict[int, str]]:
    from sae_lens import SAE

    if ids is None:
        ids = list(resolve_release_ids(release, layers, release_ids(release)).values())
    coders: dict[int, SparseCoder] = {}
    id_map: dict[int, str] = {}
    for sae_id in ids:
        try:
            sae = SAE.from_pretrained(release, sae_id, device=device)
        except Exception as exc:  # sae-lens raises many types for hub/registry problems
            raise RefusalEvalError(
                f"cannot load SAE {release}/{sae_id}: {type(exc).__name__}: {exc}",
                "check the release and id (sae-lens pretrained_saes.yaml), the network, or pass a "
                "local SAE directory",
            ) from exc
        coder = from_sae_lens(sae, f"{release}/{sae_id}", dtype)
        del sae
        if latents is not None and coder.separable:
            # sae-lens' hub loaders read whole files (Gemma Scope ships .npz): hold one layer's
            # SAE whole at a time and keep only the requested latents' rows
            coder = coder.subset(latents.get(coder.layer, ()))
        coders[coder.layer] = coder
        id_map[coder.layer] = sae_id
    return coders, id_map


def load_saes(
    source: str,
    layers: Sequence[int] | None = None,
    ids: Sequence[str] | str | None = None,
    *,
    latents: Mapping[int, Sequence[int]] | None = None,
    model: Any | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SAEBundle:
    """Load SAEs for ``layers`` (all available if None) and check them against ``model``.

    ``ids`` names the sae-lens ids of a hub release (a list, or one template with ``{layer}``);
    by default one id per layer is picked (:func:`resolve_release_ids`).
    ``latents={layer: [ids]}`` holds only those latents of each loaded layer (none for a loaded
    layer it does not name: that SAE keeps ``b_dec``, its shape and its fingerprint): memory
    O(|S| x d_in) instead of the SAE's width. Local directories are read from safetensors
    slices, never whole; hub releases are loaded whole one layer at a time and shrunk. TopK
    SAEs are always held whole (a latent's activation depends on every other latent's
    pre-activation)."""
    if isinstance(ids, str):  # one id template for every layer, e.g. "layer_{layer}/width_65k/canonical"
        if "{layer}" not in ids or not layers:
            raise RefusalEvalError(
                f"SAE id template {ids!r} needs a {{layer}} field and the layers to fill it with",
                "pass e.g. sae_ids=layer_{layer}/width_65k/canonical with sae_layers=...",
            )
        ids = [ids.format(layer=layer) for layer in layers]
    if latents is not None:
        latents = {int(k): [int(i) for i in v] for k, v in latents.items()}
    shipped = shipped_releases()
    path = shipped.get(source) or Path(source).expanduser()
    available: list[int] | None = None
    if path.is_dir():
        coders: dict[int, SparseCoder] = {}
        id_map: dict[int, str] = {}
        available = []
        for d in _sae_dirs(path):
            layer = hook_of(sae_lens_cfg(d).metadata).layer  # read the cfg before any weights
            available.append(layer)
            if layers is None or layer in layers:
                held = None if latents is None else latents.get(layer, ())
                coders[layer] = _load_dir(d, device, dtype, held)
                id_map[layer] = d.name
    elif source.startswith((".", "/", "~")):
        raise RefusalEvalError(f"SAE path {source} does not exist", "pass an existing sae-lens SAE directory")
    else:
        coders, id_map = _load_release(source, layers, ids, device, dtype, latents)
    if layers is not None:
        missing = sorted(set(layers) - set(coders))
        if missing:
            raise RefusalEvalError(
                f"{source} has no SAE for layer(s) {missing} (it has {sorted(available or coders)})",
                "pick layers the SAE set covers, or train one with refusal-eval train-sae",
            )
    bundle = SAEBundle(coders, source, id_map)
    if model is not None:
        check_saes(bundle, model)
    return bundle


def check_saes(saes: Mapping[int, SparseCoder], model: Any) -> None:
    """SAE width must equal the model width; SAE layers must exist in the model."""
    from ..ablation import LatentAblation, validate

    hf_model = getattr(model, "model", model) if not hasattr(model, "config") else model
    validate(hf_model, [LatentAblation(c, ((),)) for c in saes.values()])


def to_sae_lens(coder: SparseCoder, dtype: torch.dtype | None = None) -> Any:
    """A sae-lens SAE with this coder's weights (``dtype`` casts them; metadata names the hook
    both ways), e.g. to ``save_model`` a directory both loaders read."""
    import sae_lens

    coder._check_whole("to_sae_lens")  # a sae-lens SAE has every latent
    arch = {"standard": "Standard", "jumprelu": "JumpReLU", "topk": "TopK"}[coder.architecture]
    cfg_cls, sae_cls = getattr(sae_lens, f"{arch}SAEConfig"), getattr(sae_lens, f"{arch}SAE")
    extra: dict[str, Any] = {}
    if arch == "TopK":
        extra = {k: getattr(coder, k) for k in ("k", "rescale_acts_by_decoder_norm")}
    weights = {
        name: getattr(coder, name).detach().to(dtype or coder.W_enc.dtype) for name in coder.tensor_fields()
    }
    meta = {**coder.metadata, "hook_name": coder.hook.tl_name, "hf_hook_name": coder.hook.hf_name}
    cfg = cfg_cls(
        d_in=coder.d_in,
        d_sae=coder.d_sae,
        dtype=str(weights["W_enc"].dtype).removeprefix("torch."),
        apply_b_dec_to_input=coder.apply_b_dec_to_input,
        **extra,
    )
    cfg.metadata = sae_lens.saes.sae.SAEMetadata(**meta)
    sae = sae_cls(cfg)
    with torch.no_grad():
        for name, tensor in weights.items():
            getattr(sae, name).data = tensor.clone()
    return sae
