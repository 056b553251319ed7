"""Proposals held for an operator decision, each with a deadline (time injected)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from robostral_agent.contract import GoalProposal

# A cell has one or two operators; more than this many plans waiting means something is
# flooding the supervisor, and further plans are refused instead of queued.
PENDING_CAPACITY: Final = 16


@dataclass(frozen=True, slots=True)
class PendingApproval:
    proposal: GoalProposal
    text: str  # the proposal exactly as received: approved_task republishes it unchanged
    received_ns: int
    deadline_ns: int


class PendingApprovals:
    """Insertion-ordered pending plans; every removal hands the entries back to the caller,
    which owes each one a final verdict."""

    def __init__(self, capacity: int = PENDING_CAPACITY) -> None:
        self.capacity = capacity
        self._items: dict[str, PendingApproval] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, proposal_id: object) -> bool:
        return proposal_id in self._items

    def __iter__(self) -> Iterator[PendingApproval]:
        return iter(list(self._items.values()))

    @property
    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def add(self, pending: PendingApproval) -> None:
        if self.full:
            raise OverflowError(f'{self.capacity} proposals already await approval')
        self._items[pending.proposal.id] = pending

    def pop(self, proposal_id: str) -> PendingApproval | None:
        return self._items.pop(proposal_id, None)

    def expired(self, now_ns: int) -> list[PendingApproval]:
        """Remove and return every entry whose deadline has passed."""
        late = [p for p in self._items.values() if now_ns > p.deadline_ns]
        for p in late:
            del self._items[p.proposal.id]
        return late

    def drain(self) -> list[PendingApproval]:
        """Remove and return everything (an e-stop drops every pending plan)."""
        items = list(self._items.values())
        self._items.clear()
        return items
