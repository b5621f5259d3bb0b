"""``refusal-eval`` command line. Every user mistake exits 2 with one ``error: ... (fix: ...)`` line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import RefusalEvalError
from . import _judge_cmds, _model_cmds, _report_cmd, _run_cmd, _sae_cmds, _search_cmd  # noqa: F401
from ._model_cmds import parse_ablation
from ._registry import COMMANDS, command

__all__ = ["build_parser", "command", "main", "parse_ablation"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refusal-eval", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, add_args, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except RefusalEvalError as exc:
        print(f"refusal-eval: error: {exc.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refusal-eval: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
