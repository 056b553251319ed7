"""One instruction through the whole loop: status -> proposal -> verdict -> execution result.

``robostral instruct``, the demo and the evaluation all follow an instruction the same way,
with :func:`follow`: publish it (JSON, with a fresh id and the operator), wait for the agent's
final status, then (when it proposed a plan) for the supervisor's verdict, then (when the
plan was approved) for the executor's result. A ``pending_approval`` verdict is handed to
``on_pending`` (which may publish a decision) and the wait goes on for the final verdict.
Every wait has its own timeout; the first one that passes ends the run with
``waiting_for`` naming what never came.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from robostral_agent.contract import (
    ExecutionResult,
    GoalProposal,
    Instruction,
    InstructionStatus,
    Verdict,
)
from robostral_agent.ros.cell_client import CellClient

# How long a proposal may trail its 'proposed' status (it is published first; DDS may
# deliver the two topics in either order).
PROPOSAL_GRACE_S: Final = 2.0


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each stage, counted from the end of the previous one."""

    status: float = 30.0
    verdict: float = 10.0
    approval: float = 30.0  # after a pending_approval verdict
    result: float = 90.0


DEFAULT_TIMEOUTS: Final = Timeouts()


@dataclass
class InstructionRun:
    """Everything one instruction led to, with monotonic arrival times."""

    instruction: Instruction
    sent_t: float
    status: InstructionStatus | None = None
    status_t: float | None = None
    proposal: GoalProposal | None = None
    pending: Verdict | None = None
    first_verdict_t: float | None = None
    verdict: Verdict | None = None
    verdict_t: float | None = None
    result: ExecutionResult | None = None
    result_t: float | None = None
    waiting_for: str = ''  # '' or what never came: 'status', 'verdict', 'result'

    @property
    def timed_out(self) -> bool:
        return bool(self.waiting_for)

    def _ms(self, t: float | None) -> float | None:
        return None if t is None else (t - self.sent_t) * 1e3

    @property
    def status_ms(self) -> float | None:
        return self._ms(self.status_t)

    @property
    def verdict_ms(self) -> float | None:
        """Instruction -> first verdict (a ``pending_approval`` one counts: it is the
        supervisor's decision to hold the plan), as this client saw them."""
        return self._ms(self.first_verdict_t)

    @property
    def result_ms(self) -> float | None:
        return self._ms(self.result_t)


Event = Callable[[str, InstructionRun], None]


def follow(
    client: CellClient,
    text: str,
    *,
    operator: str = '',
    instruction_id: str = '',
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    on_event: Event | None = None,
    on_pending: Callable[[Verdict], None] | None = None,
    poll: Callable[[], None] | None = None,
    deadline: float | None = None,
) -> InstructionRun:
    """Send ``text`` and follow it to its end (see the module docstring).

    ``on_event(kind, run)`` is called with ``'sent'``, ``'status'``, ``'proposal'``,
    ``'pending'``, ``'verdict'`` and ``'result'`` as they happen; ``poll`` is passed to every
    wait (it may raise, e.g. when a child process died). ``deadline`` (``time.monotonic()``)
    caps every stage: ``robostral instruct --wait S`` is one budget for the whole run.
    """
    instruction, sent_t = client.send_instruction(text, operator, instruction_id)
    run = InstructionRun(instruction, sent_t)
    notify = on_event or (lambda kind, r: None)
    notify('sent', run)

    def wait(predicate: Callable[[], Any], timeout_s: float) -> Any:
        if deadline is not None:
            timeout_s = max(0.0, min(timeout_s, deadline - time.monotonic()))
        return client.wait(predicate, timeout_s, poll)

    status = wait(lambda: client.status_for(instruction.id), timeouts.status)
    if status is None:
        run.waiting_for = 'status'
        return run
    run.status, run.status_t = status.msg, status.t
    notify('status', run)
    if status.msg.state != 'proposed':
        return run

    proposal_id = status.msg.proposal_id
    found = wait(lambda: client.proposals.get(proposal_id), PROPOSAL_GRACE_S)
    if found is not None:
        run.proposal = found.msg
        notify('proposal', run)

    def any_verdict() -> object:
        return client.verdict_for(proposal_id, final=False)

    first = wait(any_verdict, timeouts.verdict)
    if first is None:
        run.waiting_for = 'verdict'
        return run
    run.first_verdict_t = first.t
    if first.msg.state == 'pending_approval':
        run.pending = first.msg
        notify('pending', run)
        if on_pending is not None:
            on_pending(first.msg)
        final = wait(lambda: client.verdict_for(proposal_id), timeouts.approval)
        if final is None:
            run.waiting_for = 'verdict'
            return run
    else:
        final = first
    run.verdict, run.verdict_t = final.msg, final.t
    notify('verdict', run)
    if not final.msg.approved:
        return run

    result = wait(lambda: client.result_for(proposal_id), timeouts.result)
    if result is None:
        run.waiting_for = 'result'
        return run
    run.result, run.result_t = result.msg, result.t
    notify('result', run)
    return run
