"""Test helpers importable from any test module (pytest puts test/ on sys.path)."""

from __future__ import annotations

import signal
import subprocess
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


def stop_process(proc: subprocess.Popen[str], timeout_s: float = 20.0) -> str:
    """Stop ``proc`` as an operator would (SIGINT: a clean ROS shutdown); kill it if it has
    not ended within ``timeout_s``. Returns all it printed (stdout, with stderr merged)."""
    proc.send_signal(signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return output
