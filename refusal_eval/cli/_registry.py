"""The ``refusal-eval`` subcommand registry: ``@command(name, help)(add_args)`` on ``fn(args) -> int``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._registry import Registry

if TYPE_CHECKING:
    from ..models import ChatModel

Command = Callable[[argparse.Namespace], int]
Entry = tuple[Command, Callable[[argparse.ArgumentParser], Any], str]
COMMANDS: Registry[Entry] = Registry("refusal-eval command")


AddArgs = Callable[[argparse.ArgumentParser], Any]


def command(name: str, help: str) -> Callable[[AddArgs], Callable[[Command], Command]]:
    """Register a subcommand: ``fn(args) -> exit code`` plus a function adding its arguments."""

    def wrap(add_args: AddArgs) -> Callable[[Command], Command]:
        def deco(fn: Command) -> Command:
            COMMANDS.add(name, (fn, add_args, help))
            return fn

        return deco

    return wrap


def model_flags(
    p: argparse.ArgumentParser, *, default: str | None = "default", help: str | None = None
) -> None:
    """The model flags every command that loads a model shares."""
    p.add_argument(
        "--model",
        default=default,
        help=help or "registered name (default: the default model), local HF dir, .gguf file, or hub id",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bfloat16", "float16", "float32"],
        help="default: auto (bf16 on GPUs and CPUs with native bf16, else fp32)",
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)"
    )


def check_writable(folder: Path) -> None:
    """Fail now, not after a long run, if ``folder`` cannot be created or written."""
    import tempfile

    from ..errors import RefusalEvalError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise RefusalEvalError(
            f"cannot write to {folder}: {exc.strerror}", "choose a writable --out"
        ) from None


def load_cli_model(args: argparse.Namespace, spec: str | None = None) -> ChatModel:
    """Load ``--model`` (or ``spec``) with ``--dtype`` / ``--device``; a CUDA device on a machine
    without CUDA is one clear error, not a traceback."""
    import torch

    from ..errors import RefusalEvalError
    from ..models import load_model

    device = args.device
    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise RefusalEvalError(f"--device {device} was given but CUDA is not available", "pass --device cpu")
    return load_model(spec or args.model, dtype=args.dtype, device=device)
