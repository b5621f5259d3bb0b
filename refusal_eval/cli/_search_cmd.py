"""``refusal-eval search``: the three-stage search, written as an ablation plan."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import RefusalEvalError
from ..search.engines import GENERATE_WITH, pick_generate_with
from ._registry import check_writable, command, load_cli_model, model_flags


def _search_args(p: argparse.ArgumentParser) -> None:
    model_flags(p)
    p.add_argument(
        "--saes",
        default=None,
        help="shipped release, local sae-lens dir, or sae-lens release (default: the registered "
        "model's own release, its plan's layers and search settings, e.g. qwen2.5-coder-0.5b-instruct-res-2k "
        "6-20 with top_k=20, n_harmful=64)",
    )
    p.add_argument("--layers", type=int, nargs="*", default=None, help="SAE layers to search (default: all)")
    p.add_argument(
        "--sae-ids", default=None, metavar="TEMPLATE",
        help="a hub release's id per layer, e.g. 'layer_{layer}/width_65k/canonical' (default: picked)",
    )  # fmt: skip
    p.add_argument("--config", default=None, help="TOML/JSON search config (see default_config.toml)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="one search config key, e.g. --set tau=0.5 (repeatable)",
    )  # fmt: skip
    p.add_argument("--harmful", default=None, help="harmful prompt set (default: harmful_train)")
    p.add_argument("--harmless", default=None, help="harmless prompt set (default: harmless_train)")
    p.add_argument("--out", required=True, help="PLAN.json (tensors go to PLAN.safetensors)")
    p.add_argument("--no-cards", action="store_true", help="skip the latent cards (PLAN.cards.md)")
    p.add_argument(
        "--generate-with", choices=GENERATE_WITH, default="auto",
        help="engine for the search's generations (screening, verification): auto takes vllm when "
        "it is installed on a host without CUDA (the vLLM venv, docs/vllm.md), else hf. Scores and "
        "activations always run on HF. Not part of the plan key.",
    )  # fmt: skip
    p.add_argument(
        "--stream-saes", action="store_true",
        help="hold one whole SAE layer at a time and only the ablated latents' rows of the others "
        "(many wide JumpReLU/ReLU SAEs; each layer is read a few times). Same plan, same key.",
    )  # fmt: skip


@command("search", "stage 1-3 search for the latents behind refusal; writes an ablation plan")(_search_args)
def search_cmd(args: argparse.Namespace) -> int:
    from ..config import load_config, parse_overrides
    from ..report.plan_summary import summary
    from ..saes import is_local_source, load_saes, stream_saes
    from ..search.pipeline import cost_path, search_to_file

    overrides: dict[str, object] = dict(parse_overrides(args.overrides))
    for key in ("harmful", "harmless"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    cfg = load_config(args.config, overrides)  # checked before the model loads; again below
    generate_with = pick_generate_with(args.generate_with, stream_saes=args.stream_saes)
    out = Path(args.out)
    if out.suffix != ".json":
        raise RefusalEvalError(f"--out {out} must end in .json", "pass e.g. --out plan.json")
    check_writable(out.parent)  # before a search that may run for an hour
    t0 = time.perf_counter()
    chat = load_cli_model(args)
    release = args.saes or chat.info.get("default_saes")
    if not release:
        raise RefusalEvalError(
            f"{args.model} is not a registered model with its own SAEs", "pass --saes RELEASE_OR_DIR"
        )
    layers = args.layers if args.layers is not None or args.saes else chat.info.get("default_sae_layers")
    cfg = load_config(args.config, overrides, model_defaults=chat.search_defaults(args.saes, args.layers))
    if args.stream_saes:
        # which layers there are, from SAEs holding no latents (no layer is read whole for this)
        found = load_saes(release, layers=layers, ids=args.sae_ids, latents={}, model=chat)
        hub_ids = None if is_local_source(release) else [found.ids[x] for x in found.layers]
        found_layers = found.layers
        del found  # a TopK release holds its layers whole even with no latents asked for
        saes: Any = stream_saes(release, found_layers, hub_ids, model=chat)
    else:
        saes = load_saes(release, layers=layers, ids=args.sae_ids, model=chat)
    generator = None
    if generate_with == "vllm":
        from ..vllm_backend import start_generator

        generator = start_generator(chat, saes)
    body, plan_hash = search_to_file(chat, saes, cfg, out, generator=generator)
    print(summary(body, plan_hash))
    if not args.no_cards:
        from ..report.cards import write_cards
        from ..search.plan import AblationPlan

        print(f"latent cards: {write_cards(AblationPlan.load(out), chat, saes, batch_size=cfg.batch_size)}")
    print(
        f"wrote {out}, {out.with_suffix('.safetensors').name} and {cost_path(out).name} (per-stage "
        f"time, forwards, tokens) in {time.perf_counter() - t0:.0f}s",
        file=sys.stderr,
    )
    return 0


def _plan_model_saes(
    args: argparse.Namespace, latents: Callable[[Any], Mapping[int, Sequence[int]]] | None = None
) -> tuple[Any, Any, Any]:
    """The plan ``args.plan``, its model and its SAEs (the ids it was searched with), checked to
    fit it; ``latents(plan)`` picks what the SAEs hold (None: every latent)."""
    from ..saes import load_saes
    from ..search.plan import AblationPlan, sae_weights_hash

    plan = AblationPlan.load(args.plan)
    chat = load_cli_model(args, args.model or plan.body.model.spec)
    source, layers = args.saes or plan.sae_source, sorted(plan.sae_layer_ids)
    ids = plan.sae_ids_for(source, layers)
    held = latents(plan) if latents is not None else None
    saes = load_saes(source, layers=layers, ids=ids, latents=held, model=chat)
    plan.check_fits(
        {"name": chat.info.get("name", chat.spec), "revision": chat.revision},
        {layer: sae_weights_hash(c) for layer, c in saes.items()},
    )
    return plan, chat, saes


def _cards_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", help="PLAN.json written by refusal-eval search")
    model_flags(p, default=None, help="the plan's model (default: the spec it records)")
    p.add_argument("--saes", default=None, help="the plan's SAEs (default: the source it records)")
    p.add_argument("--n-corpus", type=int, default=256, help="SAE-corpus prompts sampled for contexts")


@command("cards", "latent cards (top contexts, cosine, minimal-set counts) for a plan's latents")(_cards_args)
def cards_cmd(args: argparse.Namespace) -> int:
    from ..report.cards import write_cards

    if args.n_corpus < 0:
        raise RefusalEvalError(f"--n-corpus must be >= 0, got {args.n_corpus}", "pass --n-corpus 256")
    plan, chat, saes = _plan_model_saes(args)
    print(write_cards(plan, chat, saes, n_corpus=args.n_corpus))
    return 0


def _positions_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", help="PLAN.json written by refusal-eval search")
    model_flags(p, default=None, help="the plan's model (default: the spec it records)")
    p.add_argument("--saes", default=None, help="the plan's SAEs (default: the source it records)")
    p.add_argument("--condition", default="sae", help="whose latents: sae, sae_fm or random")
    p.add_argument("--prompts", default="harmful_val", help="a shipped prompt set or a local file")
    p.add_argument("--n", type=int, default=32, help="prompts (the first N of the set)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="baseline answer length")
    p.add_argument("--out", default=None, help="write the report as JSON here")


@command("positions", "where a plan's latents fire: system / template / user / generated positions")(
    _positions_args
)
def positions_cmd(args: argparse.Namespace) -> int:
    import json

    from ..data import load_prompts
    from ..report.positions import firing_by_position, positions_table

    if args.n < 1 or args.max_new_tokens < 0:
        raise RefusalEvalError(
            f"--n must be >= 1 and --max-new-tokens >= 0, got {args.n} and {args.max_new_tokens}",
            "pass e.g. --n 32 --max-new-tokens 32",
        )
    if args.out:
        check_writable(Path(args.out).parent)
    plan, chat, saes = _plan_model_saes(args, lambda plan: plan.latent_sets(args.condition))
    latents = plan.latent_sets(args.condition)
    prompts = [p.text for p in load_prompts(args.prompts)[: args.n]]
    report = firing_by_position(chat, saes, latents, prompts, max_new_tokens=args.max_new_tokens)
    report.update(plan=str(args.plan), condition=args.condition, prompt_set=args.prompts)
    print(positions_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _minimality_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", help="PLAN.json written by refusal-eval search")
    model_flags(p, default=None, help="the plan's model (default: the spec it records)")
    p.add_argument("--saes", default=None, help="the plan's SAEs (default: the source it records)")
    p.add_argument("--out", default=None, help="write the report as JSON here")


@command("minimality", "check a plan's minimal sets: 1-minimality and seed (block-order) agreement")(
    _minimality_args
)
def minimality_cmd(args: argparse.Namespace) -> int:
    import json

    from ..search.minimality import check_plan

    if args.out:
        check_writable(Path(args.out).parent)
    plan, chat, saes = _plan_model_saes(args, lambda plan: plan.held_latents())
    report = check_plan(chat, saes, plan)
    one, seeds = report["one_minimality"], report["seed_agreement"]
    print(
        f"1-minimal: {one['one_minimal_share']:.3f} of {one['prompts']} sets; needed latents "
        f"{one['needed_latent_share']:.3f} of {one['latents_tested']} (tau {report['tau']})\n"
        f"seed agreement: pairwise Jaccard {seeds['mean_pairwise_jaccard']:.3f}, seed vs minimal "
        f"{seeds['mean_seed_to_minimal_jaccard']:.3f}, identical {seeds['share_identical']:.3f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _upgrade_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", help="a PLAN.json of an older format (its .safetensors beside it)")
    p.add_argument("--out", required=True, help="where to write the current-format plan")


@command("upgrade-plan", "rewrite an older plan in the current format (no search; re-keyed)")(_upgrade_args)
def upgrade_cmd(args: argparse.Namespace) -> int:
    from ..search.plan import VERSION
    from ..search.upgrade import upgrade_plan

    check_writable(Path(args.out).parent)
    old, digest, rekeyed = upgrade_plan(args.plan, args.out)
    print(f"plan version {old} -> {VERSION}: wrote {args.out} (sha256 {digest[:16]})")
    if old != VERSION and not rekeyed:
        print(
            "its recorded inputs do not give its key (searched before later config keys existed): "
            "plan=auto will not find it, pass plan=PATH",
            file=sys.stderr,
        )
    return 0
