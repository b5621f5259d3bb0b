"""``dtype="auto"`` picks bf16 only where it is native, and a plan searched in one precision
serves a model loaded in another when no plan of its own precision exists."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from refusal_eval.config import SearchConfig
from refusal_eval.models import _load
from refusal_eval.search.auto import find_plan_for
from refusal_eval.search.pipeline import SearchInputs, search_key


@pytest.mark.parametrize(
    ("native", "device", "want"),
    [(True, "cpu", torch.bfloat16), (False, "cpu", torch.float32), (False, "meta", torch.bfloat16)],
)
def test_auto_dtype_follows_native_bf16(monkeypatch, native, device, want):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert _load.parse_dtype("auto", device) == want
    assert _load.parse_dtype("float32", device) == torch.float32  # an explicit dtype is kept
    assert _load.parse_dtype(torch.float16) == torch.float16


def _inputs(dtype: str) -> SearchInputs:
    model = {"name": "m", "revision": None, "dtype": dtype}
    saes = {"layers": {10: {"sha256": "a" * 64}}}
    data = {"harmful": {"sha256": "h" * 64}}
    cfg = SearchConfig()
    key = search_key(model, saes, cfg, data, [7])
    return SearchInputs(cfg, None, ("I",), [7], model, saes, data, key)  # type: ignore[arg-type]


def test_a_plan_of_another_precision_serves_when_none_of_its_own_exists(isolated_cache, caplog):
    bf16, fp32 = _inputs("torch.bfloat16"), _inputs("torch.float32")
    assert bf16.key != fp32.key  # the key holds the precision the search ran in
    assert find_plan_for(fp32) is None
    plans = isolated_cache / "plans"
    plans.mkdir(parents=True, exist_ok=True)
    (plans / f"{bf16.key[:16]}.json").write_text(json.dumps({"key": bf16.key}))
    with caplog.at_level(logging.WARNING):
        found = find_plan_for(fp32)
    assert found == plans / f"{bf16.key[:16]}.json"
    assert "no plan searched in float32" in caplog.text and "searched in bfloat16" in caplog.text
    (plans / f"{fp32.key[:16]}.json").write_text(json.dumps({"key": fp32.key}))
    assert find_plan_for(fp32) == plans / f"{fp32.key[:16]}.json"  # its own precision wins
    other = _inputs("torch.float32")
    saes = {"layers": {10: {"sha256": "b" * 64}}}  # other SAEs: no plan of any precision fits
    key = search_key(other.model, saes, other.cfg, other.data, [7])
    assert (
        find_plan_for(SearchInputs(other.cfg, None, ("I",), [7], other.model, saes, other.data, key)) is None
    )  # type: ignore[arg-type]
