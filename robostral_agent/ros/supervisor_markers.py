"""Messages the supervisor node publishes for people: RViz markers and its diagnostic status.

Built from the core's plain data (policy, last verdict, status snapshot) so the node stays
thin and these can be checked without spinning anything.
"""

from __future__ import annotations

import math
from typing import Final

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from robostral_agent.contract import REASON_CODES, GoalProposal, Verdict
from robostral_agent.safety.motion import plan_segments
from robostral_agent.safety.policy import BoxZone, Policy
from robostral_agent.safety.supervisor import SupervisorStatus

VERDICT_COLORS: Final = {
    'approved': (0.1, 0.8, 0.2, 0.9),
    'pending_approval': (1.0, 0.7, 0.0, 0.9),
    'rejected': (0.9, 0.1, 0.1, 0.9),
}
ZONE_COLOR: Final = (0.9, 0.1, 0.1, 0.35)
WORKSPACE_COLOR: Final = (0.7, 0.7, 0.7, 1.0)
DEFAULT_FRAME: Final = 'base_link'


def _color(rgba: tuple[float, float, float, float]) -> ColorRGBA:
    return ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3])


def _point(p: tuple[float, ...]) -> Point:
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def _marker(ns: str, marker_id: int, kind: int, frame: str, stamp: Time) -> Marker:
    marker = Marker(ns=ns, id=marker_id, type=kind, action=Marker.ADD)
    marker.header.frame_id = frame
    marker.header.stamp = stamp
    marker.pose.orientation.w = 1.0
    return marker


def _box_edges(lo: tuple[float, ...], hi: tuple[float, ...]) -> list[Point]:
    """The 12 edges of a box as 24 LINE_LIST points."""
    corners = [(x, y, z) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    points = []
    for i, a in enumerate(corners):
        for b in corners[i + 1 :]:
            if sum(u != v for u, v in zip(a, b, strict=True)) == 1:
                points += [_point(a), _point(b)]
    return points


def safety_markers(
    policy: Policy | None, last_goal: tuple[GoalProposal, Verdict] | None, stamp: Time
) -> MarkerArray:
    """Workspace, keep-out zones and the last goal coloured by verdict (a full replacement:
    the first marker deletes whatever was drawn before)."""
    frame = policy.base_frame if policy is not None else DEFAULT_FRAME
    markers = [Marker(action=Marker.DELETEALL)]
    if policy is not None:
        ws = _marker('workspace', 0, Marker.LINE_LIST, frame, stamp)
        ws.scale.x = 0.004
        ws.color = _color(WORKSPACE_COLOR)
        ws.points = _box_edges(policy.workspace.min, policy.workspace.max)
        markers.append(ws)
        for i, zone in enumerate(policy.keepout_zones):
            if isinstance(zone, BoxZone):
                m = _marker('keepout_zones', i, Marker.CUBE, frame, stamp)
                centre = [(a + b) / 2 for a, b in zip(zone.min, zone.max, strict=True)]
                size = [b - a for a, b in zip(zone.min, zone.max, strict=True)]
            else:
                m = _marker('keepout_zones', i, Marker.CYLINDER, frame, stamp)
                centre = [*zone.center, (zone.z_min + zone.z_max) / 2]
                size = [2 * zone.radius, 2 * zone.radius, zone.z_max - zone.z_min]
            m.pose.position = _point(centre)
            m.scale.x, m.scale.y, m.scale.z = (float(v) for v in size)
            m.color = _color(ZONE_COLOR)
            m.text = zone.name
            markers.append(m)
    if last_goal is not None:
        markers += _goal_markers(policy, *last_goal, frame, stamp)
    return MarkerArray(markers=markers)


def _goal_markers(
    policy: Policy | None, proposal: GoalProposal, verdict: Verdict, frame: str, stamp: Time
) -> list[Marker]:
    color = _color(VERDICT_COLORS[verdict.state])
    targets = [
        s.target.position
        for s in proposal.steps
        if all(math.isfinite(v) for v in s.target.position)
    ]
    out = []
    for i, position in enumerate(targets):
        m = _marker('last_goal', i, Marker.SPHERE, frame, stamp)
        m.pose.position = _point(position)
        m.scale.x = m.scale.y = m.scale.z = 0.03
        m.color = color
        out.append(m)
    if policy is not None and len(targets) == len(proposal.steps):
        segments = plan_segments(
            policy.home.position,
            targets,
            [s.task for s in proposal.steps],
            policy.check_path,
            policy.transit_height,
        )
        if segments:
            path = _marker('last_goal_path', 0, Marker.LINE_LIST, frame, stamp)
            path.scale.x = 0.005
            path.color = color
            for seg in segments:
                path.points += [_point(seg.start), _point(seg.end)]
            out.append(path)
    if targets:
        label = _marker('last_goal_label', 0, Marker.TEXT_VIEW_FACING, frame, stamp)
        x, y, z = targets[0]
        label.pose.position = _point((x, y, z + 0.08))
        label.scale.z = 0.03
        label.color = color
        label.text = verdict.state + (f': {", ".join(verdict.reasons)}' if verdict.reasons else '')
        out.append(label)
    return out


def diagnostic_status(status: SupervisorStatus, name: str) -> DiagnosticStatus:
    """One status for /diagnostics: OK when ready, WARN when latched, ERROR when not ready."""
    if status.state == 'ready':
        level, message = DiagnosticStatus.OK, 'ready'
    elif status.state == 'latched':
        level, message = DiagnosticStatus.WARN, f'latched: {status.reason}'
    else:
        level, message = DiagnosticStatus.ERROR, f'not ready: {status.reason}'
    pressed = status.estop_pressed
    values = {
        'state': status.state,
        'ready': str(status.ready).lower(),
        'latched': str(status.latched).lower(),
        'reason': status.reason,
        'policy_version': status.policy_version,
        'policy_file': status.policy_path,
        'policy_error': status.policy_error,
        'audit_log': status.audit_path,
        'audit_error': status.audit_error,
        'audit_records': str(status.audit_records),
        'state_file_error': status.state_error,
        'estop_pressed': 'unknown' if pressed is None else str(pressed).lower(),
        'pending_approval': str(status.pending),
        'approved': str(status.approved),
        'rejected': str(status.rejected),
    }
    for code in REASON_CODES:
        values[f'rejected.{code}'] = str(status.rejected_by_reason.get(code, 0))
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id='robostral',
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
