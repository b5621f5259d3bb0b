"""Read some latents of a sae-lens SAE directory from ``sae_weights.safetensors`` slices.

An ablation of |S| latents of a JumpReLU or standard SAE needs only those latents' encoder
columns, biases, thresholds and decoder rows (plus ``b_dec``). This module reads exactly those
from the file (safetensors slices of the memory-mapped file: the full matrices are never
materialised) and fingerprints the whole SAE by streaming row blocks, so a held coder carries
the same :meth:`~refusal_eval.coders.SparseCoder.weights_sha256` as the whole one. The values
follow sae-lens' own loader: each tensor is cast to the config's dtype (``log_threshold`` is
exponentiated there), then to the requested dtype.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._cache import atomic_write, cache_dir
from ..errors import RefusalEvalError

WEIGHTS = "sae_weights.safetensors"
#: rows of a matrix hashed at a time (64 rows of a 65k-wide W_enc: 16 MB in float32)
_BLOCK_BYTES = 16 << 20


def sae_lens_cfg(path: Path) -> Any:
    """The sae-lens config object of a directory (version defaults applied, as sae-lens loads)."""
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting
    from sae_lens.saes.sae import SAE

    try:
        raw = json.loads((path / "cfg.json").read_text())
        raw = handle_config_defaulting(raw)
        return SAE.get_sae_config_class_for_architecture(raw["architecture"]).from_dict(raw)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RefusalEvalError(
            f"cannot load the SAE in {path}: its cfg.json is unreadable ({exc})",
            "point at a sae-lens directory with cfg.json and sae_weights.safetensors",
        ) from exc


def _contiguous_runs(ids: Sequence[int]) -> Iterator[tuple[int, int]]:
    """``[(start, stop), ...]`` covering the sorted ``ids`` with the fewest slices."""
    start = prev = None
    for i in ids:
        if start is None:
            start = prev = i
        elif i == prev + 1:  # type: ignore[operator]
            prev = i
        else:
            yield start, prev + 1  # type: ignore[operator]
            start = prev = i
    if start is not None:
        yield start, prev + 1  # type: ignore[operator]


class _Reader:
    """Tensor slices of one safetensors file, cast the way sae-lens casts them."""

    def __init__(self, handle: Any, cfg_dtype: torch.dtype, dtype: torch.dtype) -> None:
        self.handle, self.cfg_dtype, self.dtype = handle, cfg_dtype, dtype
        self.keys = set(handle.keys())

    def _cast(self, name: str, t: Tensor) -> Tensor:
        t = t.to(self.cfg_dtype)
        if name == "log_threshold":
            t = torch.exp(t)
        return t.to(self.dtype)

    def _kept(self, name: str, t: Tensor) -> Tensor:
        """A tensor the coder keeps: its own memory. safetensors hands out views of the mapped
        file, and one kept view would keep the whole file mapped (every page the fingerprint
        read stays resident: 4.7 GB of RSS for four 65k layers, measured)."""
        return self._cast(name, t).clone()

    def stored(self, field: str) -> str:
        """The file's key for a coder field (older JumpReLU files store ``log_threshold``)."""
        if field in self.keys:
            return field
        if field == "threshold" and "log_threshold" in self.keys:
            return "log_threshold"
        raise RefusalEvalError(
            f"the SAE file has no {field!r} tensor (it has {sorted(self.keys)})",
            "point at a sae-lens SAE directory of the architecture its cfg.json names",
        )

    def columns(self, field: str, ids: Sequence[int]) -> Tensor:
        """``field[:, ids]`` of a ``d_in x d_sae`` matrix."""
        key = self.stored(field)
        sl = self.handle.get_slice(key)
        parts = [sl[:, a:b] for a, b in _contiguous_runs(ids)]
        rows = int(sl.get_shape()[0])
        return self._kept(key, torch.cat(parts, dim=1) if parts else torch.zeros(rows, 0))

    def rows(self, field: str, ids: Sequence[int]) -> Tensor:
        """``field[ids]`` of a per-latent vector or a ``d_sae x d_in`` matrix."""
        key = self.stored(field)
        sl = self.handle.get_slice(key)
        parts = [sl[a:b] for a, b in _contiguous_runs(ids)]
        if not parts:
            shape = [0, *sl.get_shape()[1:]]
            return self._kept(key, torch.zeros(shape))
        return self._kept(key, torch.cat(parts, dim=0))

    def whole(self, field: str) -> Tensor:
        key = self.stored(field)
        return self._kept(key, self.handle.get_tensor(key))

    def blocks(self, field: str) -> Iterator[Tensor]:
        """``field`` in blocks of rows (never the whole matrix at once)."""
        key = self.stored(field)
        sl = self.handle.get_slice(key)
        shape = [int(n) for n in sl.get_shape()]
        if len(shape) < 2:
            yield self._cast(key, sl[:])
            return
        step = max(1, _BLOCK_BYTES // (4 * max(1, shape[1])))
        for a in range(0, shape[0], step):
            yield self._cast(key, sl[a : a + step])


def read_latents(
    path: Path,
    cfg: Any,
    fields: tuple[str, ...],
    latent_fields: tuple[str, ...],
    ids: Sequence[int],
    dtype: torch.dtype,
    device: str,
) -> tuple[dict[str, Tensor], str]:
    """The tensors holding latents ``ids`` (sorted SAE ids) of the SAE in ``path``, and the
    whole SAE's weight fingerprint."""
    from sae_lens.util import str_to_dtype
    from safetensors import SafetensorError, safe_open

    file = path / WEIGHTS
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            reader = _Reader(handle, str_to_dtype(cfg.dtype), dtype)
            if "scaling_factor" in reader.keys:
                scale = reader.whole("scaling_factor")
                if not torch.all(scale == 1):
                    raise RefusalEvalError(
                        f"the SAE in {path} carries a finetuning scaling factor",
                        "load it whole (no latents=); refusal_eval does not fold scaling factors",
                    )
            d_sae = int(handle.get_slice(reader.stored("b_enc")).get_shape()[0])
            bad = [i for i in ids if not 0 <= i < d_sae]
            if bad:
                raise RefusalEvalError(
                    f"latent ids {bad[:5]} are out of range for the SAE in {path} (d_sae={d_sae})",
                    f"latent ids must be in 0..{d_sae - 1}",
                )
            tensors: dict[str, Tensor] = {}
            for name in fields:
                if name == "W_enc":
                    tensors[name] = reader.columns(name, ids)
                elif name == "W_dec" or name in latent_fields:
                    tensors[name] = reader.rows(name, ids)
                else:
                    tensors[name] = reader.whole(name)
            key = (fields, str(dtype), str(cfg.dtype))
            sha = _cached_sha256(file, key, lambda: _stream_sha256(reader, fields))
    except SafetensorError as exc:
        raise RefusalEvalError(
            f"the SAE weights in {path} are truncated or corrupt ({exc})",
            "re-download or re-copy sae_weights.safetensors (refusal-eval convert-sae writes a fresh one)",
        ) from None
    except OSError as exc:
        raise RefusalEvalError(
            f"cannot load the SAE in {path}: {exc.strerror or exc}",
            "point at a sae-lens directory with cfg.json and sae_weights.safetensors",
        ) from None
    return {k: v.to(device) for k, v in tensors.items()}, sha


def _stream_sha256(reader: _Reader, fields: tuple[str, ...]) -> str:
    """:meth:`SparseCoder.weights_sha256` of the whole file, one block of rows at a time."""
    import hashlib

    digest = hashlib.sha256()
    for name in fields:
        digest.update(name.encode())
        for block in reader.blocks(name):
            digest.update(block.to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


_HASH_CACHE_VERSION = 1


def _cached_sha256(file: Path, key: tuple[Any, ...], compute: Any) -> str:
    """The fingerprint, cached by the file's path, size, mtime and inode and by what the values
    depend on (fields, the load dtype, the config's dtype): hashing a 65k-wide SAE reads ~1.2 GB.
    A rewritten file normally gets a new entry; a same-size rewrite within the filesystem's mtime
    resolution onto the same inode would not, so ``refusal-eval cache clear sae_hashes`` after
    editing SAE files in place."""
    import hashlib

    st = file.stat()
    key_material = f"v{_HASH_CACHE_VERSION}|{file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{key}"
    entry = cache_dir("sae_hashes") / f"{hashlib.sha256(key_material.encode()).hexdigest()[:24]}.json"
    try:
        cached = json.loads(entry.read_text())
        if cached.get("key") == key_material and isinstance(cached.get("sha256"), str):
            return str(cached["sha256"])
    except (OSError, ValueError):
        pass
    sha = str(compute())
    atomic_write(entry, json.dumps({"key": key_material, "sha256": sha}))
    return sha
