"""agent_node over DDS with a tiny real model: proposals, statuses, e-stop, flood, bad input.

The node runs on its own executor thread in a private context; the test's client node
publishes synthetic camera frames and instructions and listens like an integrator would.
Every wait spins against a deadline after publishers and subscribers have matched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from helpers import spin_until, stop_process
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from test_vlm_backend import TABLE_DEPTH, make_agent, synthetic_frame, tiny_model

from robostral_agent.cell import reference_camera
from robostral_agent.contract import Instruction, Stamp, decode_goal_proposal
from robostral_agent.ros.agent_node import PARAMETERS, AgentNode, AgentNodeConfig
from robostral_agent.ros.conversions import (
    image_to_numpy,
    intrinsics_to_camera_info,
    numpy_to_image,
)
from robostral_agent.safety.policy import load_policy
from robostral_agent.vlm.backend import TransformersBackend

pytestmark = [
    pytest.mark.ros,
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]
ROOT = Path(__file__).resolve().parents[1]
CAMERA = reference_camera()
RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
INSTRUCTION = 'put the red cube in the left bin'
# Answers that say the node or its camera input is not there yet, not what the model said.
TRANSIENT = ('NOT_ACTIVE', 'NO_FRAME', 'FRAME_MISMATCH', 'STALE_FRAME')


@pytest.fixture(scope='module')
def planning_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The tiny PaliGemma and a frame seed for which its (random) answer grounds to a plan.

    Random weights answer each image differently; this finds, with the real backend, an
    image whose constrained answer is a plan with a box, so that the DDS test below can
    expect a proposal and not just 'some status'.
    """
    path = tiny_model(tmp_path_factory, 'paligemma')
    agent = make_agent(TransformersBackend(path, threads=1))
    try:
        for seed in range(40):
            frame = synthetic_frame(seed)
            outcome = agent.plan(Instruction('x', INSTRUCTION), lambda f=frame: f, Stamp(100, 1))
            if outcome.state == 'proposed' and any(s.bbox for s in outcome.proposal.steps):
                return path, seed
    finally:
        agent.close()
    pytest.fail('no image among 40 gives a grounded plan with this tiny model')


class Cell:
    """An agent node on a background executor, and a client node in the same context."""

    def __init__(self, context: object, namespace: str, model: Path, **params: Any) -> None:
        overrides = [Parameter('model_path', value=str(model))]
        overrides += [Parameter(k, value=v) for k, v in params.items()]
        self.node = AgentNode(context=context, namespace=namespace, parameter_overrides=overrides)
        # As main(): one executor thread with autostart, two for a managed node.
        self._executor = (
            SingleThreadedExecutor(context=context)
            if self.node.config.autostart
            else MultiThreadedExecutor(num_threads=2, context=context)
        )
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()
        self.client = rclpy.create_node('cell_client', context=context, namespace=namespace)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.client)
        self.statuses: list[dict[str, Any]] = []
        self.proposals: list[str] = []
        self.estops: list[bool] = []
        self.debug: list[Image] = []
        self.diagnostics: list[DiagnosticArray] = []
        c = self.client
        self._subs = [
            c.create_subscription(
                String, 'robostral/instruction_status',
                lambda m: self.statuses.append(json.loads(m.data)), RELIABLE,
            ),
            c.create_subscription(
                String, 'robostral/goal_proposal', lambda m: self.proposals.append(m.data), 10
            ),
            c.create_subscription(
                Bool, 'robostral/estop', lambda m: self.estops.append(m.data), 10
            ),
            c.create_subscription(Image, 'robostral/agent/debug_image', self.debug.append, 2),
        ]  # fmt: skip
        c.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10)
        self.instructions = c.create_publisher(String, 'robostral/instruction', RELIABLE)
        sensor = qos_profile_sensor_data
        self.color_pub = c.create_publisher(Image, 'camera/color/image_raw', sensor)
        self.depth_pub = c.create_publisher(
            Image, 'camera/aligned_depth_to_color/image_raw', sensor
        )
        self.info_pub = c.create_publisher(CameraInfo, 'camera/color/camera_info', sensor)
        self.color = synthetic_frame(0).color
        self.depth = TABLE_DEPTH
        self.depth_encoding = '32FC1'
        self.info: CameraInfo | None = intrinsics_to_camera_info(CAMERA.intrinsics)
        self.age_s = 0.0
        self.streaming = False
        self.frames_sent = 0
        c.create_timer(0.05, self._publish_frame)

    def _publish_frame(self) -> None:
        if not self.streaming:
            return
        now = self.client.get_clock().now().nanoseconds - round(self.age_s * 1e9)
        stamp = Stamp.from_ns(now)
        frame_id = 'camera_color_optical_frame'
        if self.color is not None:
            self.color_pub.publish(numpy_to_image(self.color, 'rgb8', stamp, frame_id))
        if self.depth is not None:
            depth = numpy_to_image(self.depth, '32FC1', stamp, frame_id)
            depth.encoding = self.depth_encoding  # lie about it, for the bad-input cases
            self.depth_pub.publish(depth)
        if self.info is not None:
            self.info.header.stamp = numpy_to_image(self.color[:1, :1], 'rgb8', stamp).header.stamp
            self.info_pub.publish(self.info)
        self.frames_sent += 1

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> bool:
        return spin_until(self.executor, predicate, timeout_s)

    def wait_ready(self, active: bool = True) -> None:
        """Node in the wanted state and every topic matched in both directions."""

        def ready() -> bool:
            return (
                (self.node._state == 'active' or not active)
                and all(s.get_publisher_count() > 0 for s in self._always_matched(active))
                and self.instructions.get_subscription_count() > 0
                and self.node.instruction_sub.get_publisher_count() > 0
            )  # fmt: skip

        assert self.spin_until(ready), f'agent never got ready (state {self.node._state})'

    def _always_matched(self, active: bool) -> list[Any]:
        """Status and e-stop always; the proposal publisher exists once configured."""
        status, proposal, estop, _ = self._subs
        return [status, estop, proposal] if active else [status, estop]

    def stream_frames(self, count: int = 3) -> None:
        """Stream ``count`` more frames and wait until the node holds frames."""
        self.streaming = True
        start = self.frames_sent
        assert self.spin_until(lambda: self.frames_sent >= start + count)
        assert self.spin_until(lambda: self.node._frames.counts()[0] > 0)

    def send(self, data: str) -> None:
        self.instructions.publish(String(data=data))

    def final_status(self, instruction_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        finals = ('proposed', 'not_found', 'rejected_input', 'busy', 'error', 'stopped')

        def done() -> dict[str, Any] | None:
            return next(
                (s for s in self.statuses
                 if s['instruction_id'] == instruction_id and s['state'] in finals),
                None,
            )  # fmt: skip

        assert self.spin_until(lambda: done() is not None, timeout_s), (
            f'no final status for {instruction_id}: {self.statuses[-5:]}'
        )
        return done()

    def close(self) -> None:
        self._executor.shutdown()
        self._thread.join(timeout=10)
        self.executor.shutdown()
        self.node.destroy_node()
        self.client.destroy_node()


@pytest.fixture
def cell_factory(ros_context: object, namespace: str) -> Iterator[Callable[..., Cell]]:
    cells: list[Cell] = []

    def make(model: Path, **params: Any) -> Cell:
        cells.append(Cell(ros_context, namespace, model, torch_threads=1, **params))
        return cells[-1]

    yield make
    for cell in cells:
        cell.close()


def test_instruction_and_frames_yield_a_proposal_and_statuses(
    cell_factory: Callable[..., Cell], planning_model: tuple[Path, int]
) -> None:
    model, seed = planning_model
    cell = cell_factory(model)
    cell.color = synthetic_frame(seed).color
    cell.wait_ready()
    cell.stream_frames()
    # Best-effort frames may be dropped on a loaded machine (the answer is then a frame
    # error, correctly): ask again, a bounded number of times.
    for attempt in range(5):
        instruction_id = f'op-{attempt}'
        cell.send(json.dumps({'id': instruction_id, 'text': INSTRUCTION, 'operator': 'alice'}))
        final = cell.final_status(instruction_id)
        if not final['detail'].startswith(TRANSIENT):
            break
    assert final['state'] == 'proposed', final
    assert cell.spin_until(lambda: cell.proposals and cell.debug)
    proposal = decode_goal_proposal(cell.proposals[0])
    assert (proposal.instruction_id, proposal.operator) == (instruction_id, 'alice')
    assert final['proposal_id'] == proposal.id
    assert proposal.model.sha256 == cell.node._agent.backend.sha256
    assert any(step.bbox is not None for step in proposal.steps)
    assert all(step.target.frame_id == 'base_link' for step in proposal.steps)
    mine = [s for s in cell.statuses if s['instruction_id'] == instruction_id]
    assert [s['state'] for s in mine] == ['received', 'proposed']
    assert 0 < mine[0]['latency_ms'] < final['latency_ms']
    assert 'timings_ms: convert=' in final['detail'] and 'generate=' in final['detail']
    debug = image_to_numpy(cell.debug[-1])
    assert debug.shape == (480, 640, 3)
    assert np.any(debug != cell.color)  # annotated, not a copy of the frame
    name = f'{cell.node.get_fully_qualified_name()}: agent'
    assert cell.spin_until(
        lambda: any(st.name == name for d in cell.diagnostics for st in d.status), 5.0
    )
    status = next(st for d in cell.diagnostics for st in d.status if st.name == name)
    values = {kv.key: kv.value for kv in status.values}
    assert values['model'] == 'tiny-paligemma' and values['device'] == 'cpu/float32'
    assert values['sha256'] == proposal.model.sha256
    assert {'last_latency_ms', 'queue', 'queue_size', 'state'} <= set(values)


@pytest.mark.parametrize('text', ['STOP', 'please halt now', 'Freeze!', 'emergency'])
def test_stop_words_trip_the_estop_without_the_model(
    cell_factory: Callable[..., Cell], planning_model: tuple[Path, int], text: str
) -> None:
    cell = cell_factory(planning_model[0])
    cell.wait_ready()
    calls = cell.node._agent.backend.calls
    cell.send(json.dumps({'id': 'op-stop', 'text': text, 'operator': 'bob'}))
    final = cell.final_status('op-stop', 10.0)
    assert cell.spin_until(lambda: cell.estops, 10.0)
    assert cell.estops == [True]
    assert final['state'] == 'stopped' and final['detail'].startswith('STOP_INTENT')
    assert cell.node._agent.backend.calls == calls


def test_confidence_and_grounding_parameters_reach_the_core(
    cell_factory: Callable[..., Cell], planning_model: tuple[Path, int]
) -> None:
    cell = cell_factory(planning_model[0], loc_tolerance_px=3.5, foreground_reach=0.5)
    cell.wait_ready()
    assert cell.node._agent.backend.loc_tolerance_px == 3.5
    assert cell.node._agent.config.grounding.foreground_reach == 0.5


@pytest.mark.parametrize('autostart', [True, False], ids=['autostart', 'lifecycle-manager'])
def test_stop_is_not_held_up_by_a_model_that_is_loading(
    ros_context: object, namespace: str, planning_model: tuple[Path, int],
    monkeypatch: pytest.MonkeyPatch, autostart: bool,
) -> None:  # fmt: skip
    loading, release = threading.Event(), threading.Event()
    real_init = TransformersBackend.__init__

    def slow_init(self: TransformersBackend, *args: Any, **kwargs: Any) -> None:
        loading.set()
        release.wait(30.0)  # a big model takes this long to load
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(TransformersBackend, '__init__', slow_init)
    cell = Cell(ros_context, namespace, planning_model[0], torch_threads=1, autostart=autostart)
    try:
        if not autostart:  # a lifecycle manager asks, through the node's own service
            change = cell.client.create_client(ChangeState, 'robostral_agent/change_state')
            assert change.wait_for_service(timeout_sec=10.0)
            done = change.call_async(ChangeState.Request(transition=Transition(id=1)))
        assert cell.spin_until(loading.is_set, 10.0)
        cell.wait_ready(active=False)
        cell.send(json.dumps({'id': 'op-stop', 'text': 'STOP'}))
        assert cell.spin_until(lambda: cell.estops == [True], 10.0), 'stop waited for the load'
        assert cell.final_status('op-stop', 5.0)['state'] == 'stopped'
        assert cell.node._state == 'unconfigured'  # still loading
    finally:
        release.set()
    if autostart:
        assert cell.spin_until(lambda: cell.node._state == 'active', 30.0)
    else:
        assert cell.spin_until(done.done, 30.0) and done.result().success
        assert cell.node._state == 'inactive'
    cell.close()


def test_stop_works_before_the_model_is_loaded(
    cell_factory: Callable[..., Cell], planning_model: tuple[Path, int]
) -> None:
    cell = cell_factory(planning_model[0], autostart=False)
    cell.wait_ready(active=False)
    assert cell.node._state == 'unconfigured' and cell.node._agent is None
    cell.send(json.dumps({'id': 'op-1', 'text': 'pick the red cube'}))
    assert cell.final_status('op-1')['detail'].startswith('NOT_ACTIVE: the agent is unconfigured')
    cell.send('halt')
    assert cell.spin_until(lambda: cell.estops == [True], 10.0)
    # A lifecycle manager brings it up; deactivation answers again without processing.
    assert cell.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert cell.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert cell.node._state == 'active'
    assert cell.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    cell.send(json.dumps({'id': 'op-2', 'text': 'pick the red cube'}))
    assert cell.final_status('op-2')['detail'].startswith('NOT_ACTIVE: the agent is inactive')
    assert cell.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert cell.node._agent is None


@pytest.mark.slow
def test_a_flood_of_100_instructions_yields_busy_with_a_bounded_queue(
    cell_factory: Callable[..., Cell], planning_model: tuple[Path, int]
) -> None:
    cell = cell_factory(planning_model[0], queue_size=2)
    cell.wait_ready()
    cell.stream_frames()
    depths: list[int] = []
    ids = [f'flood-{i}' for i in range(100)]
    for instruction_id in ids:
        cell.send(
            json.dumps({'id': instruction_id, 'text': f'pick the blue ball {instruction_id}'})
        )
        depths.append(cell.node._queue.qsize())

    def first_states() -> dict[str, str]:
        out: dict[str, str] = {}
        for s in cell.statuses:
            out.setdefault(s['instruction_id'], s['state'])
        return out

    assert cell.spin_until(lambda: set(first_states()) >= set(ids), 30.0)
    first = first_states()
    busy = [i for i in ids if first[i] == 'busy']
    received = [i for i in ids if first[i] == 'received']
    assert len(busy) + len(received) == 100
    assert len(busy) >= 50, f'only {len(busy)} busy'
    assert max(depths) <= 2 and cell.node.stats['queue_high_water'] <= 3
    for instruction_id in received:  # every accepted one is answered in the end
        assert cell.final_status(instruction_id)['state'] in ('proposed', 'not_found', 'error')
    assert all(s['detail'].startswith('QUEUE_FULL') for s in cell.statuses if s['state'] == 'busy')


def test_bad_camera_input_is_answered_with_reasons(
    cell_factory: Callable[..., Cell], planning_model: tuple[Path, int]
) -> None:
    cell = cell_factory(planning_model[0])
    cell.wait_ready()
    steps: list[tuple[str, Callable[[], None], str]] = [
        ('no-frame', lambda: None, 'NO_FRAME'),
        ('no-info', lambda: setattr(cell, 'info', None), 'NO_CAMERA_INFO'),
        ('stale', lambda: _set(cell, info=intrinsics_to_camera_info(CAMERA.intrinsics),
                               age_s=30.0), 'STALE_FRAME'),
        ('encoding', lambda: _set(cell, age_s=0.0, depth_encoding='16SC1'),
         'UNSUPPORTED_ENCODING'),
        ('size', lambda: _set(cell, depth_encoding='32FC1', depth=TABLE_DEPTH[:240, :320].copy()),
         'FRAME_MISMATCH'),
    ]  # fmt: skip
    for name, change, reason in steps:
        change()
        if name != 'no-frame':
            # More frames than the node buffers (10): none from the previous step is left.
            cell.stream_frames(count=14)
        cell.send(json.dumps({'id': name, 'text': 'pick the red cube'}))
        final = cell.final_status(name)
        assert (final['state'], final['detail'].split(':')[0]) == ('error', reason), final
    for raw, reason in (
        (json.dumps({'id': 'empty', 'text': '   '}), 'EMPTY_INSTRUCTION'),
        (json.dumps({'id': 'long', 'text': 'x' * 501}), 'INSTRUCTION_TOO_LONG'),
        (json.dumps({'id': 'ctrl', 'text': 'pick\x07 it'}), 'NON_PRINTABLE'),
        ('{"id": "json", "text": 3}', 'MALFORMED_INSTRUCTION'),
    ):
        instruction_id = json.loads(raw)['id']
        cell.send(raw)
        final = cell.final_status(instruction_id)
        assert (final['state'], final['detail'].split(':')[0]) == ('rejected_input', reason)
    assert not cell.proposals and cell.node._state == 'active'


def _set(cell: Cell, **values: Any) -> None:
    for key, value in values.items():
        setattr(cell, key, value)


@pytest.mark.parametrize(
    ('params', 'message'),
    [
        ({'model_path': '/nonexistent/model'}, 'cannot load the model'),
        ({'camera_pose': [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]}, 'camera_pose: needs 7 numbers'),
        ({'device': 'tpu'}, "device: 'tpu'"),
        ({'queue_size': 0}, 'queue_size'),
        ({'home_pose': [0.3, 0.0, 0.35, 0.0, 0.0, 0.0, 0.0]}, 'zero length'),
    ],
)
def test_configure_failures_are_reported_not_crashes(
    cell_factory: Callable[..., Cell], tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    cell = cell_factory(tmp_path, **params)
    cell.wait_ready(active=False)
    assert cell.spin_until(lambda: cell.node._failure != '', 10.0)
    assert cell.node._state == 'unconfigured'
    assert message in cell.node._failure
    cell.send(json.dumps({'id': 'op-1', 'text': 'pick the red cube'}))
    final = cell.final_status('op-1')
    assert final['state'] == 'error' and message in final['detail']


# --- the shipped parameter file -----------------------------------------------------------------


def _agent_yaml() -> tuple[dict[str, Any], list[str]]:
    path = ROOT / 'config' / 'agent.yaml'
    data = yaml.safe_load(path.read_text())
    return data['/**/robostral_agent']['ros__parameters'], path.read_text().splitlines()


def test_agent_yaml_documents_every_parameter() -> None:
    params, lines = _agent_yaml()
    assert set(params) == set(PARAMETERS)
    for name in params:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f'{name}:'))
        above = lines[index - 1].strip()
        assert above.startswith('#') or lines[index - 2].strip().startswith('#'), name
    defaults = AgentNodeConfig()
    for name, value in params.items():
        default = getattr(defaults, name)
        expected = list(default) if isinstance(default, tuple) else default
        assert value == expected, f'{name}: config/agent.yaml {value!r} != node {expected!r}'


def test_camera_pose_is_the_reference_cell_camera() -> None:
    params, _ = _agent_yaml()
    assert params['camera_pose'] == pytest.approx(reference_camera().pose7, abs=1e-12)


def test_home_pose_is_the_policy_home() -> None:
    params, _ = _agent_yaml()
    policy = load_policy(ROOT / 'config' / 'safety_policy.yaml').policy
    assert params['home_pose'] == [*policy.home.position, *policy.home.orientation]


# --- the console script in its own process ------------------------------------------------------


@pytest.mark.slow
def test_console_script_with_the_shipped_parameter_file(
    ros_context: object, namespace: str, planning_model: tuple[Path, int]
) -> None:
    model, seed = planning_model
    cmd = [
        sys.executable, '-c', 'from robostral_agent.ros.agent_node import main; main()',
        '--ros-args', '-r', f'__ns:={namespace}',
        '--params-file', str(ROOT / 'config' / 'agent.yaml'),
        '-p', f'model_path:={model}',
    ]  # fmt: skip
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore::DeprecationWarning'}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    client = rclpy.create_node('script_client', context=ros_context, namespace=namespace)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(client)
    statuses: list[dict[str, Any]] = []
    proposals: list[str] = []
    estops: list[bool] = []
    subs = [
        client.create_subscription(
            String, 'robostral/instruction_status',
            lambda m: statuses.append(json.loads(m.data)), RELIABLE,
        ),
        client.create_subscription(
            String, 'robostral/goal_proposal', lambda m: proposals.append(m.data), 10
        ),
        client.create_subscription(Bool, 'robostral/estop', lambda m: estops.append(m.data), 10),
    ]  # fmt: skip
    pub = client.create_publisher(String, 'robostral/instruction', RELIABLE)
    sensor = qos_profile_sensor_data
    color_pub = client.create_publisher(Image, 'camera/color/image_raw', sensor)
    depth_pub = client.create_publisher(Image, 'camera/aligned_depth_to_color/image_raw', sensor)
    info_pub = client.create_publisher(CameraInfo, 'camera/color/camera_info', sensor)
    color = synthetic_frame(seed).color

    def frame() -> None:
        stamp = client.get_clock().now().to_msg()
        color_pub.publish(numpy_to_image(color, 'rgb8', stamp, 'camera_color_optical_frame'))
        depth_pub.publish(
            numpy_to_image(TABLE_DEPTH, '32FC1', stamp, 'camera_color_optical_frame')
        )
        info_pub.publish(
            intrinsics_to_camera_info(CAMERA.intrinsics, stamp, 'camera_color_optical_frame')
        )

    client.create_timer(0.05, frame)
    probes: list[str] = []
    sent_at = [0.0]

    def matched() -> bool:
        # The proposal publisher exists once the model is loaded (configure -> activate).
        return pub.get_subscription_count() > 0 and all(s.get_publisher_count() for s in subs)

    def ready() -> bool:
        """Probe, one at a time, until an instruction really reaches the model.

        Until activation completes the node answers NOT_ACTIVE, before the camera frames
        are in NO_FRAME; an answered probe is followed by the next after 0.2 s, one without
        an answer (the node's reader may match after our writer did) is repeated after 2 s.
        """
        finals = {s['instruction_id']: s for s in statuses if s['state'] != 'received'}
        last = finals.get(probes[-1]) if probes else None
        if last is not None and not last['detail'].startswith(TRANSIENT):
            return True
        waited = time.monotonic() - sent_at[0]
        if not probes or (last is not None and waited > 0.2) or waited > 2.0:
            probes.append(f'probe-{len(probes)}')
            sent_at[0] = time.monotonic()
            pub.publish(String(data=json.dumps({'id': probes[-1], 'text': 'pick the cube'})))
        return False

    try:
        assert spin_until(executor, matched, 60.0), 'the node never came up'
        assert spin_until(executor, ready, 30.0), f'the node never planned: {statuses[-3:]}'

        def final(instruction_id: str) -> dict[str, Any] | None:
            finals = [s for s in statuses if s['instruction_id'] == instruction_id]
            return finals[-1] if finals and finals[-1]['state'] != 'received' else None

        # Best-effort camera frames can be dropped on a loaded machine (then the honest
        # answer is a frame error): ask again, a bounded number of times.
        for attempt in range(5):
            instruction_id = f'op-{attempt}'
            payload = {'id': instruction_id, 'text': INSTRUCTION, 'operator': 'al'}
            pub.publish(String(data=json.dumps(payload)))
            assert spin_until(executor, lambda i=instruction_id: final(i) is not None, 60.0)
            if not final(instruction_id)['detail'].startswith(TRANSIENT):
                break
        assert final(instruction_id)['state'] == 'proposed', statuses[-4:]

        # A probe may have been planned too (its operator is empty): find this one's plan.
        def ours() -> list[Any]:
            decoded = [decode_goal_proposal(p) for p in proposals]
            return [p for p in decoded if p.instruction_id == instruction_id]

        assert spin_until(executor, lambda: bool(ours()), 10.0)
        assert ours()[0].operator == 'al'
        pub.publish(String(data='Emergency stop!'))
        assert spin_until(executor, lambda: estops == [True], 10.0)
    finally:
        executor.shutdown()
        client.destroy_node()
        output = stop_process(proc)
    assert proc.returncode in (0, -signal.SIGINT), output
    assert 'Traceback' not in output, output
