"""The safety supervisor's core: raw messages + the current time in, decisions out (pure).

The ROS node (``robostral_agent.ros.supervisor_node``) converts messages, calls one method
here and publishes what it returns; everything that decides lives in this class, so every
behaviour is testable without DDS and with a controlled clock (``now_ns``, ROS time).

Decisions, in order of evaluation (a verdict lists EVERY failed rule):

1. Decoding (:func:`contract.decode_goal_proposal` with ``check_values=False``): structural
   faults are ``MALFORMED`` (``UNSUPPORTED_SCHEMA`` for a wrong schema string); ids of an
   undecodable message are recovered with :func:`contract.peek_ids` (``""`` if unreadable).
   Values (NaN, non-unit quaternions, unknown tasks) reach the rules instead.
2. ``NOT_READY`` while no valid policy or no usable audit log is loaded.
3. ``DUPLICATE_ID`` for an id seen before (:class:`ReplaySet`; ids of every decoded proposal
   are remembered, whatever its verdict, so a rejected plan cannot be re-sent).
4. The policy rules (:class:`PolicyEvaluator`), from the latest fresh tool pose.
5. ``ESTOP_LATCHED`` while latched, and for any proposal stamped before the last reset: a
   reset never releases a goal proposed before it (including the plans that were pending when
   the latch tripped, which are dropped at the trip). A proposal already refused as
   ``STALE_PROPOSAL`` does not get this second code for the same age.
6. ``RATE_LIMITED`` when the token bucket of approved plans is empty (a token is spent only
   by an approval, so rejected plans never use up the rate).

A plan that passes everything is approved, unless one of its tasks is in
``require_approval_for``: then it is held (``pending_approval``) until an operator decides or
``approval_timeout_s`` passes (``APPROVAL_TIMEOUT``). The rate rule is not applied while a
plan is merely held. An approval from an authorised operator re-checks the plan in full at
approval time: latch, reset epoch, operator authorisation (proposer and approver), the policy,
the path from the CURRENT tool pose and the rate; the approval deadline replaces the age rules
(STALE_PROPOSAL, STALE_IMAGE, FUTURE_STAMP), which were checked on arrival, since otherwise
every plan approved after ``max_proposal_age_s`` would be stale. A decision from an operator
outside ``authorized_operators`` finalises the plan as rejected (``UNAUTHORIZED_OPERATOR``).

Write-ahead audit: every verdict is appended (and fsynced) to the audit log BEFORE it is
returned for publication. If that write fails, the supervisor drops to ``not_ready`` and the
verdict becomes a rejection (``NOT_READY``): nothing is approved without a record.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from robostral_agent.contract import (
    MAX_MESSAGE_CHARS,
    REASON_CODES,
    ContractError,
    GoalProposal,
    Stamp,
    Target,
    Verdict,
    decode_goal_proposal,
    decode_operator_decision,
    peek_ids,
)
from robostral_agent.geometry import quaternion_is_unit
from robostral_agent.safety.approvals import PendingApproval, PendingApprovals
from robostral_agent.safety.audit import AuditError, AuditLog
from robostral_agent.safety.latch import LATCHED, NOT_READY, READY, Latch, LatchStore
from robostral_agent.safety.limits import ReplaySet, TokenBucket
from robostral_agent.safety.policy import LoadedPolicy, PolicyError, load_policy
from robostral_agent.safety.rules import Findings, PolicyEvaluator, ToolPose

_ORDER: Final = {code: i for i, code in enumerate(REASON_CODES)}
MAX_DETAIL_CHARS: Final = 2000
# Raw text kept in an audit record; longer (malformed) messages are kept as a prefix + hash.
MAX_AUDIT_TEXT: Final = MAX_MESSAGE_CHARS


@dataclass(frozen=True, slots=True)
class ApprovedPlan:
    """An approved plan: ``text`` is the proposal exactly as received (approved_task)."""

    proposal: GoalProposal
    text: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one input produced: verdicts to publish (in order), approved plans, log notes."""

    verdicts: tuple[Verdict, ...] = ()
    approved: tuple[ApprovedPlan, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResetResult:
    success: bool
    message: str


@dataclass(frozen=True)
class SupervisorStatus:
    """A snapshot for diagnostics."""

    state: str
    reason: str
    policy_version: str
    policy_path: str
    policy_error: str
    audit_path: str
    audit_error: str
    audit_records: int
    state_error: str
    estop_pressed: bool | None
    pending: int
    approved: int
    rejected: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def latched(self) -> bool:
        return self.state != READY


def _ordered(codes: set[str]) -> tuple[str, ...]:
    return tuple(sorted(codes, key=lambda c: _ORDER.get(c, len(_ORDER))))


def _detail(findings: Findings) -> str:
    text = '; '.join(f.detail for f in findings)
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + '...'


def _text_record(text: str) -> dict[str, Any]:
    digest = hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()
    record: dict[str, Any] = {'proposal_sha256': digest, 'proposal_chars': len(text)}
    record['proposal'] = text if len(text) <= MAX_AUDIT_TEXT else text[:4096]
    return record


class Supervisor:
    """The fail-closed gate. One instance per node; not thread-safe (the node serialises)."""

    def __init__(
        self,
        policy: LoadedPolicy | None,
        audit: AuditLog | None,
        state: LatchStore,
        now_ns: int,
        *,
        policy_error: str = '',
        policy_path: str = '',
        audit_error: str = '',
    ) -> None:
        self.policy = policy
        self._audit = audit
        self.policy_error = policy_error if policy is None else ''
        self.policy_path = policy.path if policy is not None else policy_path
        self.audit_error = audit_error if audit is None else ''
        if policy is None and not self.policy_error:
            self.policy_error = 'no policy loaded'
        if audit is None and not self.audit_error:
            self.audit_error = 'no audit log'
        fault = ''
        if self.policy_error:
            fault = f'no valid policy: {self.policy_error}'
        elif self.audit_error:
            fault = f'no audit log: {self.audit_error}'
        start_latched = policy.policy.start_latched if policy is not None else True
        self._latch = Latch(state, start_latched=start_latched, now_ns=now_ns, fault=fault)
        self._evaluator = PolicyEvaluator(policy.policy) if policy is not None else None
        rate = policy.policy.max_goal_rate_hz if policy is not None else 1.0
        self._bucket = TokenBucket(rate, now_ns)
        self._seen = ReplaySet()
        self._pending = PendingApprovals()
        self._tool_pose: ToolPose | None = None
        self.approved_count = 0
        self.rejected_count = 0
        self.rejected_by_reason: Counter[str] = Counter()
        self.last_goal: tuple[GoalProposal, Verdict] | None = None
        self._record(
            'policy_load',
            now_ns,
            {
                'ok': policy is not None,
                'path': self.policy_path,
                'version': self.policy_version,
                'error': self.policy_error,
            },
        )
        self._record(
            'startup',
            now_ns,
            {
                'state': self._latch.state,
                'reason': self._latch.reason,
                'state_file': str(state.path),
                'state_error': self._latch.persist_error,
            },
        )

    @classmethod
    def open(
        cls, policy_file: str | Path, state_file: str | Path, audit_log: str | Path, now_ns: int
    ) -> Supervisor:
        """Load the policy and open the audit log; failures leave the supervisor not ready."""
        policy: LoadedPolicy | None = None
        policy_error = audit_error = ''
        if not str(policy_file):
            policy_error = 'parameter policy_file is empty'
        else:
            try:
                policy = load_policy(policy_file)
            except PolicyError as exc:
                policy_error = f'{policy_file}: {exc}'
        audit: AuditLog | None = None
        try:
            audit = AuditLog(audit_log, now_ns)
        except AuditError as exc:
            audit_error = str(exc)
        return cls(
            policy,
            audit,
            LatchStore(state_file),
            now_ns,
            policy_error=policy_error,
            policy_path=str(policy_file),
            audit_error=audit_error,
        )

    # --- State -------------------------------------------------------------------------------

    @property
    def policy_version(self) -> str:
        return self.policy.version if self.policy is not None else ''

    @property
    def state(self) -> str:
        return self._latch.state

    @property
    def safety_ok(self) -> bool:
        """True only when ready: policy loaded, audit log working, not latched."""
        return self._latch.state == READY

    @property
    def pending_ids(self) -> list[str]:
        return [p.proposal.id for p in self._pending]

    @property
    def audit(self) -> AuditLog | None:
        return self._audit

    def status(self) -> SupervisorStatus:
        return SupervisorStatus(
            state=self._latch.state,
            reason=self._latch.reason,
            policy_version=self.policy_version,
            policy_path=self.policy_path,
            policy_error=self.policy_error,
            audit_path=str(self._audit.path) if self._audit is not None else '',
            audit_error=self.audit_error,
            audit_records=self._audit.records if self._audit is not None else 0,
            state_error=self._latch.persist_error,
            estop_pressed=self._latch.estop_pressed,
            pending=len(self._pending),
            approved=self.approved_count,
            rejected=self.rejected_count,
            rejected_by_reason=dict(self.rejected_by_reason),
        )

    # --- Audit --------------------------------------------------------------------------------

    def _record(self, kind: str, now_ns: int, data: dict[str, Any]) -> bool:
        """Append one audit record; a failure turns the supervisor not ready (fail closed)."""
        if self._audit is None:
            return False
        try:
            self._audit.append(kind, now_ns, data)
        except AuditError as exc:
            self._audit_failed(str(exc), now_ns)
            return False
        return True

    def _audit_failed(self, why: str, now_ns: int) -> None:
        self.audit_error = why
        self._latch.fault(f'no audit log: {why}', now_ns)

    def _verdict(
        self,
        proposal_id: str,
        instruction_id: str,
        state: str,
        findings: Findings,
        now_ns: int,
        detail: str = '',
    ) -> Verdict:
        return Verdict(
            proposal_id=proposal_id,
            instruction_id=instruction_id,
            state=state,
            reasons=_ordered(findings.codes) if state == 'rejected' else (),
            detail=detail or _detail(findings),
            policy_version=self.policy_version,
            latched=self._latch.latched,
            stamp=Stamp.from_ns(now_ns),
        )

    def _commit(
        self, verdict: Verdict, text: str, now_ns: int, proposal: GoalProposal | None
    ) -> Verdict:
        """Record the verdict (write-ahead), then count it. Unrecorded -> not approved."""
        recorded = self._record(
            'decision', now_ns, {'verdict': verdict.to_dict(), **_text_record(text)}
        )
        if not recorded and verdict.state != 'rejected':
            failed = Findings()
            failed.add('NOT_READY', f'audit log unavailable ({self.audit_error}): not approved')
            verdict = self._verdict(
                verdict.proposal_id, verdict.instruction_id, 'rejected', failed, now_ns
            )
            if proposal is not None:
                self._pending.pop(proposal.id)
        if verdict.state == 'approved':
            self.approved_count += 1
        elif verdict.state == 'rejected':
            self.rejected_count += 1
            self.rejected_by_reason.update(verdict.reasons)
        if proposal is not None:
            self.last_goal = (proposal, verdict)
        return verdict

    # --- Rules that depend on the supervisor's state -------------------------------------------

    def _not_ready(self, findings: Findings) -> None:
        if self._latch.state == NOT_READY:
            findings.add('NOT_READY', f'not ready: {self._latch.reason}')

    def _judge(self, proposal: GoalProposal, now_ns: int, *, at_approval: bool) -> Findings:
        assert self._evaluator is not None
        findings = self._evaluator.evaluate(
            proposal, now_ns, self._tool_pose, check_ages=not at_approval
        )
        if self._latch.state == LATCHED:
            findings.add('ESTOP_LATCHED', f'latched: {self._latch.reason}')
        # A reset never releases a goal proposed before it (also at approval time, where the
        # age rules do not apply). A verdict lists every rule that failed (INTERFACES.md
        # section 4), so a stale proposal from before the reset carries both codes.
        if proposal.stamp.to_ns() < self._latch.last_reset_ns:
            findings.add(
                'ESTOP_LATCHED',
                f'proposed at {proposal.stamp.to_seconds():.3f} s, before the last reset at '
                f'{self._latch.last_reset_ns / 1e9:.3f} s: a reset never releases a goal '
                'proposed before it',
            )
        return findings

    def _check_rate(self, findings: Findings, now_ns: int) -> None:
        if not self._bucket.available(now_ns):
            policy = self.policy.policy if self.policy is not None else None
            rate = policy.max_goal_rate_hz if policy is not None else 0.0
            findings.add(
                'RATE_LIMITED',
                f'more than max_goal_rate_hz {rate} approved plans per second; next in '
                f'{self._bucket.wait_s(now_ns):.2f} s',
            )

    def _needs_approval(self, proposal: GoalProposal) -> list[str]:
        assert self.policy is not None
        held = self.policy.policy.require_approval_for
        return sorted({s.task for s in proposal.steps if s.task in held})

    def _approve(self, proposal: GoalProposal, text: str, now_ns: int) -> Outcome:
        self._bucket.take(now_ns)
        verdict = self._verdict(
            proposal.id, proposal.instruction_id, 'approved', Findings(), now_ns
        )
        verdict = self._commit(verdict, text, now_ns, proposal)
        plans = (ApprovedPlan(proposal, text),) if verdict.approved else ()
        return Outcome(verdicts=(verdict,), approved=plans)

    def _reject(
        self, proposal: GoalProposal, text: str, findings: Findings, now_ns: int
    ) -> Outcome:
        verdict = self._verdict(proposal.id, proposal.instruction_id, 'rejected', findings, now_ns)
        return Outcome(verdicts=(self._commit(verdict, text, now_ns, proposal),))

    # --- Inputs -------------------------------------------------------------------------------

    def propose(self, text: str, now_ns: int) -> Outcome:
        """A ``robostral.goal_proposal/1`` message as received on the topic."""
        findings = Findings()
        try:
            proposal = decode_goal_proposal(text, check_values=False)
        except ContractError as exc:
            code = exc.code if exc.code in _ORDER else 'MALFORMED'
            findings.add(code, f'undecodable proposal: {exc}')
            self._not_ready(findings)
            proposal_id, instruction_id = peek_ids(text)
            verdict = self._verdict(proposal_id, instruction_id, 'rejected', findings, now_ns)
            return Outcome(verdicts=(self._commit(verdict, text, now_ns, None),))
        self._not_ready(findings)
        if not self._seen.add(proposal.id):
            findings.add('DUPLICATE_ID', f'proposal id {proposal.id!r} was seen before')
        held: list[str] = []
        if self._evaluator is not None:
            findings += self._judge(proposal, now_ns, at_approval=False)
            held = self._needs_approval(proposal)
            if not held:
                self._check_rate(findings, now_ns)
        if findings:
            return self._reject(proposal, text, findings, now_ns)
        if not held:
            return self._approve(proposal, text, now_ns)
        if self._pending.full:
            findings.add(
                'RATE_LIMITED',
                f'{self._pending.capacity} plans already await an operator decision',
            )
            return self._reject(proposal, text, findings, now_ns)
        assert self.policy is not None
        timeout = self.policy.policy.approval_timeout_s
        deadline = now_ns + round(timeout * 1e9)
        self._pending.add(PendingApproval(proposal, text, now_ns, deadline))
        detail = (
            f'held for an operator decision (task {", ".join(held)}); approve or reject within '
            f'approval_timeout_s {timeout} s'
        )
        verdict = self._verdict(
            proposal.id, proposal.instruction_id, 'pending_approval', findings, now_ns, detail
        )
        return Outcome(verdicts=(self._commit(verdict, text, now_ns, proposal),))

    def decide(self, text: str, now_ns: int) -> Outcome:
        """A ``robostral/operator_decision`` message: approve or reject a held plan."""
        try:
            decision = decode_operator_decision(text)
        except ContractError as exc:
            self._record('operator_decision', now_ns, {'error': str(exc), **_text_record(text)})
            return Outcome(notes=(f'operator decision refused: {exc}',))
        pending = self._pending.pop(decision.proposal_id)
        self._record('operator_decision', now_ns, {**decision.to_dict(), 'held': bool(pending)})
        if pending is None:
            return Outcome(
                notes=(f'no plan {decision.proposal_id!r} awaits a decision: decision ignored',)
            )
        proposal, findings = pending.proposal, Findings()
        if now_ns > pending.deadline_ns:
            return self._expire(pending, now_ns)
        self._not_ready(findings)
        assert self._evaluator is not None
        if not self._evaluator.operator_authorized(decision.operator):
            findings.add(
                'UNAUTHORIZED_OPERATOR',
                f'deciding operator {decision.operator!r} is not in authorized_operators',
            )
        if not decision.approve:
            findings.add('OPERATOR_REJECTED', f'rejected by operator {decision.operator!r}')
        else:
            findings += self._judge(proposal, now_ns, at_approval=True)
            self._check_rate(findings, now_ns)
        if findings:
            return self._reject(proposal, pending.text, findings, now_ns)
        return self._approve(proposal, pending.text, now_ns)

    def _expire(self, pending: PendingApproval, now_ns: int) -> Outcome:
        findings = Findings()
        assert self.policy is not None
        findings.add(
            'APPROVAL_TIMEOUT',
            f'no operator decision within approval_timeout_s '
            f'{self.policy.policy.approval_timeout_s} s',
        )
        return self._reject(pending.proposal, pending.text, findings, now_ns)

    def tick(self, now_ns: int) -> Outcome:
        """Periodic: held plans past their deadline are rejected (APPROVAL_TIMEOUT)."""
        verdicts: list[Verdict] = []
        for pending in self._pending.expired(now_ns):
            verdicts += self._expire(pending, now_ns).verdicts
        return Outcome(verdicts=tuple(verdicts))

    def _drop_pending(self, why: str, now_ns: int) -> list[Verdict]:
        verdicts = []
        for pending in self._pending.drain():
            findings = Findings()
            findings.add('ESTOP_LATCHED', why)
            verdicts += self._reject(pending.proposal, pending.text, findings, now_ns).verdicts
        return verdicts

    def estop(self, pressed: bool, now_ns: int) -> Outcome:
        """The stop input's current state (``True`` = pressed): pressed trips the latch."""
        changed = self._latch.estop_pressed != pressed
        tripped = self._latch.estop_input(pressed, now_ns)
        dropped = [p.proposal.id for p in self._pending] if pressed else []
        if changed or tripped:
            self._record(
                'estop',
                now_ns,
                {
                    'pressed': pressed,
                    'tripped': tripped,
                    'state': self._latch.state,
                    'dropped': dropped,
                },
            )
        verdicts = (
            self._drop_pending('dropped: the e-stop tripped while it awaited approval', now_ns)
            if pressed
            else []
        )
        note = f'e-stop {"pressed" if pressed else "released"}' + (': latch tripped' * tripped)
        return Outcome(verdicts=tuple(verdicts), notes=(note,) if changed or tripped else ())

    def reset(self, now_ns: int) -> ResetResult:
        """Clear the latch (``robostral/reset``); refused with a reason when not allowed."""
        success, message = self._latch.reset(now_ns)
        self._record('reset', now_ns, {'success': success, 'message': message})
        if success and not self.safety_ok:  # the audit write itself failed
            return ResetResult(False, f'not ready: {self._latch.reason}')
        return ResetResult(success, message)

    def update_tool_pose(self, target: Target, stamp_ns: int) -> str:
        """The executor's tool pose; returns why it was ignored ('' when accepted)."""
        if self.policy is None:
            return 'no policy: tool pose ignored'
        base = self.policy.policy.base_frame
        if target.frame_id != base:
            return f'tool pose in frame {target.frame_id!r}, expected {base!r}: ignored'
        if not all(math.isfinite(v) for v in target.position) or not quaternion_is_unit(
            target.orientation
        ):
            return 'tool pose with a non-finite position or non-unit quaternion: ignored'
        self._tool_pose = ToolPose(target.position, target.orientation, stamp_ns)
        return ''

    def close(self, now_ns: int, why: str = 'stopped') -> None:
        """Record the shutdown and release the audit log."""
        if self._audit is not None:
            self._record('shutdown', now_ns, {'reason': why, 'state': self._latch.state})
            self._audit.close()
            self._audit = None
