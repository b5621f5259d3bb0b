"""A cost model of the search and the ablated runs: FLOPs and bytes from the model and SAE shapes,
an effective CPU rate fitted on the two offline models' shapes, checked against Gemma-2-2B and a
Llama-3.1-8B slice, and GPU predictions for the paper's setups (docs/reproduce.md).

    python benchmarks/cost_model.py /work/logs/scale_forward_all.jsonl [--rate 377]

The input is the JSON lines ``bench_scale.py`` printed: ``forward`` rows (one per model shape) fit
the CPU rate (or ``--rate`` gives it, in GFLOP/s, when the file has no Qwen rows); ``search`` rows
are checked stage by stage against what the model predicts for their sizes. Forward
FLOPs per token: 2 x (non-embedding parameters + the LM head) + the attention scores
(4 x layers x seq x d_attn); a hooked SAE layer adds 4 x d_model x |S| (two thin products).
GPU numbers are predictions: peak bf16 rates and memory bandwidths from the vendors' sheets,
times the efficiency stated below (assumed, not measured: no GPU was lent to this project).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_scale import SHAPES

from refusal_eval.search.direction import eligible_layers

GPUS = {  # bf16 dense peak FLOP/s, HBM bytes/s, memory bytes
    "80 GB H100 SXM": (989e12, 3.35e12, 80e9),
    "H200 (141 GB)": (989e12, 4.8e12, 141e9),
}
MFU = 0.35  # assumed share of peak for the search's prompt-sized batched forwards
BW_EFF = 0.6  # assumed share of bandwidth for decode steps (weights read once per step)


@dataclass(frozen=True)
class Shape:
    vocab: int
    d: int
    ffn: int
    layers: int
    heads: int
    kv: int
    head_dim: int
    tied: bool  # the LM head shares the embedding matrix (Gemma, Qwen) or not (Llama)

    @classmethod
    def of(cls, name: str) -> Shape:
        s = SHAPES[name]
        head_dim = int(s.get("head_dim", int(s["hidden_size"]) // int(s["num_attention_heads"])))  # type: ignore[call-overload]
        return cls(
            int(s["vocab_size"]), int(s["hidden_size"]), int(s["intermediate_size"]),  # type: ignore[call-overload]
            int(s["num_hidden_layers"]), int(s["num_attention_heads"]), int(s["num_key_value_heads"]),  # type: ignore[call-overload]
            head_dim, bool(s["tie_word_embeddings"]),
        )  # fmt: skip

    def layer_params(self) -> int:
        attn = self.d * self.heads * self.head_dim * 2 + self.d * self.kv * self.head_dim * 2
        return attn + 3 * self.d * self.ffn

    def params(self, layers: int | None = None) -> int:
        return (layers or self.layers) * self.layer_params() + self.vocab * self.d * (1 if self.tied else 2)

    def flops_per_token(
        self, seq: int, layers: int | None = None, hooked: int = 0, held: int = 0, head: float = 1.0
    ) -> float:
        """``head``: the share of positions the LM head runs at (the greedy scorer: the last only)."""
        n = layers or self.layers
        dense = 2 * (n * self.layer_params() + head * self.vocab * self.d)
        attn = 4 * n * seq * self.heads * self.head_dim
        return float(dense + attn + hooked * 4 * self.d * held)


def fit(rows: list[dict[str, object]]) -> float:
    """Effective FLOP/s of this CPU on the hooked forward of the two Qwen shapes (least squares
    through the origin: time = FLOPs / rate)."""
    qwen = [r for r in rows if str(r["model"]).startswith("qwen")]
    pts = [(_forward_flops(r), float(r["forward_hooked2_s"])) for r in qwen]  # type: ignore[arg-type]
    return sum(f * f for f, _ in pts) / sum(f * t for f, t in pts)


def _forward_flops(r: dict[str, object]) -> float:
    shape = Shape.of(str(r["model"]))
    layers = r.get("model_layers") or shape.layers
    seq, batch = int(r["seq"]), int(r["batch"])  # type: ignore[call-overload]
    per_token = shape.flops_per_token(seq, int(layers), int(r["layers"]), int(r["held"]))  # type: ignore[call-overload]
    return per_token * seq * batch


@dataclass(frozen=True)
class Setup:
    """One of the paper's setups, with the search's sizes (our defaults where the paper is silent)."""

    name: str
    model: str
    d_sae: int
    sae_layers: int
    k: int  # candidates per SAE layer
    union: int  # the paper's Stage-2 union (what an ablated run holds)
    prompts: int = 372  # refused harmful search prompts (the paper's Llama count)
    tokens: int = 64  # chat-formatted prompt tokens
    seeds: int = 3
    block: int = 5
    validation: int = 100  # verification prompts, 5 conditions, 32 new tokens
    board: int = 200  # prompts per benchmark x 4 benchmarks x 5 conditions, 256 new tokens
    batch: int = 64  # generation batch
    first_layer: int = 0  # the lowest SAE layer (all-layer plans: 0)
    select: int = 32  # layer_select_prompts: prompts per side scoring each candidate layer
    max_depth_frac: float = 0.8  # the layer scan's eligible layers: < this fraction of depth
    wake_top_n: int = 16  # stage 3's hydra test: woken latents tested per prompt and SAE layer


SETUPS = (
    Setup("Gemma-2-2B-IT + Gemma Scope 16k", "gemma", 16_384, 26, 200, 2538),
    Setup("Gemma-2-2B-IT + Gemma Scope 65k", "gemma", 65_536, 26, 200, 2538),
    Setup("Llama-3.1-8B-IT + Llama Scope 8x (32k)", "llama", 32_768, 32, 10, 110),
    Setup("Llama-3.1-8B-IT + Llama Scope 32x (128k)", "llama", 131_072, 32, 10, 110),
)


def predict(setup: Setup, peak: float, bw: float) -> dict[str, float]:
    """Seconds per stage and GB of memory on one GPU."""
    shape = Shape.of(setup.model)
    t, rate = setup.tokens, peak * MFU
    cands = setup.k * setup.sae_layers
    per_prompt = stage2_rows(cands, setup.seeds, setup.block)
    # the directions read every refused and contrast prompt; the layer scan scores the selection
    # prompts of both sides unablated, then with each eligible layer's direction ablated
    eligible = len(eligible_layers(shape.layers, setup.max_depth_frac))
    rows1 = 2 * setup.prompts + 2 * setup.select * (1 + eligible)
    stage1 = rows1 * t * shape.flops_per_token(t) / rate
    # the greedy scorer starts from the cached residual below the first SAE layer (skip_prefix) and
    # reads the last position's logits only
    layers = shape.layers - setup.first_layer
    per_token = shape.flops_per_token(t, layers, hooked=setup.sae_layers, held=setup.k, head=1 / t)
    stage2 = setup.prompts * per_prompt * t * per_token / rate
    encode = 2 * shape.d * setup.d_sae * setup.sae_layers  # every latent of every SAE, per token
    activations = 2 * setup.prompts * t * (shape.flops_per_token(t) + encode)
    # the hydra test, an upper bound: wake_top_n woken latents tested per prompt at every SAE layer
    # above the prompt's lowest ablated one, one scorer row each (measured: 16 per layer on a
    # random Gemma, whose JumpReLU latents half fire; a trained SAE wakes fewer)
    hydra = setup.prompts * setup.wake_top_n * (setup.sae_layers - 1) * t * per_token
    stage3 = (activations + hydra) / rate
    weights = 2 * shape.params()  # bf16

    def decode(rows: int, new_tokens: int) -> float:  # memory-bound steps: the weights once per step
        return -(-rows // setup.batch) * new_tokens * weights / (bw * BW_EFF)

    verify = decode(setup.validation * 5, 32) + decode(setup.prompts, 32)  # + the baseline screen
    board = decode(setup.board * 4 * 5, 256)
    sae_whole = 4 * setup.sae_layers * (2 * shape.d * setup.d_sae + setup.d_sae * 2 + shape.d)
    held = 4 * setup.union * (2 * shape.d + 2) + 4 * setup.sae_layers * shape.d
    # --stream-saes: one whole SAE layer at a time beside the candidates' rows (a floor: weights
    # and SAE tensors only; activations, the KV cache and the runtime come on top)
    cand_rows = 4 * setup.k * setup.sae_layers * (2 * shape.d + 2) + 4 * setup.sae_layers * shape.d
    streamed = sae_whole / setup.sae_layers + cand_rows
    return {
        "stage1_s": stage1, "stage2_s": stage2, "stage3_s": stage3, "verify_s": verify, "board_s": board,
        "search_gb": (weights + sae_whole) / 1e9, "stream_gb": (weights + streamed) / 1e9,
        "run_gb": (weights + held) / 1e9,
    }  # fmt: skip


def stage2_rows(candidates: int, seeds: int, block: int) -> int:
    """Scorer rows per prompt in the greedy stage (greedy.py): nothing ablated, everything
    ablated, one restore per block and seed, and the minimal set at the end."""
    return 3 + seeds * -(-candidates // block)


def check_search(r: dict[str, object], rate: float) -> list[str]:
    """Table rows: a ``bench_scale.py search`` run's stages, measured vs predicted for its sizes
    (the mean prompt length read off its stage-2 tokens and row count)."""
    n, k, layers = int(r["prompts"]), int(r["top_k"]), int(r["layers"])  # type: ignore[call-overload]
    assert r.get("model_layers") is None, "the check models whole-depth runs"
    seeds, block = len(r.get("seeds", (0, 1, 2))), int(r.get("block_size", 5))  # type: ignore[arg-type, call-overload]
    stages: dict[str, dict[str, float]] = r["stages"]  # type: ignore[assignment]
    t = round(stages["stage2"]["tokens"] / (n * stage2_rows(k * layers, seeds, block)))
    setup = Setup(
        "run", str(r["model"]), int(r["width"]), layers, k, 0, prompts=n, tokens=t, seeds=seeds, block=block,  # type: ignore[call-overload]
        select=n, wake_top_n=int(r.get("wake_top_n", 16)),  # type: ignore[call-overload]
    )  # fmt: skip
    got = predict(setup, rate / MFU, 1.0)  # peak x MFU = the CPU's effective rate
    out = []
    for stage in ("stage1", "stage2", "stage3"):
        want, meas = got[f"{stage}_s"], stages[stage]["seconds"]
        out.append(f"| {r['model']} search, {n} prompts, K={k} x {layers} layers ({t} tokens) | {stage} | "
                   f"{meas:.0f} s | {want:.0f} s | {100 * (want - meas) / meas:+.0f}% |")  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("log", help="JSON lines printed by bench_scale.py (forward and search rows)")
    ap.add_argument("--rate", type=float, help="effective CPU GFLOP/s, when the log has no Qwen forward rows")
    args = ap.parse_args()
    with open(args.log) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    searches = [r for r in rows if r.get("what") == "search"]
    rows = [r for r in rows if r.get("what", "forward") == "forward"]
    rate = args.rate * 1e9 if args.rate else fit(rows)
    how = "given" if args.rate else "fitted on the Qwen shapes"
    print(f"effective CPU rate ({how}): {rate / 1e9:.0f} GFLOP/s\n")
    if searches:
        print(
            "| search on this CPU | stage | measured | predicted | error |\n| --- | --- | --- | --- | --- |"
        )
        print("\n".join(line for r in searches for line in check_search(r, rate)) + "\n")
    print(
        "| shape | forward FLOPs | measured (hooked) | predicted | error |\n| --- | --- | --- | --- | --- |"
    )
    for r in rows:
        flops = _forward_flops(r)
        got, want = float(r["forward_hooked2_s"]), flops / rate
        cells = [f"{r['model']} ({r.get('model_layers') or 'all'} layers)", f"{flops / 1e12:.2f} T"]
        cells += [f"{got:.2f} s", f"{want:.2f} s", f"{100 * (want - got) / got:+.0f}%"]
        print("| " + " | ".join(cells) + " |")
    print(f"\nPredicted on one GPU (MFU {MFU}, bandwidth efficiency {BW_EFF}: assumed)\n")
    head = ["setup", "GPU", "stage 1", "stage 2", "stage 3", "verification", "board (4 x 200 x 5, 256 tok)"]
    print("| " + " | ".join([*head, "search memory", "with --stream-saes", "run memory"]) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for setup in SETUPS:
        for gpu, (peak, bw, mem) in GPUS.items():
            p = predict(setup, peak, bw)
            fits = "" if p["search_gb"] * 1e9 < mem else " (does not fit)"
            cells = [setup.name, gpu, f"{p['stage1_s']:.0f} s", f"{p['stage2_s'] / 60:.1f} min"]
            cells += [f"{p['stage3_s']:.0f} s", f"{p['verify_s']:.0f} s", f"{p['board_s'] / 60:.1f} min"]
            cells += [f"{p['search_gb']:.0f} GB{fits}", f"{p['stream_gb']:.1f} GB", f"{p['run_gb']:.1f} GB"]
            print("| " + " | ".join(cells) + " |")
    for name, n in (("all 172 prompts", 172), ("the 93 refused ones", 93)):
        cpu = predict(Setup("0.5B", "qwen0.5b", 4096, 3, 50, 120, prompts=n, first_layer=10), rate / MFU, 1)
        print(f"this CPU, the 0.5B search's stage 2 ({name}, 150 candidates): {cpu['stage2_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
