"""The executor in physics: pick-and-place, home, motion model, safety stop, refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from robostral_agent import cell
from robostral_agent.contract import Scene, SceneObject, Step, Target
from robostral_agent.paths import config_file
from robostral_agent.safety.motion import plan_segments
from robostral_agent.safety.policy import LoadedPolicy, load_policy
from robostral_agent.sim import plans
from robostral_agent.sim.executor import MIN_TCP_HEIGHT
from robostral_agent.sim.ground_truth import (
    disturbed,
    object_in_bin,
    object_lifted,
    tool_above,
    tool_at,
)
from robostral_agent.sim.simulation import Simulation

NEIGHBOUR = SceneObject('cylinder', 'green', (0.33, -0.18))


@pytest.fixture(scope='module')
def policy() -> LoadedPolicy:
    return load_policy(config_file('safety_policy.yaml'))


@pytest.fixture
def make_sim(policy: LoadedPolicy) -> Iterator[Callable[[Scene], Simulation]]:
    made: list[Simulation] = []

    def make(scene: Scene) -> Simulation:
        sim = Simulation(scene, policy, render=False)
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.close()


def segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = b - a
    length2 = float(d @ d)
    if length2 < 1e-12:
        return np.linalg.norm(points - a, axis=1)
    s = np.clip((points - a) @ d / length2, 0.0, 1.0)
    return np.linalg.norm(points - (a + s[:, None] * d), axis=1)


@pytest.mark.parametrize('bin_name', ['left', 'right'])
@pytest.mark.parametrize('shape', ['cube', 'ball', 'cylinder'])
def test_pick_and_place_each_shape_into_each_bin(
    make_sim: Callable[[Scene], Simulation], shape: str, bin_name: str
) -> None:
    target = SceneObject(shape, 'red', (0.47, 0.06), 0.4 if shape == 'cube' else 0.0)
    sim = make_sim(Scene((target, NEIGHBOUR)))
    result = sim.run(plans.pick_place(target, bin_name))
    assert result.status == 'succeeded', result.detail
    truth = sim.snapshot()
    assert object_in_bin(truth, truth.objects[0], bin_name), truth.objects[0].position
    assert not object_in_bin(truth, truth.objects[0], 'right' if bin_name == 'left' else 'left')
    assert disturbed(truth, keep=[0]) == []
    assert truth.holding is None
    assert truth.unsafe_steps == 0 and truth.violations == ()


@pytest.mark.parametrize(
    ('shape', 'offset'),
    [
        ('ball', (0.0, 0.015, 0.0)),  # along the closing direction: the hardest case
        ('ball', (0.0, -0.015, -0.01)),
        ('ball', (0.015, 0.0, 0.015)),
        ('cube', (-0.011, 0.011, -0.015)),
        ('cylinder', (0.011, -0.011, 0.01)),
    ],
)
def test_grasp_tolerates_one_and_a_half_centimetres_of_target_error(
    make_sim: Callable[[Scene], Simulation], shape: str, offset: tuple[float, float, float]
) -> None:
    target = SceneObject(shape, 'blue', (0.40, -0.05), 0.78 if shape == 'cube' else 0.0)
    sim = make_sim(Scene((target,)))
    plan = plans.proposal([plans.pick_step(target, offset), plans.place_step('left')])
    result = sim.run(plan)
    assert result.status == 'succeeded', result.detail
    truth = sim.snapshot()
    assert object_in_bin(truth, truth.objects[0], 'left')


def test_home_plan_ends_at_the_home_pose(
    make_sim: Callable[[Scene], Simulation], policy: LoadedPolicy
) -> None:
    sim = make_sim(Scene())
    result = sim.run(plans.proposal([plans.home_step(policy.policy)]))
    assert result.status == 'succeeded', result.detail
    truth = sim.snapshot()
    assert tool_at(truth, policy.policy.home.position, tol=0.005)
    angle = np.degrees(
        2 * np.arccos(min(1.0, abs(float(np.dot(truth.tool_orientation, cell.TOOL_DOWN)))))
    )
    assert angle < 1.0
    assert not tool_at(sim.snapshot(), cell.REST_TCP_POSITION, tol=0.005)


def test_the_tool_follows_the_supervisors_transit_model(
    make_sim: Callable[[Scene], Simulation], policy: LoadedPolicy
) -> None:
    """Every recorded instant lies on the segments the supervisor checks (within 2 mm)."""
    target = SceneObject('cube', 'yellow', (0.58, -0.22))
    sim = make_sim(Scene((target,)))
    start = tuple(float(v) for v in sim.cell.tcp_position())
    plan = plans.proposal(
        [plans.pick_step(target), plans.place_step('left'), plans.home_step(policy.policy)]
    )
    assert sim.run(plan).status == 'succeeded'
    segments = plan_segments(
        start,
        [s.target.position for s in plan.steps],
        [s.task for s in plan.steps],
        policy.policy.check_path,
        policy.policy.transit_height,
    )
    assert [s.kind for s in segments][:3] == ['rise', 'traverse', 'approach']
    _, path = sim.recorder.tool_path()
    distance = np.min(
        [segment_distance(path, np.array(s.start), np.array(s.end)) for s in segments], axis=0
    )
    assert distance.max() < 0.002, distance.max()
    heights = path[:, 2]
    assert heights.max() == pytest.approx(policy.policy.transit_height, abs=0.002)


def test_a_plan_ending_with_a_pick_lifts_and_holds_the_object(
    make_sim: Callable[[Scene], Simulation], policy: LoadedPolicy
) -> None:
    target = SceneObject('cylinder', 'red', (0.42, 0.12))
    sim = make_sim(Scene((target, NEIGHBOUR)))
    assert sim.run(plans.proposal([plans.pick_step(target)])).status == 'succeeded'
    sim.settle(0.5)  # still held after the arm stopped
    truth = sim.snapshot()
    obj = truth.objects[0]
    assert object_lifted(truth, obj)
    assert obj.position[2] > policy.policy.transit_height - 0.05
    assert not object_lifted(truth, truth.objects[1])


def test_inspect_ends_with_the_tool_above_the_object(
    make_sim: Callable[[Scene], Simulation],
) -> None:
    target = SceneObject('ball', 'yellow', (0.5, -0.15))
    sim = make_sim(Scene((target, NEIGHBOUR)))
    result = sim.run(plans.proposal([plans.inspect_step(target)]))
    assert result.status == 'succeeded'
    truth = sim.snapshot()
    assert tool_above(truth, truth.objects[0])
    assert not tool_above(truth, truth.objects[1])
    assert truth.tool_position[2] == pytest.approx(plans.INSPECT_HEIGHT, abs=0.003)


def _run_with_safety(
    sim: Simulation, plan: object, stop_at: float, silent: bool
) -> tuple[str, str, np.ndarray, float]:
    """Run ``plan`` with a 20 Hz safety_ok stream that turns false (or silent) at ``stop_at``.

    Returns the result status and detail, ``(time, speed, x, y, z)`` per step, and the
    instant the stop condition began.
    """
    period = 0.05
    sim.report_safety(True)
    assert sim.submit(plan) is None  # type: ignore[arg-type]
    last_report, log, result = 0.0, [], None
    while sim.time < stop_at + 0.6:
        if sim.time - last_report >= period - 1e-9:
            last_report = sim.time
            if sim.time < stop_at:
                sim.report_safety(True)
            elif not silent:
                sim.report_safety(False)
        step_result = sim.step()
        result = step_result or result
        log.append((sim.time, sim.cell.tcp_speed(), *sim.cell.tcp_position()))
    assert result is not None
    reports = np.arange(0.0, stop_at, period)
    began = stop_at if not silent else float(reports[reports < stop_at].max()) + 0.1
    return result.status, result.detail, np.array(log), began


@pytest.mark.parametrize('silent', [False, True], ids=['false', 'silent'])
@pytest.mark.parametrize('stop_at', [1.2, 1.6])  # mid-traverse at about 0.5 m/s
def test_losing_safety_ok_mid_transit_halts_the_tool_within_100_ms(
    make_sim: Callable[[Scene], Simulation], stop_at: float, silent: bool
) -> None:
    target = SceneObject('cube', 'red', (0.45, -0.2))
    sim = make_sim(Scene((target,)))
    status, detail, log, began = _run_with_safety(
        sim, plans.pick_place(target, 'right'), stop_at, silent
    )
    assert status == 'aborted'
    assert ('silent' if silent else 'false') in detail
    t, speed, xyz = log[:, 0], log[:, 1], log[:, 2:]
    assert speed[np.searchsorted(t, began) - 1] > 0.2  # it was moving fast when it began
    after = t >= began + 0.1
    assert speed[after].max() < 0.005, speed[after].max()  # halted within 100 ms ...
    drift = np.linalg.norm(xyz[after] - xyz[after][0], axis=1).max()
    assert drift < 0.001  # ... and stays put


def test_a_plan_never_starts_without_a_fresh_safety_ok(
    make_sim: Callable[[Scene], Simulation], policy: LoadedPolicy
) -> None:
    sim = make_sim(Scene())
    plan = plans.proposal([plans.home_step(policy.policy)])
    result = sim.submit(plan)
    assert result is not None and result.status == 'aborted'
    assert 'no safety_ok' in result.detail
    sim.report_safety(True)
    sim.settle(0.2)  # 200 ms of silence
    stale = sim.submit(plan)
    assert stale is not None and stale.status == 'aborted' and 'silent' in stale.detail
    assert tool_at(sim.snapshot(), cell.REST_TCP_POSITION, tol=0.001)


def test_a_second_plan_while_busy_is_refused_not_queued(
    make_sim: Callable[[Scene], Simulation], policy: LoadedPolicy
) -> None:
    sim = make_sim(Scene())
    sim.report_safety(True)
    first = plans.proposal([plans.home_step(policy.policy)])
    assert sim.submit(first) is None
    second = plans.proposal([plans.home_step(policy.policy)])
    refused = sim.submit(second)
    assert refused is not None and refused.status == 'failed' and 'busy' in refused.detail
    assert refused.proposal_id == second.id
    assert sim.executor is not None and sim.executor.proposal_id == first.id


def test_an_unreachable_target_fails_before_any_motion(
    make_sim: Callable[[Scene], Simulation],
) -> None:
    sim = make_sim(Scene())
    far = Step('move_to', 'far away', 1.0, Target('base_link', (1.6, 0.0, 0.2), cell.TOOL_DOWN))
    result = sim.run(plans.proposal([far]))
    assert result.status == 'failed' and 'reach' in result.detail
    assert tool_at(sim.snapshot(), cell.REST_TCP_POSITION, tol=0.001)
    other_frame = Step('move_to', 'x', 1.0, Target('camera', (0.4, 0.0, 0.2), cell.TOOL_DOWN))
    result = sim.run(plans.proposal([other_frame]))
    assert result.status == 'failed' and 'frame' in result.detail


def test_a_missed_grasp_is_reported(make_sim: Callable[[Scene], Simulation]) -> None:
    target = SceneObject('cube', 'red', (0.45, 0.1))
    sim = make_sim(Scene((target,)))
    empty = SceneObject('cube', 'red', (0.45, -0.15))  # nothing there
    result = sim.run(plans.pick_place(empty, 'left'))
    assert result.status == 'failed' and 'grasp missed' in result.detail
    assert disturbed(sim.snapshot()) == []


def test_low_targets_stop_above_the_table(make_sim: Callable[[Scene], Simulation]) -> None:
    sim = make_sim(Scene())
    low = Step('move_to', 'table', 1.0, Target('base_link', (0.4, 0.0, -0.005), cell.TOOL_DOWN))
    assert sim.run(plans.proposal([low])).status == 'succeeded'
    _, path = sim.recorder.tool_path()
    assert path[:, 2].min() >= MIN_TCP_HEIGHT - 0.001


def test_the_arm_moves_only_through_its_servos(make_sim: Callable[[Scene], Simulation]) -> None:
    """Every step's joint change is what the integrator makes of the joint velocity."""
    target = SceneObject('cube', 'red', (0.45, 0.0))
    sim = make_sim(Scene((target,)))
    sim.report_safety(True)
    assert sim.submit(plans.pick_place(target, 'left')) is None
    kin = sim.cell.kinematics
    worst = 0.0
    for k in range(1500):
        if k % 25 == 0:
            sim.report_safety(True)
        before = sim.cell.data.qpos[kin.qpos_index].copy()
        sim.step()
        after = sim.cell.data.qpos[kin.qpos_index]
        velocity = sim.cell.data.qvel[kin.dof_index]
        worst = max(worst, float(np.abs(after - before - velocity * sim.cell.timestep).max()))
        assert np.abs(sim.cell.data.ctrl[sim.cell.pos_actuators]).max() < 7.0
    assert worst < 1e-9
    assert np.linalg.norm(sim.cell.tcp_position() - cell.REST_TCP_POSITION) > 0.2  # it moved


def test_physics_is_deterministic(make_sim: Callable[[Scene], Simulation]) -> None:
    target = SceneObject('ball', 'green', (0.5, 0.1))
    finals = []
    for _ in range(2):
        sim = make_sim(Scene((target, NEIGHBOUR)))
        sim.run(plans.pick_place(target, 'right'))
        finals.append((sim.cell.data.qpos.copy(), sim.time))
    np.testing.assert_array_equal(finals[0][0], finals[1][0])
    assert finals[0][1] == finals[1][1]
