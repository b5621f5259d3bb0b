"""``refusal-eval`` command line. Every user mistake exits 2 with one ``error: ... (fix: ...)`` line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources

from .errors import RefusalEvalError

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Command, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str):
    """Register a subcommand: ``fn(args) -> exit code`` plus a function adding its arguments."""

    def wrap(add_args: Callable[[argparse.ArgumentParser], None]):
        def deco(fn: Command) -> Command:
            _COMMANDS[name] = (fn, add_args, help)
            return fn

        return deco

    return wrap


def parse_ablation(items: Sequence[str]) -> dict[int, list[int]]:
    """``["12:5,17", "14:3"]`` -> ``{12: [5, 17], 14: [3]}``."""
    out: dict[int, list[int]] = {}
    for item in items:
        layer, sep, ids = item.partition(":")
        try:
            if not sep:
                raise ValueError
            out.setdefault(int(layer), []).extend(int(i) for i in ids.split(",") if i.strip())
        except ValueError:
            raise RefusalEvalError(
                f"cannot parse --ablate {item!r}", "write LAYER:ID,ID,... e.g. --ablate 12:5,17"
            ) from None
    return out


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="default", help="registered name (default), local HF dir, .gguf file, or hub id"
    )
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default=None)
    p.add_argument("--saes", default=None, help="shipped release, local sae-lens dir, or release")
    p.add_argument(
        "--ablate",
        nargs="*",
        default=[],
        metavar="LAYER:IDS",
        help="zero-ablate these latents, e.g. 12:5,17 14:3",
    )
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)


def _load(args: argparse.Namespace):
    from .models import load_model
    from .saes import load_saes

    sets = parse_ablation(args.ablate)
    if sets and not args.saes:
        raise RefusalEvalError("--ablate needs SAEs", "pass --saes RELEASE_OR_DIR")
    t0 = time.perf_counter()
    chat = load_model(args.model, dtype=args.dtype, device=args.device)
    print(f"loaded {chat.spec} from {chat.source} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    saes = load_saes(args.saes, layers=sorted(sets) or None, model=chat) if args.saes else None
    return chat, saes, sets


def _run(chat, saes, sets, prompts: Sequence[str], args: argparse.Namespace) -> list[str]:
    from .ablation import ablate
    from .chat import generate

    def go() -> list[str]:
        return generate(
            chat.model,
            chat.tokenizer,
            prompts,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )

    if not sets:
        return go()
    with ablate(chat.model, sets, saes):
        return go()


@command("demo", "generate on 8 harmful + 8 harmless built-in prompts and count refusals")(_model_args)
def demo(args: argparse.Namespace) -> int:
    from .judges import get_judge

    data = json.loads((resources.files("refusal_eval") / "data" / "demo_prompts.json").read_text())
    chat, saes, sets = _load(args)
    judge = get_judge("keyword")
    counts: dict[str, int] = {}
    for kind in ("harmful", "harmless"):
        prompts = data[kind]
        answers = _run(chat, saes, sets, prompts, args)
        verdict = judge(prompts, answers)
        counts[kind] = sum(verdict.refused)
        print(f"\n## {kind}")
        for prompt, answer, refused in zip(prompts, answers, verdict.refused, strict=True):
            flag = "REFUSED " if refused else "complied"
            print(f"[{flag}] {prompt[:60]!r} -> {answer[:70]!r}")
    print(
        f"\nrefused {counts['harmful']}/8 harmful and {counts['harmless']}/8 harmless prompts"
        + (f" with ablation {sets}" if sets else "")
    )
    return 0


@command("generate", "greedy answers to your prompts, optionally with latents ablated")(
    lambda p: (_model_args(p), p.add_argument("prompts", nargs="+"))
)
def generate_cmd(args: argparse.Namespace) -> int:
    chat, saes, sets = _load(args)
    for prompt, answer in zip(args.prompts, _run(chat, saes, sets, args.prompts, args), strict=True):
        print(json.dumps({"prompt": prompt, "answer": answer}))
    return 0


@command("info", "load a model (and SAEs), check they fit, print a summary")(_model_args)
def info(args: argparse.Namespace) -> int:
    chat, saes, _ = _load(args)
    out = {
        "model": chat.spec,
        "source": chat.source,
        "revision": chat.revision,
        "layers": chat.n_layers,
        "d_model": chat.d_model,
    }
    if saes is not None:
        out["saes"] = saes.describe()
    print(json.dumps(out, indent=2))
    return 0


def _directions_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default=None)
    p.add_argument("--n", type=int, default=32, help="prompts per side (harmful / harmless)")
    p.add_argument("--harmful", default="harmful_train")
    p.add_argument("--harmless", default="harmless_train")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=None, help="write per-layer scores as JSON")


@command("directions", "stage-1 scan: refusal direction per layer, ablation effect, harmless KL")(
    _directions_args
)
def directions(args: argparse.Namespace) -> int:
    from .data import load_prompts
    from .models import load_model
    from .scoring import first_token_logprobs, refusal_score, refusal_token_ids
    from .search.direction import (
        last_token_residuals,
        mean_diff_directions,
        score_layers,
        select_layer,
    )

    if args.n < 1:
        raise RefusalEvalError(f"--n must be at least 1, got {args.n}", "pass --n 32")
    chat = load_model(args.model, dtype=args.dtype, device=args.device)
    harmful = [p.text for p in load_prompts(args.harmful)[: args.n]]
    harmless = [p.text for p in load_prompts(args.harmless)[: args.n]]
    ids = refusal_token_ids(chat.tokenizer, chat.refusal_tokens)
    res_h = last_token_residuals(chat.model, chat.tokenizer, harmful, batch_size=args.batch_size)
    res_b = last_token_residuals(chat.model, chat.tokenizer, harmless, batch_size=args.batch_size)
    dirs = mean_diff_directions(res_h, res_b)
    norms = torch_cat_norm(res_h, res_b)
    base = float(refusal_score(first_token_logprobs(chat.model, chat.tokenizer, harmful), ids).mean())
    scores = score_layers(
        chat.model,
        chat.tokenizer,
        dirs,
        harmful,
        harmless,
        residual_norms=norms,
        refusal_ids=ids,
        batch_size=args.batch_size,
    )
    best = select_layer(scores, chat.n_layers)
    print(f"baseline harmful refusal score {base:.2f}")
    print("layer  refusal_score_ablated  harmless_kl  |r|/|x|")
    for s in scores:
        mark = "  <- selected" if s.layer == best.layer else ""
        print(f"{s.layer:5d}  {s.refusal_score:21.2f}  {s.harmless_kl:11.4f}  {s.norm_ratio:7.3f}{mark}")
    if args.out:
        from dataclasses import asdict

        payload = {
            "model": chat.spec,
            "revision": chat.revision,
            "n": args.n,
            "baseline_refusal_score": base,
            "selected": best.layer,
            "layers": [asdict(s) for s in scores],
        }
        with open(args.out, "w") as fh:
            json.dump(payload, fh, indent=1)
    return 0


def torch_cat_norm(a, b):
    import torch

    return torch.cat([a, b], dim=1).norm(dim=-1).mean(1)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default=None)
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--arch", choices=["topk", "jumprelu", "standard"], default="topk")
    p.add_argument("--k", type=int, default=64, help="active latents per token (topk)")
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-harmless", type=int, default=None, help="cap harmless train prompts")
    p.add_argument("--answered", type=int, default=256, help="prompts the model answers for the corpus")
    p.add_argument("--out", required=True)


@command("train-sae", "train a residual-stream SAE on one layer with the sae-lens trainer")(_train_args)
def train_sae_cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .models import load_model
    from .sae_training import CorpusConfig, TrainConfig, build_corpus, check_train_args, train_sae

    cfg = TrainConfig(
        layer=args.layer, width=args.width, arch=args.arch, tokens=args.tokens, k=args.k, seed=args.seed
    )
    out = Path(args.out)
    chat = load_model(args.model, dtype=args.dtype, device=args.device)
    check_train_args(cfg, chat.n_layers, out)
    t0 = time.perf_counter()
    corpus = build_corpus(chat, CorpusConfig(n_answered=args.answered, max_harmless=args.max_harmless))
    n_tok = sum(map(len, corpus))
    print(
        f"corpus: {len(corpus)} sequences, {n_tok} tokens ({time.perf_counter() - t0:.0f}s)", file=sys.stderr
    )
    t1 = time.perf_counter()
    train_sae(chat, corpus, cfg, out)
    print(
        f"trained {cfg.arch} SAE (width {cfg.width}) on layer {cfg.layer} over {cfg.tokens} tokens "
        f"in {time.perf_counter() - t1:.0f}s -> {out}"
    )
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sae", help="sae-lens SAE directory (or folder of them) or a shipped release")
    p.add_argument("--model", default="default")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default=None, help="also write the numbers as JSON")


@command("sae-report", "SAE quality on held-out chat text: FVE, L0, dead latents, spliced CE")(_report_args)
def sae_report_cmd(args: argparse.Namespace) -> int:
    from .models import load_model
    from .sae_report import heldout_texts, sae_quality
    from .saes import load_saes

    chat = load_model(args.model, dtype=args.dtype, device=args.device)
    saes = load_saes(args.sae, model=chat)
    texts = heldout_texts(chat)
    rows = [
        sae_quality(chat, saes[layer], texts, batch_size=args.batch_size).to_dict() for layer in saes.layers
    ]
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refusal-eval", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, add_args, help_text) in _COMMANDS.items():
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


if __name__ == "__main__":
    sys.exit(main())
