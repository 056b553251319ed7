"""Test helpers importable from any test module (pytest puts test/ on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable


def spin_until(executor: object, predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Spin ``executor`` until ``predicate()`` holds or the deadline passes; returns it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.02)
    return predicate()
