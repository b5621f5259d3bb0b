"""Open the leaderboard HTML in headless Chromium: it must render (plots drawn) with no
console errors. Skips when Chromium is not installed (Debian: apt-get install chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from test_leaderboard import results_json

from refusal_eval.report import read_all, write_leaderboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed")
def test_html_renders_in_headless_chromium(tmp_path):
    paths = []
    for model, a in (("m1", 0.3), ("m2", 0.7)):
        p = tmp_path / f"{model}.json"
        p.write_text(
            json.dumps(
                results_json(model, dict.fromkeys(("baseline", "sae", "sae_fm", "random", "direction"), a))
            )
        )
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
    console_errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not console_errors
    page = (out / "leaderboard.html").as_uri()
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert 'data-rendered="svg:3 rows:2"' in dom  # the page script ran to the end and saw 3 plots, 2 rows
