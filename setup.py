"""Only here to ship ``refusal_eval_lm_eval.pth`` into site-packages (all metadata is in setup.cfg).

lm-eval 0.4.13 reads no plugin entry points; the .pth line imports a top-level copy of
refusal_eval/_lm_eval_hook.py, a tiny stdlib-only import watcher that
registers the ``sae_ablated`` model and the ``refusal_ablation`` tasks when lm-eval loads
(see refusal_eval/_lm_eval_hook.py). Regular installs copy the file in ``build_py``; editable
installs (``pip install -e``) add it to the editable wheel next to setuptools' own .pth.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "refusal_eval_lm_eval.pth"
PTH_TEXT = (Path(__file__).parent / PTH).read_text()
# the .pth imports a top-level copy of the hook, so start-up never imports the refusal_eval package
HOOK = "_refusal_eval_lm_eval_hook.py"
HOOK_TEXT = (Path(__file__).parent / "refusal_eval" / "_lm_eval_hook.py").read_text()


class BuildWithPth(build_py):
    def run(self) -> None:
        super().run()
        root = Path(self.build_lib)
        root.mkdir(parents=True, exist_ok=True)
        (root / PTH).write_text(PTH_TEXT)
        (root / HOOK).write_text(HOOK_TEXT)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        root = Path(self.build_lib)
        return [*super().get_outputs(include_bytecode), str(root / PTH), str(root / HOOK)]


class EditableWithPth(editable_wheel):
    def _select_strategy(self, *args, **kwargs):
        strategy = super()._select_strategy(*args, **kwargs)

        class WithPth:
            def __call__(self, wheel, files, mapping):
                strategy(wheel, files, mapping)
                wheel.writestr(PTH, PTH_TEXT)
                wheel.writestr(HOOK, HOOK_TEXT)

            def __enter__(self):
                strategy.__enter__()
                return self

            def __exit__(self, *exc):
                return strategy.__exit__(*exc)

        return WithPth()


setup(cmdclass={"build_py": BuildWithPth, "editable_wheel": EditableWithPth})
