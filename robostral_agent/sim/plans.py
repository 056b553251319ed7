"""Plans built from ground truth with the agent's target conventions (an oracle planner).

Tests, benchmarks and the evaluation need correct plans without a model in the loop; these
follow the conventions the agent uses (the team's motion model, item 6): pick at the object's
centre, place 0.10 m above the bin centre, inspect 0.15 m above the object, move_to 0.10 m
above the object or bin, home at the policy's home pose; the tool points straight down.
"""

from __future__ import annotations

from collections.abc import Sequence

from robostral_agent import cell
from robostral_agent.contract import (
    GoalProposal,
    ModelInfo,
    SceneObject,
    Stamp,
    Step,
    Target,
    new_id,
)
from robostral_agent.safety.policy import Policy

PLACE_HEIGHT = 0.10
INSPECT_HEIGHT = 0.15
MOVE_TO_HEIGHT = 0.10
ORACLE_MODEL = ModelInfo('ground-truth-oracle', '')


def _target(position: Sequence[float], orientation: Sequence[float] = cell.TOOL_DOWN) -> Target:
    x, y, z = (float(v) for v in position)
    qx, qy, qz, qw = (float(v) for v in orientation)
    return Target(cell.BASE_FRAME, (x, y, z), (qx, qy, qz, qw))


def pick_step(obj: SceneObject, offset: Sequence[float] = (0.0, 0.0, 0.0)) -> Step:
    x, y = obj.xy
    z = cell.object_grasp_height(obj.shape)
    return Step('pick', obj.label, 1.0, _target((x + offset[0], y + offset[1], z + offset[2])))


def place_step(bin_name: str) -> Step:
    cx, cy = cell.BIN_CENTERS[bin_name]
    return Step('place', f'{bin_name} bin', 1.0, _target((cx, cy, PLACE_HEIGHT)))


def inspect_step(obj: SceneObject) -> Step:
    return Step('inspect', obj.label, 1.0, _target((*obj.xy, INSPECT_HEIGHT)))


def move_to_step(label: str, xy: Sequence[float]) -> Step:
    return Step('move_to', label, 1.0, _target((*xy, MOVE_TO_HEIGHT)))


def home_step(policy: Policy) -> Step:
    return Step('home', '', 1.0, _target(policy.home.position, policy.home.orientation))


def proposal(steps: Sequence[Step], proposal_id: str | None = None) -> GoalProposal:
    """A goal proposal holding ``steps`` (stamps zero: the simulator does not judge age)."""
    return GoalProposal(
        proposal_id or new_id(), 'oracle', '', Stamp(), Stamp(), ORACLE_MODEL, tuple(steps)
    )


def pick_place(obj: SceneObject, bin_name: str) -> GoalProposal:
    return proposal([pick_step(obj), place_step(bin_name)])
