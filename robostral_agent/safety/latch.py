"""The latch: ready / latched / not ready, persisted so that a restart never forgets a trip.

States:

* ``ready``: a valid policy and audit log, nothing tripped. Only here may a plan be approved.
* ``latched``: an e-stop, a start or restart (``start_latched``), or a missing or unreadable
  state file. Cleared only by an explicit reset, which succeeds when the latest e-stop input
  is released (or no e-stop source ever spoke) and the supervisor is not in ``not_ready``.
* ``not_ready``: no valid policy, or no usable audit log. No reset leaves it: the supervisor
  must be restarted with a good configuration.

Every change is written to the state file before it takes effect for the caller: a temporary
file in the same directory, ``fsync``, ``rename`` over the old file, ``fsync`` of the
directory. A file that is missing or cannot be parsed means "latched": fail closed. A start
with ``start_latched: false`` comes up ready only when the state file exists and says the
latch was clear when the supervisor last ran.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

LATCH_SCHEMA: Final = 'robostral.latch_state/1'
READY: Final = 'ready'
LATCHED: Final = 'latched'
NOT_READY: Final = 'not_ready'


class StateFileError(ValueError):
    """The latch state file is missing, unreadable or not a valid state."""


@dataclass(frozen=True, slots=True)
class LatchSnapshot:
    """What the state file holds (times are ROS time in nanoseconds)."""

    latched: bool
    reason: str
    changed_ns: int
    last_reset_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {
            'schema': LATCH_SCHEMA,
            'latched': self.latched,
            'reason': self.reason,
            'changed_ns': self.changed_ns,
            'last_reset_ns': self.last_reset_ns,
        }


class LatchStore:
    """Atomic, durable persistence of a :class:`LatchSnapshot` in one JSON file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> LatchSnapshot:
        try:
            data = json.loads(self.path.read_text(encoding='utf-8'))
        except FileNotFoundError as exc:
            raise StateFileError(f'state file {str(self.path)!r} is missing') from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise StateFileError(f'state file {str(self.path)!r} is unreadable: {exc}') from exc
        expected = {'schema', 'latched', 'reason', 'changed_ns', 'last_reset_ns'}
        if not isinstance(data, dict) or set(data) != expected:
            raise StateFileError(f'state file {str(self.path)!r} does not hold a latch state')
        ints = (data['changed_ns'], data['last_reset_ns'])
        if (
            data['schema'] != LATCH_SCHEMA
            or not isinstance(data['latched'], bool)
            or not isinstance(data['reason'], str)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints)
        ):
            raise StateFileError(f'state file {str(self.path)!r} holds an invalid latch state')
        return LatchSnapshot(data['latched'], data['reason'], *ints)

    def save(self, snapshot: LatchSnapshot) -> None:
        """Write-then-rename so a crash leaves either the old or the new state, never half."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(snapshot.to_dict(), sort_keys=True).encode('utf-8') + b'\n'
        fd, tmp = tempfile.mkstemp(prefix=f'.{self.path.name}.', dir=self.path.parent)
        try:
            with os.fdopen(fd, 'wb') as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Latch:
    """The state machine of the module docstring; every transition is persisted."""

    def __init__(
        self, store: LatchStore, *, start_latched: bool, now_ns: int, fault: str = ''
    ) -> None:
        self._store = store
        self.estop_pressed: bool | None = None  # None: no e-stop source has spoken
        self.persist_error = ''
        try:
            previous: LatchSnapshot | None = store.load()
            why = ''
        except StateFileError as exc:
            previous, why = None, str(exc)
        self.last_reset_ns = previous.last_reset_ns if previous is not None else 0
        self.changed_ns = now_ns
        if fault:
            self.state, self.reason = NOT_READY, fault
        elif previous is None:
            self.state, self.reason = LATCHED, f'{why}: reset required'
        elif previous.latched:
            self.state, self.reason = LATCHED, f'latched before restart ({previous.reason})'
        elif start_latched:
            self.state, self.reason = LATCHED, 'start_latched: a reset is required after start'
        else:
            self.state, self.reason = READY, 'restored: not latched'
        self._persist()

    @property
    def latched(self) -> bool:
        """True in ``latched`` and ``not_ready``: both forbid motion."""
        return self.state != READY

    def snapshot(self) -> LatchSnapshot:
        return LatchSnapshot(self.latched, self.reason, self.changed_ns, self.last_reset_ns)

    def _persist(self) -> bool:
        try:
            self._store.save(self.snapshot())
        except OSError as exc:
            self.persist_error = f'cannot write state file {str(self._store.path)!r}: {exc}'
            return False
        self.persist_error = ''
        return True

    def fault(self, reason: str, now_ns: int) -> None:
        """Enter ``not_ready`` (the policy or the audit log became unusable)."""
        if self.state != NOT_READY:
            self.state, self.reason, self.changed_ns = NOT_READY, reason, now_ns
            self._persist()

    def estop_input(self, pressed: bool, now_ns: int) -> bool:
        """Record the stop input; pressed latches. Returns whether this call tripped it."""
        self.estop_pressed = pressed
        if not pressed:
            return False
        if self.state == NOT_READY:
            return False
        tripped = self.state == READY
        if tripped or self.reason != 'e-stop pressed':
            self.state, self.reason, self.changed_ns = LATCHED, 'e-stop pressed', now_ns
            self._persist()
        return tripped

    def reset(self, now_ns: int) -> tuple[bool, str]:
        """Clear the latch if allowed; ``(success, message)`` says why not otherwise."""
        if self.state == NOT_READY:
            return False, f'not ready: {self.reason}'
        if self.estop_pressed:
            return False, 'the e-stop input is still pressed: release it first'
        if self.state == READY:
            return True, 'not latched: nothing to clear'
        previous = (self.state, self.reason, self.changed_ns, self.last_reset_ns)
        self.state, self.reason = READY, 'reset'
        self.changed_ns = self.last_reset_ns = now_ns
        if not self._persist():
            self.state, self.reason, self.changed_ns, self.last_reset_ns = previous
            return False, f'reset refused: {self.persist_error}'
        return True, 'latch cleared; proposals stamped before this reset stay rejected'
