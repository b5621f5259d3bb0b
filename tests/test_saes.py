"""SAE loading from sae-lens directories, hook-name mapping both ways, compatibility checks."""

from __future__ import annotations

import pytest
import torch
from conftest import D_MODEL, make_sae_lens

from refusal_eval import HookPoint, RefusalEvalError, load_saes
from refusal_eval.cli import main


def test_hook_names_both_ways():
    assert HookPoint.parse("blocks.12.hook_resid_post") == HookPoint(12, "resid_post")
    assert HookPoint.parse("model.layers.12") == HookPoint(12, "resid_post")
    assert HookPoint.parse("blocks.3.hook_resid_pre") == HookPoint(3, "resid_pre")
    assert HookPoint(12).hf_name == "model.layers.12"
    assert HookPoint(12).tl_name == "blocks.12.hook_resid_post"
    with pytest.raises(RefusalEvalError, match="only residual-stream SAEs"):
        HookPoint.parse("blocks.3.attn.hook_z")


@pytest.fixture
def sae_dir(tmp_path):
    root = tmp_path / "saes"
    make_sae_lens("jumprelu", layer=0, seed=1).save_model(root / "layer_0")
    make_sae_lens("standard", layer=2, seed=2, hook_key="hf_hook_name").save_model(root / "layer_2")
    return root


def test_load_directory_of_saes(sae_dir, qwen_tiny):
    bundle = load_saes(str(sae_dir), model=qwen_tiny)
    assert bundle.layers == [0, 2]
    assert bundle[0].architecture == "jumprelu" and bundle[2].architecture == "standard"
    assert bundle[2].hook.tl_name == "blocks.2.hook_resid_post"  # read from hf_hook_name
    original = make_sae_lens("jumprelu", layer=0, seed=1)
    x = torch.randn(4, D_MODEL)
    torch.testing.assert_close(bundle[0].encode(x), original.encode(x))
    assert bundle.describe()["hooks"] == {"0": "blocks.0.hook_resid_post", "2": "blocks.2.hook_resid_post"}


def test_load_single_dir_and_layer_filter(sae_dir):
    assert load_saes(str(sae_dir / "layer_2")).layers == [2]
    assert load_saes(str(sae_dir), layers=[2]).layers == [2]
    with pytest.raises(RefusalEvalError, match=r"has no SAE for layer\(s\) \[1\]"):
        load_saes(str(sae_dir), layers=[1])


def test_width_mismatch_and_depth(tmp_path, qwen_tiny):
    make_sae_lens("standard", d_in=32, layer=1).save_model(tmp_path / "narrow")
    with pytest.raises(RefusalEvalError, match="d_in=32 but the model width is 64"):
        load_saes(str(tmp_path / "narrow"), model=qwen_tiny)
    make_sae_lens("standard", layer=9).save_model(tmp_path / "deep")
    with pytest.raises(RefusalEvalError, match="layer 9 is out of range"):
        load_saes(str(tmp_path / "deep"), model=qwen_tiny)


def test_empty_or_broken_dirs(tmp_path):
    with pytest.raises(RefusalEvalError, match="no SAE found"):
        load_saes(str(tmp_path))
    (tmp_path / "cfg.json").write_text("{not json")
    with pytest.raises(RefusalEvalError, match="cannot load the SAE"):
        load_saes(str(tmp_path))
    with pytest.raises(RefusalEvalError, match="does not exist"):
        load_saes("./nowhere")


def test_unknown_release_offline():
    with pytest.raises(RefusalEvalError, match="unknown SAE release 'some-unknown-release'"):
        load_saes("some-unknown-release", layers=[3])  # layers were passed: say what is wrong
    with pytest.raises(
        RefusalEvalError, match=r"which SAEs of release 'llama_scope_lxr_8x'\? it has layers \[0, 1"
    ):
        load_saes("llama_scope_lxr_8x")
    with pytest.raises(RefusalEvalError, match="cannot load SAE gemma-scope-2b-pt-res-canonical"):
        load_saes("gemma-scope-2b-pt-res-canonical", layers=[12])


@pytest.mark.parametrize(
    ("saes_kw", "ablate", "message"),
    [
        ({"d_in": 32, "layer": 1}, "1:0", "d_in=32 but the model width is 64"),
        ({"layer": 5}, "5:0", "layer 5 is out of range"),
        ({"layer": 1}, "1:999", r"latent ids \[999\] are out of range"),
    ],
)
def test_cli_bad_sae_inputs_exit_2(tmp_path, tiny_model_dir, capsys, saes_kw, ablate, message):
    make_sae_lens("standard", **saes_kw).save_model(tmp_path / "sae")
    code = main(
        [
            "demo",
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "float32",
            "--saes",
            str(tmp_path / "sae"),
            "--ablate",
            ablate,
            "--max-new-tokens",
            "2",
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1
    assert err[0].startswith("refusal-eval: error:")
    import re

    assert re.search(message, err[0]) and "(fix:" in err[0]


def test_convert_sae_to_fp16_round_trips(tmp_path, capsys):
    import torch
    from conftest import make_sae_lens

    from refusal_eval.saes import load_saes

    make_sae_lens("topk", layer=2, k=8).save_model(str(tmp_path / "src"))
    assert main(["convert-sae", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 0
    assert "layer 2: 256 latents" in capsys.readouterr().out
    src, out = load_saes(str(tmp_path / "src"))[2], load_saes(str(tmp_path / "out"))[2]
    assert out.k == 8 and out.hook == src.hook
    assert (tmp_path / "out/layer_2/sae_weights.safetensors").stat().st_size < 0.6 * (
        tmp_path / "src/sae_weights.safetensors"
    ).stat().st_size
    torch.testing.assert_close(out.W_dec, src.W_dec.half().float())
    x = torch.randn(5, 64)
    assert (out.encode(x) > 0).eq(src.encode(x) > 0).float().mean() > 0.95


@pytest.mark.parametrize(
    ("release", "layers", "d_in", "d_sae", "training_tokens"),
    [
        ("qwen2.5-coder-0.5b-instruct-res-2k", [6, 8, 10, 12, 14, 16, 18, 20], 896, 2048, 1_048_576),
        ("qwen2.5-coder-1.5b-instruct-res-2k", [10, 16, 22], 1536, 2048, 1_048_576),
    ],
)
def test_shipped_releases_load_offline_by_name(release, layers, d_in, d_sae, training_tokens):
    import json

    from refusal_eval.models._builtin import QWEN_05B, QWEN_15B
    from refusal_eval.saes import shipped_releases

    bundle = load_saes(release)
    assert bundle.layers == layers
    for layer in layers:
        coder = bundle[layer]
        assert (coder.d_in, coder.d_sae, coder.architecture) == (d_in, d_sae, "topk")
        assert coder.hook.hf_name == f"model.layers.{layer}"
        cfg = json.loads((shipped_releases()[release] / f"layer_{layer}" / "cfg.json").read_text())
        assert cfg["metadata"]["refusal_eval_training"]["tokens"] == training_tokens
        # sae-lens conventions: the HF id as model_name, no HF revision (a GGUF sha is not one)
        meta = cfg["metadata"]
        assert meta["model_name"] == next(
            m.hub_id for m in (QWEN_05B, QWEN_15B) if release.startswith(m.default_saes or "-")
        )
        assert meta["model_revision"] is None and len(meta["refusal_eval_model"]["gguf_sha256"]) == 64
    size = sum(f.stat().st_size for f in shipped_releases()[release].rglob("*.safetensors"))
    assert size <= 60_000_000  # fp16: eight 2,048-wide layers are 58.7 MB


def test_shipped_saes_stay_within_the_package_budget():
    """All shipped SAEs together: one 2,048-wide release per model (58.7 + 37.7 MB, docs/saes; the
    first releases, 0.5B 3 x 4,096 and 1.5B layer 22, went when the board moved to these)."""
    from refusal_eval.saes import shipped_releases

    total = sum(f.stat().st_size for d in shipped_releases().values() for f in d.rglob("*.safetensors"))
    assert total <= 100_000_000  # 96.5 MB now


def test_paper_release_ids_resolve_from_sae_lens_directory_for_every_layer():
    """Gemma Scope 2B res (26 layers) and Llama Scope 8B res (32 layers), without downloading."""
    from refusal_eval.saes import release_ids, resolve_release_ids

    canonical = resolve_release_ids(
        "gemma-scope-2b-pt-res-canonical", range(26), release_ids("gemma-scope-2b-pt-res-canonical")
    )
    assert canonical == {layer: f"layer_{layer}/width_16k/canonical" for layer in range(26)}
    ids = release_ids("gemma-scope-2b-pt-res")
    picked = resolve_release_ids("gemma-scope-2b-pt-res", range(26), ids)
    assert set(picked) == set(range(26)) and all(picked[layer] in ids for layer in range(26))
    assert all(v.startswith(f"layer_{k}/width_16k/average_l0_") for k, v in picked.items())
    assert picked[12] == "layer_12/width_16k/average_l0_82" or "average_l0" in picked[12]
    llama = resolve_release_ids("llama_scope_lxr_8x", range(32), release_ids("llama_scope_lxr_8x"))
    assert llama == {layer: f"l{layer}r_8x" for layer in range(32)}
    with pytest.raises(RefusalEvalError, match=r"has no SAE for layer\(s\) \[40\] \(it has \[0, 1, 2"):
        resolve_release_ids("llama_scope_lxr_8x", [3, 40], release_ids("llama_scope_lxr_8x"))
    with pytest.raises(RefusalEvalError, match="unknown SAE release 'no-such-release'"):
        release_ids("no-such-release")
