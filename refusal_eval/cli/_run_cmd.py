"""``refusal-eval run ...``: a thin pass-through to ``lm_eval run`` with our defaults."""

from __future__ import annotations

import argparse
import sys

from ._registry import command

DEFAULTS = (("--model", "sae_ablated"), ("--tasks", "refusal_ablation"))


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments for `lm_eval run`")


def lm_eval_argv(args: list[str]) -> list[str]:
    """``lm_eval run`` argv with ``--model sae_ablated --tasks refusal_ablation`` unless given."""
    argv = list(args)
    for flag, value in DEFAULTS:
        if not any(a == flag or a.startswith(flag + "=") for a in argv):
            argv += [flag, value]
    return ["lm_eval", "run", *argv]


@command("run", "run lm-eval (defaults: --model sae_ablated --tasks refusal_ablation)")(_run_args)
def run_cmd(args: argparse.Namespace) -> int:
    from .. import _lm_eval_hook  # noqa: F401  (registers model + tasks even without the .pth)

    sys.argv = lm_eval_argv(args.lm_eval_args)
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
    return 0
