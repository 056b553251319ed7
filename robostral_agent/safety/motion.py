"""The motion model the supervisor checks and the executor follows (INTERFACES.md section 5).

One definition of "which straight segments will the tool sweep" for a plan, so that the
supervisor's path checks and the simulator's executor cannot disagree:

* Legs: leg 0 runs from the start pose (the latest ``robostral/tool_pose`` when it is fresh,
  i.e. younger than :data:`TOOL_POSE_MAX_AGE_S`; otherwise the policy's ``home``) to step 0's
  target; leg ``i`` runs from target ``i - 1`` to target ``i``.
* ``transit``: each leg is three segments: ``rise`` vertically from the leg start to the
  transit height ``H``, ``traverse`` horizontally at ``H`` to above the target, ``approach``
  vertically (down, or up when the target is above ``H``) onto the target.
* ``straight_line``: one ``direct`` segment per leg.
* ``none``: no segments (targets are still checked by the rules).
* A ``pick`` that is the LAST step is followed by a vertical ``retreat`` from the pick target
  to ``H`` (the executor lifts the object); a pick followed by another step needs nothing
  extra, because the next leg's rise is the lift. Checked for ``transit`` and
  ``straight_line``.
* Zero-length segments are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

Point = tuple[float, float, float]

# A tool pose older than this is not used as the start of leg 0 (the policy's home is).
TOOL_POSE_MAX_AGE_S: Final = 1.0
# Segments shorter than this (metres) are dropped: they sweep nothing.
_MIN_LENGTH: Final = 1e-9

SEGMENT_KINDS: Final = ('rise', 'traverse', 'approach', 'direct', 'retreat')


@dataclass(frozen=True, slots=True)
class Segment:
    """A straight piece of tool motion; ``leg`` is the index of the step it leads to.

    A ``retreat`` carries the index of the pick it lifts from.
    """

    leg: int
    kind: str
    start: Point
    end: Point

    @property
    def length(self) -> float:
        return math.dist(self.start, self.end)


def leg_segments(
    start: Point, end: Point, mode: str, transit_height: float, leg: int
) -> list[Segment]:
    """The segments of one leg ``start -> end`` under ``mode`` (see the module docstring)."""
    if mode == 'none':
        return []
    if mode == 'straight_line':
        pieces = [('direct', start, end)]
    elif mode == 'transit':
        above_start = (start[0], start[1], transit_height)
        above_end = (end[0], end[1], transit_height)
        pieces = [
            ('rise', start, above_start),
            ('traverse', above_start, above_end),
            ('approach', above_end, end),
        ]
    else:
        raise ValueError(f'unknown path mode {mode!r}')
    return [Segment(leg, kind, a, b) for kind, a, b in pieces if math.dist(a, b) > _MIN_LENGTH]


def retreat_segment(
    last_target: Point, last_task: str, mode: str, transit_height: float, leg: int
) -> Segment | None:
    """The lift after a plan that ENDS with a pick (``None`` otherwise, or when zero-length)."""
    if mode == 'none' or last_task != 'pick':
        return None
    lifted = (last_target[0], last_target[1], transit_height)
    if math.dist(last_target, lifted) <= _MIN_LENGTH:
        return None
    return Segment(leg, 'retreat', last_target, lifted)


def plan_segments(
    start: Point,
    targets: Sequence[Point],
    tasks: Sequence[str],
    mode: str,
    transit_height: float,
) -> list[Segment]:
    """Every segment the tool sweeps for a plan, in execution order."""
    if len(targets) != len(tasks):
        raise ValueError(f'{len(targets)} targets but {len(tasks)} tasks')
    segments: list[Segment] = []
    previous = start
    for leg, target in enumerate(targets):
        segments += leg_segments(previous, target, mode, transit_height, leg)
        previous = target
    if targets:
        retreat = retreat_segment(targets[-1], tasks[-1], mode, transit_height, len(targets) - 1)
        if retreat is not None:
            segments.append(retreat)
    return segments
