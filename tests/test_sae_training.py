"""A toy SAE train through the sae-lens trainer, loaded back by both loaders."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from refusal_eval import RefusalEvalError, load_model, load_saes
from refusal_eval.cli import main
from refusal_eval.saes import TrainConfig, check_train_args, checkpoints, train_sae


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
    with pytest.raises(RefusalEvalError, match="--checkpoints must be >= 0, got -1"):
        check_train_args(TrainConfig(layer=0, n_checkpoints=-1), 3, tmp_path)
    with pytest.raises(RefusalEvalError, match=r"--aux-coef must be >= 0, got -1.0"):
        check_train_args(TrainConfig(layer=0, aux_coefficient=-1.0), 3, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RefusalEvalError, match="cannot write to"):
        check_train_args(TrainConfig(layer=0), 3, blocker / "sub")


def test_cli_train_bad_layer_exits_2(tiny_model_dir, tmp_path, capsys):
    base = ["train-sae", "--model", str(tiny_model_dir), "--dtype", "float32", "--out", str(tmp_path / "o")]
    assert main([*base, "--layer", "9"]) == 2
    assert "layer 9 is out of range: the model has 3 layers" in capsys.readouterr().err
    assert main([*base, "--layer", "1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds no checkpoint of an unfinished train-sae run" in err and "without --resume" in err


def _toy(tiny_model_dir):
    chat = load_model(str(tiny_model_dir), dtype="float32")
    gen = torch.Generator().manual_seed(0)
    sequences = torch.randint(6, 96, (160, 128), generator=gen).tolist()
    cfg = TrainConfig(
        layer=1, width=64, k=8, tokens=20_480, batch_tokens=1024, context_size=64, lr=3e-3, n_checkpoints=1
    )
    return chat, sequences, cfg


def test_interrupted_training_resumes_from_its_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    from sae_lens import SAE
    from sae_lens.training.sae_trainer import SAETrainer

    chat, sequences, cfg = _toy(tiny_model_dir)
    out = tmp_path / "sae"
    real_step, calls = SAETrainer.step, []

    def step(self, batch):
        calls.append(self.n_training_samples)
        if len(calls) == 15:  # a Ctrl-C during step 15 of 20
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(SAETrainer, "step", step)
    with pytest.raises(KeyboardInterrupt):
        train_sae(chat, sequences, cfg, out)
    # the periodic checkpoint (after 11 steps) was replaced by the one written on the interrupt
    assert [n for n, _ in checkpoints(out)] == [14 * 1024]
    assert not (out / "sae_weights.safetensors").exists()

    calls.clear()
    train_sae(chat, sequences, cfg, out, resume=True)
    assert calls[0] == 14 * 1024 and len(calls) == 6  # only the 6 missing steps ran
    assert not (out / "checkpoints").exists() and not (out / "train_state.json").exists()
    x = _residuals(chat.model, torch.tensor(sequences[:8]), 1)
    assert _fve(SAE.load_from_disk(str(out)), x) > 0.2


def test_resume_refuses_other_settings_or_nothing_to_resume(tiny_model_dir, tmp_path, monkeypatch):
    from sae_lens.training.sae_trainer import SAETrainer

    chat, sequences, cfg = _toy(tiny_model_dir)
    out = tmp_path / "sae"
    with pytest.raises(RefusalEvalError, match="holds no checkpoint of an unfinished train-sae run"):
        train_sae(chat, sequences, cfg, out, resume=True)

    def interrupt(self, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(SAETrainer, "step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_sae(chat, sequences, cfg, out)
    other = TrainConfig(**{**cfg.__dict__, "lr": 1e-3, "width": 32})
    with pytest.raises(RefusalEvalError, match=r"other settings \(lr, width\)"):
        train_sae(chat, sequences, other, out, resume=True)
    assert [n for n, _ in checkpoints(out)] == [0]  # the refused resume left the checkpoint alone


def test_layers_trained_together_share_one_forward_and_load_as_a_release(tiny_model_dir, tmp_path, capsys):
    """`--layer 0,2`: one sae-lens multi-SAE run, the model run once per batch up to layer 2, one
    release-layout folder per layer, each SAE as good as one trained alone."""
    from sae_lens import SAE

    from refusal_eval.saes import train_saes

    chat, sequences, cfg = _toy(tiny_model_dir)
    seen = {0: 0, 2: 0}
    hooks = [
        chat.model.model.layers[i].register_forward_hook(lambda *_, i=i: seen.__setitem__(i, seen[i] + 1))
        for i in seen
    ]
    try:
        written = train_saes(chat, sequences, [replace(cfg, layer=0), replace(cfg, layer=2)], tmp_path / "r")
    finally:
        for h in hooks:
            h.remove()
    assert written == {0: tmp_path / "r" / "layer_0", 2: tmp_path / "r" / "layer_2"}
    # every forward that fed layer 0's SAE also fed layer 2's (two runs would pass layer 0 twice as often)
    assert seen[0] == seen[2] >= 20 * 1024 // (16 * 63)
    bundle = load_saes(str(tmp_path / "r"), model=chat.model)
    assert bundle.layers == [0, 2] and bundle[0].d_sae == bundle[2].d_sae == 64
    for layer in (0, 2):
        meta = json.loads((written[layer] / "cfg.json").read_text())["metadata"]
        assert meta["hf_hook_name"] == f"model.layers.{layer}"
        assert meta["refusal_eval_training"]["layer"] == layer
        x = _residuals(chat.model, torch.tensor(sequences[:8]), layer)
        assert _fve(SAE.load_from_disk(str(written[layer])), x) > 0.2
    assert not (tmp_path / "r" / "checkpoints").exists()
    assert not (tmp_path / "r" / "train_state.json").exists()


def test_layers_trained_together_resume_and_refuse_other_layers(tiny_model_dir, tmp_path, monkeypatch):
    from sae_lens.training.sae_trainer import SAETrainer

    from refusal_eval.saes import train_saes

    chat, sequences, cfg = _toy(tiny_model_dir)
    cfgs = [replace(cfg, layer=0), replace(cfg, layer=1)]
    out = tmp_path / "r"
    real_step, calls = SAETrainer.step, []

    def step(self, batch):
        calls.append(self.n_training_samples)
        if len(calls) == 2 * 14 + 1:  # Ctrl-C in step 15 (two SAEs step per batch)
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(SAETrainer, "step", step)
    with pytest.raises(KeyboardInterrupt):
        train_saes(chat, sequences, cfgs, out)
    assert [n for n, _ in checkpoints(out)] == [14 * 1024]
    with pytest.raises(RefusalEvalError, match=r"other settings \(layer, layers\)"):
        train_saes(chat, sequences, cfgs[:1], out, resume=True)
    calls.clear()
    train_saes(chat, sequences, cfgs, out, resume=True)
    assert calls[0] == 14 * 1024 and len(calls) == 2 * 6  # only the 6 missing steps, for both
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["layer_0", "layer_1"]


def test_layers_trained_together_must_share_their_settings(tmp_path):
    from refusal_eval.saes import check_same_run

    with pytest.raises(RefusalEvalError, match=r"layer listed twice in \[1, 1\]"):
        check_same_run([TrainConfig(layer=1), TrainConfig(layer=1)])
    with pytest.raises(RefusalEvalError, match="share every setting but the layer"):
        check_same_run([TrainConfig(layer=0), TrainConfig(layer=1, width=8)])


def test_cli_train_bad_layer_list_exits_2(tiny_model_dir, tmp_path, capsys):
    base = ["train-sae", "--model", str(tiny_model_dir), "--dtype", "float32", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--layer", "1,x"])
    assert exc.value.code == 2
    assert "expected a layer or layers like 4,8,12, got '1,x'" in capsys.readouterr().err
    assert main([*base, "--layer", "1,3"]) == 2
    assert "layer 3 is out of range: the model has 3 layers" in capsys.readouterr().err
