"""The one error shape of the agent's checks: a reason code plus a human message."""

from __future__ import annotations


class ReasonError(ValueError):
    """Something the agent cannot use; ``code`` opens the instruction status ``detail``."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f'{code}: {message}')
