"""A tiny Qwen2 chat model with a hand-planted refusal mechanism, and SAEs that read it.

Residual axes: 0 trigger (embedding of the "harmful" words), 1-3 the refusal signal split over
three orthogonal directions d0..d2 (sum u), 4 a backup copy of the harm signal, 5 the hydra
marker, 6 a constant bias, 7-15 unused (decoy decoders point there), 20-63 token noise.

- Layer 0 attention (q = k = 0: uniform over the prompt so far) copies the trigger into
  ``S * u + S/2 * e4`` at every later position.
- Layer 1 MLP is the hydra: it fires only when the harm copy on axis 4 is present but u is gone
  (i.e. d0..d2 were ablated), and then writes ``a * (u_hat + e5)``, restoring refusal.
- The refusal token ``w10`` reads ``u_hat``; the compliance token ``w11`` reads the bias axis.

SAE at layer 0: latents 0-2 = d0..d2 (necessary), 3 = g (the backup copy on axis 4: active on
harmful prompts, not along the direction, interacts with the minimal set), 4-9 decoys (decoders
partly along u, never active), 10-19 noise. SAE at layer 1: latent 0 = h (the hydra: decoder
``u_hat + e5``, dormant on clean prompts yet necessary), 1-3 decoys, 4-7 noise.
"""

from __future__ import annotations

import random

import torch
from conftest import tiny_tokenizer

from refusal_eval.coders.standard import StandardCoder
from refusal_eval.hooks import HookPoint

D, VOCAB, REFUSE, COMPLY = 64, 96, 10, 11
TRIGGERS = [20, 21, 22, 23, 24]
NEUTRAL = list(range(30, 90))
S = 20.0
NECESSARY = {(0, 0), (0, 1), (0, 2), (1, 0)}
HYDRA, BACKUP = (1, 0), (0, 3)


def planted_model(heads: int = 4):
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(
        vocab_size=VOCAB, hidden_size=D, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.zero_()
        emb = model.model.embed_tokens.weight
        emb[:, 20:] = torch.randn(VOCAB, D - 20, generator=gen) * 0.5
        emb[:, 6] = 1.0
        emb[TRIGGERS, 0] = 1.0
        attn = model.model.layers[0].self_attn
        attn.v_proj.weight[0, 0] = 1.0
        attn.o_proj.weight[1:4, 0] = S
        attn.o_proj.weight[4, 0] = S / 2
        mlp = model.model.layers[1].mlp
        beta = 10.0
        mlp.gate_proj.weight[0, 4] = beta
        mlp.gate_proj.weight[0, 1:4] = -beta
        mlp.up_proj.weight[0, 4] = 1.0
        u_hat = torch.zeros(D)
        u_hat[1:4] = 3**-0.5
        mlp.down_proj.weight[:, 0] = 4.0 * (u_hat + torch.eye(D)[5])
        model.lm_head.weight[REFUSE] = 8.0 * u_hat
        model.lm_head.weight[COMPLY, 6] = 3.0
    return model


def _coder(layer: int, enc_cols: list[torch.Tensor], dec_rows: list[torch.Tensor], bias: list[float]):
    W_enc = torch.stack(enc_cols, dim=1)
    W_dec = torch.stack(dec_rows)
    return StandardCoder(
        W_enc=W_enc, b_enc=torch.tensor(bias), W_dec=W_dec, b_dec=torch.zeros(D),
        hook=HookPoint(layer), source=f"planted/layer_{layer}",
    )  # fmt: skip


def planted_saes() -> dict[int, StandardCoder]:
    gen = torch.Generator().manual_seed(1)
    eye = torch.eye(D)
    u_hat = (eye[1] + eye[2] + eye[3]) / 3**0.5

    def add_noise(enc: list, dec: list, bias: list, n: int) -> None:
        """Latents reading random token-noise directions: fire on both classes, decoders off u."""
        for _ in range(n):
            v = torch.zeros(D)
            v[20:] = torch.randn(D - 20, generator=gen)
            v = v / v.norm()
            enc.append(v)
            dec.append(0.3 * v)
            bias.append(-0.5)

    enc, dec, bias = [], [], []
    for axis in (1, 2, 3, 4):  # d0, d1, d2, then the backup g
        enc.append(eye[axis])
        dec.append(eye[axis])
        bias.append(0.0)
    for j in range(6):  # decoys: never fire, decoders partly along u
        enc.append(eye[7 + j])
        dec.append((0.4 * u_hat + 0.9 * eye[7 + j]) / (0.4**2 + 0.9**2) ** 0.5)
        bias.append(0.0)
    add_noise(enc, dec, bias, 10)
    layer0 = _coder(0, enc, dec, bias)

    enc, dec, bias = [eye[5]], [u_hat + eye[5]], [0.0]
    for j in range(3):
        enc.append(eye[13 + j])
        dec.append((0.5 * u_hat + eye[13 + j]) / (1.25**0.5))
        bias.append(0.0)
    add_noise(enc, dec, bias, 4)
    layer1 = _coder(1, enc, dec, bias)
    return {0: layer0, 1: layer1}


def planted_prompts(n: int, harmful: bool, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.sample(NEUTRAL, rng.randint(4, 8))
        if harmful:
            for _ in range(rng.randint(1, 2)):
                words.insert(rng.randrange(len(words) + 1), rng.choice(TRIGGERS))
        out.append(" ".join(f"w{w - 6}" for w in words))  # tiny vocab: id k is word w{k-6}
    return out


class PlantedChat:
    """Duck-typed ChatModel for the search (model, tokenizer, spec, revision, ...)."""

    def __init__(self, heads: int = 4) -> None:
        self.model = planted_model(heads)  # heads=2 (head_dim 32) for vLLM's CPU attention
        self.tokenizer = tiny_tokenizer()
        self.tokenizer.padding_side = "left"
        self.spec = "planted"
        self.revision = "planted-v1"
        self.info = {"name": "planted"}
        self.refusal_tokens = (f"w{REFUSE - 6}",)

    @property
    def n_layers(self) -> int:
        return 2

    @property
    def d_model(self) -> int:
        return D

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


def save_planted(root) -> tuple[str, str]:
    """The planted model (HF dir) and its SAEs (sae-lens dirs) on disk; returns both paths."""
    import sae_lens

    from refusal_eval.saes import to_sae_lens

    chat = PlantedChat()
    model_dir, sae_dir = root / "model", root / "saes"
    chat.model.save_pretrained(model_dir)
    chat.tokenizer.save_pretrained(model_dir)
    for layer, coder in planted_saes().items():
        to_sae_lens(coder).save_model(str(sae_dir / f"layer_{layer}"))
    assert sae_lens  # imported for its side effect of registering architectures
    return str(model_dir), str(sae_dir)


def planted_config(**changes: object):
    """The small search config the planted tests share (refusal read off the w4 token)."""
    from refusal_eval.config import SearchConfig

    base: dict[str, object] = dict(
        top_k=5, block_size=1, refusal_tokens=("w4",), judge="prefix:w4", max_new_tokens=3,
        fm_lr=0.05, fm_epochs=60, extra_k=1, batch_size=8,
    )  # fmt: skip
    return SearchConfig(**{**base, **changes})
