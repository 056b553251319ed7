"""Runs approved plans on the simulated arm: transit motion, IK, gripper, safety stop.

The path is the supervisor's own motion model (:func:`robostral_agent.safety.motion.
plan_segments`), so what the supervisor checked is exactly what the arm sweeps: legs from the
current tool pose through every step's target, each ``rise`` / ``traverse`` / ``approach``
under ``check_path: transit`` (one ``direct`` segment under ``straight_line``), plus the
``retreat`` lift after a plan that ends with a pick. The policy's ``check_path: none`` checks
no path, and the executor then moves by the transit model.

Each segment is timed by a minimum-jerk profile under speed and acceleration limits; the tool
orientation is held on rises and approaches and turned on the traverse (or on the only
segment a leg has). Every physics step the executor moves the commanded joint angles one
damped least-squares step towards the set point (MuJoCo Jacobians, :mod:`.arm`) and sends
them, with the Jacobian feed-forward velocity, to the joint servos; the arm moves only
through its actuators and the physics. Before any motion the whole path is swept with IK on a
scratch copy, so an unreachable plan fails without moving.

Gripper: ``pick`` arrives with the gripper open, closes it for ``GRIP_CLOSE_S`` and then
checks that both fingers touch the same object (a real friction grasp: no welds or
attachments); ``place`` opens it and waits for the object to drop.

Safety: the executor moves only while ``safety_ok`` is true and was last reported less than
``safety_timeout_s`` (0.1 s) ago, in simulated time. Otherwise it halts the arm at once (the
joint set points follow the measured angles, so the servos act as pure brakes) and reports
``aborted`` when the tool has stopped, at most 100 ms later. A plan never starts without a
fresh ``safety_ok``.

Target heights: with the tool pointing down the fingertips reach ``TCP_ABOVE_FINGERTIP``
below the tool centre point, so a target below ``MIN_TCP_HEIGHT`` is raised to it (the tool
stops just above the table instead of pushing into it). The swept path then stays inside the
checked one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from robostral_agent import cell
from robostral_agent.contract import ExecutionResult, GoalProposal
from robostral_agent.safety.motion import Segment, plan_segments
from robostral_agent.safety.policy import Policy
from robostral_agent.sim import mjcf
from robostral_agent.sim.arm import rotation_error, slerp_wxyz, xyzw_to_wxyz
from robostral_agent.sim.workcell import WorkCell

Array = NDArray[np.float64]

MAX_SPEED = 0.7  # m/s, tool centre point
MAX_ACCEL = 2.5  # m/s^2
MAX_ANGULAR_SPEED = 2.5  # rad/s
MAX_ANGULAR_ACCEL = 6.0  # rad/s^2
MIN_SEGMENT_S = 0.05
GRIP_CLOSE_S = 0.5
GRIP_OPEN_S = 0.35
PLACE_SETTLE_S = 0.3
MIN_TCP_HEIGHT = cell.TABLE_TOP_Z + mjcf.TCP_ABOVE_FINGERTIP + 0.002
HALT_SPEED = 0.005  # m/s: below this the tool counts as stopped
HALT_MAX_S = 0.1
IK_TRACK_TOL = 0.005  # m: set point further than this from the commanded pose -> IK failure
SWEEP_STEP_M = 0.01
SWEEP_STEP_RAD = 0.05

# Quintic (minimum-jerk) profile s(u) = 10u^3 - 15u^4 + 6u^5: peak s' and s'' per unit.
_PEAK_VEL = 1.875
_PEAK_ACC = 5.773502691896258


class PlanError(ValueError):
    """A plan that cannot be executed as given (before any motion)."""


def _duration(length: float, angle: float) -> float:
    return max(
        _PEAK_VEL * length / MAX_SPEED,
        math.sqrt(_PEAK_ACC * length / MAX_ACCEL),
        _PEAK_VEL * angle / MAX_ANGULAR_SPEED,
        math.sqrt(_PEAK_ACC * angle / MAX_ANGULAR_ACCEL),
        MIN_SEGMENT_S,
    )


@dataclass(frozen=True)
class Move:
    """One timed straight segment with an orientation change (MuJoCo ``wxyz`` quaternions)."""

    start: Array
    end: Array
    q_start: Array
    q_end: Array
    leg: int
    kind: str
    duration: float = field(init=False)

    def __post_init__(self) -> None:
        length = float(np.linalg.norm(self.end - self.start))
        angle = float(np.linalg.norm(rotation_error(self.q_end, self.q_start)))
        object.__setattr__(self, 'duration', _duration(length, angle))

    def sample(self, t: float) -> tuple[Array, Array, Array, Array]:
        """Position, orientation, linear and angular velocity at ``t`` seconds in."""
        u = min(max(t / self.duration, 0.0), 1.0)
        s = u * u * u * (10.0 + u * (-15.0 + 6.0 * u))
        ds = 30.0 * u * u * (1.0 - u) ** 2 / self.duration
        delta = self.end - self.start
        rot = rotation_error(self.q_end, self.q_start)
        return (
            self.start + s * delta,
            slerp_wxyz(self.q_start, self.q_end, s),
            ds * delta,
            ds * rot,
        )


@dataclass(frozen=True)
class Grip:
    """Open or close the gripper and wait ``duration`` seconds."""

    open: bool
    duration: float
    leg: int


@dataclass(frozen=True)
class CheckGrasp:
    """After closing on a pick: both fingers must touch one object."""

    leg: int


@dataclass(frozen=True)
class CheckHolding:
    """Before a place that follows a pick: the object must still be in the gripper."""

    leg: int


@dataclass(frozen=True)
class Wait:
    duration: float
    leg: int


Action = Move | Grip | CheckGrasp | CheckHolding | Wait


def motion_mode(policy: Policy) -> str:
    """The path model the executor follows for ``policy`` (``none`` checks nothing: transit)."""
    return policy.check_path if policy.check_path != 'none' else 'transit'


def build_actions(
    start: Array,
    start_quat: Array,
    proposal: GoalProposal,
    policy: Policy,
    gripper_open: bool = True,
    holding: bool = False,
) -> list[Action]:
    """The timed actions of a plan from the tool pose ``start`` (see the module docstring).

    ``gripper_open`` and ``holding`` describe the gripper when the plan starts: a pick first
    opens a closed gripper, a place checks that an object is still held.
    """
    steps = proposal.steps
    for i, step in enumerate(steps):
        if step.target.frame_id != policy.base_frame:
            raise PlanError(
                f'step {i}: target frame {step.target.frame_id!r} is not {policy.base_frame!r}'
            )
    targets = [
        (s.target.position[0], s.target.position[1], max(s.target.position[2], MIN_TCP_HEIGHT))
        for s in steps
    ]
    quats = [xyzw_to_wxyz(s.target.orientation) for s in steps]
    quats = [q / np.linalg.norm(q) for q in quats]
    tasks = [s.task for s in steps]
    segments = plan_segments(
        tuple(float(v) for v in start), targets, tasks, motion_mode(policy), policy.transit_height
    )
    actions: list[Action] = []
    orientation = np.asarray(start_quat, dtype=np.float64)
    for leg, step in enumerate(steps):
        legs = [s for s in segments if s.leg == leg and s.kind != 'retreat']
        if step.task == 'pick' and not gripper_open:
            actions.append(Grip(True, GRIP_OPEN_S, leg))
            gripper_open, holding = True, False
        # The orientation turns on the traverse (or the direct segment), else on the last one.
        turn_on = next((s for s in legs if s.kind in ('traverse', 'direct')), None)
        if turn_on is None and legs:
            turn_on = legs[-1]
        for seg in legs:
            end_quat = quats[leg] if seg is turn_on else orientation
            actions.append(_move(seg, orientation, end_quat))
            orientation = end_quat
        if not legs:  # already at the target: turn in place if needed
            here = np.asarray(targets[leg], dtype=np.float64)
            actions.append(Move(here, here.copy(), orientation, quats[leg], leg, 'turn'))
            orientation = quats[leg]
        if step.task == 'pick':
            actions += [Grip(False, GRIP_CLOSE_S, leg), CheckGrasp(leg)]
            gripper_open, holding = False, True
        elif step.task == 'place':
            if holding:
                actions.append(CheckHolding(leg))
            actions.append(Grip(True, GRIP_OPEN_S, leg))
            gripper_open, holding = True, False
    actions += [_move(s, orientation, orientation) for s in segments if s.kind == 'retreat']
    if tasks[-1] == 'place':
        actions.append(Wait(PLACE_SETTLE_S, len(steps) - 1))
    return actions


def _move(seg: Segment, q_start: Array, q_end: Array) -> Move:
    return Move(
        np.asarray(seg.start, dtype=np.float64),
        np.asarray(seg.end, dtype=np.float64),
        np.asarray(q_start, dtype=np.float64),
        np.asarray(q_end, dtype=np.float64),
        seg.leg,
        seg.kind,
    )


class SafetySignal:
    """The latest ``safety_ok`` and when (simulated time) it was reported."""

    def __init__(self, timeout_s: float = 0.1) -> None:
        self.timeout_s = timeout_s
        self._ok = False
        self._at = -math.inf
        self._why = 'no safety_ok received'

    def report(self, ok: bool, t: float) -> None:
        self._ok = bool(ok)
        self._at = t
        self._why = '' if ok else 'safety_ok is false'

    def report_silence(self, t: float, silent_s: float) -> None:
        """The source has been silent ``silent_s`` (measured by the caller's own clock)."""
        self._ok = False
        self._at = t
        self._why = f'safety_ok silent for {silent_s:.3f} s'

    def reason_not_ok(self, t: float) -> str | None:
        """``None`` while motion is allowed, else why not."""
        if not self._ok:
            return self._why
        if t - self._at > self.timeout_s:
            return f'safety_ok silent for {t - self._at:.3f} s (limit {self.timeout_s:.3f} s)'
        return None


class Executor:
    """Runs one approved plan at a time on a :class:`WorkCell` (see the module docstring)."""

    def __init__(self, cell_: WorkCell, policy: Policy, safety_timeout_s: float = 0.1) -> None:
        self.cell = cell_
        self.policy = policy
        self.safety = SafetySignal(safety_timeout_s)
        self.proposal_id = ''
        self._actions: deque[Action] = deque()
        self._action_start = 0.0
        self._halting: tuple[float, str, str] | None = None  # (since, status, detail)
        self._started = 0.0
        self.sync()

    # --- State ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.proposal_id)

    def sync(self) -> None:
        """Hold the arm where it is (after a reset or a scene load)."""
        self._q_cmd = self.cell.joint_positions()
        self._grip_cmd = float(self.cell.data.ctrl[self.cell.grip_actuator])
        self._actions.clear()
        self._halting = None
        self.proposal_id = ''

    def report_safety(self, ok: bool, t: float | None = None) -> None:
        self.safety.report(ok, self.cell.time if t is None else t)

    # --- Plans ---------------------------------------------------------------------------

    def submit(self, proposal: GoalProposal) -> ExecutionResult | None:
        """Start ``proposal``; an immediate result when it is refused (busy, unsafe, bad)."""
        if self.busy:
            return ExecutionResult(
                proposal.id, 'failed', f'refused: busy executing plan {self.proposal_id}'
            )
        not_ok = self.safety.reason_not_ok(self.cell.time)
        if not_ok is not None:
            return ExecutionResult(proposal.id, 'aborted', f'not started: {not_ok}')
        start, start_quat = self.cell.tcp_position(), self.cell.tcp_quat_wxyz()
        try:
            gripper_open = self._grip_cmd >= mjcf.FINGER_OPEN / 2.0
            holding = self.cell.held_object() is not None
            actions = build_actions(
                start, start_quat, proposal, self.policy, gripper_open, holding
            )
            self._sweep(actions)
        except PlanError as exc:
            return ExecutionResult(proposal.id, 'failed', str(exc))
        self._actions = deque(actions)
        self._q_cmd = self.cell.joint_positions()
        self._action_start = self.cell.time
        self._started = self.cell.time
        self.proposal_id = proposal.id
        return None

    def cancel(self, reason: str) -> ExecutionResult | None:
        """Drop the running plan (reset, scene load); its result, if one was running."""
        if not self.busy:
            return None
        result = ExecutionResult(self.proposal_id, 'aborted', reason)
        self.sync()
        return result

    def _sweep(self, actions: Sequence[Action]) -> None:
        """IK along every move on scratch data: raise :class:`PlanError` if any is unreachable."""
        kin = self.cell.kinematics
        q = self.cell.joint_positions()
        for action in actions:
            if not isinstance(action, Move):
                continue
            length = float(np.linalg.norm(action.end - action.start))
            angle = float(np.linalg.norm(rotation_error(action.q_end, action.q_start)))
            n = max(1, math.ceil(max(length / SWEEP_STEP_M, angle / SWEEP_STEP_RAD)))
            for k in range(1, n + 1):
                s = k / n
                p = action.start + s * (action.end - action.start)
                quat = slerp_wxyz(action.q_start, action.q_end, s)
                result = kin.solve(p, quat, q, max_iterations=60, pos_tol=5e-4, rot_tol=5e-3)
                if not result.converged(2e-3, 2e-2):
                    raise PlanError(
                        f'step {action.leg}: {action.kind} to {np.round(action.end, 3).tolist()}'
                        f" is out of the arm's reach at {np.round(p, 3).tolist()}"
                        f' (IK error {result.position_error * 1000:.0f} mm)'
                    )
                q = result.q

    # --- The control loop ------------------------------------------------------------------

    def control(self) -> ExecutionResult | None:
        """Set the servo commands for the next physics step; a result when a plan ends."""
        t = self.cell.time
        result = None
        qd = np.zeros(6)
        if self._halting is not None:
            result = self._halt_step(t)
        elif self.busy:
            not_ok = self.safety.reason_not_ok(t)
            if not_ok is not None:
                self._halting = (t, 'aborted', f'stopped: {not_ok}')
                result = self._halt_step(t)
            else:
                result, qd = self._run(t)
        self.cell.command(self._q_cmd, qd, self._grip_cmd)
        return result

    def _halt_step(self, t: float) -> ExecutionResult | None:
        """Brake: set points follow the measured joints until the tool has stopped."""
        assert self._halting is not None
        since, status, detail = self._halting
        self._q_cmd = self.cell.joint_positions()
        elapsed = t - since
        if (elapsed >= 0.01 and self.cell.tcp_speed() < HALT_SPEED) or elapsed >= HALT_MAX_S:
            result = ExecutionResult(self.proposal_id, status, detail)
            self._actions.clear()
            self._halting = None
            self.proposal_id = ''
            return result
        return None

    def _fail(self, t: float, detail: str) -> ExecutionResult | None:
        self._halting = (t, 'failed', detail)
        return self._halt_step(t)

    def _run(self, t: float) -> tuple[ExecutionResult | None, Array]:
        dt = self.cell.timestep
        while self._actions:
            action = self._actions[0]
            elapsed = t - self._action_start
            if isinstance(action, Move):
                if elapsed > action.duration:
                    self._next(t)
                    continue
                return self._track(action, elapsed + dt)
            if isinstance(action, Grip):
                self._grip_cmd = mjcf.FINGER_OPEN if action.open else 0.0
                if elapsed >= action.duration:
                    self._next(t)
                    continue
                return None, np.zeros(6)
            if isinstance(action, Wait):
                if elapsed >= action.duration:
                    self._next(t)
                    continue
                return None, np.zeros(6)
            if isinstance(action, CheckGrasp | CheckHolding):
                if isinstance(action, CheckGrasp):
                    ok = self.cell.touched_by_both_fingers() is not None
                    failure = 'grasp missed (nothing between the fingers)'
                else:
                    ok = self.cell.held_object() is not None
                    failure = 'the object slipped from the gripper before the place'
                if not ok:
                    return self._fail(t, f'step {action.leg}: {failure}'), np.zeros(6)
                self._next(t)
                continue
        result = ExecutionResult(
            self.proposal_id, 'succeeded', f'done in {t - self._started:.2f} s (simulated)'
        )
        self.proposal_id = ''
        return result, np.zeros(6)

    def _next(self, t: float) -> None:
        self._actions.popleft()
        self._action_start = t

    def _track(self, move: Move, at: float) -> tuple[ExecutionResult | None, Array]:
        """One IK update of the joint set point towards ``move`` at time ``at``."""
        kin = self.cell.kinematics
        position, quat, vel, omega = move.sample(at)
        q = self._q_cmd
        for _ in range(8):
            q_next, e_pos, e_rot = kin.ik_step(q, position, quat)
            if e_pos < 1e-4 and e_rot < 1e-3:
                break
            q = q_next
        else:
            if e_pos > IK_TRACK_TOL:
                detail = f'step {move.leg}: IK lost the path at {np.round(position, 3).tolist()}'
                return self._fail(self.cell.time, detail), np.zeros(6)
        self._q_cmd = q
        qd = kin.joint_velocity(q, np.concatenate([vel, omega]))
        return None, qd
