"""Checkpoints of a ``train-sae`` run, so an interrupted run can be resumed (``--resume``).

sae-lens writes full checkpoints (weights, optimizer, activation-store position) under
``out/checkpoints/<run id>/<tokens seen>``; this module keeps only the newest, also writes one on
Ctrl-C / SIGTERM, and checks that a resumed run has the same settings (``out/train_state.json``).
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import RefusalEvalError
from ._config import TrainConfig

log = logging.getLogger(__name__)


TRAIN_STATE = "train_state.json"  # the config of an unfinished run in ``out`` (for --resume)
_COMPLETE = ("trainer_state.pt", "activations_store_state.safetensors", "cfg.json")
_MULTI_COMPLETE = ("activations_store_state.safetensors", "runner_cfg.json")


def run_settings(cfgs: Sequence[TrainConfig]) -> dict[str, Any]:
    """A run's settings as ``train_state.json`` keeps them: one SAE's config as it is; a
    multi-layer run's shared config with ``layers`` in place of ``layer``."""
    if len(cfgs) == 1:
        return dict(cfgs[0].__dict__)
    shared = {k: v for k, v in cfgs[0].__dict__.items() if k != "layer"}
    return {**shared, "layers": [c.layer for c in cfgs]}


def _state_body(cfgs: Sequence[TrainConfig], revision: str | None) -> dict[str, Any]:
    return {"version": 1, "model_revision": revision, "train_config": run_settings(cfgs)}


def write_train_state(out: Path, cfgs: Sequence[TrainConfig], revision: str | None) -> None:
    (out / TRAIN_STATE).write_text(json.dumps(_state_body(cfgs, revision), indent=2))


def _complete(d: Path) -> bool:
    """sae-lens writes the runner's files last: a single-SAE checkpoint holds the trainer state
    beside them, a multi-SAE one a folder per SAE (``<name>/trainer_state.pt``)."""
    if all((d / f).exists() for f in _COMPLETE):
        return True
    per_sae = [s for s in d.iterdir() if s.is_dir()]
    return (
        all((d / f).exists() for f in _MULTI_COMPLETE)
        and bool(per_sae)
        and all((s / "trainer_state.pt").exists() for s in per_sae)
    )


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete sae-lens checkpoints under ``out/checkpoints/<run id>/<tokens seen>``, oldest first."""
    found = [(int(d.name), d) for d in (out / "checkpoints").glob("*/*") if d.name.isdigit() and _complete(d)]
    return sorted(found)


def resume_point(out: Path, cfgs: Sequence[TrainConfig], revision: str | None) -> Path:
    """The newest checkpoint of an interrupted run of the same config and model."""
    state_file, found = out / TRAIN_STATE, checkpoints(out)
    if not state_file.exists() or not found:
        raise RefusalEvalError(
            f"--resume: {out} holds no checkpoint of an unfinished train-sae run",
            "run train-sae without --resume to start afresh",
        )
    try:
        saved = json.loads(state_file.read_text())
    except ValueError:
        raise RefusalEvalError(
            f"--resume: {state_file} is corrupt", f"delete {out} and start afresh"
        ) from None
    old = saved.get("train_config", {})
    new = json.loads(json.dumps(run_settings(cfgs)))  # as JSON stores it (tuples -> lists)
    diff = sorted(k for k in {**old, **new} if old.get(k) != new.get(k))
    if saved.get("model_revision") != revision:
        diff.append("model")
    if diff:
        raise RefusalEvalError(
            f"--resume: the checkpoint in {out} was trained with other settings ({', '.join(diff)})",
            "pass the same arguments as the interrupted run, or start afresh without --resume",
        )
    n, path = found[-1]
    log.info("resuming from %s (%d tokens done)", path, n)
    return path


def checkpointing_runner(base: type) -> type:
    """sae-lens' runner, with complete checkpoints on interrupt and only the newest one kept
    (sae-lens 6 saves only the activation-store state on Ctrl-C, into a missing folder)."""

    class Runner(base):  # type: ignore[misc]
        def save_checkpoint(self, checkpoint_path: Path | None) -> None:
            if checkpoint_path is None:
                return
            checkpoint_path.mkdir(parents=True, exist_ok=True)
            super().save_checkpoint(checkpoint_path)
            _prune_older(checkpoint_path)

        def run_trainer_with_interruption_handling(self, trainer: Any) -> Any:
            in_main = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main else None
            done = trainer.n_training_samples  # > 0 when resumed: skip the thresholds already passed
            trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= done]
            try:
                return trainer.fit()
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM turned into one above
                log.warning("interrupted: saving a checkpoint; rerun with --resume to continue")
                trainer.save_checkpoint(checkpoint_name=str(trainer.n_training_samples))
                raise
            finally:
                if in_main:
                    signal.signal(signal.SIGTERM, previous)

    return Runner


def _prune_older(checkpoint_path: Path) -> None:
    for _, old in checkpoints(checkpoint_path.parents[2]):  # out/checkpoints/<run id>/<n>
        if old != checkpoint_path:
            shutil.rmtree(old, ignore_errors=True)


def checkpointing_multi_runner() -> type:
    """sae-lens' multi-SAE runner with the single runner's habits: only the newest checkpoint
    kept, thresholds already passed skipped on resume, the signal handlers it installs put back
    afterwards, and an interrupt surfacing as KeyboardInterrupt (after its checkpoint)."""
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner
    from sae_lens.training._interruption import InterruptedException

    class Runner(MultiSAETrainingRunner):  # type: ignore[misc]
        def _save_runner_checkpoint_files(self, checkpoint_path: Path | None) -> None:
            super()._save_runner_checkpoint_files(checkpoint_path)
            if checkpoint_path is not None:
                _prune_older(checkpoint_path)

        def _run_with_interruption_handling(self, trainer: Any) -> Any:
            done = trainer.n_training_samples
            trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= done]
            previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                return super()._run_with_interruption_handling(trainer)
            except InterruptedException:  # SIGINT / SIGTERM, checkpoint written
                log.warning("interrupted: saved a checkpoint; rerun with --resume to continue")
                raise KeyboardInterrupt from None
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Runner
