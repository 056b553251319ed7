"""Rule evaluation and the motion model: every rule fails exactly when it should, and a
verdict lists every failed rule, not just the first."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import yaml
from scipy.spatial.transform import Rotation

from robostral_agent.contract import decode_goal_proposal
from robostral_agent.paths import config_file
from robostral_agent.safety import examples as ex
from robostral_agent.safety.motion import Segment, leg_segments, plan_segments
from robostral_agent.safety.policy import Policy, parse_policy
from robostral_agent.safety.rules import PolicyEvaluator, ToolPose

NOW = 1_700_000_000 * 10**9
REFERENCE = yaml.safe_load(config_file('safety_policy.yaml').read_text())


def policy(**changes: Any) -> Policy:
    document = copy.deepcopy(REFERENCE)
    document.update(changes)
    return parse_policy(document)


REF = policy()


def judge(
    doc: dict[str, Any],
    pol: Policy = REF,
    tool_pose: ToolPose | None = None,
    *,
    check_ages: bool = True,
) -> set[str]:
    proposal = decode_goal_proposal(ex.to_text(doc), check_values=False)
    return PolicyEvaluator(pol).evaluate(proposal, NOW, tool_pose, check_ages=check_ages).codes


def details(doc: dict[str, Any], pol: Policy = REF, tool_pose: ToolPose | None = None) -> str:
    proposal = decode_goal_proposal(ex.to_text(doc), check_values=False)
    return '; '.join(f.detail for f in PolicyEvaluator(pol).evaluate(proposal, NOW, tool_pose))


def pick_place(**kwargs: Any) -> dict[str, Any]:
    return ex.pick_place(NOW, **kwargs)


def with_step(index: int, doc: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """pick_place with fields of one step (or of its target) replaced."""
    out = copy.deepcopy(doc or pick_place())
    for key, value in fields.items():
        where = out['steps'][index]['target'] if key in ('position', 'orientation') else None
        if key == 'frame_id':
            where = out['steps'][index]['target']
        (where if where is not None else out['steps'][index])[key] = value
    return out


def tilted(deg: float) -> list[float]:
    """Tool down, tilted by ``deg`` about x: its +z axis is ``deg`` from straight down."""
    q = (Rotation.from_euler('x', deg, degrees=True) * Rotation.from_quat(ex.TOOL_DOWN)).as_quat()
    return [float(v) for v in q]


def fresh_pose(position: tuple[float, float, float], age_s: float = 0.1) -> ToolPose:
    return ToolPose(position, ex.TOOL_DOWN, NOW - round(age_s * 1e9))


# --- The reference plan passes; single faults give exactly their code ----------------------


def test_reference_pick_place_passes() -> None:
    assert judge(pick_place()) == set()


@pytest.mark.parametrize(
    ('doc', 'codes'),
    [
        (pick_place(age_s=2.0), set()),
        (pick_place(age_s=2.001), {'STALE_PROPOSAL'}),
        (pick_place(image_age_s=5.0), set()),
        (pick_place(image_age_s=5.001), {'STALE_IMAGE'}),
        (pick_place(age_s=-0.5, image_age_s=-0.5), set()),
        (pick_place(age_s=-0.501, image_age_s=0.0), {'FUTURE_STAMP'}),
        (pick_place(image_age_s=-0.6), {'FUTURE_STAMP'}),
        (with_step(0, confidence=0.6), set()),
        (with_step(0, confidence=0.5999), {'LOW_CONFIDENCE'}),
        (with_step(1, confidence=float('nan')), {'MALFORMED', 'LOW_CONFIDENCE'}),
        (with_step(1, confidence=1.2), {'MALFORMED'}),
        (with_step(1, frame_id='camera_color_optical_frame'), {'UNKNOWN_FRAME'}),
        (with_step(0, frame_id=''), {'UNKNOWN_FRAME'}),
        (with_step(0, position=[0.42, float('nan'), 0.02]), {'INVALID_POSE'}),
        (with_step(1, position=[float('inf'), 0.4, 0.1]), {'INVALID_POSE'}),
        (with_step(0, orientation=[1.0, 0.0, 0.0, 0.5]), {'INVALID_POSE'}),
        (with_step(0, orientation=[0.0, 0.0, 0.0, 0.0]), {'INVALID_POSE'}),
        (with_step(0, orientation=[float('nan'), 0.0, 0.0, 1.0]), {'INVALID_POSE'}),
        (with_step(0, task='dance'), {'TASK_NOT_ALLOWED'}),
        (with_step(0, orientation=tilted(29.0)), set()),
        (with_step(0, orientation=tilted(31.0)), {'ORIENTATION_LIMIT'}),
        (with_step(1, orientation=[0.0, 0.0, 0.0, 1.0]), {'ORIENTATION_LIMIT'}),
        (with_step(0, position=[0.80, 0.0, 0.02]), {'OUT_OF_WORKSPACE'}),
        (with_step(1, position=[0.45, 0.40, -0.02]), {'OUT_OF_WORKSPACE'}),
        (
            with_step(0, position=list(ex.FIXTURE_INSIDE)),
            {'IN_KEEPOUT_ZONE', 'PATH_CROSSES_KEEPOUT'},
        ),
        # Closed zones: the top face counts as inside; a millimetre above does not.
        (with_step(0, position=[0.57, 0.0, 0.30]), {'IN_KEEPOUT_ZONE', 'PATH_CROSSES_KEEPOUT'}),
        (with_step(0, position=[0.57, 0.0, 0.301]), set()),
        (with_step(0, position=[0.52, 0.0, 0.02]), {'IN_KEEPOUT_ZONE', 'PATH_CROSSES_KEEPOUT'}),
        (with_step(0, position=[0.519, 0.0, 0.02]), set()),
    ],
)
def test_single_fault_gives_exactly_its_codes(doc: dict[str, Any], codes: set[str]) -> None:
    assert judge(doc) == codes


def test_task_outside_allowed_tasks() -> None:
    assert judge(pick_place(), policy(allowed_tasks=['pick'])) == {'TASK_NOT_ALLOWED'}
    assert "'place' not allowed" in details(pick_place(), policy(allowed_tasks=['pick']))


def test_unauthorized_operator() -> None:
    restricted = policy(authorized_operators=['bob'])
    assert judge(pick_place(operator='alice'), restricted) == {'UNAUTHORIZED_OPERATOR'}
    assert judge(pick_place(operator=''), restricted) == {'UNAUTHORIZED_OPERATOR'}
    assert judge(pick_place(operator='bob'), restricted) == set()
    assert judge(pick_place(operator=''), REF) == set()  # empty list: anyone


def test_every_failed_rule_is_listed() -> None:
    doc = pick_place(age_s=10.0, image_age_s=20.0, operator='mallory')
    doc = with_step(0, doc, confidence=0.1, task='dance', orientation=tilted(80.0))
    doc = with_step(1, doc, position=list(ex.FIXTURE_INSIDE))
    codes = judge(doc, policy(authorized_operators=['bob']))
    assert codes == {
        'STALE_PROPOSAL',
        'STALE_IMAGE',
        'UNAUTHORIZED_OPERATOR',
        'TASK_NOT_ALLOWED',
        'LOW_CONFIDENCE',
        'ORIENTATION_LIMIT',
        'IN_KEEPOUT_ZONE',
        'PATH_CROSSES_KEEPOUT',
    }


def test_age_rules_can_be_skipped_for_the_approval_recheck() -> None:
    doc = pick_place(age_s=60.0, image_age_s=60.0)
    assert judge(doc) == {'STALE_PROPOSAL', 'STALE_IMAGE'}
    assert judge(doc, check_ages=False) == set()


def test_unplaceable_target_is_not_checked_geometrically() -> None:
    """A target in an unknown frame is rejected for that; its numbers mean nothing here."""
    doc = with_step(0, position=list(ex.FIXTURE_INSIDE), frame_id='camera_link')
    assert judge(doc) == {'UNKNOWN_FRAME'}


def test_non_finite_pixel_or_bbox_is_malformed() -> None:
    doc = pick_place()
    doc['steps'][0]['pixel'] = [float('nan'), 3.0]
    assert judge(doc) == {'MALFORMED'}


# --- Paths ----------------------------------------------------------------------------------

# From home (0.30, 0, 0.35) straight down-and-across to a point beyond the fixture.
BEYOND_FIXTURE = [0.65, 0.0, 0.02]


def test_transit_goes_over_the_fixture_but_a_straight_line_goes_through_it() -> None:
    doc = with_step(0, position=BEYOND_FIXTURE)
    assert judge(doc, policy(check_path='transit')) == set()
    assert judge(doc, policy(check_path='straight_line')) == {'PATH_CROSSES_KEEPOUT'}
    assert judge(doc, policy(check_path='none')) == set()
    assert 'leg 0 (direct' in details(doc, policy(check_path='straight_line'))


def test_transit_below_the_zone_top_crosses_it() -> None:
    doc = with_step(0, position=BEYOND_FIXTURE)
    low = policy(transit_height=0.25)
    assert judge(doc, low) == {'PATH_CROSSES_KEEPOUT'}
    assert 'leg 0 (traverse' in details(doc, low)


def test_second_leg_is_checked_too() -> None:
    """Leg 1 runs from target 0 to target 1: a place beyond the fixture, low transit."""
    doc = with_step(1, position=[0.70, -0.02, 0.10])
    doc = with_step(0, doc, position=[0.45, 0.0, 0.02])
    low = policy(transit_height=0.25)
    assert judge(doc, low) == {'PATH_CROSSES_KEEPOUT'}
    assert 'leg 1 (traverse' in details(doc, low)
    assert 'leg 0' not in details(doc, low)


def test_retreat_after_a_final_pick_is_checked() -> None:
    """A zone right above the pick target: a direct approach misses it, the lift does not."""
    overhang = {'name': 'shelf', 'type': 'box', 'min': [0.41, 0.04, 0.15],
                'max': [0.43, 0.06, 0.20]}  # fmt: skip
    straight = policy(check_path='straight_line', keepout_zones=[overhang])
    pick_only = ex.proposal([ex.step('pick', ex.RED_CUBE_PICK)], NOW)
    assert judge(pick_only, straight) == {'PATH_CROSSES_KEEPOUT'}
    assert 'retreat' in details(pick_only, straight)
    # Followed by a place, the next leg (direct) is the lift: no vertical retreat.
    assert judge(pick_place(), straight) == set()
    # A final place is not followed by a retreat either.
    place_only = ex.proposal([ex.step('place', ex.RED_CUBE_PICK)], NOW)
    assert judge(place_only, straight) == set()


def test_step_size_limit_applies_to_every_leg() -> None:
    # leg 0: home -> pick is 0.355 m; leg 1: pick -> place is 0.360 m.
    assert judge(pick_place(), policy(max_step_m=0.37)) == set()
    assert judge(pick_place(), policy(max_step_m=0.358)) == {'STEP_TOO_LARGE'}
    text = details(pick_place(), policy(max_step_m=0.30))
    assert 'leg 0' in text
    assert 'leg 1' in text


def test_fresh_tool_pose_starts_leg_zero() -> None:
    inside = (0.57, 0.0, 0.20)
    assert judge(pick_place(), tool_pose=fresh_pose(inside)) == {'PATH_CROSSES_KEEPOUT'}
    assert judge(pick_place(), tool_pose=fresh_pose(inside, age_s=1.0)) == set()  # stale
    assert judge(pick_place(), tool_pose=fresh_pose(inside, age_s=-0.6)) == set()  # future
    outside = (0.10, 0.0, 0.30)
    assert judge(pick_place(), tool_pose=fresh_pose(outside)) == {'OUT_OF_WORKSPACE'}
    far = (0.20, -0.50, 0.05)  # 0.593 m from the pick; home is 0.355 m from it
    assert judge(pick_place(), policy(max_step_m=0.5), fresh_pose(far)) == {'STEP_TOO_LARGE'}
    assert judge(pick_place(), policy(max_step_m=0.5)) == set()


def test_require_tool_pose() -> None:
    strict = policy(require_tool_pose=True)
    assert judge(pick_place(), strict) == {'TOOL_POSE_UNKNOWN'}
    assert judge(pick_place(), strict, fresh_pose((0.3, 0.0, 0.3), age_s=1.5)) == {
        'TOOL_POSE_UNKNOWN'
    }
    assert judge(pick_place(), strict, fresh_pose((0.3, 0.0, 0.3))) == set()


def test_cylinder_zone_paths() -> None:
    post = {'name': 'post', 'type': 'cylinder', 'center': [0.45, 0.2], 'radius': 0.03,
            'z_min': 0.0, 'z_max': 0.5}  # fmt: skip
    pol = policy(keepout_zones=[post])
    # The traverse pick (0.42, 0.05) -> place (0.45, 0.40) passes 1.708 cm from the axis.
    assert judge(pick_place(), pol) == {'PATH_CROSSES_KEEPOUT'}
    assert "'post'" in details(pick_place(), pol)
    assert judge(pick_place(), policy(keepout_zones=[{**post, 'radius': 0.0172}])) == {
        'PATH_CROSSES_KEEPOUT'
    }
    assert judge(pick_place(), policy(keepout_zones=[{**post, 'radius': 0.0170}])) == set()


# --- Motion model ---------------------------------------------------------------------------


def test_transit_leg_is_rise_traverse_approach() -> None:
    segs = leg_segments((0.3, 0.0, 0.1), (0.5, 0.2, 0.05), 'transit', 0.35, 3)
    assert segs == [
        Segment(3, 'rise', (0.3, 0.0, 0.1), (0.3, 0.0, 0.35)),
        Segment(3, 'traverse', (0.3, 0.0, 0.35), (0.5, 0.2, 0.35)),
        Segment(3, 'approach', (0.5, 0.2, 0.35), (0.5, 0.2, 0.05)),
    ]


def test_zero_length_segments_are_skipped() -> None:
    assert [s.kind for s in leg_segments((0.3, 0, 0.35), (0.5, 0, 0.1), 'transit', 0.35, 0)] == [
        'traverse',
        'approach',
    ]
    assert [s.kind for s in leg_segments((0.3, 0, 0.1), (0.3, 0, 0.2), 'transit', 0.35, 0)] == [
        'rise',
        'approach',
    ]
    assert leg_segments((0.3, 0, 0.1), (0.3, 0, 0.1), 'straight_line', 0.35, 0) == []


def test_target_above_transit_height_is_approached_upwards() -> None:
    segs = leg_segments((0.3, 0.0, 0.1), (0.5, 0.0, 0.5), 'transit', 0.35, 0)
    assert segs[-1] == Segment(0, 'approach', (0.5, 0.0, 0.35), (0.5, 0.0, 0.5))


def test_plan_segments_modes_and_retreat() -> None:
    home = (0.3, 0.0, 0.35)
    targets = [(0.42, 0.05, 0.02), (0.45, 0.40, 0.10)]
    kinds = [s.kind for s in plan_segments(home, targets, ['pick', 'place'], 'transit', 0.35)]
    assert kinds == ['traverse', 'approach', 'rise', 'traverse', 'approach']
    only_pick = plan_segments(home, targets[:1], ['pick'], 'transit', 0.35)
    assert only_pick[-1] == Segment(0, 'retreat', targets[0], (0.42, 0.05, 0.35))
    straight = plan_segments(home, targets[:1], ['pick'], 'straight_line', 0.35)
    assert [s.kind for s in straight] == ['direct', 'retreat']
    assert plan_segments(home, targets, ['pick', 'place'], 'none', 0.35) == []
    assert math.isclose(straight[0].length, math.dist(home, targets[0]))
    with pytest.raises(ValueError, match='targets'):
        plan_segments(home, targets, ['pick'], 'transit', 0.35)
    with pytest.raises(ValueError, match='unknown path mode'):
        leg_segments(home, targets[0], 'teleport', 0.35, 0)
