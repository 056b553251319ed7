"""The pure agent core: screening, frames, and every bad input mapped to a status and reason.

Model *output* is scripted here (ScriptedBackend returns a given text with given token
probabilities) so that each output -> status rule is tested exactly; the real transformers
backend is what test_vlm_backend.py runs, and it is used below for the real timeout and a
real failure inside ``generate``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from test_grounding import CAMERA, K, Scene
from test_vlm_backend import make_agent, synthetic_frame, tiny_model

from robostral_agent.contract import Instruction, Stamp, decode_goal_proposal, encode
from robostral_agent.vlm import agent as core
from robostral_agent.vlm import frames, grounding
from robostral_agent.vlm.agent import Agent, AgentConfig, Outcome, format_timings, screen
from robostral_agent.vlm.annotate import annotate
from robostral_agent.vlm.backend import Generation, TransformersBackend
from robostral_agent.vlm.frames import Frame, FrameError, Stamped, make_frame, pair_frames
from robostral_agent.vlm.grounding import GroundingConfig
from robostral_agent.vlm.model_card import ModelCard, reference_labels

# PaliGemma's processor calls np.array(copy=False) on a list (transformers, not us).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
NOW = Stamp(100, 5)


@dataclass
class ScriptedBackend:
    """Answers with a fixed text; per-character tokens with the given probabilities."""

    text: str
    card: ModelCard = field(
        default_factory=lambda: ModelCard('robostral_v1', labels=tuple(reference_labels()))
    )
    prob: float = 0.9
    name: str = 'scripted'
    sha256: str = '0' * 64
    device: str = 'cpu'
    dtype: str = 'float32'
    warnings: tuple[str, ...] = ()
    gate: threading.Event | None = None
    calls: int = 0

    def generate(self, image: np.ndarray, prompt: str, timeout_s: float) -> Generation:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10.0)
        n = len(self.text)
        return Generation(
            text=self.text,
            token_ids=tuple(range(n)),
            token_probs=(self.prob,) * n,
            token_spans=tuple((i, i + 1) for i in range(n)),
            preprocess_ms=1.0,
            generate_ms=2.0,
            decode_ms=0.5,
            finished=True,
            timed_out=False,
        )


def _agent(backend: object, **kwargs: object) -> Agent:
    return Agent(backend, AgentConfig(GroundingConfig(camera_pose=tuple(CAMERA.pose7)), **kwargs))


def _plan(agent: Agent, frame: Frame | None = None, text: str = 'put it away') -> Outcome:
    frame = frame or synthetic_frame(0)
    return agent.plan(Instruction('op-1', text, 'bob'), lambda: frame, NOW)


def _loc_box(u: float, v: float, half: int = 8) -> str:
    """``<loc>`` x4 (y0 x0 y1 x1) of a box centred on pixel (u, v) of the 640x480 frame."""
    y0, y1 = (round((v + 0.5 + d) / 480 * 1024) for d in (-half, half))
    x0, x1 = (round((u + 0.5 + d) / 640 * 1024) for d in (-half, half))
    return f'<loc{y0:04d}><loc{x0:04d}><loc{y1:04d}><loc{x1:04d}>'


# --- screening ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('raw', 'state', 'reason'),
    [
        ('stop', 'stopped', core.STOP_INTENT),
        ('Please HALT the arm!', 'stopped', core.STOP_INTENT),
        ('freeze', 'stopped', core.STOP_INTENT),
        ('EMERGENCY', 'stopped', core.STOP_INTENT),
        ('pick the cube at the bus stop', 'stopped', core.STOP_INTENT),
        ('{"id": "op-9", "text": "Stop now", "operator": "eve"}', 'stopped', core.STOP_INTENT),
        ('{"id": "op-9", "text": stop}', 'stopped', core.STOP_INTENT),  # broken JSON still stops
        ('pick the nonstop cube', 'accepted', ''),
        ('check the stopwatch', 'accepted', ''),
        ('halting problem', 'accepted', ''),
        ('', 'rejected_input', core.EMPTY_INSTRUCTION),
        ('   \t', 'rejected_input', core.EMPTY_INSTRUCTION),
        ('x' * 501, 'rejected_input', core.INSTRUCTION_TOO_LONG),
        ('x' * 500, 'accepted', ''),
        ('pick\x00 the cube', 'rejected_input', core.NON_PRINTABLE),
        ('pick\nthe cube', 'rejected_input', core.NON_PRINTABLE),
        ('pick the \u200b cube', 'rejected_input', core.NON_PRINTABLE),
        ('{"id": 7, "text": "pick"}', 'rejected_input', core.MALFORMED_INSTRUCTION),
        ('{"id": "op-3", "text": "pick", "x": 1}', 'rejected_input', core.MALFORMED_INSTRUCTION),
        ('{not json', 'rejected_input', core.MALFORMED_INSTRUCTION),
    ],
)
def test_screen(raw: str, state: str, reason: str) -> None:
    screened = screen(raw, 500)
    assert (screened.state, screened.reason) == (state, reason)
    if reason:
        assert screened.detail.startswith(reason + ': ')


def test_screen_keeps_ids_and_operator() -> None:
    ok = screen(json.dumps({'id': 'op-5', 'text': 'pick the red cube', 'operator': 'ann'}), 500)
    assert (ok.instruction_id, ok.instruction.operator) == ('op-5', 'ann')
    bad = screen('{"id": "op-3", "text": "pick", "x": 1}', 500)
    assert bad.instruction_id == 'op-3'  # a refused JSON instruction is answered by its id
    plain = screen('pick the red cube', 500, make_id=lambda: 'fixed')
    assert (plain.instruction_id, plain.instruction.operator) == ('fixed', '')


# --- frames ------------------------------------------------------------------------------------


def _stamped(*ms: int) -> list[Stamped[str]]:
    return [Stamped(t * 1_000_000, f'{t}') for t in ms]


def test_pairing_takes_the_newest_pair_within_the_skew() -> None:
    color, depth = pair_frames(_stamped(0, 100, 200), _stamped(90, 260), 0.05)
    assert (color.item, depth.item) == ('100', '90')
    color, depth = pair_frames(_stamped(0, 100, 200), _stamped(90, 210, 250), 0.05)
    assert (color.item, depth.item) == ('200', '210')
    with pytest.raises(FrameError) as err:
        pair_frames(_stamped(0, 100), _stamped(300), 0.05)
    assert err.value.code == frames.FRAME_MISMATCH
    for colors, depths in (([], _stamped(1)), (_stamped(1), [])):
        with pytest.raises(FrameError) as err:
            pair_frames(colors, depths, 0.05)
        assert err.value.code == frames.NO_FRAME


def test_make_frame_normalises_and_checks() -> None:
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[..., 0] = 200
    depth_mm = np.full((480, 640), 1500, np.uint16)
    depth_mm[0, 0] = 0
    frame = make_frame(rgb[..., ::-1], 'bgr8', depth_mm, '16UC1', K, NOW)
    assert frame.color[0, 0].tolist() == [200, 0, 0]
    assert frame.depth.dtype == np.float32
    assert frame.depth[1, 1] == pytest.approx(1.5) and frame.depth[0, 0] == 0.0
    mono = make_frame(rgb[..., 0], 'mono8', depth_mm, '16UC1', K, NOW)
    assert mono.color.shape == (480, 640, 3)
    cases = [
        ((rgb, 'rgba8', depth_mm, '16UC1', K), frames.UNSUPPORTED_ENCODING),
        ((rgb, 'rgb8', depth_mm, '8UC1', K), frames.UNSUPPORTED_ENCODING),
        ((rgb, 'rgb8', depth_mm[:240], '16UC1', K), frames.FRAME_MISMATCH),
        ((rgb, 'rgb8', depth_mm, '16UC1', None), frames.NO_CAMERA_INFO),
        ((rgb[:240, :320], 'rgb8', depth_mm[:240, :320], '16UC1', K), frames.FRAME_MISMATCH),
    ]
    for args, code in cases:
        with pytest.raises(FrameError) as err:
            make_frame(*args, NOW)
        assert err.value.code == code


# --- output -> status --------------------------------------------------------------------------


def test_a_good_answer_becomes_a_grounded_proposal() -> None:
    table_point = (0.45, 0.10, 0.0)
    u, v = K.project(CAMERA.transform.inverse().apply(table_point))
    text = f'place {_loc_box(u, v)} left bin ; home'
    backend = ScriptedBackend(text, prob=0.8)
    outcome = _plan(_agent(backend))
    assert outcome.state == 'proposed', outcome.detail
    proposal = decode_goal_proposal(encode(outcome.proposal))
    place, home = proposal.steps
    # The loc grid quantises the box centre to ~0.3 px: a few mm on the table at 1.3 m.
    assert np.linalg.norm(np.subtract(place.target.position, (0.45, 0.10, 0.10))) < 0.004
    assert home.target.position == (0.30, 0.0, 0.35)
    assert place.confidence == pytest.approx(0.8)
    assert proposal.operator == 'bob' and proposal.instruction_id == 'op-1'
    assert proposal.image_stamp == Stamp(100, 0) and proposal.stamp == NOW
    assert proposal.model.name == 'scripted'
    assert outcome.detail == 'place left bin, home'
    stages = {'convert', 'preprocess', 'generate', 'decode', 'parse', 'ground'}
    assert set(outcome.timings_ms) == stages
    assert format_timings(outcome.timings_ms).startswith('timings_ms: convert=')


@pytest.mark.parametrize(
    ('text', 'state', 'reason'),
    [
        ('none', 'not_found', core.NOT_FOUND),
        ('I see a red cube!', 'error', core.UNPARSABLE_OUTPUT),
        ('pick <loc0500><loc0500><loc0400><loc0600> red cube', 'error', grounding.BOX_INVALID),
        ('pick <loc0500><loc0500><loc0600><loc0600> pink cube', 'error', core.UNPARSABLE_OUTPUT),
    ],
)
def test_model_answers_that_give_no_proposal(text: str, state: str, reason: str) -> None:
    outcome = _plan(_agent(ScriptedBackend(text)))
    assert (outcome.state, outcome.reason, outcome.proposal) == (state, reason, None)


def test_a_box_outside_the_image_is_refused() -> None:
    card = ModelCard('json_v1', box_format='absolute')
    text = '[{"task": "pick", "object": "red cube", "bbox": [600, 400, 700, 470]}]'
    outcome = _plan(_agent(ScriptedBackend(text, card=card)))
    assert (outcome.state, outcome.reason) == ('error', grounding.BOX_OUTSIDE_IMAGE)


def test_nan_or_zero_depth_at_the_target_is_not_found() -> None:
    depth = Scene().image()
    depth[200:280, 280:360] = np.nan
    depth[240:280, 280:360] = 0.0
    color = np.zeros((480, 640, 3), np.uint8)
    frame = make_frame(color, 'rgb8', depth, '32FC1', K, Stamp(100, 0))
    outcome = _plan(_agent(ScriptedBackend(f'pick {_loc_box(320, 240)} red cube')), frame)
    assert (outcome.state, outcome.reason) == ('not_found', grounding.NO_DEPTH)
    assert '0%' in outcome.detail


def test_an_object_box_on_bare_table_is_not_found() -> None:
    u, v = K.project(CAMERA.transform.inverse().apply((0.45, 0.10, 0.0)))
    outcome = _plan(_agent(ScriptedBackend(f'pick {_loc_box(u, v)} red cube')))
    assert (outcome.state, outcome.reason, outcome.proposal) == (
        'not_found',
        grounding.NO_OBJECT,
        None,
    )
    assert 'red cube' in outcome.detail


def test_frame_problems_end_in_error_statuses() -> None:
    agent = _agent(ScriptedBackend('none'))
    old = synthetic_frame(0, Stamp(90, 0))
    outcome = _plan(agent, old)
    assert (outcome.state, outcome.reason) == ('error', frames.STALE_FRAME)

    def no_frame() -> Frame:
        raise FrameError(frames.NO_FRAME, 'no colour frame received yet')

    outcome = agent.plan(Instruction('op-2', 'pick', ''), no_frame, NOW)
    assert (outcome.state, outcome.reason) == ('error', frames.NO_FRAME)
    assert agent.backend.calls == 0  # the model is not consulted without a frame


def test_a_hanging_model_times_out_and_is_not_stacked_on() -> None:
    gate = threading.Event()
    backend = ScriptedBackend('none', gate=gate)
    agent = _agent(backend, inference_timeout_s=0.1)
    first = _plan(agent)
    assert (first.state, first.reason) == ('error', core.MODEL_TIMEOUT)
    second = _plan(agent)
    assert (second.state, second.reason) == ('error', core.MODEL_TIMEOUT)
    assert 'still busy' in second.detail and backend.calls == 1
    gate.set()
    agent._running.result(timeout=10.0)  # the stuck call ends; the agent recovers
    third = _plan(agent)
    assert (third.state, third.reason) == ('not_found', core.NOT_FOUND)
    agent.close()


@pytest.fixture(scope='module')
def real_backend(tmp_path_factory: pytest.TempPathFactory) -> TransformersBackend:
    return TransformersBackend(tiny_model(tmp_path_factory, 'paligemma'), threads=1)


def test_real_model_past_the_timeout(real_backend: TransformersBackend) -> None:
    agent = make_agent(real_backend, inference_timeout_s=1e-6)
    outcome = _plan(agent)
    assert (outcome.state, outcome.reason) == ('error', core.MODEL_TIMEOUT)
    agent.close()


def test_real_model_that_raises(
    real_backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError('CUDA error: device-side assert triggered')  # injected fault

    monkeypatch.setattr(real_backend.model, 'generate', broken)
    agent = make_agent(real_backend)
    outcome = _plan(agent)
    assert (outcome.state, outcome.reason) == ('error', core.MODEL_ERROR)
    assert 'RuntimeError: CUDA error' in outcome.detail
    agent.close()


# --- debug image -------------------------------------------------------------------------------


def test_debug_image_shows_boxes_and_failures() -> None:
    table_point = (0.45, 0.10, 0.0)
    u, v = K.project(CAMERA.transform.inverse().apply(table_point))
    frame = synthetic_frame(1)
    good = _plan(_agent(ScriptedBackend(f'place {_loc_box(u, v, 20)} left bin')), frame)
    image = annotate(frame.color, good)
    assert image.shape == frame.color.shape and image.dtype == np.uint8
    assert not np.shares_memory(image, frame.color)
    changed = np.any(image != frame.color, axis=2)
    _, v0, u1, v1 = (round(x) for x in good.grounded[0].bbox)
    assert changed[v0 + 5 : v1 - 5, u1].all()  # the box's right edge is drawn
    assert not changed[v1 + 40 :, :].any()  # nothing far below it
    bad = _plan(_agent(ScriptedBackend('pick <loc0500><loc0500><loc0400><loc0600> red cube')))
    banner = annotate(frame.color, bad)
    assert np.any(banner[:20] != frame.color[:20])


def test_models_dir_default_is_relative_to_share(tmp_path: Path) -> None:
    """The agent node's default model_path resolves into the package share directory."""
    from robostral_agent import paths
    from robostral_agent.ros.agent_node import AgentNodeConfig

    assert AgentNodeConfig().model_dir() == paths.models_dir() / 'robostral-tiny'
    assert AgentNodeConfig(model_path=str(tmp_path)).model_dir() == tmp_path
