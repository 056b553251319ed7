"""Property: whenever the supervisor approves a plan, the plan is safe, judged by an
independent oracle (its own motion model, dense sampling of every swept segment, its own
zone tests), over at least 10 000 generated proposals per run.

The generators are adversarial: coordinates cluster within micrometres to centimetres of
every zone face, cylinder rim, workspace wall and the transit height; confidences and ages
sit around their thresholds; orientations around the tilt limit; e-stops, releases, resets
and operator approvals are interleaved, with proposals stamped just before or after resets.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from robostral_agent.contract import Target
from robostral_agent.paths import config_file
from robostral_agent.safety import examples as ex
from robostral_agent.safety.audit import AuditLog
from robostral_agent.safety.latch import LatchStore
from robostral_agent.safety.policy import LoadedPolicy, parse_policy
from robostral_agent.safety.supervisor import Supervisor

S = 10**9
EXAMPLES = 2600
PROPOSALS_PER_EXAMPLE = 4
MIN_PROPOSALS = 10_000
SAMPLE_STEP_M = 0.001  # the oracle samples every swept segment each millimetre

REFERENCE = yaml.safe_load(config_file('safety_policy.yaml').read_text())
PILLAR = {'name': 'pillar', 'type': 'cylinder', 'center': [0.40, 0.20], 'radius': 0.05,
          'z_min': 0.0, 'z_max': 0.6}  # fmt: skip
OVERHEAD = {'name': 'overhead', 'type': 'box', 'min': [0.30, -0.30, 0.25],
            'max': [0.40, -0.20, 0.60]}  # fmt: skip
STUD = {'name': 'stud', 'type': 'box', 'min': [0.40, 0.02, -0.01], 'max': [0.44, 0.06, 0.01]}
POLICIES = [
    {},
    {'transit_height': 0.2, 'keepout_zones': [REFERENCE['keepout_zones'][0], PILLAR, OVERHEAD],
     'max_goal_rate_hz': 1e6},
    {'check_path': 'straight_line', 'tool_orientation': None, 'max_step_m': 0.5,
     'keepout_zones': [REFERENCE['keepout_zones'][0], PILLAR, OVERHEAD, STUD],
     'max_goal_rate_hz': 1e6, 'require_approval_for': []},
    {'require_tool_pose': True, 'authorized_operators': ['alice'], 'min_confidence': 0.8,
     'tool_orientation': {'axis': [0, 0, -1], 'max_angle_deg': 10}, 'transit_height': 0.45,
     'keepout_zones': [REFERENCE['keepout_zones'][1], PILLAR], 'max_goal_rate_hz': 1e6},
    {'check_path': 'none', 'max_goal_rate_hz': 1e6, 'keepout_zones': [STUD, OVERHEAD]},
]  # fmt: skip
OFFSETS = (0.0, 1e-6, -1e-6, 1e-4, -1e-4, 1e-3, -1e-3, 5e-3, -5e-3, 0.02, -0.02)


def policy_document(changes: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(REFERENCE)
    document['max_goal_rate_hz'] = 1e6  # the rate rule has its own tests; here it hides cases
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return document


# --- The oracle: written from the contract, sharing no code with the supervisor ----------------


def inside_zone(points: np.ndarray, zone: dict[str, Any]) -> np.ndarray:
    if zone['type'] == 'box':
        lo, hi = np.array(zone['min']), np.array(zone['max'])
        return np.all((points >= lo) & (points <= hi), axis=-1)
    c = np.array(zone['center'])
    in_height = (points[:, 2] >= zone['z_min']) & (points[:, 2] <= zone['z_max'])
    return in_height & (np.sum((points[:, :2] - c) ** 2, axis=-1) <= zone['radius'] ** 2)


def swept(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Points along a -> b every millimetre, ends included; clipped to the segment's box so
    floating-point rounding cannot put a sample a femtometre past an end."""
    n = max(2, math.ceil(float(np.linalg.norm(b - a)) / SAMPLE_STEP_M) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return np.clip((1.0 - t) * a + t * b, np.minimum(a, b), np.maximum(a, b))


def oracle_path(doc: dict[str, Any], start: np.ndarray, pol: dict[str, Any]) -> list[np.ndarray]:
    """The corner points of the swept polyline, per the motion model of INTERFACES.md."""
    h = pol['transit_height']
    targets = [np.array(s['target']['position'], float) for s in doc['steps']]
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    previous = start
    for target in targets:
        if pol['check_path'] == 'transit':
            up = np.array([previous[0], previous[1], h])
            over = np.array([target[0], target[1], h])
            pieces += [(previous, up), (up, over), (over, target)]
        elif pol['check_path'] == 'straight_line':
            pieces.append((previous, target))
        previous = target
    if pol['check_path'] != 'none' and doc['steps'][-1]['task'] == 'pick':
        last = targets[-1]
        pieces.append((last, np.array([last[0], last[1], h])))
    return [swept(a, b) for a, b in pieces]


def tool_z_angle_deg(q: list[float], axis: list[float]) -> float:
    z = Rotation.from_quat(q).as_matrix()[:, 2]
    a = np.array(axis, float) / np.linalg.norm(axis)
    return math.degrees(math.acos(max(-1.0, min(1.0, float(z @ a)))))


def violations(
    doc: dict[str, Any], pol: dict[str, Any], now: int, start: np.ndarray | None, *,
    ages: bool, operators: tuple[str, ...],
) -> list[str]:  # fmt: skip
    """Why the oracle would refuse this plan (empty: nothing wrong found)."""
    out = []
    ns = lambda t: t['sec'] * S + t['nanosec']  # noqa: E731
    if ages:
        stamp, image = ns(doc['stamp']), ns(doc['image_stamp'])
        skew = pol['max_future_skew_s'] * S
        if now - stamp > pol['max_proposal_age_s'] * S or now - image > pol['max_image_age_s'] * S:
            out.append('stale')
        if stamp - now > skew or image - now > skew:
            out.append('future')
    allowed = pol['authorized_operators']
    for who in (doc['operator'], *operators):
        if allowed and who not in allowed:
            out.append(f'operator {who!r}')
    ws_lo, ws_hi = np.array(pol['workspace']['min']), np.array(pol['workspace']['max'])
    for i, s in enumerate(doc['steps']):
        p, q = s['target']['position'], s['target']['orientation']
        if s['task'] not in pol['allowed_tasks']:
            out.append(f'{i}: task')
        c = s['confidence']
        if not (math.isfinite(c) and pol['min_confidence'] <= c <= 1.0):
            out.append(f'{i}: confidence')
        if s['target']['frame_id'] != pol['base_frame']:
            out.append(f'{i}: frame')
        if not all(math.isfinite(v) for v in (*p, *q)):
            out.append(f'{i}: non-finite')
            continue
        if abs(math.sqrt(sum(v * v for v in q)) - 1.0) > 1e-3:
            out.append(f'{i}: quaternion')
            continue
        limit = pol.get('tool_orientation')
        if limit and tool_z_angle_deg(q, limit['axis']) > limit['max_angle_deg']:
            out.append(f'{i}: tilt')
    if out:
        return out
    if start is None:
        return ['no tool pose']
    previous = start
    for i, s in enumerate(doc['steps']):
        target = np.array(s['target']['position'])
        if np.linalg.norm(target - previous) > pol['max_step_m']:
            out.append(f'leg {i}: too long')
        previous = target
    corners = [np.array(s['target']['position'], float)[None, :] for s in doc['steps']]
    for points in [*corners, *oracle_path(doc, start, pol)]:
        if not np.all((points >= ws_lo) & (points <= ws_hi)):
            out.append('outside the workspace')
        for zone in pol['keepout_zones']:
            if np.any(inside_zone(points, zone)):
                out.append(f'in zone {zone["name"]}')
    return out


# --- Generators ---------------------------------------------------------------------------------


def interesting(pol: dict[str, Any]) -> list[list[float]]:
    """Per axis, the values where a rule flips: faces, rims, walls, heights, home."""
    axes: list[set[float]] = [set(), set(), set()]
    ws = pol['workspace']
    for k in range(3):
        axes[k] |= {ws['min'][k], ws['max'][k], pol['home']['position'][k]}
    axes[2].add(pol['transit_height'])
    for zone in pol['keepout_zones']:
        if zone['type'] == 'box':
            for k in range(3):
                axes[k] |= {zone['min'][k], zone['max'][k]}
        else:
            cx, cy, r = *zone['center'], zone['radius']
            axes[0] |= {cx - r, cx + r, cx - r * 0.7071, cx + r * 0.7071, cx}
            axes[1] |= {cy - r, cy + r, cy - r * 0.7071, cy + r * 0.7071, cy}
            axes[2] |= {zone['z_min'], zone['z_max']}
    return [sorted(a) for a in axes]


def point_strategy(pol: dict[str, Any]) -> st.SearchStrategy[list[float]]:
    """Coordinates near where rules flip (two thirds) or anywhere around the workspace."""
    values, ws = interesting(pol), pol['workspace']
    axes = []
    for k in range(3):
        near = st.sampled_from(sorted({v + o for v in values[k] for o in OFFSETS}))
        axes.append(st.one_of(near, near, st.floats(ws['min'][k] - 0.05, ws['max'][k] + 0.05)))
    return st.builds(lambda x, y, z: [x, y, z], *axes)


def tilted(deg: float, axis: str) -> list[float]:
    rot = Rotation.from_euler(axis, deg, degrees=True) * Rotation.from_quat(ex.TOOL_DOWN)
    return [float(v) for v in rot.as_quat()]


TILTS = {deg: [tilted(deg, 'x'), tilted(deg, 'y')] for deg in (9.9, 10.1, 29.9, 30.1, 45.0)}
BAD_QUATERNIONS = [[1.0, 0.0, 0.0, 0.01], [0.0, 0.0, 0.0, 0.0], [float('nan'), 0.0, 0.0, 1.0]]


def step_strategy(pol: dict[str, Any], clean: bool) -> st.SearchStrategy[dict[str, Any]]:
    """One plan step. ``clean`` keeps every non-geometric field valid (geometry stays
    adversarial), so that approvals are common enough to test the path checks hard."""
    threshold = pol['min_confidence']
    limit = (pol.get('tool_orientation') or {}).get('max_angle_deg', 180.0)
    within = [q for deg, qs in TILTS.items() if deg < limit for q in qs]
    if clean:
        tasks = st.sampled_from(pol['allowed_tasks'])
        confidence = st.one_of(st.floats(threshold, 1.0), st.sampled_from([threshold, 1.0]))
        frame = st.just(pol['base_frame'])
        orientation = st.sampled_from([list(ex.TOOL_DOWN)] * 3 + within)
    else:
        tasks = st.sampled_from(['pick', 'place', 'inspect', 'home', 'move_to', 'dance'])
        confidence = st.one_of(
            st.floats(0.0, 1.0),
            st.sampled_from([threshold - 1e-6, threshold, 1.0, 1.0 + 1e-9, float('nan')]),
        )
        frame = st.sampled_from(['base_link'] * 4 + ['world', ''])
        every = [q for qs in TILTS.values() for q in qs]
        orientation = st.sampled_from([list(ex.TOOL_DOWN)] * 4 + every + BAD_QUATERNIONS)
    return st.builds(
        lambda task, position, c, f, q: ex.step(
            task, position, confidence=c, frame_id=f, orientation=q
        ),
        tasks,
        point_strategy(pol),
        confidence,
        frame,
        orientation,
    )


def age_strategy(limit: float, clean: bool) -> st.SearchStrategy[float]:
    """Ages around ``limit`` and around the future-stamp skew (0.5 s ahead)."""
    edges = [limit - 1e-3, limit, limit + 1e-3, -0.5 - 1e-3, -0.5, -0.499]
    if clean:
        return st.one_of(st.floats(-0.5, limit), st.sampled_from([limit, -0.5, 0.0]))
    return st.one_of(st.floats(-1.0, 2 * limit), st.sampled_from(edges))


@dataclass
class Stats:
    proposals: int = 0
    approved: int = 0
    rejected: int = 0
    approved_after_decision: int = 0
    reasons: set[str] = field(default_factory=set)


@dataclass
class Model:
    """What the test itself knows about the latch, kept apart from the supervisor."""

    latched: bool = False
    pressed: bool = False
    last_reset: int = 0


@pytest.mark.slow
def test_approved_plans_are_safe(tmp_path: Path) -> None:
    docs = [policy_document(c) for c in POLICIES]
    sups, models = [], []
    start_ns = 1_700_000_000 * S
    for i, doc in enumerate(docs):
        loaded = LoadedPolicy(parse_policy(doc), f'{i:064d}', f'policy{i}')
        audit = AuditLog(tmp_path / f'audit{i}.jsonl', start_ns, fsync=False)
        sup = Supervisor(loaded, audit, LatchStore(tmp_path / f'state{i}.json'), start_ns)
        assert sup.reset(start_ns).success
        sups.append(sup)
        models.append(Model(last_reset=start_ns))
    clock = itertools.count(start_ns + 100 * S, 10 * S)
    ids = itertools.count()
    stats = Stats()

    steps = {(i, clean): step_strategy(doc, clean) for i, doc in enumerate(docs) for clean in
             (True, False)}  # fmt: skip
    ages = {(i, clean): (age_strategy(doc['max_proposal_age_s'], clean),
                         age_strategy(doc['max_image_age_s'], clean))
            for i, doc in enumerate(docs) for clean in (True, False)}  # fmt: skip
    tools = {i: st.one_of(st.none(), st.tuples(point_strategy(doc), st.sampled_from(
        [0.0, 0.5, 0.999, 1.0, 1.001, 5.0]))) for i, doc in enumerate(docs)}  # fmt: skip
    latches = st.sampled_from(['none'] * 12 + ['trip', 'trip+release+reset', 'release+reset',
                                               'release+reset', 'release'])  # fmt: skip

    @st.composite
    def scenario(draw: st.DrawFn) -> dict[str, Any]:
        index = draw(st.integers(0, len(docs) - 1))
        plans = []
        for _ in range(PROPOSALS_PER_EXAMPLE):
            clean = draw(st.booleans())
            proposal_age, image_age = ages[index, clean]
            plans.append({
                'steps': draw(st.lists(steps[index, clean], min_size=1, max_size=3)),
                'age': draw(proposal_age),
                'image_age': draw(image_age),
                'operator': draw(st.sampled_from(['alice'] * 3 + ['bob', ''])),
                'decide': draw(st.sampled_from([None, 'alice', 'alice', 'bob'])),
            })  # fmt: skip
        return {
            'index': index,
            'plans': plans,
            'tool': draw(tools[index]),
            'latch': draw(latches),
            'lead': draw(st.sampled_from([0.0, 0.3, 1.0, 1.99, 2.5])),
        }

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(scenario())
    def check(case: dict[str, Any]) -> None:
        index = case['index']
        sup, model, pol = sups[index], models[index], docs[index]
        now = next(clock)
        sup.tick(now - 5 * S)
        event = now - round(case['lead'] * S)
        if 'trip' in case['latch']:
            sup.estop(True, event)
            model.latched = model.pressed = True
        if 'release' in case['latch']:
            sup.estop(False, event)
            model.pressed = False
        if 'reset' in case['latch']:
            result = sup.reset(event)
            assert result.success == (not model.pressed), result.message
            if model.latched and result.success:
                model.latched, model.last_reset = False, event
        start: np.ndarray | None = None if pol['require_tool_pose'] else np.array(
            pol['home']['position'])  # fmt: skip
        if case['tool'] is not None:
            position, tool_age = case['tool']
            stamp = now - round(tool_age * S)
            sup.update_tool_pose(Target('base_link', tuple(position), ex.TOOL_DOWN), stamp)
            if all(math.isfinite(v) for v in position) and 0 <= tool_age < 1.0:
                start = np.array(position)
        assert sup.safety_ok == (not model.latched)
        for plan in case['plans']:
            doc = ex.proposal(plan['steps'], now, proposal_id=f'p{next(ids)}',
                              operator=plan['operator'], age_s=plan['age'],
                              image_age_s=plan['image_age'])  # fmt: skip
            text = json.dumps(doc)
            outcome = sup.propose(text, now)
            stats.proposals += 1
            (verdict,) = outcome.verdicts
            stats.reasons |= set(verdict.reasons)
            deciders: tuple[str, ...] = ()
            if verdict.state == 'pending_approval' and plan['decide']:
                deciders = (plan['decide'],)
                decision = {'proposal_id': doc['id'], 'approve': True, 'operator': plan['decide']}
                outcome = sup.decide(json.dumps(decision), now)
                (verdict,) = outcome.verdicts
            if verdict.state != 'approved':
                stats.rejected += verdict.state == 'rejected'
                assert outcome.approved == ()
                continue
            stats.approved += 1
            stats.approved_after_decision += bool(deciders)
            assert [p.text for p in outcome.approved] == [text]
            assert not model.latched, 'approved while latched'
            stamp = doc['stamp']['sec'] * S + doc['stamp']['nanosec']
            assert stamp >= model.last_reset, 'approved a goal proposed before a reset'
            held = {s['task'] for s in doc['steps']} & set(pol['require_approval_for'])
            assert not held or deciders, 'a held task was approved without an operator'
            problems = violations(doc, pol, now, start, ages=True, operators=deciders)
            assert not problems, f'approved an unsafe plan: {problems}\n{text}'

    check()
    assert stats.proposals >= MIN_PROPOSALS
    # The property must not hold vacuously: both outcomes, and the rules near their edges.
    assert stats.approved >= 0.03 * stats.proposals, stats  # about 7 % in practice
    assert stats.rejected >= 0.3 * stats.proposals, stats
    assert stats.approved_after_decision > 0, stats
    expected = {'PATH_CROSSES_KEEPOUT', 'IN_KEEPOUT_ZONE', 'OUT_OF_WORKSPACE', 'LOW_CONFIDENCE',
                'STALE_PROPOSAL', 'STALE_IMAGE', 'FUTURE_STAMP', 'ESTOP_LATCHED', 'INVALID_POSE',
                'UNKNOWN_FRAME', 'TASK_NOT_ALLOWED', 'ORIENTATION_LIMIT', 'STEP_TOO_LARGE',
                'TOOL_POSE_UNKNOWN', 'UNAUTHORIZED_OPERATOR'}  # fmt: skip
    assert expected <= stats.reasons, expected - stats.reasons


def test_oracle_refuses_what_it_should() -> None:
    """The oracle itself can fail: it flags unsafe plans and accepts a good one."""
    now = 10**18
    reference = policy_document({})
    home = np.array(reference['home']['position'])
    good = ex.pick_place(now)
    assert violations(good, reference, now, home, ages=True, operators=()) == []
    into_fixture = ex.proposal([ex.step('pick', ex.FIXTURE_INSIDE)], now)
    assert 'in zone fixture' in violations(into_fixture, reference, now, home, ages=True,
                                           operators=())  # fmt: skip
    stale = ex.pick_place(now, age_s=3.0)
    assert 'stale' in violations(stale, reference, now, home, ages=True, operators=())
    # Policy 1 puts a pillar across the pick -> place traverse: only the path is wrong.
    pillars = policy_document(POLICIES[1])
    assert violations(good, pillars, now, home, ages=True, operators=()) == ['in zone pillar']
