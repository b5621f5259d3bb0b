"""Assemble a registered model's GGUF parts, verify them, and cache a bf16 safetensors copy.

First use: concatenate the parts (hashing as we go), refuse anything whose sha256 differs,
load the GGUF with transformers (``gguf_file=``, dequantized), cast to bf16 and
``save_pretrained`` into the cache (~45 s). Later uses load that directory (~1 s). The cache
entry is written atomically and carries a manifest; an entry without a valid manifest is
treated as absent and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .._cache import atomic_directory, cache_dir, cache_lock, file_digest
from ..errors import RefusalEvalError
from ._registry import OfflineModel

log = logging.getLogger(__name__)

MANIFEST = "refusal_eval_manifest.json"
CACHE_FORMAT = 1


def part_files(model: OfflineModel) -> list[Path]:
    """The part files in order, located without importing the part packages' code."""
    files: list[Path] = []
    missing: list[str] = []
    for module in model.part_modules():
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            missing.append(module)
            continue
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        files.extend(sorted(data.glob("part*.bin")))
    if missing:
        raise RefusalEvalError(
            f"offline model {model.name!r} is not installed (missing {', '.join(missing[:3])}"
            f"{'...' if len(missing) > 3 else ''}) and the Hugging Face hub is not used offline",
            f"{model.pip_requirement}, or pass a local model directory / .gguf path",
        )
    return files


def assemble(model: OfflineModel, out: Path) -> Path:
    """Concatenate the parts into ``out``; raise (deleting ``out``) on a sha256 mismatch."""
    digest = hashlib.sha256()
    with open(out, "wb") as fh:
        for part in part_files(model):
            with open(part, "rb") as src:
                while chunk := src.read(1 << 24):
                    digest.update(chunk)
                    fh.write(chunk)
    got = digest.hexdigest()
    if got != model.sha256:
        out.unlink(missing_ok=True)
        raise RefusalEvalError(
            f"sha256 mismatch for {model.name}: assembled parts hash to {got[:16]}..., "
            f"expected {model.sha256[:16]}...; the broken file was deleted and nothing was cached",
            f"reinstall the exact pinned parts: {model.pip_requirement}",
        )
    return out


def cached_dir(model: OfflineModel) -> Path:
    return cache_dir("models") / f"{model.name}-{model.sha256[:12]}-bf16"


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        return None
    return manifest


def ensure_converted(model: OfflineModel) -> Path:
    """The cached bf16 HF directory for a registered model, building it on first use."""
    target = cached_dir(model)
    if _valid(target, model.sha256):
        return target
    with cache_lock(target, f"converting {model.name}"):
        if _valid(target, model.sha256):  # another process converted it while we waited
            return target
        log.warning("first use of %s: assembling and converting the GGUF (about a minute)", model.name)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".gguf-") as tmp:
            gguf = assemble(model, Path(tmp) / "model.gguf")
            convert_gguf(gguf, target, {"name": model.name, "hub_id": model.hub_id, "sha256": model.sha256})
    return target


def ensure_converted_file(gguf: Path) -> Path:
    """The cached bf16 HF directory for a user's .gguf file (keyed by path, size and mtime)."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    target = cache_dir("models") / f"{gguf.stem}-{key[:12]}-bf16"
    if not _valid(target, key):
        with cache_lock(target, f"converting {gguf.name}"):
            if not _valid(target, key):
                convert_gguf(gguf, target, {"name": gguf.stem, "hub_id": None, "sha256": key})
    return target


def _valid(target: Path, sha256: str, *, full: bool | None = None) -> bool:
    """A cache entry is used only if its manifest names this source and every file it lists has
    the recorded size and fast hash (``full``, or ``REFUSAL_EVAL_VERIFY=full``: sha256 too);
    anything else is deleted, so it is rebuilt rather than trusted."""
    manifest = read_manifest(target)
    if manifest is not None and manifest.get("sha256") == sha256:
        full = os.environ.get("REFUSAL_EVAL_VERIFY", "") == "full" if full is None else full
        problem = _files_problem(target, manifest.get("files"), full=full)
        if problem is None:
            return True
        log.warning("model cache %s cannot be trusted (%s); rebuilding it", target, problem)
    if target.exists():
        if manifest is None:
            log.warning("discarding incomplete or corrupt model cache at %s", target)
        shutil.rmtree(target)
    return False


def _files_problem(target: Path, files: Any, *, full: bool) -> str | None:
    if not isinstance(files, dict) or not files:
        return "its manifest records no file hashes: made by an older refusal_eval"
    for name, meta in files.items():
        path = target / name
        if not path.is_file() or path.stat().st_size != meta.get("size"):
            return f"{name} is missing or has the wrong size"
        if file_digest(path) != meta.get("xxh3_64"):
            return f"{name} does not match its recorded hash"
        if full and file_digest(path, "sha256") != meta.get("sha256"):
            return f"{name} does not match its recorded sha256"
    return None


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """Size, fast hash and sha256 of every file in a converted model folder (for its manifest)."""
    return {
        p.name: {"size": p.stat().st_size, "xxh3_64": file_digest(p), "sha256": file_digest(p, "sha256")}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def convert_gguf(gguf: Path, target: Path, manifest: dict[str, Any]) -> None:
    """Load ``gguf`` dequantized, cast to bf16, and save it atomically as ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf.name}
    try:  # newer transformers keeps GGUF weights packed unless told to dequantize
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.bfloat16, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise RefusalEvalError(
            f"cannot load GGUF {gguf}: {exc}",
            "pass a GGUF of an architecture transformers supports, or a HF model directory",
        ) from exc
    hf_model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    if manifest.get("hub_id"):
        hf_model.config.name_or_path = manifest["hub_id"]
    with atomic_directory(target) as staging:
        hf_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        body = {"format": CACHE_FORMAT, "dtype": "bfloat16", **manifest, "files": file_records(staging)}
        (staging / MANIFEST).write_text(json.dumps(body, indent=2))
