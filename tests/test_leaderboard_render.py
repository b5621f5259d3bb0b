"""Open the leaderboard HTML in headless Chromium: it must render (plots drawn) with no
console errors. Skips when Chromium is not installed (Debian: apt-get install chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from test_leaderboard import results_json, write_run

from refusal_eval.report import read_all, write_leaderboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed")
def test_html_renders_in_headless_chromium(tmp_path):
    paths = []
    for model, a in (("Qwen2.5-Coder-0.5B-Instruct", 0.3), ("Qwen2.5-Coder-1.5B-Instruct", 0.7)):
        attack = {"baseline": 0.2, "sae": a, "sae_fm": a, "random": 0.2, "direction": 0.9}
        p = tmp_path / model / f"results_2026-11-24T00-00-0{len(paths)}.json"
        write_run(p, results_json(model, attack), attack)
        paths.append(p)
    out = tmp_path / "board"
    write_leaderboard(read_all(paths), out)
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         f"--screenshot={shot}", "--window-size=1400,1100", (out / "leaderboard.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    if os.environ.get("REFUSAL_EVAL_KEEP_SHOT"):  # to look at it: the file named in the variable
        shutil.copy(shot, os.environ["REFUSAL_EVAL_KEEP_SHOT"])
    console_errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not console_errors
    page = (out / "leaderboard.html").as_uri()
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    n_plots = len(list((out / "plots").iterdir()))
    assert f'data-rendered="svg:{n_plots} rows:2"' in dom  # the page script ran to the end: all plots, 2 rows
