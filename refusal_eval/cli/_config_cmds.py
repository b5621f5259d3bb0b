"""``refusal-eval config`` and ``refusal-eval cache``: what the search will use, and where
derived artifacts live."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..errors import RefusalEvalError
from ._registry import command

#: cache folders refusal_eval writes, with what each holds
CACHE_KINDS = {
    "models": "converted offline models (bf16 safetensors + manifest)",
    "plans": "plans found by plan=auto searches",
    "search": "resumable search stages",
    "corpora": "SAE training text",
    "heldout": "sae-report held-out text",
    "judges": "judge heads / thresholds you trained or calibrated",
}


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="TOML/JSON search config to merge (as search does)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="one search config key, e.g. --set tau=0.5 (repeatable)",
    )  # fmt: skip
    p.add_argument("--defaults", action="store_true", help="print the commented default config file")
    p.add_argument(
        "--model", default=None, metavar="NAME",
        help="a registered offline model: add the search settings it registers for its own SAEs "
        "(what refusal-eval search --model NAME and pretrained=NAME use); no model is loaded",
    )  # fmt: skip


@command(
    "config",
    "print the resolved search config (defaults < --model's registered settings < file < env < "
    "--set) and the cache root",
)(_config_args)
def config_cmd(args: argparse.Namespace) -> int:
    from .._cache import cache_root
    from ..config import DEFAULT_CONFIG_FILE, load_config, parse_overrides

    if args.defaults:
        print(DEFAULT_CONFIG_FILE.read_text(), end="")
        return 0
    model_defaults: dict[str, object] = {}
    if args.model is not None:
        from ..models import offline_model, offline_model_names

        registered = offline_model(args.model)
        if registered is None:
            raise RefusalEvalError(
                f"--model {args.model} is not a registered offline model",
                f"name one of {', '.join(offline_model_names())} (or 'default')",
            )
        model_defaults = dict(registered.default_search)
        print(f"# {registered.name} with {registered.default_saes}: {model_defaults or 'no own settings'}")
    cfg = load_config(args.config, parse_overrides(args.overrides), model_defaults=model_defaults)
    print(f"# cache root: {cache_root()}  (REFUSAL_EVAL_CACHE overrides it)")
    for key, value in cfg.to_dict().items():
        print(f"{key} = {value!r}")
    return 0


def _cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "clear"], help="list: sizes per kind; clear: delete")
    p.add_argument("kinds", nargs="*", help=f"kinds to clear (default: all): {', '.join(CACHE_KINDS)}")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@command("cache", "list or clear refusal_eval's cache (converted models, plans, search stages, ...)")(
    _cache_args
)
def cache_cmd(args: argparse.Namespace) -> int:
    from .._cache import cache_root

    root = cache_root()
    unknown = sorted(set(args.kinds) - set(CACHE_KINDS))
    if unknown:
        raise RefusalEvalError(f"unknown cache kind(s) {unknown}", f"use any of {', '.join(CACHE_KINDS)}")
    if args.action == "list":
        print(f"cache root: {root}")
        for kind, what in CACHE_KINDS.items():
            path = root / kind
            size = _size(path) if path.is_dir() else 0
            print(f"{kind:8s} {size / 2**20:10.1f} MiB  {what}")
        return 0
    for kind in args.kinds or list(CACHE_KINDS):
        path = root / kind
        if path.is_dir():
            shutil.rmtree(path)
            print(f"cleared {path}")
    return 0
