"""Shared fixtures: tiny random chat models built from configs, SAEs built in code.

Tests never touch the network.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch

from refusal_eval.coders import SparseCoder
from refusal_eval.saes import from_sae_lens

D_MODEL = 64
N_LAYERS = 3
VOCAB = 96


def tiny_config(arch: str = "qwen2", **overrides):
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig, "gemma2": Gemma2Config}[arch]
    extra = {"head_dim": 16} if arch == "gemma2" else {}
    return cls(**{**common, **extra, **overrides})


def tiny_model(arch: str = "qwen2", seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides), dtype=torch.float32)
    # Random init is small; widen it so greedy generations depend on the residual stream.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="session")
def qwen_tiny():
    return tiny_model("qwen2")


def make_sae_lens(
    arch: str,
    d_in: int = D_MODEL,
    d_sae: int = 256,
    layer: int = 1,
    seed: int = 0,
    hook_key: str = "hook_name",
    **cfg_extra,
):
    """A sae-lens SAE with random weights (so encode has varied, partly-zero activations)."""
    import sae_lens

    cfg_cls, sae_cls = {
        "standard": (sae_lens.StandardSAEConfig, sae_lens.StandardSAE),
        "jumprelu": (sae_lens.JumpReLUSAEConfig, sae_lens.JumpReLUSAE),
        "topk": (sae_lens.TopKSAEConfig, sae_lens.TopKSAE),
    }[arch]
    name = f"blocks.{layer}.hook_resid_post" if hook_key == "hook_name" else f"model.layers.{layer}"
    cfg = cfg_cls(d_in=d_in, d_sae=d_sae, **cfg_extra)
    cfg.metadata = sae_lens.saes.sae.SAEMetadata(**{hook_key: name})
    torch.manual_seed(seed)
    sae = sae_cls(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, 1 / d_in**0.5)
        sae.W_dec.normal_(0, 1 / d_in**0.5)
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.1)
        if arch == "jumprelu":
            sae.threshold.uniform_(0.0, 0.5)
    return sae


def make_coder(arch: str = "standard", **kw) -> SparseCoder:
    return from_sae_lens(make_sae_lens(arch, **kw), f"code:{arch}")


def tiny_tokenizer():
    """A word-level fast tokenizer with a chat template, saved alongside tiny models."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<bos>", "<eos>", "<unk>", "<|user|>", "<|assistant|>"]
    words += [f"w{i}" for i in range(VOCAB - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
    )
    fast.chat_template = (
        "{% for m in messages %}<|user|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return fast


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-qwen2")
    tiny_model("qwen2").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("REFUSAL_EVAL_CACHE", str(cache))
    return cache


@pytest.fixture
def planted_dirs(tmp_path, monkeypatch):
    """The planted model and SAEs on disk. transformers 5 rebuilds any qwen2 tokenizer as a
    byte-level BPE from the model type, which would drop the tiny word-level vocabulary, so the
    tokenizer of that directory is loaded as saved."""
    import transformers
    from planted import save_planted

    model_dir, sae_dir = save_planted(tmp_path)
    real = transformers.AutoTokenizer.from_pretrained

    def from_pretrained(path, *a, **kw):
        if str(path) == model_dir:
            return transformers.PreTrainedTokenizerFast.from_pretrained(path)
        return real(path, *a, **kw)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    return model_dir, sae_dir
