"""What the lm-eval discovery hook costs every Python start in the environment.

Three interpreters side by side, ``--runs`` times each, in one process tree (so a busy machine
slows all three alike): the installed hook (the .pth imports ``_refusal_eval_lm_eval_hook``),
the hook switched off (``REFUSAL_EVAL_NO_LM_EVAL_HOOK=1``: the .pth imports nothing), and the
former form, which imported ``refusal_eval._lm_eval_hook`` (the refusal_eval package, typing,
importlib.abc). Reports the median wall time of ``python -c pass`` and the hook's cumulative
import time from ``-X importtime``.

Run: .venv/bin/python benchmarks/bench_startup_hook.py --runs 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def _run(env: dict[str, str], code: str) -> tuple[float, dict[str, int]]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    cumulative: dict[str, int] = {}
    for line in out.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            cumulative[parts[2]] = int(parts[1])
    return wall, cumulative


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    on = dict(os.environ)
    off = {**os.environ, "REFUSAL_EVAL_NO_LM_EVAL_HOOK": "1"}
    forms = {
        "hook (installed)": (on, "pass", "_refusal_eval_lm_eval_hook"),
        "hook off": (off, "pass", None),
        "former: import refusal_eval._lm_eval_hook": (
            off,
            "import refusal_eval._lm_eval_hook",
            "refusal_eval._lm_eval_hook",
        ),
    }
    walls: dict[str, list[float]] = {k: [] for k in forms}
    hook_us: dict[str, list[int]] = {k: [] for k in forms}
    for _ in range(args.runs):
        for name, (env, code, module) in forms.items():
            wall, cumulative = _run(env, code)
            walls[name].append(wall)
            if module:
                hook_us[name].append(cumulative.get(module, 0))
    base = statistics.median(walls["hook off"])
    for name in forms:
        med = statistics.median(walls[name])
        imp = f"{statistics.median(hook_us[name]) / 1000:.2f} ms" if hook_us[name] else "-"
        print(f"{name:45s} start {med * 1000:6.1f} ms ({(med - base) * 1000:+.1f} ms)  hook imports {imp}")


if __name__ == "__main__":
    main()
