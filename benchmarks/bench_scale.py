"""The paper's setups at their true shapes, on this CPU, with random weights.

A randomly initialised Gemma-2-2B (its real config, bf16) and JumpReLU SAEs of Gemma Scope's
shapes (d_in 2,304; 16k = 16,384 and 65k = 65,536 latents; float32, sae-lens' on-disk format,
one per layer). Each measurement runs in a fresh subprocess so its peak RSS is its own:

- ``load``: model + SAEs on ``--layers`` layers, held whole or holding ``--held`` latents per
  layer (``load_saes(..., latents=...)``): load seconds, peak RSS, bytes of SAE tensors held;
- ``forward``: one greedy-step forward (``--batch`` prompts x ``--seq`` tokens) with every SAE
  layer ablating its held latents vs none, and generation tokens/s, both side by side;
- ``search``: a whole search (``--stream-saes``: model + one whole SAE layer + candidate rows)
  on a handful of prompts, every stage timed and counted (``PLAN.cost.json``'s record). A random
  model refuses nothing, so the screen's judge is one registered here that calls every answer
  a refusal: the stages then do their full work (stage 2 walks every block whatever the scores
  say), which is what is timed; the sets they find mean nothing. The tokenizer is the default
  model's (its ids fit Gemma's vocabulary);
- the same for Llama-3.1-8B's shapes (d_in 4,096; Llama Scope 32k / 128k) on a layer slice
  (``--model llama --layers 4``: its bf16 weights alone are 16 GB, so the model is cut to the
  hooked layers' depth; per-layer costs then scale to 32 layers).

    .venv/bin/python benchmarks/bench_scale.py write --width 16384 --layers 26   # SAE files
    .venv/bin/python benchmarks/bench_scale.py load --width 16384 --layers 26 [--held 20 | --whole]
    .venv/bin/python benchmarks/bench_scale.py forward --width 16384 --layers 26 --held 20
    .venv/bin/python benchmarks/bench_scale.py search --width 16384 --layers 26 --top-k 10 --prompts 4

SAE files go to ``--root`` (default /tmp/refusal_eval_scale; 302 MB per 16k layer, 1.2 GB per
65k layer). Nothing here is committed but the numbers (BENCHMARKS.md, "Scale").
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

SHAPES = {  # the paper's two models and our two offline ones: their HF configs' sizes
    "qwen0.5b": dict(
        kind="qwen2", vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
    ),
    "qwen1.5b": dict(
        kind="qwen2", vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True,
    ),
    "gemma": dict(
        kind="gemma2", vocab_size=256_000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, tie_word_embeddings=True,
    ),
    "llama": dict(
        kind="llama", vocab_size=128_256, hidden_size=4096, intermediate_size=14_336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False,
    ),
}  # fmt: skip


def _model(name: str, n_layers: int | None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, Gemma2Config, LlamaConfig, Qwen2Config

    shape = dict(SHAPES[name])
    kind = shape.pop("kind")
    if n_layers is not None:
        shape["num_hidden_layers"] = n_layers
    cfg = {"gemma2": Gemma2Config, "llama": LlamaConfig, "qwen2": Qwen2Config}[kind](**shape)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()


def _sae_dir(root: Path, model: str, width: int, layer: int) -> Path:
    return root / f"{model}-{width}" / f"layer_{layer}"


def write(args: argparse.Namespace) -> None:
    """Random JumpReLU SAEs in sae-lens' format (cfg.json + sae_weights.safetensors)."""
    from safetensors.torch import save_file

    d_in = int(SHAPES[args.model]["hidden_size"])  # type: ignore[call-overload]
    gen = torch.Generator().manual_seed(0)
    for layer in range(args.layers):
        out = _sae_dir(Path(args.root), args.model, args.width, layer)
        if (out / "sae_weights.safetensors").exists():
            continue
        out.mkdir(parents=True, exist_ok=True)
        scale = d_in**-0.5
        tensors = {
            "W_enc": torch.randn(d_in, args.width, generator=gen) * scale,
            "W_dec": torch.randn(args.width, d_in, generator=gen) * scale,
            "b_enc": torch.zeros(args.width),
            "b_dec": torch.zeros(d_in),
            "threshold": torch.full((args.width,), 0.05),
        }
        save_file(tensors, str(out / "sae_weights.safetensors"))
        cfg = {
            "architecture": "jumprelu", "d_in": d_in, "d_sae": args.width, "dtype": "float32",
            "device": "cpu", "apply_b_dec_to_input": False, "normalize_activations": "none",
            "reshape_activations": "none",
            "metadata": {"hook_name": f"blocks.{layer}.hook_resid_post", "sae_lens_version": "6.54.12"},
        }  # fmt: skip
        (out / "cfg.json").write_text(json.dumps(cfg))
        print(f"wrote {out}")


def _held_sets(args: argparse.Namespace) -> dict[int, list[int]] | None:
    if args.whole:
        return None
    gen = torch.Generator().manual_seed(1)  # the same ids at every width >= 16k: ids < 16,384
    pool = min(args.width, 16_384)
    draw = lambda: sorted(torch.randperm(pool, generator=gen)[: args.held].tolist())  # noqa: E731
    return {layer: draw() for layer in range(args.layers)}


def _load(args: argparse.Namespace) -> tuple[torch.nn.Module | None, object, dict[str, float]]:
    from refusal_eval import load_saes

    t0 = time.perf_counter()
    model = None if args.no_model else _model(args.model, args.model_layers)
    t_model = time.perf_counter() - t0
    t0 = time.perf_counter()
    root = Path(args.root) / f"{args.model}-{args.width}"
    saes = load_saes(str(root), layers=list(range(args.layers)), latents=_held_sets(args))
    t_saes = time.perf_counter() - t0
    held_bytes = sum(
        getattr(c, n).numel() * getattr(c, n).element_size() for c in saes.values() for n in c.tensor_fields()
    )
    stats = {"model_s": t_model, "saes_s": t_saes, "sae_bytes_held": float(held_bytes)}
    return model, saes, stats


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _rss_now_gb() -> dict[str, float]:
    """Resident now: all, anonymous (tensors) and file-backed (mapped files) pages."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {f"{k}_gb": int(status[k].split()[0]) / 2**20 for k in ("VmRSS", "RssAnon", "RssFile")}


def load(args: argparse.Namespace) -> None:
    _, saes, stats = _load(args)
    held = saes.describe()["held"]["0"]  # type: ignore[attr-defined]
    print(json.dumps({**vars(args), **stats, "peak_rss_gb": _peak_rss_gb(), **_rss_now_gb(), "held": held}))


def forward(args: argparse.Namespace) -> None:
    from refusal_eval import ablate

    model, saes, stats = _load(args)
    assert model is not None, "forward needs the model (drop --no-model)"
    sets = _held_sets(args) or {layer: list(range(args.held)) for layer in range(args.layers)}
    ids = torch.randint(10, 30_000, (args.batch, args.seq), generator=torch.Generator().manual_seed(2))
    out: dict[str, float] = {}
    with torch.inference_mode():
        model(ids[:1, :8])  # warm-up
        for name, scope in (("none", None), ("hooked", sets), ("none2", None), ("hooked2", sets)):
            ctx = ablate(model, scope, saes) if scope else torch.inference_mode()
            with ctx:
                t0 = time.perf_counter()
                model(ids)
                out[f"forward_{name}_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                model.generate(ids[:, :16], max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                               do_sample=False, pad_token_id=0)  # fmt: skip
                out[f"gen_{name}_tok_s"] = args.batch * args.new_tokens / (time.perf_counter() - t0)
    print(json.dumps({**vars(args), **stats, **out, "peak_rss_gb": _peak_rss_gb()}))


def search(args: argparse.Namespace) -> None:
    import dataclasses
    import tempfile

    from refusal_eval.config import SearchConfig
    from refusal_eval.judges import JudgeSpec, RuleJudge, register_judge
    from refusal_eval.models import load_model
    from refusal_eval.saes import stream_saes
    from refusal_eval.search import PromptSets, run_search
    from refusal_eval.search.cost import CostMeter

    @register_judge("bench-all-refused")
    def _all_refused(_arg: str) -> RuleJudge:
        return RuleJudge(JudgeSpec("bench-all-refused"), lambda _answer: True)

    t0 = time.perf_counter()
    tok = load_model("default", device="meta")  # the tokenizer and chat template only
    chat = dataclasses.replace(
        tok, model=_model(args.model, args.model_layers), spec=f"random-{args.model}",
        revision="random-seed0", info={**tok.info, "name": f"random-{args.model}"},
    )  # fmt: skip
    root = Path(args.root) / f"{args.model}-{args.width}"
    saes = stream_saes(str(root), list(range(args.layers)), model=chat)
    t_load = time.perf_counter() - t0
    cfg = SearchConfig(
        n_harmful=args.prompts, n_harmless=args.prompts, n_validation=args.prompts,
        layer_select_prompts=args.prompts, top_k=args.top_k, max_new_tokens=args.new_tokens,
        judge="bench-all-refused", batch_size=args.prompts * 3, wake_top_n=args.wake_top_n, tau=args.tau,
    )  # fmt: skip
    meter = CostMeter(chat.model)
    with tempfile.TemporaryDirectory() as work:  # the search sets its own grad modes (the FM trains)
        body, _ = run_search(chat, saes, cfg, prompts=PromptSets.from_config(cfg), work_dir=Path(work),
                             progress=False, meter=meter)  # fmt: skip
    cost = meter.to_json()["stages"]
    stages = {k: {m: v[m] for m in ("seconds", "forwards", "tokens")} for k, v in cost.items()}
    print(json.dumps({
        **vars(args), "seeds": list(cfg.seeds), "block_size": cfg.block_size,
        "load_s": t_load, "peak_rss_gb": _peak_rss_gb(), "whole_loads": saes.whole_loads,
        "candidates": len(body.stage1.candidates), "union": len(body.stage2.union),
        "stages": stages,
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["write", "load", "forward", "search"])
    ap.add_argument("--model", choices=sorted(SHAPES), default="gemma")
    ap.add_argument("--width", type=int, default=16_384)
    ap.add_argument("--layers", type=int, default=26, help="SAE layers 0..N-1")
    ap.add_argument("--model-layers", type=int, default=None, help="cut the model to N layers")
    ap.add_argument("--held", type=int, default=20, help="latents held (and ablated) per layer")
    ap.add_argument("--whole", action="store_true", help="hold every latent")
    ap.add_argument("--no-model", action="store_true", help="load the SAEs only")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--root", default="/tmp/refusal_eval_scale")
    ap.add_argument("--prompts", type=int, default=4, help="search: harmful, harmless, validation each")
    ap.add_argument("--top-k", type=int, default=10, help="search: candidates per SAE layer")
    ap.add_argument(
        "--tau", type=float, default=0.0,
        help="search: set directly, below the CLI's floor (tau > 0): a block is kept unless restoring it "
        "lowers P(refusal), so a random model's minimal sets are not empty and stage 3 ablates something",
    )  # fmt: skip
    ap.add_argument("--wake-top-n", type=int, default=16, help="search: woken latents tested per layer")
    args = ap.parse_args()
    {"write": write, "load": load, "forward": forward, "search": search}[args.what](args)


if __name__ == "__main__":
    main()
