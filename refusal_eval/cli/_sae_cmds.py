"""SAE commands: the stage-1 layer scan, train-sae, sae-report."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import RefusalEvalError
from ._registry import command, load_cli_model, model_flags


def _directions_args(p: argparse.ArgumentParser) -> None:
    model_flags(p)
    p.add_argument("--n", type=int, default=32, help="prompts per side (harmful / harmless)")
    p.add_argument("--harmful", default="harmful_train")
    p.add_argument("--harmless", default="harmless_train")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=None, help="write per-layer scores as JSON")


@command("directions", "stage-1 scan: refusal direction per layer, ablation effect, harmless KL")(
    _directions_args
)
def directions(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..config import SearchConfig
    from ..data import load_prompts
    from ..scoring import refusal_token_ids
    from ..search.direction import layer_scan

    if args.n < 1:
        raise RefusalEvalError(f"--n must be at least 1, got {args.n}", "pass --n 32")
    if args.batch_size < 1:
        raise RefusalEvalError(
            f"--batch-size must be at least 1, got {args.batch_size}", "pass --batch-size 16"
        )
    cfg = SearchConfig()
    chat = load_cli_model(args)
    harmful = [p.text for p in load_prompts(args.harmful)[: args.n]]
    harmless = [p.text for p in load_prompts(args.harmless)[: args.n]]
    ids = refusal_token_ids(chat.tokenizer, chat.refusal_tokens)
    scan = layer_scan(
        chat.model,
        chat.tokenizer,
        harmful,
        harmless,
        ids,
        select_prompts=args.n,
        max_kl=cfg.max_kl,
        max_depth_frac=cfg.max_depth_frac,
        min_drop_frac=cfg.min_drop_frac,
        batch_size=args.batch_size,
        progress=True,
        score_all=True,  # the report shows every layer, the ineligible deep ones too
    )
    choice = scan.choice
    print(f"baseline harmful refusal score {choice.baseline_score:.2f}")
    print("layer  refusal_score_ablated  harmless_kl  |r|/|x|")
    for s in scan.scores:
        mark = f"  <- selected ({choice.selected_by})" if s.layer == choice.layer else ""
        print(f"{s.layer:5d}  {s.refusal_score:21.2f}  {s.harmless_kl:11.4f}  {s.norm_ratio:7.3f}{mark}")
    if args.out:
        payload = {
            "model": chat.spec,
            "revision": chat.revision,
            "n": args.n,
            "baseline_refusal_score": choice.baseline_score,
            "selected": choice.layer,
            "selected_by": choice.selected_by,
            "layers": [asdict(s) for s in scan.scores],
        }
        with open(args.out, "w") as fh:
            json.dump(payload, fh, indent=1)
    return 0


def _layers(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer or layers like 4,8,12, got {text!r}") from None


def _train_args(p: argparse.ArgumentParser) -> None:
    model_flags(p)
    p.add_argument(
        "--layer", type=_layers, required=True,
        help="layer, or comma-separated layers trained together from one forward (-> OUT/layer_L/)",
    )  # fmt: skip
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--arch", choices=["topk", "jumprelu", "standard"], default="topk")
    p.add_argument("--k", type=int, default=64, help="active latents per token (topk)")
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dead-window", type=int, default=10, help="steps before a silent latent counts as dead")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--aux-coef", type=float, default=1.0, help="TopK aux-loss weight")
    p.add_argument("--batch-tokens", type=int, default=2048, help="tokens per training step")
    p.add_argument("--max-harmless", type=int, default=None, help="cap harmless train prompts")
    p.add_argument("--answered", type=int, default=256, help="prompts the model answers for the corpus")
    p.add_argument("--checkpoints", type=int, default=4, help="full checkpoints per run (newest kept)")
    p.add_argument("--autocast", action="store_true", help="bf16 mixed precision for the SAE steps")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--out", required=True)


_TRAIN_HELP = "train residual-stream SAEs (one layer, or several from one forward) with the sae-lens trainer"


@command("train-sae", _TRAIN_HELP)(_train_args)
def train_sae_cmd(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from ..saes import (
        CorpusConfig,
        TrainConfig,
        build_corpus,
        check_same_run,
        check_train_args,
        resume_point,
        train_sae,
        train_saes,
    )

    shared = TrainConfig(
        layer=args.layer[0], width=args.width, arch=args.arch, tokens=args.tokens, k=args.k, seed=args.seed,
        dead_feature_window=args.dead_window, lr=args.lr, batch_tokens=args.batch_tokens,
        n_checkpoints=args.checkpoints, aux_coefficient=args.aux_coef, autocast=args.autocast,
    )  # fmt: skip
    cfgs = [replace(shared, layer=layer) for layer in args.layer]
    out = Path(args.out)
    chat = load_cli_model(args)
    check_same_run(cfgs)
    for cfg in cfgs:
        check_train_args(cfg, chat.n_layers, out)
    if args.resume:
        resume_point(out, cfgs, chat.revision)  # fail before the corpus is built
    t0 = time.perf_counter()
    corpus = build_corpus(chat, CorpusConfig(n_answered=args.answered, max_harmless=args.max_harmless))
    n_tok = sum(map(len, corpus))
    print(
        f"corpus: {len(corpus)} sequences, {n_tok} tokens ({time.perf_counter() - t0:.0f}s)", file=sys.stderr
    )
    t1 = time.perf_counter()
    if len(cfgs) == 1:
        written = [train_sae(chat, corpus, cfgs[0], out, resume=args.resume)]
    else:
        written = list(train_saes(chat, corpus, cfgs, out, resume=args.resume).values())
    where = ", ".join(map(str, written))
    print(
        f"trained {args.arch} SAE (width {args.width}) on layer {','.join(map(str, args.layer))} over "
        f"{args.tokens} tokens in {time.perf_counter() - t1:.0f}s -> {where}"
    )
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sae", help="sae-lens SAE directory (or folder of them) or a shipped release")
    model_flags(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default=None, help="also write the numbers as JSON")


@command("sae-report", "SAE quality on held-out chat text: FVE, L0, dead latents, spliced CE")(_report_args)
def sae_report_cmd(args: argparse.Namespace) -> int:
    from ..saes import heldout_texts, load_saes, sae_qualities

    chat = load_cli_model(args)
    saes = load_saes(args.sae, model=chat)
    texts = heldout_texts(chat)
    coders = [saes[layer] for layer in saes.layers]
    rows = [q.to_dict() for q in sae_qualities(chat, coders, texts, batch_size=args.batch_size)]
    print("| layer | arch | d_sae | tokens | FVE | L0 | dead | CE clean | CE spliced |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['layer']} | {r['architecture']} | {r['d_sae']} | {r['n_tokens']} | {r['fve']:.3f} "
            f"| {r['mean_l0']:.1f} | {r['dead_fraction']:.3f} | {r['ce_clean']:.3f} | {r['ce_spliced']:.3f} |"
        )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(
                {"model": chat.spec, "revision": chat.revision, "sae": args.sae, "layers": rows}, fh, indent=1
            )
    return 0


def _firing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sae", help="sae-lens SAE directory (or folder of them) or a shipped release")
    model_flags(p)
    p.add_argument(
        "--prompts", default="harmless_val,harmless_test", help="held-out prompt sets, read in order"
    )
    p.add_argument("--tokens", type=int, default=262_144, help="token budget (position 0 not counted)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None, help="also write the numbers (and per-latent counts) as JSON")


@command("sae-firing", "how often each latent fires on a long held-out text: dead and rare shares")(
    _firing_args
)
def sae_firing_cmd(args: argparse.Namespace) -> int:
    from ..saes import RARE, firing_counts, firing_summary, heldout_prompts, load_saes

    if args.tokens < 1 or args.batch_size < 1:
        raise RefusalEvalError(
            f"--tokens and --batch-size must be at least 1, got {args.tokens} and {args.batch_size}",
            "pass e.g. --tokens 262144 --batch-size 32",
        )
    names = _names(args.prompts)  # before the model loads
    chat = load_cli_model(args)
    saes = load_saes(args.sae, model=chat)
    sequences = heldout_prompts(chat, names, args.tokens)
    coders = [saes[layer] for layer in saes.layers]
    counts, n_tokens = firing_counts(chat, coders, sequences, batch_size=args.batch_size)
    rows = [firing_summary(layer, counts[layer], n_tokens).to_dict() for layer in sorted(counts)]
    print(f"{n_tokens} held-out tokens ({len(sequences)} prompts of {args.prompts}); rare: fired, < {RARE:g}")
    print("| layer | d_sae | dead | rare | median frequency |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['layer']} | {r['d_sae']} | {r['dead_fraction']:.3f} | {r['rare_fraction']:.3f} "
            f"| {r['median_frequency']:.2e} |"
        )
    if args.out:
        payload = {
            "model": chat.spec, "revision": chat.revision, "sae": args.sae, "prompts": args.prompts,
            "n_prompts": len(sequences), "n_tokens": n_tokens, "rare_below": RARE, "layers": rows,
            "counts": {str(layer): counts[layer].tolist() for layer in sorted(counts)},
        }  # fmt: skip
        with open(args.out, "w") as fh:
            json.dump(payload, fh)
    return 0


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise RefusalEvalError(f"--prompts names no prompt set: {text!r}", "pass e.g. --prompts harmless_val")
    return names


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sae", help="sae-lens SAE directory (or folder of them)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    p.add_argument("--out", required=True, help="output folder (one layer_L/ sub-folder per SAE)")


@command("convert-sae", "re-save SAEs as sae-lens dirs in another dtype (e.g. fp16 to ship them)")(
    _convert_args
)
def convert_sae_cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..saes import load_saes, to_sae_lens

    saes = load_saes(args.sae)
    for layer in saes.layers:
        out = Path(args.out) / f"layer_{layer}"
        to_sae_lens(saes[layer], getattr(torch, args.dtype)).save_model(str(out))
        print(f"layer {layer}: {saes[layer].d_sae} latents -> {out}")
    return 0
