"""Evaluation cases: seeded generation (mix, safety by construction) and the JSON-lines file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from robostral_agent import cell
from robostral_agent.contract import EvalCase, GoalProposal, SceneObject, encode
from robostral_agent.evaluation.cases import (
    MIX,
    ZONE_MARGIN_M,
    CaseFileError,
    CaseGenerator,
    load_cases,
    near_zone,
    refusal_zones,
    write_cases,
)
from robostral_agent.paths import config_file
from robostral_agent.safety.policy import BoxZone, load_policy
from robostral_agent.safety.rules import PolicyEvaluator, ToolPose
from robostral_agent.sim import plans
from robostral_agent.sim.scene import validate_scene
from robostral_agent.training.language import HELDOUT_TEMPLATES

POLICY = load_policy(config_file('safety_policy.yaml')).policy
GENERATOR = CaseGenerator(POLICY)
CASES = GENERATOR.generate(300, seed=7)
REST = ToolPose(cell.REST_TCP_POSITION, cell.REST_TCP_ORIENTATION, 0)


def _named(case: EvalCase) -> SceneObject | None:
    ref = case.expect.object
    if ref is None:
        return None
    return next(
        (o for o in case.scene.objects if (o.shape, o.color) == (ref.shape, ref.color)), None
    )


def _correct_plan(case: EvalCase) -> GoalProposal:
    """The plan the agent should propose, with its target conventions (sim.plans)."""
    obj = _named(case)
    task = case.expect.task
    if task == 'home':
        return plans.proposal([plans.home_step(POLICY)])
    assert obj is not None
    if task == 'pick_place':
        return plans.pick_place(obj, case.expect.bin or '')
    if task == 'pick':
        return plans.proposal([plans.pick_step(obj)])
    return plans.proposal([plans.inspect_step(obj)])


def test_generation_is_deterministic_and_independent_of_the_count() -> None:
    again = CaseGenerator(POLICY).generate(40, seed=7)
    assert [encode(c) for c in again] == [encode(c) for c in CASES[:40]]
    other = CaseGenerator(POLICY).generate(40, seed=8)
    assert [c.instruction for c in other] != [c.instruction for c in again]
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_mix_covers_every_expected_outcome_and_task() -> None:
    kinds = Counter((c.expect.outcome, c.expect.task) for c in CASES)
    assert set(kinds) == set(MIX)
    outcomes = Counter(c.expect.outcome for c in CASES)
    assert 0.6 < outcomes['success'] / len(CASES) < 0.8, outcomes
    assert outcomes['not_found'] >= 20 and outcomes['refused'] >= 20, outcomes


def test_every_scene_is_valid_and_names_what_its_outcome_needs() -> None:
    for case in CASES:
        validate_scene(case.scene)
        obj = _named(case)
        if case.expect.task == 'home':
            assert case.expect.object is None
        elif case.expect.outcome == 'not_found':
            assert obj is None, case
            ref = case.expect.object
            assert ref is not None and ref.color in case.instruction.lower(), case
        else:
            assert obj is not None, case
        if case.expect.task == 'pick_place':
            assert case.expect.bin in ('left', 'right')


def test_success_and_not_found_scenes_keep_every_object_away_from_keepout_zones() -> None:
    for case in CASES:
        if case.expect.outcome == 'refused':
            continue
        for obj in case.scene.objects:
            for zone in POLICY.keepout_zones:
                assert not near_zone(*obj.xy, zone, ZONE_MARGIN_M - 1e-9), (case.id, obj)


def test_refused_cases_put_only_the_named_object_inside_a_zone() -> None:
    refused = [c for c in CASES if c.expect.outcome == 'refused']
    assert refused
    for case in refused:
        obj = _named(case)
        assert obj is not None
        zones = refusal_zones(POLICY, case.expect.task)
        assert any(isinstance(z, BoxZone) and near_zone(*obj.xy, z, 0.0) for z in zones)
        others = [o for o in case.scene.objects if o is not obj]
        for other in others:
            assert not any(near_zone(*other.xy, z, ZONE_MARGIN_M - 1e-9) for z in zones)


def test_the_correct_plan_passes_the_policy_exactly_when_success_is_expected() -> None:
    """Judged by the supervisor's own rule engine: successes are feasible and safe by
    construction (a refusal is a false one), refused cases are refused for the zone."""
    evaluator = PolicyEvaluator(POLICY)
    for case in CASES:
        if case.expect.outcome == 'not_found':
            continue
        codes = evaluator.evaluate(_correct_plan(case), 0, REST, check_ages=False).codes
        if case.expect.outcome == 'success':
            assert not codes, (case.id, codes)
        else:
            assert codes & {'IN_KEEPOUT_ZONE', 'PATH_CROSSES_KEEPOUT'}, (case.id, codes)


def test_phrasings_follow_the_requested_split() -> None:
    seen = CaseGenerator(POLICY, phrasing='seen').generate(60, seed=3)
    heldout = CaseGenerator(POLICY, phrasing='heldout').generate(60, seed=3)
    assert [c.scene for c in seen] == [c.scene for c in heldout]
    assert {c.instruction for c in seen} != {c.instruction for c in heldout}
    with pytest.raises(ValueError, match='phrasing'):
        CaseGenerator(POLICY, phrasing='odd')
    assert HELDOUT_TEMPLATES  # the grammar has a held-out split to draw from


def test_case_files_round_trip_and_fill_missing_ids(tmp_path: Path) -> None:
    path = tmp_path / 'cases.jsonl'
    write_cases(CASES[:5], path)
    assert load_cases(path) == CASES[:5]
    doc = CASES[0].to_dict()
    del doc['id']
    path.write_text('\n' + json.dumps(doc) + '\n\n' + encode(CASES[1]) + '\n')
    loaded = load_cases(path)
    assert [c.id for c in loaded] == ['line2', CASES[1].id]


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        ('', 'no cases'),
        ('{"scene": {"objects": []}}\n', ':1: instruction: missing'),
        ('\n{"scene": {"objects": []}, "instruction": "go home", "expect": {"outcome": '
         '"maybe", "task": "home"}}\n', ":2: expect.outcome: 'maybe' is not one of"),
        ('not json\n', ':1: not valid JSON'),
    ],
)  # fmt: skip
def test_a_bad_case_file_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / 'bad.jsonl'
    path.write_text(text)
    with pytest.raises(CaseFileError, match=message):
        load_cases(path)


def test_duplicate_ids_and_missing_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / 'dup.jsonl'
    path.write_text(encode(CASES[0]) + '\n' + encode(CASES[0]) + '\n')
    with pytest.raises(CaseFileError, match='more than once'):
        load_cases(path)
    with pytest.raises(CaseFileError, match='cannot read'):
        load_cases(tmp_path / 'missing.jsonl')


def test_the_evaluation_demo_and_launcher_modules_stay_free_of_ros() -> None:
    """They run in plain Python (tests, tools); only robostral_agent.ros talks to ROS."""
    import subprocess
    import sys

    code = (
        'import sys\n'
        'import robostral_agent.evaluation.cases, robostral_agent.evaluation.judge\n'
        'import robostral_agent.evaluation.report, robostral_agent.demo\n'
        'import robostral_agent.launcher\n'
        "assert not [m for m in sys.modules if m.startswith('rclpy')], 'rclpy imported'"
    )
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
