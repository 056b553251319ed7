"""Goal proposals for the reference cell, as plain dicts: tests, benchmarks and docs build
their messages here so that they all exercise the same, realistic plans.

The dicts follow ``robostral.goal_proposal/1`` exactly; callers mutate them to make faulty
messages (NaN, wrong frames, missing fields). :func:`to_text` keeps NaN and infinity as JSON
extensions (``NaN``, ``Infinity``) so such values reach the supervisor's rules.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from robostral_agent.contract import SCHEMA_GOAL_PROPOSAL

TOOL_DOWN = (1.0, 0.0, 0.0, 0.0)
# Reference-cell targets (INTERFACES.md section 6 and the team's target conventions).
RED_CUBE_PICK = (0.42, 0.05, 0.02)
LEFT_BIN_PLACE = (0.45, 0.40, 0.10)
RIGHT_BIN_PLACE = (0.45, -0.40, 0.10)
FIXTURE_INSIDE = (0.57, 0.0, 0.10)


def stamp(ns: int) -> dict[str, int]:
    return {'sec': ns // 1_000_000_000, 'nanosec': ns % 1_000_000_000}


def step(
    task: str,
    position: Sequence[float],
    *,
    obj: str = 'red cube',
    confidence: float = 0.95,
    frame_id: str = 'base_link',
    orientation: Sequence[float] = TOOL_DOWN,
) -> dict[str, Any]:
    return {
        'task': task,
        'object': obj,
        'confidence': confidence,
        'target': {
            'frame_id': frame_id,
            'position': list(position),
            'orientation': list(orientation),
        },
    }


def proposal(
    steps: Sequence[dict[str, Any]],
    now_ns: int,
    *,
    proposal_id: str | None = None,
    instruction_id: str = 'op-1',
    operator: str = 'alice',
    age_s: float = 0.0,
    image_age_s: float = 0.1,
) -> dict[str, Any]:
    """A proposal stamped ``age_s`` before ``now_ns`` (its image ``image_age_s`` before)."""
    return {
        'schema': SCHEMA_GOAL_PROPOSAL,
        'id': proposal_id or uuid.uuid4().hex,
        'instruction_id': instruction_id,
        'operator': operator,
        'stamp': stamp(now_ns - round(age_s * 1e9)),
        'image_stamp': stamp(now_ns - round(image_age_s * 1e9)),
        'model': {'name': 'robostral-tiny', 'sha256': '0' * 64},
        'steps': list(steps),
    }


def pick_place(now_ns: int, **kwargs: Any) -> dict[str, Any]:
    """Put the red cube in the left bin: a plan the reference policy approves."""
    return proposal([step('pick', RED_CUBE_PICK), step('place', LEFT_BIN_PLACE)], now_ns, **kwargs)


def to_text(document: dict[str, Any]) -> str:
    return json.dumps(document)
