"""The newer sae-lens releases load by name, offline, from synthetic files in each hub format.

Each release's files are written into a throw-away Hugging Face cache exactly where
``hf_hub_download`` looks for them, so sae-lens' own converter for the release runs unchanged
(andyrdt's dictionary_learning ``ae.pt`` + ``config.json``, Goodfire's ``.pth``, Gemma Scope 2's
``params.safetensors`` + ``config.json``). Shapes are shrunk (sae-lens hard-codes Goodfire's
4,096 x 65,536; the test overrides those two numbers) and the hook names map to HF layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from refusal_eval.coders import JumpReLUCoder, StandardCoder
from refusal_eval.errors import RefusalEvalError
from refusal_eval.saes import load_saes

D_IN, D_SAE = 32, 96


def _fake_hub(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """``files`` as a cached snapshot of ``repo_id`` (what hf_hub_download reads offline)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    sha = "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    for name, data in files.items():
        path = repo / "snapshots" / sha / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _torch_bytes(obj: dict[str, torch.Tensor], tmp: Path) -> bytes:
    torch.save(obj, tmp)
    return tmp.read_bytes()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g) * 0.3,
        "W_dec": torch.randn(D_SAE, D_IN, generator=g) * 0.3,
        "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
        "b_dec": torch.randn(D_IN, generator=g) * 0.1,
        "threshold": torch.rand(D_SAE, generator=g) * 0.2,
    }


def test_andyrdt_dictionary_learning_batch_topk_loads_as_jumprelu(hub, tmp_path):
    w = _weights(0)
    folder = "resid_post_layer_7/trainer_1"
    config = {
        "trainer": {
            "dict_class": "BatchTopKSAE", "activation_dim": D_IN, "dict_size": D_SAE, "k": 8,
            "layer": 7, "lm_name": "meta-llama/Llama-3.1-8B-Instruct",
        },
        "buffer": {"ctx_len": 1024},
    }  # fmt: skip
    ae = {  # dictionary_learning's BatchTopKSAE state dict: nn.Linear layouts
        "encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"],
        "decoder.weight": w["W_dec"].T.contiguous(), "b_dec": w["b_dec"], "threshold": torch.tensor(0.05),
        "k": torch.tensor(8),
    }  # fmt: skip
    files = {
        f"{folder}/config.json": json.dumps(config).encode(),
        f"{folder}/ae.pt": _torch_bytes(ae, tmp_path / "a"),
    }
    _fake_hub(hub, "andyrdt/saes-llama-3.1-8b-instruct", files)
    saes = load_saes("llama-3.1-8b-instruct-andyrdt", layers=[7])
    c = saes[7]
    assert isinstance(c, JumpReLUCoder) and c.layer == 7 and c.hook.tl_name == "blocks.7.hook_resid_post"
    assert saes.ids == {7: "resid_post_layer_7_trainer_1"}
    assert torch.equal(c.W_enc, w["W_enc"]) and torch.equal(c.W_dec, w["W_dec"])
    assert torch.equal(c.threshold, torch.full((D_SAE,), 0.05))  # the scalar threshold, per latent
    assert c.apply_b_dec_to_input  # dictionary_learning subtracts b_dec before encoding
    x = torch.randn(5, D_IN)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    assert torch.allclose(c.encode(x), pre.relu() * (pre > 0.05), atol=1e-6)
    templated = load_saes(
        "llama-3.1-8b-instruct-andyrdt", layers=[7], ids="resid_post_layer_{layer}_trainer_1"
    )
    assert templated.ids == saes.ids and torch.equal(templated[7].W_enc, c.W_enc)
    with pytest.raises(RefusalEvalError, match=r"SAE id template 'trainer_1' needs a \{layer\} field"):
        load_saes("llama-3.1-8b-instruct-andyrdt", layers=[7], ids="trainer_1")
    held = load_saes("llama-3.1-8b-instruct-andyrdt", layers=[7], latents={7: [1, 50]})[7]
    assert held.n_held == 2 and held.weights_sha256() == c.weights_sha256()  # shrunk after loading


def test_goodfire_pth_loads_as_a_standard_sae(hub, tmp_path, monkeypatch):
    import sae_lens.loading.pretrained_sae_loaders as loaders

    real = loaders.get_goodfire_config_from_hf

    def shrunk(*args, **kw):  # sae-lens hard-codes the real 4,096 x 65,536
        return {**real(*args, **kw), "d_in": D_IN, "d_sae": D_SAE}

    monkeypatch.setattr(loaders, "get_goodfire_config_from_hf", shrunk)
    w = _weights(1)
    pth = {
        "encoder_linear.weight": w["W_enc"].T.contiguous(), "encoder_linear.bias": w["b_enc"],
        "decoder_linear.weight": w["W_dec"].T.contiguous(), "decoder_linear.bias": w["b_dec"],
    }  # fmt: skip
    name = "Llama-3.1-8B-Instruct-SAE-l19.pth"
    _fake_hub(hub, "Goodfire/Llama-3.1-8B-Instruct-SAE-l19", {name: _torch_bytes(pth, tmp_path / "g")})
    saes = load_saes("goodfire-llama-3.1-8b-instruct", layers=[19])
    c = saes[19]
    assert isinstance(c, StandardCoder) and c.hook.hf_name == "model.layers.19"
    assert not c.apply_b_dec_to_input
    assert torch.equal(c.W_enc, w["W_enc"]) and torch.equal(c.b_dec, w["b_dec"])
    x = torch.randn(3, D_IN)
    assert torch.allclose(c.encode(x), (x @ w["W_enc"] + w["b_enc"]).relu(), atol=1e-6)


@pytest.mark.parametrize(
    ("release", "folder_of"),
    [
        ("gemma-scope-2-1b-it-res", lambda layer: f"resid_post/layer_{layer}_width_16k_l0_medium"),
        ("gemma-scope-2-1b-it-res-all", lambda layer: f"resid_post_all/layer_{layer}_width_16k_l0_small"),
    ],
)
def test_gemma_scope_2_res_loads_with_the_layer_from_its_id(hub, monkeypatch, release, folder_of):
    import sae_lens.loading.pretrained_sae_loaders as loaders
    from safetensors.torch import save

    from refusal_eval.saes import release_ids

    layer = 13 if release.endswith("-res") else 4
    assert f"layer_{layer}_width_16k_l0_{'medium' if release.endswith('-res') else 'small'}" in release_ids(
        release
    )
    w = _weights(2)
    params = {"w_enc": w["W_enc"], "w_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"],
              "threshold": w["threshold"]}  # fmt: skip
    config = {
        "architecture": "jump_relu",
        "model_name": "gemma-v3-1b-it",
        "hf_hook_point_in": f"model.layers.{layer}",
    }
    folder = folder_of(layer)
    _fake_hub(
        hub, "google/gemma-scope-2-1b-it",
        {f"{folder}/config.json": json.dumps(config).encode(), f"{folder}/params.safetensors": save(params)},
    )  # fmt: skip
    # sae-lens reads the tensor shapes over HTTP range requests; offline, read the cached header
    monkeypatch.setattr(
        loaders,
        "get_safetensors_tensor_shapes",
        lambda *_a, **_k: {k: list(v.shape) for k, v in params.items()},
    )
    saes = load_saes(release, layers=[layer])
    c = saes[layer]
    assert isinstance(c, JumpReLUCoder) and c.layer == layer and c.d_sae == D_SAE
    assert not c.apply_b_dec_to_input  # Gemma Scope encodes x itself
    assert torch.equal(c.threshold, w["threshold"]) and torch.equal(c.W_dec, w["W_dec"])
    x = torch.randn(4, D_IN)
    pre = x @ w["W_enc"] + w["b_enc"]
    assert torch.allclose(c.encode(x), pre.relu() * (pre > w["threshold"]), atol=1e-6)
