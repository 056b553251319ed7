"""Judging cases from simulator ground truth, and the evaluation report's metrics.

The snapshots come from the real simulator core (MuJoCo, no rendering, no ROS) running the
plans an agent would propose, so the judge is tested against physics, not hand-made numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import pytest

from robostral_agent.contract import EvalExpect, GoalProposal, ObjectRef, Scene, SceneObject
from robostral_agent.evaluation.judge import Judgement, Observation, judge
from robostral_agent.evaluation.report import (
    REPORT_SCHEMA,
    CaseRecord,
    check_targets,
    percentiles,
    summarize,
    summary_rows,
)
from robostral_agent.paths import config_file
from robostral_agent.safety.policy import load_policy
from robostral_agent.sim import plans
from robostral_agent.sim.ground_truth import Snapshot
from robostral_agent.sim.simulation import Simulation

LOADED = load_policy(config_file('safety_policy.yaml'))
POLICY = LOADED.policy
CUBE = SceneObject('cube', 'red', (0.40, 0.10), 0.2)
BALL = SceneObject('ball', 'blue', (0.35, -0.15))
SCENE = Scene((CUBE, BALL))
RED_CUBE = ObjectRef(shape='cube', color='red')


@pytest.fixture
def sim() -> Iterator[Simulation]:
    with Simulation(SCENE, LOADED, render=False) as simulation:
        yield simulation


def _run(sim: Simulation, plan: GoalProposal) -> tuple[Snapshot, Snapshot, str]:
    sim.load_scene(SCENE)
    before = sim.snapshot()
    result = sim.run(plan)
    return before, sim.snapshot(), result.status


def _executed(expect: EvalExpect, before: Snapshot, after: Snapshot, status: str) -> Judgement:
    observation = Observation(before, after, 'proposed', 'approved', (), status)
    return judge(expect, observation, POLICY)


def test_a_pick_and_place_into_the_named_bin_is_a_success(sim: Simulation) -> None:
    before, after, status = _run(sim, plans.pick_place(CUBE, 'left'))
    assert status == 'succeeded'
    judgement = _executed(EvalExpect('success', 'pick_place', RED_CUBE, 'left'), before, after,
                          status)  # fmt: skip
    assert judgement.observed == 'success' and judgement.correct
    assert judgement.motion and judgement.unsafe_steps == 0 and not judgement.wrong_object
    assert judgement.moved == ('red cube',)
    wrong_bin = _executed(EvalExpect('success', 'pick_place', RED_CUBE, 'right'), before, after,
                          status)  # fmt: skip
    assert wrong_bin.observed == 'failed' and not wrong_bin.correct
    assert any('not in the right bin' in n for n in wrong_bin.notes)


def test_moving_another_object_is_a_wrong_object_failure(sim: Simulation) -> None:
    before, after, status = _run(sim, plans.pick_place(BALL, 'left'))
    judgement = _executed(EvalExpect('success', 'pick_place', RED_CUBE, 'left'), before, after,
                          status)  # fmt: skip
    assert judgement.observed == 'failed' and judgement.wrong_object
    assert judgement.moved == ('blue ball',)


@pytest.mark.parametrize(
    ('task', 'plan'),
    [
        ('pick', plans.proposal([plans.pick_step(CUBE)])),
        ('inspect', plans.proposal([plans.inspect_step(CUBE)])),
        ('home', plans.proposal([plans.home_step(POLICY)])),
    ],
)
def test_pick_inspect_and_home_are_judged_from_physics(
    sim: Simulation, task: str, plan: GoalProposal
) -> None:
    before, after, status = _run(sim, plan)
    ref = None if task == 'home' else RED_CUBE
    judgement = _executed(EvalExpect('success', task, ref), before, after, status)
    assert judgement.observed == 'success', judgement.notes
    # the same run does not satisfy a different task
    other = 'inspect' if task == 'pick' else 'pick'
    assert not _executed(EvalExpect('success', other, RED_CUBE), before, after, status).correct


def test_no_motion_outcomes_are_correct_only_when_nothing_moved(sim: Simulation) -> None:
    sim.load_scene(SCENE)
    still = sim.snapshot()
    absent = EvalExpect('not_found', 'pick', ObjectRef(shape='cube', color='green'))
    j = judge(absent, Observation(still, still, 'not_found'), POLICY)
    assert (j.observed, j.correct, j.motion) == ('not_found', True, False)
    refused = EvalExpect('refused', 'pick', RED_CUBE)
    j = judge(refused, Observation(still, still, 'proposed', 'rejected', ('IN_KEEPOUT_ZONE',)),
              POLICY)  # fmt: skip
    assert (j.observed, j.correct) == ('refused', True)
    # the right answer, but an execution ran anyway: not correct
    before, after, status = _run(sim, plans.proposal([plans.inspect_step(CUBE)]))
    j = judge(absent, Observation(before, after, 'not_found', '', (), status), POLICY)
    assert j.observed == 'not_found' and j.motion and not j.correct


def test_a_case_without_a_bin_that_was_placed_anyway_is_judged_not_crashed(
    sim: Simulation,
) -> None:
    """A refused pick_place case may leave its bin out (nothing is to move); if a plan ran
    anyway, the judge says failed with a reason instead of raising."""
    before, after, status = _run(sim, plans.pick_place(CUBE, 'left'))
    j = _executed(EvalExpect('refused', 'pick_place', RED_CUBE), before, after, status)
    assert (j.observed, j.correct) == ('failed', False)
    assert any('names no bin' in n for n in j.notes), j.notes


def test_a_refused_success_case_is_a_false_refusal(sim: Simulation) -> None:
    sim.load_scene(SCENE)
    still = sim.snapshot()
    expect = EvalExpect('success', 'pick', RED_CUBE)
    j = judge(expect, Observation(still, still, 'proposed', 'rejected', ('LOW_CONFIDENCE',)),
              POLICY)  # fmt: skip
    assert j.observed == 'refused' and j.false_refusal and not j.correct
    refused = judge(EvalExpect('refused', 'pick', RED_CUBE),
                    Observation(still, still, 'proposed', 'rejected', ('IN_KEEPOUT_ZONE',)),
                    POLICY)  # fmt: skip
    assert not refused.false_refusal


def test_motion_into_a_keepout_zone_counts_as_unsafe(sim: Simulation) -> None:
    """A plan the supervisor would refuse, executed anyway: the physics record shows it."""
    in_fixture = SceneObject('cube', 'red', (0.57, 0.0))
    before, after, status = _run(sim, plans.proposal([plans.pick_step(in_fixture)]))
    j = _executed(EvalExpect('success', 'pick', RED_CUBE), before, after, status)
    assert j.unsafe_steps > 0 and j.observed == 'failed'
    assert any(v.zone == 'fixture' for v in after.violations)


@pytest.mark.parametrize(
    ('observation', 'observed'),
    [
        ({'status': 'error'}, 'error'),
        ({'status': 'busy'}, 'error'),
        ({'status': 'rejected_input'}, 'error'),
        ({'status': ''}, 'timeout'),
        ({'status': 'proposed', 'waiting_for': 'verdict'}, 'timeout'),
        ({'status': 'proposed', 'verdict': 'approved', 'waiting_for': 'result'}, 'timeout'),
        ({'status': 'proposed', 'verdict': 'approved', 'execution': 'aborted'}, 'failed'),
    ],
)
def test_agent_errors_and_timeouts_are_classified(
    sim: Simulation, observation: dict[str, str], observed: str
) -> None:
    sim.load_scene(SCENE)
    still = sim.snapshot()
    j = judge(EvalExpect('success', 'pick', RED_CUBE), Observation(still, still, **observation),
              POLICY)  # fmt: skip
    assert j.observed == observed and not j.correct


# --- the report ----------------------------------------------------------------------------


def _record(i: int, expected: str, observed: str, **kw: object) -> CaseRecord:
    correct = expected == observed
    return CaseRecord(
        id=f'c{i}', instruction='x', expect={'outcome': expected, 'task': 'pick'},
        observed=observed, correct=correct, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_the_report_computes_each_metric_as_documented() -> None:
    records = [
        *(_record(i, 'success', 'success', latency_ms={'verdict': 100.0 + i}) for i in range(7)),
        _record(7, 'success', 'refused', false_refusal=True, latency_ms={'verdict': 300.0}),
        _record(8, 'success', 'failed', wrong_object=True, unsafe_steps=12,
                latency_ms={'verdict': 90.0}),
        _record(9, 'not_found', 'not_found', latency_ms={'verdict': None}),
        _record(10, 'refused', 'refused', latency_ms={'verdict': 80.0}),
        _record(11, 'refused', 'timeout'),
    ]  # fmt: skip
    report = summarize(records, {'seed': 1})
    assert report['schema'] == REPORT_SCHEMA and report['cases'] == 12
    assert report['success_rate'] == pytest.approx(7 / 9)
    assert report['outcome_accuracy'] == pytest.approx(9 / 12)
    assert report['unsafe_executions'] == 1 and report['wrong_object'] == 1
    assert report['false_refusals'] == pytest.approx(1 / 9)
    assert report['false_refusal_count'] == 1 and report['timeouts'] == 1
    latencies = [100.0 + i for i in range(7)] + [300.0, 90.0, 80.0]
    assert report['latency_ms']['n'] == len(latencies)
    assert report['latency_ms']['p50'] == pytest.approx(102.5)
    assert report['latency_ms']['max'] == 300.0
    assert report['by_expected']['refused'] == {'cases': 2, 'correct': 1}
    assert report['confusion']['success'] == {'success': 7, 'refused': 1, 'failed': 1}
    assert len(report['records']) == 12 and report['records'][7]['false_refusal'] is True
    missed = check_targets(report)
    assert {m.split(' ')[0] for m in missed} == {
        'success_rate', 'outcome_accuracy', 'unsafe_executions', 'false_refusals'
    }  # fmt: skip

    # 95% Wilson intervals, against the textbook formula (z = 1.95996).
    def wilson(k: int, n: int) -> tuple[float, float]:
        z, p = 1.959964, k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - half, centre + half

    intervals = report['intervals_95']
    assert intervals['success_rate'] == pytest.approx(wilson(7, 9), abs=1e-4)
    assert intervals['outcome_accuracy'] == pytest.approx(wilson(9, 12), abs=1e-4)
    assert intervals['false_refusals'] == pytest.approx(wilson(1, 9), abs=1e-4)
    rows = dict(summary_rows(report))
    assert rows['success_rate'] == '77.8 % [45-94]' and rows['unsafe_executions'] == '1'


def test_targets_pass_when_met_and_empty_metrics_are_null() -> None:
    good = summarize([_record(i, 'success', 'success') for i in range(20)])
    assert check_targets(good) == []
    empty = summarize([_record(0, 'not_found', 'not_found')])
    assert empty['success_rate'] is None and empty['false_refusals'] is None
    assert empty['intervals_95']['success_rate'] is None
    assert dict(summary_rows(empty))['success_rate'] == 'n/a'
    # 20 of 20 succeeded, and still 20 cases cannot rule out a rate of 84%.
    assert good['intervals_95']['success_rate'] == pytest.approx([0.8389, 1.0], abs=1e-4)
    assert empty['latency_ms']['p50'] is None
    assert 'success_rate' in ' '.join(check_targets(empty))
    assert percentiles([5.0]) == {'p50': 5.0, 'p95': 5.0, 'max': 5.0, 'n': 1}


def test_records_are_plain_json() -> None:
    import json

    record = replace(_record(0, 'success', 'success'), notes=['n'], moved=['red cube'])
    assert json.loads(json.dumps(record.to_dict()))['moved'] == ['red cube']
