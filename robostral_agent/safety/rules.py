"""Rule evaluation: a decoded proposal against a policy, returning EVERY failed rule.

The evaluator judges what the proposal itself says (stamps, operator, tasks, confidence,
frames, poses, orientation, workspace, keep-out zones, step sizes, the swept path of the
motion model in :mod:`robostral_agent.safety.motion`). What depends on the supervisor's own
state (latch, reset epoch, replay set, rate limiter, pending approvals) is added by
:class:`robostral_agent.safety.supervisor.Supervisor`.

Time is always injected (``now_ns``, ROS time in nanoseconds): no clock is read here, so tests
control it and a verdict is reproducible from its inputs.

Steps whose target cannot be placed in the base frame (unknown frame, non-finite position)
are not checked geometrically, and neither are the legs that touch them: those rules cannot
be evaluated, and the step is already rejected for the reason that prevents it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from robostral_agent.contract import TASKS, GoalProposal, Step
from robostral_agent.geometry import (
    angle_between_deg,
    quaternion_is_unit,
    segment_intersects_box,
    segment_intersects_cylinder,
    tool_axis,
)
from robostral_agent.safety.motion import (
    TOOL_POSE_MAX_AGE_S,
    Point,
    Segment,
    leg_segments,
    retreat_segment,
)
from robostral_agent.safety.policy import BoxZone, Policy, Zone

NS_PER_S: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Finding:
    """One failed rule: a reason code of INTERFACES.md section 4 and a human explanation."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class ToolPose:
    """The executor's latest tool pose in the policy's base frame (already validated)."""

    position: Point
    orientation: tuple[float, float, float, float]
    stamp_ns: int


class Findings(list[Finding]):
    """The failed rules of one evaluation, in the order they were found."""

    def add(self, code: str, detail: str) -> None:
        self.append(Finding(code, detail))

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self}


def _fmt(p: Sequence[float]) -> str:
    return '(' + ', '.join(f'{v:.4g}' for v in p) + ')'


@lru_cache(maxsize=4096)
def _axis_angle_deg(q: tuple[float, ...], axis: tuple[float, ...]) -> float:
    """Angle between the tool's +z axis and ``axis``; cached because plans repeat a few
    orientations (nearly always straight down) and the scipy rotation costs ~40 us."""
    return angle_between_deg(tool_axis(q), axis)


def _zone_bounds(zone: Zone) -> tuple[Point, Point]:
    """Axis-aligned bounding box of a zone (closed), for a cheap pre-filter."""
    if isinstance(zone, BoxZone):
        return zone.min, zone.max
    cx, cy = zone.center
    r = zone.radius
    return (cx - r, cy - r, zone.z_min), (cx + r, cy + r, zone.z_max)


class PolicyEvaluator:
    """Evaluates proposals against one policy; precomputes what every evaluation needs."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._zones = tuple((zone, *_zone_bounds(zone)) for zone in policy.keepout_zones)
        self._axis = (
            tuple(policy.tool_orientation.axis) if policy.tool_orientation is not None else None
        )

    # --- Individual rules -------------------------------------------------------------------

    def operator_authorized(self, operator: str) -> bool:
        """An empty ``authorized_operators`` admits anyone (including an unknown operator)."""
        allowed = self.policy.authorized_operators
        return not allowed or operator in allowed

    def tool_pose_fresh(self, tool_pose: ToolPose | None, now_ns: int) -> bool:
        """Younger than 1 s (a stamp at most ``max_future_skew_s`` ahead still counts)."""
        if tool_pose is None:
            return False
        age_ns = now_ns - tool_pose.stamp_ns
        skew_ns = self.policy.max_future_skew_s * NS_PER_S
        return -skew_ns <= age_ns < TOOL_POSE_MAX_AGE_S * NS_PER_S

    def start_point(self, tool_pose: ToolPose | None, now_ns: int) -> tuple[Point, str]:
        """Where leg 0 starts: the fresh tool pose, else the policy's home."""
        if self.tool_pose_fresh(tool_pose, now_ns):
            assert tool_pose is not None
            return tool_pose.position, 'tool pose'
        return self.policy.home.position, 'home'

    def zones_touching_point(self, p: Point) -> list[str]:
        return [
            zone.name
            for zone, lo, hi in self._zones
            if all(lo[k] <= p[k] <= hi[k] for k in range(3)) and zone.contains(p)
        ]

    def zones_touching_segment(self, a: Point, b: Point) -> list[str]:
        """Names of the zones the closed segment touches (bounding boxes filter first)."""
        seg_lo = (min(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]))
        seg_hi = (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]))
        names = []
        for zone, lo, hi in self._zones:
            if any(seg_lo[k] > hi[k] or seg_hi[k] < lo[k] for k in range(3)):
                continue
            if isinstance(zone, BoxZone):
                touches = segment_intersects_box(a, b, zone.min, zone.max)
            else:
                touches = segment_intersects_cylinder(
                    a, b, zone.center, zone.radius, zone.z_min, zone.z_max
                )
            if touches:
                names.append(zone.name)
        return names

    def _check_stamps(self, proposal: GoalProposal, now_ns: int, out: Findings) -> None:
        p = self.policy
        skew_ns = p.max_future_skew_s * NS_PER_S
        for name, stamp in (('stamp', proposal.stamp), ('image_stamp', proposal.image_stamp)):
            ahead_s = (stamp.to_ns() - now_ns) / NS_PER_S
            if stamp.to_ns() - now_ns > skew_ns:
                out.add(
                    'FUTURE_STAMP',
                    f'{name} is {ahead_s:.3f} s in the future (max_future_skew_s '
                    f'{p.max_future_skew_s})',
                )
        age_s = (now_ns - proposal.stamp.to_ns()) / NS_PER_S
        if now_ns - proposal.stamp.to_ns() > p.max_proposal_age_s * NS_PER_S:
            out.add(
                'STALE_PROPOSAL',
                f'stamp is {age_s:.3f} s old (max_proposal_age_s {p.max_proposal_age_s})',
            )
        image_age_s = (now_ns - proposal.image_stamp.to_ns()) / NS_PER_S
        if now_ns - proposal.image_stamp.to_ns() > p.max_image_age_s * NS_PER_S:
            out.add(
                'STALE_IMAGE',
                f'image_stamp is {image_age_s:.3f} s old (max_image_age_s {p.max_image_age_s})',
            )

    def _check_step(self, i: int, step: Step, out: Findings) -> bool:
        """Rules of one step; returns whether its target can be placed in the base frame."""
        p = self.policy
        where = f'steps[{i}]'
        if step.task not in TASKS:
            out.add('TASK_NOT_ALLOWED', f'{where}: unknown task {step.task!r}')
        elif step.task not in p.allowed_tasks:
            out.add('TASK_NOT_ALLOWED', f'{where}: task {step.task!r} not allowed')
        c = step.confidence
        if not (math.isfinite(c) and 0.0 <= c <= 1.0):
            out.add('MALFORMED', f'{where}.confidence {c!r} is not in [0, 1]')
        if not c >= p.min_confidence:  # NaN fails too
            out.add(
                'LOW_CONFIDENCE',
                f'{where}: confidence {c:.3f} < min_confidence {p.min_confidence}',
            )
        for name, values in (('pixel', step.pixel), ('bbox', step.bbox)):
            if values is not None and not all(math.isfinite(v) for v in values):
                out.add('MALFORMED', f'{where}.{name} holds a non-finite number')
        target = step.target
        frame_ok = target.frame_id == p.base_frame
        if not frame_ok:
            out.add(
                'UNKNOWN_FRAME',
                f'{where}: frame {target.frame_id!r} is not the base frame {p.base_frame!r}',
            )
        position_ok = all(math.isfinite(v) for v in target.position)
        if not position_ok:
            out.add('INVALID_POSE', f'{where}: position {target.position} is not finite')
        quat_ok = quaternion_is_unit(target.orientation)
        if not quat_ok:
            out.add(
                'INVALID_POSE',
                f'{where}: orientation {list(target.orientation)} is not a unit '
                'quaternion [x, y, z, w]',
            )
        elif self._axis is not None:
            angle = _axis_angle_deg(tuple(target.orientation), self._axis)
            limit = p.tool_orientation.max_angle_deg  # type: ignore[union-attr]
            if angle > limit:
                out.add(
                    'ORIENTATION_LIMIT',
                    f'{where}: tool axis is {angle:.1f} deg from {list(self._axis)} '
                    f'(max_angle_deg {limit})',
                )
        if not (frame_ok and position_ok):
            return False
        pos = target.position
        if not p.workspace.contains(pos):
            out.add('OUT_OF_WORKSPACE', f'{where}: target {_fmt(pos)} is outside')
        zones = self.zones_touching_point(pos)
        if zones:
            out.add(
                'IN_KEEPOUT_ZONE',
                f'{where}: target {_fmt(pos)} is in keep-out zone '
                + ', '.join(repr(z) for z in zones),
            )
        return True

    def _check_segment(self, seg: Segment, checked: set[Point], out: Findings) -> None:
        ws = self.policy.workspace
        for point in (seg.start, seg.end):
            if point not in checked:
                checked.add(point)
                if not ws.contains(point):
                    out.add(
                        'OUT_OF_WORKSPACE',
                        f'leg {seg.leg} ({seg.kind}) passes {_fmt(point)}, outside the workspace',
                    )
        zones = self.zones_touching_segment(seg.start, seg.end)
        if zones:
            out.add(
                'PATH_CROSSES_KEEPOUT',
                f'leg {seg.leg} ({seg.kind} {_fmt(seg.start)} -> {_fmt(seg.end)}) touches '
                'keep-out zone ' + ', '.join(repr(z) for z in zones),
            )

    def _check_path(
        self,
        steps: Sequence[Step],
        usable: Sequence[bool],
        tool_pose: ToolPose | None,
        now_ns: int,
        out: Findings,
    ) -> None:
        p = self.policy
        fresh = self.tool_pose_fresh(tool_pose, now_ns)
        start: Point | None
        if fresh:
            start, origin = self.start_point(tool_pose, now_ns)
        elif p.require_tool_pose:
            out.add(
                'TOOL_POSE_UNKNOWN',
                f'no tool pose younger than {TOOL_POSE_MAX_AGE_S} s (require_tool_pose)',
            )
            start, origin = None, 'unknown'
        else:
            start, origin = p.home.position, 'home'
        # Targets were checked against the workspace by the step rules: do not repeat them.
        checked = {s.target.position for s, ok in zip(steps, usable, strict=True) if ok}
        previous = start
        for i, step in enumerate(steps):
            target = step.target.position if usable[i] else None
            if previous is not None and target is not None:
                distance = math.dist(previous, target)
                if distance > p.max_step_m:
                    frm = origin if i == 0 else f'steps[{i - 1}]'
                    out.add(
                        'STEP_TOO_LARGE',
                        f'leg {i}: {distance:.3f} m from {frm} to steps[{i}] > max_step_m '
                        f'{p.max_step_m}',
                    )
                for seg in leg_segments(previous, target, p.check_path, p.transit_height, i):
                    self._check_segment(seg, checked, out)
            previous = target
        last = len(steps) - 1
        if usable[last]:
            retreat = retreat_segment(
                steps[last].target.position,
                steps[last].task,
                p.check_path,
                p.transit_height,
                last,
            )
            if retreat is not None:
                self._check_segment(retreat, checked, out)

    # --- Everything at once ---------------------------------------------------------------------

    def evaluate(
        self,
        proposal: GoalProposal,
        now_ns: int,
        tool_pose: ToolPose | None = None,
        *,
        check_ages: bool = True,
    ) -> Findings:
        """Every failed rule of ``proposal`` (empty: the proposal itself is acceptable).

        ``check_ages=False`` skips STALE_PROPOSAL, STALE_IMAGE and FUTURE_STAMP: at approval
        time the approval deadline replaces the age rules (see the supervisor).
        """
        out = Findings()
        if check_ages:
            self._check_stamps(proposal, now_ns, out)
        if not self.operator_authorized(proposal.operator):
            out.add(
                'UNAUTHORIZED_OPERATOR',
                f'operator {proposal.operator!r} is not in authorized_operators',
            )
        usable = [self._check_step(i, step, out) for i, step in enumerate(proposal.steps)]
        self._check_path(proposal.steps, usable, tool_pose, now_ns, out)
        return out
