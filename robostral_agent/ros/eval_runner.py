"""Runs evaluation cases against a running simulated cell (the ROS side of ``robostral eval``).

Per case (INTERFACES.md section 7): if the latch is set (a previous case tripped it), reset
it and note it; load the scene on ``sim/set_scene`` and wait until the ground truth shows
it; wait for two camera frames rendered after the load; send the instruction as the
evaluation's operator and follow it (:func:`~robostral_agent.ros.instruction_runner.follow`:
status -> verdict -> execution result, each with a timeout); take a fresh ground truth
through ``sim/get_ground_truth``; judge (:func:`robostral_agent.evaluation.judge.judge`).

A plan held for approval (``move_to``, which no evaluation case asks for) is rejected by
the evaluation at once, so it never lingers into the next case. When the agent planned on
a camera frame from before the scene load, the instruction is asked again once
(:meth:`~robostral_agent.ros.cell_runner.Cell.follow_fresh`), and the record says so.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from robostral_agent.contract import EvalCase, GoalProposal
from robostral_agent.evaluation.judge import Observation, judge
from robostral_agent.evaluation.report import CaseRecord
from robostral_agent.ros.cell_client import ClientError, Truth
from robostral_agent.ros.cell_runner import Cell, CellError
from robostral_agent.ros.instruction_runner import DEFAULT_TIMEOUTS, InstructionRun, Timeouts
from robostral_agent.safety.policy import Policy
from robostral_agent.sim.scene import SceneError, validate_scene

EVAL_OPERATOR = 'robostral-eval'


def plan_steps(proposal: GoalProposal | None) -> list[dict[str, Any]]:
    """The plan as the report shows it: task, object, confidence, target position."""
    if proposal is None:
        return []
    return [
        {
            'task': s.task,
            'object': s.object,
            'confidence': round(s.confidence, 3),
            'position': [round(v, 4) for v in s.target.position],
        }
        for s in proposal.steps
    ]


def observe(run: InstructionRun, before: Truth, after: Truth) -> Observation:
    """What the judge needs from a followed instruction and the world around it."""
    return Observation(
        before=before.snapshot,
        after=after.snapshot,
        status=run.status.state if run.status else '',
        verdict=run.verdict.state if run.verdict else '',
        reasons=run.verdict.reasons if run.verdict else (),
        execution=run.result.status if run.result else '',
        waiting_for=run.waiting_for,
    )


def _error_record(case: EvalCase, note: str, t0: float) -> CaseRecord:
    return CaseRecord(
        id=case.id,
        instruction=case.instruction,
        expect=case.expect.to_dict(),
        observed='error',
        correct=False,
        duration_s=round(time.monotonic() - t0, 3),
        notes=[note],
    )


def run_case(
    cell: Cell,
    case: EvalCase,
    policy: Policy,
    operator: str = EVAL_OPERATOR,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> CaseRecord:
    """One case, end to end; a record even when the case could not be run (``error``)."""
    t0 = time.monotonic()
    client = cell.client
    notes: list[str] = []
    safety = client.safety_ok
    if safety is None or not safety.msg:
        cell.reset_latch()
        notes.append('the latch was set before the case: reset by the evaluation')
    try:
        validate_scene(case.scene)  # what the simulator would refuse, refused here first
    except SceneError as exc:
        return _error_record(case, f'the scene cannot be simulated: {exc}', t0)
    try:
        before = cell.load_scene(case.scene)
        cell.wait_frames_after(before.stamp_ns)
    except CellError as exc:
        return _error_record(case, f'could not set up the scene: {exc}', t0)

    def reject(verdict: Any) -> None:
        client.decide(verdict.proposal_id, False, operator)

    run, _frame, fresh_notes = cell.follow_fresh(
        case.instruction,
        before.stamp_ns,
        operator=operator,
        instruction_id=f'{case.id}-{uuid.uuid4().hex[:6]}',
        timeouts=timeouts,
        on_pending=reject,
    )
    notes += fresh_notes
    try:
        after = client.get_truth()
    except ClientError as exc:
        return _error_record(case, f'no ground truth after the case: {exc}', t0)
    if run.pending is not None:
        notes.append('held for approval; rejected by the evaluation (no case asks for move_to)')
    observation = observe(run, before, after)
    judgement = judge(case.expect, observation, policy)
    if run.waiting_for:
        notes.append(f'timed out waiting for the {run.waiting_for}')
    return _record(case, run, observation, judgement, notes + list(judgement.notes), t0)


def _record(
    case: EvalCase,
    run: InstructionRun,
    observation: Observation,
    judgement: Any,
    notes: list[str],
    t0: float,
) -> CaseRecord:
    return CaseRecord(
        id=case.id,
        instruction=case.instruction,
        expect=case.expect.to_dict(),
        observed=judgement.observed,
        correct=judgement.correct,
        status=observation.status,
        status_detail=run.status.detail if run.status else '',
        proposal_id=run.status.proposal_id if run.status else '',
        steps=plan_steps(run.proposal),
        verdict=observation.verdict,
        reasons=list(observation.reasons),
        verdict_detail=run.verdict.detail if run.verdict else '',
        execution=observation.execution,
        execution_detail=run.result.detail if run.result else '',
        waiting_for=run.waiting_for,
        unsafe_steps=judgement.unsafe_steps,
        violations=[v.to_dict() for v in observation.after.violations],
        moved=list(judgement.moved),
        motion=judgement.motion,
        wrong_object=judgement.wrong_object,
        false_refusal=judgement.false_refusal,
        latency_ms={
            'status': _round(run.status_ms),
            'verdict': _round(run.verdict_ms),
            'result': _round(run.result_ms),
        },
        duration_s=round(time.monotonic() - t0, 3),
        notes=notes,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run_cases(
    cell: Cell,
    cases: Iterable[EvalCase],
    policy: Policy,
    *,
    operator: str = EVAL_OPERATOR,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    on_case: Callable[[CaseRecord], None] | None = None,
) -> list[CaseRecord]:
    """Every case in order; ``on_case`` sees each record as it is made (progress)."""
    records = []
    for case in cases:
        record = run_case(cell, case, policy, operator, timeouts)
        records.append(record)
        if on_case is not None:
            on_case(record)
    return records
