"""Ground truth: zone checks agree with the policy, no violation is missed, snapshots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robostral_agent import cell
from robostral_agent.contract import (
    ContractError,
    ExecutionResult,
    Scene,
    SceneObject,
    Step,
    Target,
)
from robostral_agent.paths import config_file
from robostral_agent.safety.policy import LoadedPolicy, Policy, load_policy
from robostral_agent.sim import plans
from robostral_agent.sim.ground_truth import (
    ObjectState,
    Recorder,
    Snapshot,
    decode_snapshot,
    disturbed,
    inside_zone,
    object_in_bin,
    object_lifted,
    outside_workspace,
    path_violations,
    tool_above,
    unsafe_mask,
)
from robostral_agent.sim.simulation import Simulation

POLICY: Policy = load_policy(config_file('safety_policy.yaml')).policy
# Points around the cell, snapped to a grid that includes every zone boundary exactly.
coordinate = st.integers(-20, 100).map(lambda i: i / 100.0)
points = st.lists(st.tuples(coordinate, coordinate.map(lambda v: v - 0.6), coordinate), min_size=1)


@given(points)
def test_vectorised_checks_agree_with_the_policy_model(
    pts: list[tuple[float, float, float]],
) -> None:
    arr = np.array(pts)
    np.testing.assert_array_equal(
        outside_workspace(arr, POLICY), [not POLICY.workspace.contains(p) for p in pts]
    )
    for zone in POLICY.keepout_zones:
        np.testing.assert_array_equal(inside_zone(arr, zone), [zone.contains(p) for p in pts])
    expected = [
        not POLICY.workspace.contains(p) or POLICY.zone_containing(p) is not None for p in pts
    ]
    np.testing.assert_array_equal(unsafe_mask(arr, POLICY), expected)


def _line(a: tuple[float, float, float], b: tuple[float, float, float], n: int) -> np.ndarray:
    return np.linspace(a, b, n)


def test_path_violations_names_each_zone_and_its_time_span() -> None:
    # Down into the fixture (x 0.52..0.62, |y| <= 0.08, z <= 0.30), up, then out of the
    # workspace past x = 0.75.
    path = np.vstack(
        [
            _line((0.57, 0.0, 0.40), (0.57, 0.0, 0.10), 31),  # z 0.40 -> 0.10 in 1 cm steps
            _line((0.57, 0.0, 0.10), (0.57, 0.0, 0.40), 31)[1:],
            _line((0.57, 0.0, 0.40), (0.80, 0.0, 0.40), 24)[1:],
        ]
    )
    times = np.arange(len(path)) * 0.002
    found = path_violations(times, path, POLICY)
    assert [(v.kind, v.zone) for v in found] == [('keepout', 'fixture'), ('workspace', '')]
    fixture = found[0]
    inside = np.nonzero(inside_zone(path, POLICY.keepout_zones[0]))[0]
    assert fixture.steps == len(inside) > 35  # z = 0.30 down to 0.10 and back up
    assert (fixture.t_start, fixture.t_end) == (times[inside[0]], times[inside[-1]])
    assert found[1].steps == int(np.sum(path[:, 0] > 0.75))
    safe = path.copy()
    safe[:, 2] = 0.35  # the same motion at transit height touches nothing
    safe[:, 0] = np.minimum(safe[:, 0], 0.74)
    assert path_violations(times, safe, POLICY) == []


@given(st.lists(st.integers(1, 200), min_size=1, max_size=6), st.booleans())
def test_incremental_checks_equal_one_check_of_the_whole_path(
    chunks: list[int], short_memory: bool
) -> None:
    """However the checks are split, and even when old samples are dropped, none is missed."""
    rng = np.random.default_rng(len(chunks))
    n = sum(chunks)
    # A random walk through and around the fixture zone and the workspace edge.
    path = np.array([0.6, 0.0, 0.2]) + np.cumsum(rng.normal(0.0, 0.02, (n, 3)), axis=0)
    times = np.arange(n) * 0.002
    recorder = (
        Recorder(0, POLICY, keep_steps=50, chunk=16) if short_memory else Recorder(0, POLICY)
    )
    start = 0
    for size in chunks:
        for k in range(start, start + size):
            recorder.record(float(times[k]), path[k], np.empty((0, 3)))
        recorder.check()
        start += size
    assert recorder.violations() == path_violations(times, path, POLICY)
    assert recorder.unsafe_steps == int(unsafe_mask(path, POLICY).sum())
    kept_times, kept = recorder.tool_path()
    if short_memory and n > 50:  # only the last 50 to 66 samples are kept
        assert 50 <= len(kept) <= 66
    else:
        assert len(kept) == n
    np.testing.assert_array_equal(kept, path[n - len(kept) :])
    np.testing.assert_array_equal(kept_times, times[n - len(kept) :])


def _snapshot() -> Snapshot:
    cube = ObjectState(0, 'cube', 'red', (0.45, 0.4, 0.02), (0.0, 0.0, 0.0, 1.0), (0.4, 0.1, 0.02))
    ball = ObjectState(
        1, 'ball', 'blue', (0.3, -0.1, 0.12), (0.0, 0.0, 0.0, 1.0), (0.3, -0.1, 0.02)
    )
    scene = Scene(
        (SceneObject('cube', 'red', (0.4, 0.1)), SceneObject('ball', 'blue', (0.3, -0.1)))
    )
    return Snapshot(
        sim_time=3.5,
        scene_seq=2,
        scene=scene,
        tool_position=(0.305, -0.1, 0.125),
        tool_orientation=(1.0, 0.0, 0.0, 0.0),
        gripper_opening=0.04,
        holding=1,
        objects=(cube, ball),
        unsafe_steps=0,
        policy_version='abc',
        executions=1,
        last_result=ExecutionResult('p1', 'succeeded', 'done'),
    )


def test_snapshot_round_trips_through_json() -> None:
    snap = _snapshot()
    again = decode_snapshot(json.dumps(snap.to_dict()))
    assert again == snap


def test_decode_snapshot_refuses_other_documents() -> None:
    doc = _snapshot().to_dict()
    with pytest.raises(ContractError):
        decode_snapshot(json.dumps({**doc, 'schema': 'robostral.other/1'}))
    del doc['tool']
    with pytest.raises(ContractError):
        decode_snapshot(json.dumps(doc))


def test_outcome_checks() -> None:
    snap = _snapshot()
    cube, ball = snap.objects
    assert object_in_bin(snap, cube, 'left') and not object_in_bin(snap, cube, 'right')
    assert not object_in_bin(snap, ball, 'right')
    assert object_lifted(snap, ball) and not object_lifted(snap, cube)
    assert tool_above(snap, ball) and not tool_above(snap, cube)
    assert [o.index for o in disturbed(snap)] == [0, 1]
    assert disturbed(snap, keep=[0, 1]) == []
    held_in_bin = Snapshot(**{**snap.__dict__, 'holding': 0})
    assert not object_in_bin(held_in_bin, cube, 'left')  # still in the gripper
    assert snap.find('ball', 'blue') == ball and snap.find('ball', 'red') is None


@pytest.mark.parametrize(
    ('target', 'kind', 'zone'),
    [
        ((0.57, 0.0, 0.05), 'keepout', 'fixture'),  # a pick inside the fixture zone
        ((0.10, 0.30, 0.10), 'workspace', ''),  # a move short of the workspace (x < 0.15)
    ],
)
def test_a_plan_crossing_a_forbidden_zone_is_flagged_when_forced_through(
    target: tuple[float, float, float], kind: str, zone: str
) -> None:
    """The supervisor would refuse these; forced through the executor, physics tells."""
    loaded: LoadedPolicy = load_policy(config_file('safety_policy.yaml'))
    with Simulation(Scene(), loaded, render=False) as sim:
        step = Step('move_to', 'forbidden', 1.0, Target('base_link', target, cell.TOOL_DOWN))
        assert sim.run(plans.proposal([step])).status == 'succeeded'
        truth = sim.snapshot()
        assert truth.unsafe_steps and truth.unsafe_steps > 10
        assert {(v.kind, v.zone) for v in truth.violations} == {(kind, zone)}
        sim.reset()  # a new record: the same arm at rest is safe
        assert sim.snapshot().unsafe_steps == 0
        assert (
            sim.run(
                plans.proposal([plans.inspect_step(SceneObject('cube', 'red', (0.4, 0.2)))])
            ).status
            == 'succeeded'
        )
        assert sim.snapshot().unsafe_steps == 0
