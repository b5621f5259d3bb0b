"""Where refusal_eval keeps converted models, plans and other derived artifacts.

``REFUSAL_EVAL_CACHE`` wins; otherwise ``$XDG_CACHE_HOME/refusal_eval`` (``~/.cache`` by default).
Writers build into a sibling temporary directory and rename it into place, so an interrupted
write never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cache_root() -> Path:
    env = os.environ.get("REFUSAL_EVAL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "refusal_eval"


def cache_dir(*parts: str) -> Path:
    """A directory under the cache root (created)."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def cache_lock(path: Path, what: str = "") -> Iterator[None]:
    """An inter-process lock on ``path`` (a ``.lock`` file beside it): a second process that
    wants the same cache entry waits for the first instead of building it again."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("waiting for another process %s (%s)", what or "using the cache", path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def file_digest(path: Path, algorithm: str = "xxh3_64") -> str:
    """``xxh3_64`` (fast: checked on every load) or ``sha256`` (full verification) of a file."""
    import hashlib

    import xxhash

    h = xxhash.xxh3_64() if algorithm == "xxh3_64" else hashlib.new(algorithm)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``path`` all at once: a uniquely named sibling temp file renamed into place, removed
    if the write fails (a full disk leaves the previous file intact and no orphan behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain write honours the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class StageCache:
    """A resumable run's finished steps (the search's stages, its chunks and verification runs):
    canonical JSON files under one directory; writes are atomic, unreadable files are recomputed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.hits = self.writes = 0  # entries read back / computed and written (a run's cost record)

    def get(self, name: str) -> Any | None:
        path = self.root / f"{name}.json"
        if not path.exists():
            return None
        try:
            value = json.loads(path.read_text())
            self.hits += 1
            return value
        except ValueError:
            log.warning("discarding unreadable stage cache %s", path)
            path.unlink()
            return None

    def put(self, name: str, value: Any) -> Any:
        path = self.root / f"{name}.json"
        from ._codec import canonical_json

        atomic_write(path, canonical_json(value))
        self.writes += 1
        return json.loads(path.read_text())  # hand back exactly what a resumed run would read

    def cached(self, name: str, compute: Callable[[], Any]) -> Any:
        hit = self.get(name)
        return hit if hit is not None else self.put(name, compute())
