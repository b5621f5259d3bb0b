"""``refusal-eval`` command line. Every user mistake exits 2 with one ``error: ... (fix: ...)`` line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import RefusalEvalError
from . import (  # noqa: F401  (register the commands)
    _config_cmds,
    _judge_cmds,
    _model_cmds,
    _outcome_cmds,
    _report_cmd,
    _run_cmd,
    _sae_cmds,
    _search_cmd,
)
from ._model_cmds import parse_ablation
from ._registry import COMMANDS, command

__all__ = ["build_parser", "command", "main", "parse_ablation"]


class _DefaultsFormatter(argparse.HelpFormatter):
    """``--help`` shows every option's default, unless its help already says it or it is unset."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unset = action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings
        if "default" in text or unset:
            return text
        return f"{text} (default: %(default)s)".strip()


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(prog="refusal-eval", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    parser.add_argument("--version", action="version", version=f"refusal-eval {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, add_args, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, formatter_class=_DefaultsFormatter)
        add_args(p)
        for action in p._actions:
            if not action.help and action.default not in (None, False, [], argparse.SUPPRESS):
                action.help = "(default: %(default)s)"  # argparse prints nothing for help=None
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
