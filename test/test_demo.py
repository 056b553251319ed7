"""``robostral demo`` completes on the embedded model and leaves what it promises; the pure
parts (script, contact sheet, summary) are checked without ROS."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_launcher import processes_matching

from robostral_agent import cell, demo
from robostral_agent.contract import Instruction, Stamp
from robostral_agent.evaluation.cases import ZONE_MARGIN_M, near_zone
from robostral_agent.paths import config_file, models_dir
from robostral_agent.safety.audit import verify_file
from robostral_agent.safety.policy import load_policy
from robostral_agent.sim import WorkCell
from robostral_agent.sim.scene import validate_scene
from robostral_agent.training import data as datamod
from robostral_agent.training.language import HELDOUT_COMBOS
from robostral_agent.vlm.agent import Agent, AgentConfig
from robostral_agent.vlm.backend import TransformersBackend
from robostral_agent.vlm.frames import Frame
from robostral_agent.vlm.grounding import GroundingConfig

ROOT = Path(__file__).resolve().parents[1]
POLICY = load_policy(config_file('safety_policy.yaml')).policy


def test_the_script_covers_every_behaviour_on_valid_scenes() -> None:
    kinds = [step.kind for step in demo.SCRIPT]
    assert kinds == ['executed', 'not_found', 'refused', 'approval', 'stop', 'reset', 'executed']
    fixture = next(z for z in POLICY.keepout_zones if z.name == 'fixture')
    for step in demo.SCRIPT:
        if step.scene is None:
            continue
        validate_scene(step.scene)
        pairs = {(o.color, o.shape) for o in step.scene.objects}
        assert not pairs & HELDOUT_COMBOS  # only what robostral-tiny was trained on
        named = step.check.object if step.check else None
        for obj in step.scene.objects:
            is_named = named is not None and (obj.shape, obj.color) == (named.shape, named.color)
            inside = near_zone(*obj.xy, fixture, 0.0)
            assert inside == (step.kind == 'refused' and is_named), (step.key, obj)
            if not inside:
                assert not near_zone(*obj.xy, fixture, ZONE_MARGIN_M), (step.key, obj)
    absent = demo.SCRIPT[1].check
    assert absent is not None and absent.object is not None
    assert (absent.object.color, absent.object.shape) not in {
        (o.color, o.shape) for o in demo.SCENE_TABLE.objects
    }


def test_a_step_passes_only_when_every_check_passed() -> None:
    result = demo.new_result(demo.SCRIPT[0])
    assert not result.ok  # nothing checked yet
    result.check('agent proposed a plan', True)
    assert result.ok
    result.check('executed: succeeded', False)
    result.check('world as asked', True)
    assert not result.ok and result.failed_checks() == ['executed: succeeded']
    doc = result.to_dict()
    assert doc['checks'][1] == {'check': 'executed: succeeded', 'passed': False}


def test_the_contact_sheet_has_a_tile_per_step_coloured_by_outcome() -> None:
    frame = np.full((480, 640, 3), 200, np.uint8)
    tiles = [(frame, 'ok step', True), (None, 'failed step', False), (frame, 'x', True)]
    sheet = demo.contact_sheet(tiles, columns=2)
    tile_h = demo.TILE_H + demo.CAPTION_H
    assert sheet.shape == (2 * tile_h, 2 * demo.TILE_W, 3)
    caption_row = demo.TILE_H + 5
    assert tuple(sheet[caption_row, 2]) == demo.GREEN
    assert tuple(sheet[caption_row, demo.TILE_W + 2]) == demo.RED
    assert not sheet[tile_h:, demo.TILE_W :].any()  # the empty slot stays black
    with pytest.raises(ValueError, match='at least one'):
        demo.contact_sheet([])


# The plan each scripted instruction needs from the model: (task, label) per step, as the
# agent's parser reads the answer (no steps: `none`).
DEMO_ANSWERS = {
    'pick_place': [('pick', 'red cube'), ('place', 'left bin')],
    'absent': [],
    # a plan: the supervisor, not the model, must refuse it
    'keepout': [('pick', 'blue cylinder')],
    'approval': [('move_to', 'blue ball')],
    # a plan to be running when "stop" comes
    'stop': [('pick', 'yellow cube'), ('place', 'right bin')],
    'final': [('pick', 'blue ball'), ('place', 'right bin')],
}
# Image shifts (pixels, right and down) of about the camera jitter the model was trained with
# (+-6 mm position, +-12 mm look-at: a few pixels in this camera).
JITTER_PX = ((0, 0), (0, 3), (0, -3), (4, 0), (-4, 0), (2, 2), (-2, -2))


def shifted(rgb: np.ndarray, dx: int, dy: int) -> np.ndarray:
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(rgb, move, rgb.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.slow
def test_the_demo_scenes_do_not_hang_on_one_pixel_pattern() -> None:
    """The embedded model answers every scripted instruction right on the demo's scenes, and
    still does with the frame shifted by a few pixels: the scenes were chosen so (the first
    one had the red cube at y 0.12 m, where the model answered `none` on the exact frame and
    right on every shifted one), so that the demo shows the loop rather than a coin toss on
    one renderer's pixels. A model that needs other scenes fails here first."""
    model_steps = [step for step in demo.SCRIPT if step.instruction]
    assert sorted(DEMO_ANSWERS) == sorted(step.key for step in model_steps)
    grounding = GroundingConfig(camera_pose=tuple(cell.reference_camera().pose7))
    backend = TransformersBackend(models_dir() / 'robostral-tiny', device='cpu', threads=1)
    config = AgentConfig(grounding=grounding, max_frame_age_s=1e9)
    rng = np.random.default_rng(0)
    wrong = []
    with closing(Agent(backend, config)) as agent, WorkCell() as wc:
        for step in model_steps:
            view = datamod.render_view(wc, step.scene, rng, datamod.NO_RANDOMIZATION)
            instruction = Instruction('demo-test', step.instruction, 'demo-test')
            for dx, dy in JITTER_PX:
                rgb = shifted(view.rgb, dx, dy)
                frame = Frame(rgb, view.depth, view.camera.intrinsics, Stamp(1, 0), 'camera')
                outcome = agent.plan(instruction, lambda f=frame: f, Stamp(1, 0))
                plan = outcome.parsed
                steps = None if plan is None else [(s.task, s.label) for s in plan.steps]
                grounded = outcome.state == ('proposed' if steps else 'not_found')
                if steps != DEMO_ANSWERS[step.key] or not grounded:
                    wrong.append((step.key, (dx, dy), outcome.text, outcome.detail))
    assert wrong == []


@pytest.mark.slow
@pytest.mark.ros
def test_robostral_demo_completes_and_writes_its_outputs(tmp_path: Path) -> None:
    output = tmp_path / 'demo_output'
    namespace = f'/demotest_{uuid.uuid4().hex[:8]}'
    done = subprocess.run(
        [sys.executable, '-m', 'robostral_agent.cli', 'demo', '--output', str(output),
         '--namespace', namespace, '--real-time-factor', '2'],
        capture_output=True, text=True, timeout=540, cwd=ROOT,
    )  # fmt: skip
    text = done.stdout + done.stderr
    # Every step goes as scripted on the shipped model and scenes (the test above says why
    # the scenes are safe to expect that of), and the demo says so only when it is true:
    # exit 0 and DEMO PASSED exactly when every step passed.
    assert done.returncode == 0, text
    assert 'robostral demo' in done.stdout, text  # the results table
    assert processes_matching(f'__ns:={namespace}') == [], 'a node outlived the demo'
    summary = json.loads((output / 'summary.json').read_text())
    steps = summary['steps']
    assert [s['key'] for s in steps] == [s.key for s in demo.SCRIPT], text
    assert summary['ok'] == all(s['ok'] for s in steps) == (done.returncode == 0), text
    assert ('DEMO PASSED' in done.stdout) == summary['ok'], text
    assert summary['audit']['ok'] is True
    assert summary['meta']['children_stopped_cleanly'] is True
    for step in steps:  # a failed step names the checks that failed
        assert step['ok'] == all(c['passed'] for c in step['checks']), step
    by_key = {s['key']: s for s in steps}
    # Whatever the model proposed, "stop" needs no model: it latches, and the reset step
    # (release, then reset as the operator) clears the latch.
    assert by_key['reset']['ok'], by_key['reset']
    frames = sorted(p.name for p in (output / 'frames').glob('*.png'))
    assert frames == sorted(Path(s['frame']).name for s in steps if s['instruction'])
    assert len(frames) == 6
    sheet = demo.read_png(output / 'contact_sheet.png')
    assert sheet is not None and sheet.shape[1] == 3 * demo.TILE_W
    report = verify_file(output / 'audit.jsonl')
    # at least: policy load, reset, a decision, e-stop, reset, shutdown
    assert report.ok and report.records >= 6
    audit = (output / 'audit.jsonl').read_text()
    for kind in ('"kind":"estop"', '"kind":"reset"', '"kind":"shutdown"'):
        assert kind in audit
