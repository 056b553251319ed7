"""``robostral demo``: the scripted session, its expectations and its outputs (pure part).

The script (:data:`SCRIPT`) shows every behaviour a newcomer should see once, on scenes set
explicitly so that it is deterministic:

1. a pick-and-place that is approved and executed;
2. a pick of an object that is not there: the agent answers ``not_found``, nothing moves;
3. a pick of an object standing inside the keep-out zone ``fixture``: the supervisor
   rejects the plan (``IN_KEEPOUT_ZONE`` / ``PATH_CROSSES_KEEPOUT``), nothing moves;
4. a ``move_to``, which the policy holds for an operator: the script approves it and the arm
   moves above the object;
5. "stop" while a pick-and-place is running: the agent trips the e-stop without the model,
   the supervisor latches, ``safety_ok`` drops and the executor aborts the plan;
6. the operator releases the e-stop input and resets the latch;
7. a final pick-and-place, approved and executed.

Scenes use only colour-shape pairs robostral-tiny was trained on, and objects stand where
the model answers every scripted instruction right on the exact frame and with the frame
shifted by a few pixels of camera jitter (``test_demo`` checks both): the demo shows the
loop; how often the model is right is what ``robostral eval`` and the model card measure.
With the red cube at y 0.12 m (the scene until 2026-11-29) the model answered ``none`` on
the exact frame and right on every shifted one. The ROS side is
:mod:`robostral_agent.ros.demo_runner`; this module holds what can be checked without ROS:
the script, the results, the contact sheet and the JSON summary.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np

from robostral_agent.contract import EvalExpect, ObjectRef, Scene, SceneObject

DEMO_OPERATOR: Final = 'demo-operator'
SUMMARY_SCHEMA: Final = 'robostral.demo_summary/1'

RED_CUBE: Final = SceneObject('cube', 'red', (0.40, 0.14), 0.3)
BLUE_BALL: Final = SceneObject('ball', 'blue', (0.34, -0.15))
YELLOW_CUBE: Final = SceneObject('cube', 'yellow', (0.30, -0.02), -0.2)
SCENE_TABLE: Final = Scene((RED_CUBE, BLUE_BALL, YELLOW_CUBE))
# The blue cylinder stands in the fixture (x 0.52..0.62, y -0.08..0.08), 3 cm inside its walls.
SCENE_FIXTURE: Final = Scene(
    (SceneObject('cylinder', 'blue', (0.57, 0.01)), SceneObject('ball', 'red', (0.38, 0.10)))
)

# What a step must show to pass (the runner checks each one against messages and physics).
EXPECTATIONS: Final = {
    'executed': 'approved, executed, and the world as asked (ground truth)',
    'not_found': 'agent: not_found; nothing moves',
    'refused': 'supervisor: rejected (keep-out zone); nothing moves',
    'approval': 'held for approval; approved by the operator; executed',
    'stop': 'stop trips the latch; safety_ok false; the running plan aborted',
    'reset': 'e-stop released; latch cleared; safety_ok true',
}


@dataclass(frozen=True)
class DemoStep:
    key: str
    title: str
    kind: str  # a key of EXPECTATIONS
    instruction: str = ''
    scene: Scene | None = None  # loaded (arm to rest) before the step; None keeps the world
    check: EvalExpect | None = None  # the world check of an executed plan


def _ref(obj: SceneObject) -> ObjectRef:
    return ObjectRef(shape=obj.shape, color=obj.color)


SCRIPT: Final = (
    DemoStep(
        'pick_place', 'pick and place', 'executed', 'put the red cube in the left bin',
        SCENE_TABLE, EvalExpect('success', 'pick_place', _ref(RED_CUBE), 'left'),
    ),
    DemoStep(
        'absent', 'absent object', 'not_found', 'pick up the green cube', SCENE_TABLE,
        EvalExpect('not_found', 'pick', ObjectRef(shape='cube', color='green')),
    ),
    DemoStep(
        'keepout', 'object in the keep-out zone', 'refused', 'pick up the blue cylinder',
        SCENE_FIXTURE, EvalExpect('refused', 'pick', ObjectRef(shape='cylinder', color='blue')),
    ),
    DemoStep(
        'approval', 'move_to needs approval', 'approval', 'move to the blue ball', SCENE_TABLE,
        EvalExpect('success', 'inspect', _ref(BLUE_BALL)),
    ),
    DemoStep(
        'stop', '"stop" during a motion', 'stop', 'put the yellow cube in the right bin',
        SCENE_TABLE,
    ),
    DemoStep('reset', 'release and reset', 'reset'),
    DemoStep(
        'final', 'final pick and place', 'executed', 'put the blue ball in the right bin',
        SCENE_TABLE, EvalExpect('success', 'pick_place', _ref(BLUE_BALL), 'right'),
    ),
)  # fmt: skip
STOP_TEXT: Final = 'stop'


@dataclass
class StepResult:
    """How one step went: ``ok`` only when every expectation held."""

    key: str
    title: str
    instruction: str
    expected: str
    observed: str = ''
    ok: bool = False
    checks: list[tuple[str, bool]] = field(default_factory=list)
    status: str = ''
    verdict: str = ''
    reasons: list[str] = field(default_factory=list)
    execution: str = ''
    proposal_id: str = ''
    steps: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    frame: str = ''  # path of the annotated frame, relative to the output directory
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def check(self, what: str, passed: bool) -> bool:
        """Record one expectation; the step is ok when all of them passed."""
        self.checks.append((what, bool(passed)))
        self.ok = all(p for _, p in self.checks)
        return bool(passed)

    def failed_checks(self) -> list[str]:
        return [what for what, passed in self.checks if not passed]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out['checks'] = [{'check': w, 'passed': p} for w, p in self.checks]
        return out


def new_result(step: DemoStep) -> StepResult:
    return StepResult(step.key, step.title, step.instruction, EXPECTATIONS[step.kind])


# --- Outputs -----------------------------------------------------------------------------------


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB image (OpenCV writes BGR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {path}')


def read_png(path: Path) -> np.ndarray | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


TILE_W: Final = 320
TILE_H: Final = 240
CAPTION_H: Final = 58
GREEN: Final = (40, 160, 60)
RED: Final = (200, 40, 40)


def _tile(image: np.ndarray | None, caption: str, ok: bool) -> np.ndarray:
    tile = np.full((TILE_H + CAPTION_H, TILE_W, 3), 32, np.uint8)
    if image is not None:
        tile[:TILE_H] = cv2.resize(image, (TILE_W, TILE_H), interpolation=cv2.INTER_AREA)
    else:
        cv2.putText(tile, 'no camera frame (no model call)', (12, TILE_H // 2),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (200, 200, 200), 1, cv2.LINE_AA)  # fmt: skip
    tile[TILE_H:] = GREEN if ok else RED
    lines = textwrap.wrap(caption, 42)[:3]
    for i, line in enumerate(lines):
        cv2.putText(tile, line, (6, TILE_H + 16 + 17 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
    return tile


def contact_sheet(
    tiles: Sequence[tuple[np.ndarray | None, str, bool]], columns: int = 3
) -> np.ndarray:
    """One image: a tile per step (its annotated frame, a caption, green when it passed)."""
    if not tiles:
        raise ValueError('a contact sheet needs at least one tile')
    made = [_tile(image, caption, ok) for image, caption, ok in tiles]
    rows = -(-len(made) // columns)
    blank = np.zeros_like(made[0])
    made += [blank] * (rows * columns - len(made))
    return np.vstack([np.hstack(made[r * columns : (r + 1) * columns]) for r in range(rows)])


def caption(index: int, result: StepResult) -> str:
    mark = 'PASS' if result.ok else 'FAIL'
    what = f'"{result.instruction}"' if result.instruction else result.title
    return f'{index}. {mark} {what}: {result.observed}'


def summary(
    results: Sequence[StepResult], audit: Mapping[str, Any], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON summary written to ``summary.json``."""
    return {
        'schema': SUMMARY_SCHEMA,
        'ok': all(r.ok for r in results) and len(results) == len(SCRIPT) and audit.get('ok'),
        'steps': [r.to_dict() for r in results],
        'audit': dict(audit),
        'meta': dict(meta),
    }


def write_summary(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + '\n', encoding='utf-8')
