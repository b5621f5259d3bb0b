"""A toy SAE train through the sae-lens trainer, loaded back by both loaders."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model

from refusal_eval import RefusalEvalError, load_model, load_saes
from refusal_eval.cli import main
from refusal_eval.sae_training import TrainConfig, check_train_args, train_sae


def _residuals(model, ids, layer):
    seen = {}
    h = model.model.layers[layer].register_forward_hook(lambda _m, _a, o: seen.setdefault("x", o))
    with torch.no_grad():
        model(ids)
    h.remove()
    return seen["x"][:, 1:].reshape(-1, seen["x"].shape[-1])


def _fve(coder, x):
    recon = coder.decode(coder.encode(x))
    return 1 - ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_toy_training_loads_both_ways_and_beats_random(tiny_model_dir, tmp_path, arch):
    from sae_lens import SAE

    chat = load_model(str(tiny_model_dir), dtype="float32")
    gen = torch.Generator().manual_seed(0)
    sequences = torch.randint(6, 96, (160, 128), generator=gen).tolist()  # ~20k tokens
    cfg = TrainConfig(
        layer=1, width=128, arch=arch, tokens=20_480, k=8, batch_tokens=1024, context_size=64, lr=3e-3
    )
    out = train_sae(chat, sequences, cfg, tmp_path / "sae")
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["hook_name"] == "blocks.1.hook_resid_post" and meta["hf_hook_name"] == "model.layers.1"
    plain = SAE.load_from_disk(str(out))
    bundle = load_saes(str(out), model=chat.model)
    assert bundle.layers == [1] and bundle[1].d_sae == 128
    x = _residuals(chat.model, torch.tensor(sequences[:8]), 1)
    torch.testing.assert_close(bundle[1].encode(x), plain.encode(x), atol=1e-5, rtol=1e-5)
    trained = _fve(bundle[1], x)
    random_coder = bundle[1].to()
    torch.manual_seed(1)
    for name in ("W_enc", "W_dec"):
        t = getattr(random_coder, name)
        t.copy_(torch.randn_like(t) * t.std())
    assert trained > 0.2
    assert trained > _fve(random_coder, x) + 0.3


def test_bad_train_arguments(tmp_path):
    with pytest.raises(RefusalEvalError, match="layer 5 is out of range"):
        check_train_args(TrainConfig(layer=5), 3, tmp_path)
    with pytest.raises(RefusalEvalError, match="--width must be at least 1"):
        check_train_args(TrainConfig(layer=0, width=0), 3, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RefusalEvalError, match="cannot write to"):
        check_train_args(TrainConfig(layer=0), 3, blocker / "sub")


def test_cli_train_bad_layer_exits_2(tiny_model_dir, tmp_path, capsys):
    code = main(
        [
            "train-sae",
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "float32",
            "--layer",
            "9",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "layer 9 is out of range: the model has 3 layers" in capsys.readouterr().err


def test_tiny_model_fixture_matches_config():
    assert tiny_model().config.num_hidden_layers == 3
