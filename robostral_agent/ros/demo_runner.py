"""Runs the demo script (:data:`robostral_agent.demo.SCRIPT`) against a running simulated cell.

Each step loads its scene, sends its instruction as the demo operator, follows it through
the loop, and checks what it must show against the nodes' messages *and* the simulator's
ground truth (the same judge as ``robostral eval``). The annotated frame the agent publishes
for the step (``robostral/agent/debug_image``) is saved under ``frames/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from robostral_agent import demo
from robostral_agent.contract import EvalExpect, Verdict
from robostral_agent.demo import DemoStep, StepResult
from robostral_agent.evaluation.judge import Judgement, judge
from robostral_agent.ros.cell_client import ClientError, DebugFrame, Truth
from robostral_agent.ros.cell_runner import SUPERVISOR_NODE, Cell, CellError
from robostral_agent.ros.eval_runner import observe, plan_steps
from robostral_agent.ros.instruction_runner import InstructionRun, Timeouts
from robostral_agent.safety.policy import Policy

KEEPOUT_REASONS: Final = ('IN_KEEPOUT_ZONE', 'PATH_CROSSES_KEEPOUT')


class DemoRunner:
    """One demo session on ``cell``; :meth:`run` returns a result per step."""

    def __init__(self, cell: Cell, policy: Policy, output: Path, operator: str) -> None:
        self.cell = cell
        self.client = cell.client
        self.policy = policy
        self.output = output
        self.operator = operator
        self.meta: dict[str, str] = {}
        self._frame: DebugFrame | None = None  # the annotated frame of the current step

    def run(self, on_step: Callable[[int, StepResult], None] | None = None) -> list[StepResult]:
        handlers = {
            'executed': self._executed,
            'not_found': self._no_motion_step,
            'refused': self._no_motion_step,
            'approval': self._approval,
            'stop': self._stop,
            'reset': self._reset,
        }
        results = []
        for index, step in enumerate(demo.SCRIPT, start=1):
            t0 = time.monotonic()
            result = demo.new_result(step)
            self._frame = None
            try:
                before = self._load(step)
                handlers[step.kind](step, result, before)
            except (CellError, ClientError) as exc:
                result.check(f'the cell answered in time ({exc})', False)
                result.observed = result.observed or f'error: {exc}'
            if step.instruction:
                self._save_frame(index, step, result)
            result.duration_s = round(time.monotonic() - t0, 2)
            results.append(result)
            if on_step is not None:
                on_step(index, result)
        return results

    # --- steps -----------------------------------------------------------------------------

    def _load(self, step: DemoStep) -> Truth | None:
        if step.scene is None:
            return None
        truth = self.cell.load_scene(step.scene)
        self.cell.wait_frames_after(truth.stamp_ns)
        return truth

    def _follow(
        self,
        text: str,
        result: StepResult,
        before: Truth,
        on_pending: Callable[[Verdict], None] | None = None,
        on_event: Callable[[str, InstructionRun], None] | None = None,
    ) -> InstructionRun:
        run, frame, notes = self.cell.follow_fresh(
            text, before.stamp_ns, operator=self.operator, timeouts=Timeouts(approval=20.0),
            on_pending=on_pending, on_event=on_event,
        )  # fmt: skip
        self._frame = frame
        result.notes += notes
        if run.status is not None and run.status.state != 'proposed':
            result.notes.append(f'agent {run.status.state}: {run.status.detail}')
        if run.verdict is not None and run.verdict.reasons:
            result.notes.append(f'supervisor: {run.verdict.detail}')
        result.status = run.status.state if run.status else ''
        result.proposal_id = run.status.proposal_id if run.status else ''
        result.verdict = run.verdict.state if run.verdict else ''
        result.reasons = list(run.verdict.reasons) if run.verdict else []
        result.execution = run.result.status if run.result else ''
        result.steps = plan_steps(run.proposal)
        result.latency_ms = {
            'status': _round(run.status_ms),
            'verdict': _round(run.verdict_ms),
            'result': _round(run.result_ms),
        }
        if run.proposal is not None:
            self.meta.setdefault('model', run.proposal.model.name)
            self.meta.setdefault('model_sha256', run.proposal.model.sha256)
        if run.verdict is not None:
            self.meta.setdefault('policy_version', run.verdict.policy_version)
        if run.waiting_for:
            result.notes.append(f'timed out waiting for the {run.waiting_for}')
        return run

    def _judge(self, expect: EvalExpect, run: InstructionRun, before: Truth) -> Judgement:
        return judge(expect, observe(run, before, self.client.get_truth()), self.policy)

    def _executed(self, step: DemoStep, result: StepResult, before: Truth | None) -> None:
        assert step.check is not None and before is not None
        run = self._follow(step.instruction, result, before)
        judgement = self._judge(step.check, run, before)
        self._plan_checks(result, run, approved=True)
        result.check('executed: succeeded', result.execution == 'succeeded')
        result.check('world as asked (ground truth)', judgement.world_ok)
        result.check('no other object moved', not judgement.wrong_object)
        result.check('no unsafe physics step', judgement.unsafe_steps == 0)
        result.observed = _observed(run, judgement)
        result.notes += list(judgement.notes)

    def _no_motion_step(self, step: DemoStep, result: StepResult, before: Truth | None) -> None:
        assert step.check is not None and before is not None
        run = self._follow(step.instruction, result, before)
        judgement = self._judge(step.check, run, before)
        if step.kind == 'not_found':
            result.check('agent: not_found', result.status == 'not_found')
        else:
            result.check('agent proposed a plan', result.status == 'proposed')
            result.check('supervisor: rejected', result.verdict == 'rejected')
            result.check(
                'reason: keep-out zone', any(r in KEEPOUT_REASONS for r in result.reasons)
            )
        result.check('nothing moved (ground truth)', not judgement.motion and not judgement.moved)
        result.observed = _observed(run, judgement)
        result.notes += list(judgement.notes)

    def _approval(self, step: DemoStep, result: StepResult, before: Truth | None) -> None:
        assert step.check is not None and before is not None
        pending: list[Verdict] = []

        def approve(verdict: Verdict) -> None:
            pending.append(verdict)
            self.client.decide(verdict.proposal_id, True, self.operator)

        run = self._follow(step.instruction, result, before, on_pending=approve)
        judgement = self._judge(step.check, run, before)
        result.check('held for approval (pending_approval)', bool(pending))
        self._plan_checks(result, run, approved=True)
        result.check('executed: succeeded', result.execution == 'succeeded')
        result.check('the tool ends above the object (ground truth)', judgement.world_ok)
        result.check('no unsafe physics step', judgement.unsafe_steps == 0)
        result.observed = ('held, approved by the operator, ' if pending else '') + _observed(
            run, judgement
        )
        result.notes += list(judgement.notes)

    def _stop(self, step: DemoStep, result: StepResult, before: Truth | None) -> None:
        """Start a pick-and-place; once the arm moves, send "stop"."""
        assert before is not None
        client = self.client
        sent: dict[str, float | str] = {}

        def stop_when_moving(kind: str, run: InstructionRun) -> None:
            if kind != 'verdict' or run.verdict is None or not run.verdict.approved:
                return
            proposal_id = run.verdict.proposal_id
            moving = self.cell.wait(
                lambda: any(
                    t.msg.snapshot.busy and t.msg.snapshot.proposal_id == proposal_id
                    for t in list(client.truths)[-3:]
                ),
                10.0,
            )
            if moving:
                instruction, t_stop = client.send_instruction(demo.STOP_TEXT, self.operator)
                sent.update(id=instruction.id, t=t_stop)

        run = self._follow(step.instruction, result, before, on_event=stop_when_moving)
        self._plan_checks(result, run, approved=True)
        if not result.check('"stop" sent while the arm moved', bool(sent)):
            result.observed = _observed(run, None)
            return
        stop_id, t_stop = str(sent['id']), float(sent['t'])
        stopped = self.cell.wait(lambda: client.status_for(stop_id), 5.0)
        result.check(
            'agent: stopped (no model call)',
            stopped is not None and stopped.msg.state == 'stopped',  # type: ignore[attr-defined]
        )
        latched = self.cell.wait(
            lambda: (
                client.safety_ok is not None
                and client.safety_ok.t > t_stop
                and not client.safety_ok.msg
            ),
            2.0,
        )
        result.check('safety_ok false', bool(latched))
        result.check('the running plan aborted', result.execution == 'aborted')
        if run.result_t is not None:
            result.latency_ms['stop_to_abort'] = round((run.result_t - t_stop) * 1e3, 1)
        result.execution = result.execution or 'none'
        result.observed = f'stopped; plan {result.execution}; latch set'
        if run.result is not None:
            result.notes.append(f'executor: {run.result.detail}')

    def _reset(self, step: DemoStep, result: StepResult, before: Truth | None) -> None:
        client = self.client
        t_release = time.monotonic()
        client.estop(False)

        def released() -> bool:
            status = client.node_status(SUPERVISOR_NODE)
            return (
                status is not None
                and status.t > t_release
                and status.msg['values'].get('estop_pressed') == 'false'
            )

        result.check('e-stop input released', bool(self.cell.wait(released, 5.0)))
        try:
            message, accepted = self.cell.reset_latch(), True
        except CellError as exc:
            message, accepted = str(exc), False
        result.check('reset accepted; safety_ok true', accepted)
        result.observed = f'released; reset: {message}'

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _plan_checks(result: StepResult, run: InstructionRun, approved: bool) -> None:
        result.check('agent proposed a plan', result.status == 'proposed')
        if approved:
            result.check('supervisor: approved', result.verdict == 'approved')

    def _save_frame(self, index: int, step: DemoStep, result: StepResult) -> None:
        if self._frame is None:
            result.notes.append('no annotated frame arrived for this step')
            return
        relative = Path('frames') / f'{index:02d}_{step.key}.png'
        demo.write_png(self.output / relative, self._frame.image)
        result.frame = str(relative)


def _observed(run: InstructionRun, judgement: Judgement | None) -> str:
    if run.waiting_for:
        return f'timed out waiting for the {run.waiting_for}'
    parts = [f'agent {run.status.state}' if run.status else 'no status']
    if run.verdict is not None:
        reasons = f' ({", ".join(run.verdict.reasons)})' if run.verdict.reasons else ''
        parts.append(f'{run.verdict.state}{reasons}')
    if run.result is not None:
        parts.append(f'executed: {run.result.status}')
    if judgement is not None and judgement.motion and run.result is None:
        parts.append('MOVED')
    return ', '.join(parts)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
