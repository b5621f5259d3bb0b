"""The tree stays ruff-clean (lint + format), as the project's conventions require."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff not installed (pip install -e '.[test]')")
    return [exe]


def test_ruff_lint_clean():
    out = subprocess.run([*_ruff(), "check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_clean():
    out = subprocess.run([*_ruff(), "format", "--check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_clean():
    """The package, its tasks and plugins type-check under ``mypy --strict`` (pyproject.toml)."""
    pytest.importorskip("mypy", reason="mypy not installed (pip install -e '.[test]')")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_tasks_and_plugins_install_inside_the_namespace():
    import importlib.util

    assert importlib.util.find_spec("refusal_eval.tasks") is not None
    assert importlib.util.find_spec("refusal_eval.plugins") is not None
    cwd_free = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; print(u.find_spec('tasks'), u.find_spec('plugins'))",
        ],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert cwd_free.stdout.strip() == "None None"
