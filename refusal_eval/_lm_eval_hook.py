"""Plugin discovery for lm-eval releases that read no entry points (0.4.13 and older).

``pip install`` puts ``refusal_eval_lm_eval.pth`` and a copy of this file,
``_refusal_eval_lm_eval_hook.py``, in site-packages. The .pth line imports that copy at
interpreter start-up unless ``REFUSAL_EVAL_NO_LM_EVAL_HOOK`` is set (then nothing is imported).
It imports no other module (``os`` and ``sys`` are loaded already; not even the refusal_eval
package) and puts one finder at the front of ``sys.meta_path``, which it must: a finder behind
the standard path finder never sees ``lm_eval`` being imported. The finder answers a dict lookup
and ``None`` for every other module. Cost: BENCHMARKS.md (start-up hook). When ``lm_eval.models``
or ``lm_eval.tasks.manager`` is imported, right after that module loads, it

- registers ``sae_ablated`` and ``sae_ablated_vllm`` as lazy placeholders
  (``refusal_eval.plugins.hf:SAEAblatedLM``, ``refusal_eval.plugins.vllm:SAEAblatedVLLM``;
  nothing heavy is imported until the model is actually requested) and makes an uncaught
  refusal_eval error print as one line,
- adds the installed ``refusal_eval/tasks/refusal_ablation`` folder to every ``TaskManager``'s search path
  (before any user ``include_path``, so user tasks still win), and
- after a run of our models, appends refusal_eval's one-row-per-condition summary to the table
  the ``lm_eval`` CLI prints and writes it next to the results file
  (``results_<date>.summary.txt``; :mod:`refusal_eval.report.summary`). Results of any other
  model pass through untouched.

The first two are skipped when lm-eval already knows the names (a release that reads the
``lm_eval.models`` / ``lm_eval.tasks`` entry points declared in setup.cfg). Set
``REFUSAL_EVAL_NO_LM_EVAL_HOOK=1`` to disable the watcher.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing alone costs ~5 ms per start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MODELS = {
    "sae_ablated": "refusal_eval.plugins.hf:SAEAblatedLM",
    "sae_ablated_vllm": "refusal_eval.plugins.vllm:SAEAblatedVLLM",
}


def tasks_dir() -> str:
    """The installed ``refusal_eval.tasks`` folder (editable installs map it to ``tasks/``)."""
    import importlib.util

    spec = importlib.util.find_spec("refusal_eval.tasks")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return os.path.abspath(os.path.join(locations[0], "refusal_ablation")) if locations else ""


def _register_model(_module: Any) -> None:
    from lm_eval.api.registry import model_registry

    for name, target in MODELS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)
    _one_line_errors()


def _one_line_errors() -> None:
    """A refusal_eval error that ends an ``lm_eval`` run prints as one line, its message and its
    fix, instead of a traceback through lm-eval (exit status 1 as for any uncaught exception);
    every other exception keeps Python's own report."""
    previous = sys.excepthook
    if getattr(previous, "_refusal_eval_patched", False):
        return

    def excepthook(kind: Any, exc: Any, tb: Any) -> None:
        if getattr(kind, "refusal_eval_error", False):
            print(f"error: {exc}", file=sys.stderr)
            cause = exc.__cause__
            if cause is not None:  # what a wrapping error was raised from, on one more line
                print(f"  caused by {type(cause).__name__}: {cause}", file=sys.stderr)
        else:
            previous(kind, exc, tb)

    excepthook._refusal_eval_patched = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook


def _patch_task_manager(module: Any) -> None:
    cls = module.TaskManager
    if getattr(cls, "_refusal_eval_patched", False):
        return
    original = cls.__init__

    def __init__(self: Any, *args: Any, include_path: Any = None, **kwargs: Any) -> None:
        paths = (
            []
            if include_path is None
            else list(include_path)
            if isinstance(include_path, (list, tuple))
            else [include_path]
        )
        ours = tasks_dir()
        if ours and os.path.isdir(ours) and all(os.path.abspath(str(p)) != ours for p in paths):
            paths.insert(0, ours)
        original(self, *args, include_path=paths or None, **kwargs)

    cls.__init__ = __init__
    cls._refusal_eval_patched = True


def _ours(results: Any) -> bool:
    config = results.get("config") if isinstance(results, dict) else None
    return isinstance(config, dict) and "refusal_eval_model" in config


def _patch_make_table(module: Any) -> None:
    original = module.make_table
    if getattr(original, "_refusal_eval_patched", False):
        return

    def make_table(result_dict: Any, column: str = "results", *args: Any, **kwargs: Any) -> Any:
        table = original(result_dict, column, *args, **kwargs)
        last = column == "groups" or (column == "results" and "groups" not in result_dict)
        if last and _ours(result_dict):  # after the last table the CLI prints
            try:
                from refusal_eval.report.summary import format_summary

                summary = format_summary(result_dict)
            except Exception as exc:  # the table must print whatever happens to the summary
                print(f"refusal_eval: no summary ({type(exc).__name__}: {exc})", file=sys.stderr)
                summary = ""
            table = f"{table}\n{summary}\n" if summary else table
        return table

    make_table._refusal_eval_patched = True  # type: ignore[attr-defined]
    module.make_table = make_table


def _true_general_config(tracker: Any, config: dict[str, Any]) -> None:
    """lm-eval's top-level ``model_name`` / ``chat_template`` as they were: the model that ran (not
    the ``pretrained=default`` alias) and the template the plugin applied when lm-eval did not.
    ``model_name_sanitized`` (the output folder) stays as lm-eval chose it."""
    try:
        if isinstance(config.get("refusal_eval_model"), str):
            tracker.model_name = config["refusal_eval_model"]
        template = config.get("refusal_eval_chat_template") or {}
        if tracker.chat_template is None and template.get("text"):
            tracker.chat_template = template["text"]
            tracker.chat_template_sha = template.get("sha256")
    except Exception as exc:  # provenance must never stop lm-eval from writing its results
        print(f"refusal_eval: general config not amended ({type(exc).__name__}: {exc})", file=sys.stderr)


def _patch_tracker(module: Any) -> None:
    cls = module.EvaluationTracker
    if getattr(cls, "_refusal_eval_patched", False):
        return
    original = cls.save_results_aggregated

    def save_results_aggregated(self: Any, results: Any, *args: Any, **kwargs: Any) -> None:
        if _ours(results):
            _true_general_config(self.general_config_tracker, results["config"])
        original(self, results, *args, **kwargs)
        if not (self.output_path and getattr(self, "date_id", None) and _ours(results)):
            return
        from pathlib import Path

        from refusal_eval.report.summary import write_summary

        path = Path(self.output_path)  # where lm-eval just wrote results_<date>.json
        if path.suffix == ".json":
            path = path.with_name(f"{path.stem}_{self.date_id}.json")
        else:
            path = (
                path / str(self.general_config_tracker.model_name_sanitized) / f"results_{self.date_id}.json"
            )
        try:  # lm-eval writes the samples files after this returns: never stop it here
            if path.is_file():
                write_summary(results, path)
        except Exception as exc:
            print(f"refusal_eval: summary not written ({type(exc).__name__}: {exc})", file=sys.stderr)

    cls.save_results_aggregated = save_results_aggregated
    cls._refusal_eval_patched = True


_AFTER: dict[str, Callable[[Any], None]] = {
    "lm_eval.models": _register_model,
    "lm_eval.tasks.manager": _patch_task_manager,
    "lm_eval.utils": _patch_make_table,
    "lm_eval.loggers.evaluation_tracker": _patch_tracker,
}


class _Loader:
    def __init__(self, inner: Any, after: Callable[[Any], None]) -> None:
        self._inner, self._after = inner, after

    def create_module(self, spec: Any) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._inner.exec_module(module)
        try:
            self._after(module)
        except Exception as exc:  # never break lm-eval itself
            print(f"refusal_eval: lm-eval plugin hook failed: {exc}", file=sys.stderr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Watcher:
    refusal_eval_watcher = True  # two copies of this module (package + site-packages) share one

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        after = _AFTER.get(name)
        if after is None:
            return None
        for finder in sys.meta_path:
            if getattr(finder, "refusal_eval_watcher", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, after)  # type: ignore[assignment]  # duck-typed loader
                return spec
        return None


def install() -> None:
    if os.environ.get("REFUSAL_EVAL_NO_LM_EVAL_HOOK"):
        return
    if not any(getattr(f, "refusal_eval_watcher", False) for f in sys.meta_path):
        sys.meta_path.insert(0, _Watcher())
        # lm_eval already imported (e.g. this module imported late): apply directly
        for name, after in _AFTER.items():
            if name in sys.modules:
                after(sys.modules[name])


install()
