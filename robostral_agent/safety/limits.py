"""Rate limiting of approved plans and the replay set of proposal ids (time injected)."""

from __future__ import annotations

from typing import Final

NS_PER_S: Final = 1_000_000_000
# Proposal ids are uuid4 hex: 100 000 of them cost about 10 MB. A replayed id older than
# that is still refused by the age rules (its stamp is stale) unless it is re-stamped, which
# takes the ability to forge proposals, against which an id set was never the defence.
REPLAY_CAPACITY: Final = 100_000
_EPS: Final = 1e-9


class TokenBucket:
    """Token bucket: ``rate_hz`` tokens per second, at most ``capacity`` in store.

    The default capacity is ``max(1, rate_hz)``: a burst of at most one second's worth of
    plans, and always at least one (a rate below 1 Hz still lets a single plan through).
    The bucket starts full. Time comes from the caller; a clock that steps back refills
    nothing (it never adds or removes tokens).
    """

    def __init__(self, rate_hz: float, now_ns: int, capacity: float | None = None) -> None:
        if not rate_hz > 0:
            raise ValueError(f'rate_hz must be > 0, got {rate_hz}')
        self.rate_hz = float(rate_hz)
        self.capacity = float(capacity) if capacity is not None else max(1.0, self.rate_hz)
        self._tokens = self.capacity
        self._last_ns = now_ns

    def _refill(self, now_ns: int) -> None:
        if now_ns > self._last_ns:
            gained = (now_ns - self._last_ns) / NS_PER_S * self.rate_hz
            self._tokens = min(self.capacity, self._tokens + gained)
            self._last_ns = now_ns

    def available(self, now_ns: int) -> bool:
        """Whether a plan could be approved now (takes nothing)."""
        self._refill(now_ns)
        return self._tokens >= 1.0 - _EPS

    def take(self, now_ns: int) -> bool:
        """Spend one token if there is one."""
        if not self.available(now_ns):
            return False
        self._tokens = max(0.0, self._tokens - 1.0)
        return True

    def wait_s(self, now_ns: int) -> float:
        """Seconds until the next token (0 when one is available)."""
        self._refill(now_ns)
        return max(0.0, (1.0 - self._tokens) / self.rate_hz)


class ReplaySet:
    """The most recent ``capacity`` proposal ids, oldest forgotten first (bounded memory)."""

    def __init__(self, capacity: int = REPLAY_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError('capacity must be >= 1')
        self.capacity = capacity
        self._ids: dict[str, None] = {}  # insertion-ordered

    def __contains__(self, proposal_id: object) -> bool:
        return proposal_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, proposal_id: str) -> bool:
        """Remember an id; returns False when it had been seen already."""
        if proposal_id in self._ids:
            return False
        if len(self._ids) >= self.capacity:
            del self._ids[next(iter(self._ids))]
        self._ids[proposal_id] = None
        return True
