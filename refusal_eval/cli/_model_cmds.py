"""Model-level commands: demo, generate, info."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

from ..config import DEFAULT_JUDGE
from ..errors import RefusalEvalError
from ._registry import command, load_cli_model, model_flags

if TYPE_CHECKING:
    from ..models import ChatModel
    from ..saes import SAEBundle


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
    model_flags(p)
    p.add_argument("--saes", default=None, help="shipped release, local sae-lens dir, or release")
    p.add_argument(
        "--ablate",
        nargs="*",
        default=[],
        metavar="LAYER:IDS",
        help="zero-ablate these latents, e.g. 12:5,17 14:3",
    )
    p.add_argument(
        "--judge",
        default=DEFAULT_JUDGE,
        help=f"refusal judge (default {DEFAULT_JUDGE}): cues, keyword, hybrid, embedding, llm:SPEC, "
        "prefix:A|B",
    )
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)


def _load(args: argparse.Namespace) -> tuple[ChatModel, SAEBundle | None, dict[int, list[int]]]:
    from ..judges._base import JudgeSpec
    from ..saes import load_saes

    for flag in ("max_new_tokens", "batch_size"):
        value = getattr(args, flag)
        if value < 1:
            name = "--" + flag.replace("_", "-")
            raise RefusalEvalError(f"{name} must be at least 1, got {value}", f"pass e.g. {name} 8")
    JudgeSpec.parse(args.judge)  # an unknown judge is an error before any model loads
    sets = parse_ablation(args.ablate)
    if sets and not args.saes:
        raise RefusalEvalError("--ablate needs SAEs", "pass --saes RELEASE_OR_DIR")
    t0 = time.perf_counter()
    chat = load_cli_model(args)
    print(f"loaded {chat.spec} from {chat.source} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    saes = load_saes(args.saes, layers=sorted(sets) or None, model=chat) if args.saes else None
    return chat, saes, sets


def _run(
    chat: ChatModel,
    saes: SAEBundle | None,
    sets: dict[int, list[int]],
    prompts: Sequence[str],
    args: argparse.Namespace,
) -> list[str]:
    from ..ablation import ablate
    from ..chat import generate

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
    from ..judges import get_judge

    data = json.loads((resources.files("refusal_eval") / "data" / "demo_prompts.json").read_text())
    chat, saes, sets = _load(args)
    judge = get_judge(args.judge)
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


def _generate_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("prompts", nargs="+")


@command("generate", "greedy answers to your prompts, optionally with latents ablated")(_generate_args)
def generate_cmd(args: argparse.Namespace) -> int:
    from ..judges import get_judge

    chat, saes, sets = _load(args)
    answers = _run(chat, saes, sets, args.prompts, args)
    verdict = get_judge(args.judge)(args.prompts, answers)
    for prompt, answer, refused in zip(args.prompts, answers, verdict.refused, strict=True):
        print(json.dumps({"prompt": prompt, "answer": answer, "refused": refused, "judge": args.judge}))
    return 0


@command("info", "load a model (and SAEs), check they fit, print a summary")(_model_args)
def info(args: argparse.Namespace) -> int:
    chat, saes, _ = _load(args)
    out: dict[str, object] = {
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
