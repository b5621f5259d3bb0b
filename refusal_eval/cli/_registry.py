"""The ``refusal-eval`` subcommand registry: ``@command(name, help)(add_args)`` on ``fn(args) -> int``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .._registry import Registry

Command = Callable[[argparse.Namespace], int]
Entry = tuple[Command, Callable[[argparse.ArgumentParser], None], str]
COMMANDS: Registry[Entry] = Registry("refusal-eval command")


def command(name: str, help: str):
    """Register a subcommand: ``fn(args) -> exit code`` plus a function adding its arguments."""

    def wrap(add_args: Callable[[argparse.ArgumentParser], None]):
        def deco(fn: Command) -> Command:
            COMMANDS.add(name, (fn, add_args, help))
            return fn

        return deco

    return wrap
