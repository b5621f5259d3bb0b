"""One exception type for every user-facing mistake, each carrying the fix."""

from __future__ import annotations


class RefusalEvalError(Exception):
    """A problem with the user's input or environment, with how to fix it.

    The CLI prints ``error: <message> (fix: <fix>)`` on one line and exits non-zero.
    """

    #: how the lm_eval CLI's exception hook (refusal_eval/_lm_eval_hook.py) recognises it
    refusal_eval_error = True

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message
