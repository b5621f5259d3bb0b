"""``refusal-eval search``: the three-stage search, written as an ablation plan."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import RefusalEvalError
from ._registry import command


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="registered name, local HF dir, .gguf, or hub id")
    p.add_argument("--saes", required=True, help="shipped release, local sae-lens dir, or sae-lens release")
    p.add_argument("--layers", type=int, nargs="*", default=None, help="SAE layers to search (default: all)")
    p.add_argument("--config", default=None, help="TOML/JSON search config (see default_config.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--harmful", default=None, help="harmful prompt set (default: harmful_train)")
    p.add_argument("--harmless", default=None, help="harmless prompt set (default: harmless_train)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, help="PLAN.json (tensors go to PLAN.safetensors)")


@command("search", "stage 1-3 search for the latents behind refusal; writes an ablation plan")(_search_args)
def search_cmd(args: argparse.Namespace) -> int:
    from ..config import load_config, parse_overrides
    from ..models import load_model
    from ..saes import load_saes
    from ..search.pipeline import search_to_file, summary

    overrides: dict[str, object] = parse_overrides(args.overrides)
    for key in ("harmful", "harmless"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    cfg = load_config(args.config, overrides)
    out = Path(args.out)
    if out.suffix != ".json":
        raise RefusalEvalError(f"--out {out} must end in .json", "pass e.g. --out plan.json")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RefusalEvalError(
            f"cannot create {out.parent}: {exc.strerror}", "choose a writable --out"
        ) from None
    t0 = time.perf_counter()
    chat = load_model(args.model, dtype=args.dtype, device=args.device)
    saes = load_saes(args.saes, layers=args.layers, model=chat)
    body, plan_hash = search_to_file(chat, saes, cfg, out)
    print(summary(body, plan_hash))
    print(
        f"wrote {out} and {out.with_suffix('.safetensors').name} in {time.perf_counter() - t0:.0f}s",
        file=sys.stderr,
    )
    return 0
