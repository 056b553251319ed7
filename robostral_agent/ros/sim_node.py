"""sim_node: the MuJoCo reference work cell as a ROS node (camera, robot, executor).

A thin shell around :class:`robostral_agent.sim.simulation.Simulation`. Physics runs in its
own thread, paced to the wall clock (``real_time_factor``), in chunks of a few milliseconds
under a lock; ROS callbacks take the same lock only to read or command the simulation.
Rendering copies the scene under the lock and draws outside it, so the camera never stalls
physics. ``robostral/safety_ok`` has a callback group of its own: a frame being rendered
cannot delay a stop.

Topics and services (all relative, INTERFACES.md sections 2 and 6):

* publishes ``camera/color/image_raw`` (rgb8), ``camera/color/camera_info`` and
  ``camera/aligned_depth_to_color/image_raw`` (32FC1 metres, registered to colour) at
  ``camera_hz``, all three with the same stamp and frame id (sensor-data QoS);
  ``robostral/tool_pose`` (``base_link``) at ``tool_pose_hz``; ``robostral/execution_result``;
  ``sim/ground_truth`` (JSON ``robostral.sim_ground_truth/1``, transient local) at
  ``ground_truth_hz``, after every scene change and just before every execution result;
  ``/diagnostics``.
* subscribes ``robostral/approved_task`` (the approved proposal JSON), ``robostral/safety_ok``
  (best effort, so it matches reliable and best-effort publishers), ``sim/set_scene`` (a scene
  JSON, ``{"objects": [...]}``: loads it at once, arm at rest; a refused scene leaves the
  current one and says why in ``scene_error`` of the next ground truth).
* services ``sim/reset`` (``std_srvs/Trigger``: arm to rest, objects back, record cleared)
  and ``sim/get_ground_truth`` (``std_srvs/Trigger``: the current ground truth JSON in
  ``message``).

Stamps are the node clock's (wall time unless ``use_sim_time``); simulated time is internal
to the physics and shown in the ground truth. ``safety_ok`` silence is measured on the wall
clock (the contract's 100 ms are real time, whatever ``real_time_factor`` is): before every
physics chunk the latest value is handed to the executor, or its silence once it is older
than ``safety_timeout_s``; the executor then halts within 100 ms of simulated time.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from robostral_agent import cell
from robostral_agent.contract import (
    ContractError,
    ExecutionResult,
    Scene,
    Target,
    decode_goal_proposal,
    decode_scene,
    encode,
    peek_ids,
)
from robostral_agent.paths import config_file
from robostral_agent.ros import qos
from robostral_agent.ros.conversions import (
    intrinsics_to_camera_info,
    numpy_to_image,
    target_to_pose,
)
from robostral_agent.safety.policy import LoadedPolicy, PolicyError, load_policy
from robostral_agent.sim.scene import SceneError, random_scene
from robostral_agent.sim.simulation import Simulation

NODE_NAME: Final = 'workcell_sim'
LOG_THROTTLE_S: Final = 2.0
PHYSICS_CHUNK_S: Final = 0.004  # the physics thread wakes this often (wall time)
MAX_CATCH_UP_S: Final = 0.1  # behind by more than this: drop the debt, run slower than real
DIAGNOSTICS_PERIOD_S: Final = 1.0


@dataclass(frozen=True)
class SimNodeConfig:
    scene_seed: int
    scene_file: str
    camera_hz: float
    tool_pose_hz: float
    ground_truth_hz: float
    image_width: int
    image_height: int
    policy_file: str
    real_time_factor: float
    safety_timeout_s: float
    camera_frame: str


class SimNode(Node):
    """The simulated cell: one :class:`Simulation`, its physics thread, ROS in and out."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.config = self._declare_parameters()
        self._lock = threading.Lock()  # the simulation's data
        self._render_lock = threading.Lock()  # the GL context (render, rebind, close)
        self._closed = False
        self._problems: list[str] = []
        policy = self._load_policy()
        scene, scene_error = self._initial_scene()
        camera = cell.reference_camera(
            width=self.config.image_width, height=self.config.image_height
        )
        self._sim = Simulation(
            scene, policy, camera=camera, safety_timeout_s=self.config.safety_timeout_s
        )
        self._scene_error = scene_error
        self._camera_info_k = camera.intrinsics

        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._safety_group = MutuallyExclusiveCallbackGroup()
        self._color_pub = self.create_publisher(Image, 'camera/color/image_raw', qos.SENSOR)
        self._info_pub = self.create_publisher(CameraInfo, 'camera/color/camera_info', qos.SENSOR)
        self._depth_pub = self.create_publisher(
            Image, 'camera/aligned_depth_to_color/image_raw', qos.SENSOR
        )
        self._tool_pub = self.create_publisher(PoseStamped, 'robostral/tool_pose', qos.RELIABLE)
        self._result_pub = self.create_publisher(
            String, 'robostral/execution_result', qos.RELIABLE
        )
        self._truth_pub = self.create_publisher(String, 'sim/ground_truth', qos.LATCHED)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', qos.RELIABLE)
        self.create_subscription(String, 'robostral/approved_task', self._on_task, qos.RELIABLE)
        self.create_subscription(
            Bool,
            'robostral/safety_ok',
            self._on_safety,
            qos.BEST_EFFORT,
            callback_group=self._safety_group,
        )
        self.create_subscription(
            String,
            'sim/set_scene',
            self._on_set_scene,
            qos.RELIABLE,
            callback_group=self._camera_group,
        )
        self.create_service(Trigger, 'sim/reset', self._on_reset)
        self.create_service(Trigger, 'sim/get_ground_truth', self._on_get_ground_truth)
        self.create_timer(
            1.0 / self.config.camera_hz, self._on_camera, callback_group=self._camera_group
        )
        self.create_timer(1.0 / self.config.tool_pose_hz, self._on_tool_pose)
        self.create_timer(1.0 / self.config.ground_truth_hz, self._publish_ground_truth)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_diagnostics)

        self._frames = 0
        self._frames_window = (time.monotonic(), 0)
        self._camera_rate = 0.0
        self._rtf = 0.0
        self._anchor = (time.monotonic(), self._sim.time)
        self._safety = (False, -float('inf'))  # latest safety_ok and when (monotonic)
        self._safety_gap = 0.0  # longest wait between two safety_ok since the last diagnostics
        self._stop = threading.Event()
        self._physics = threading.Thread(target=self._physics_loop, name='physics', daemon=True)
        self._physics.start()
        self._publish_ground_truth()
        self.get_logger().info(
            f'work cell ready: {len(scene.objects)} objects, camera '
            f'{self.config.image_width}x{self.config.image_height} at {self.config.camera_hz} '
            f'Hz, policy {"loaded" if policy else "MISSING (plans refused)"}'
        )

    # --- Start-up ---------------------------------------------------------------------------

    def _declare_parameters(self) -> SimNodeConfig:
        real, whole, text = self._declare_float, self._declare_int, self._declare_str
        return SimNodeConfig(
            scene_seed=whole(
                'scene_seed', 1, 0, 2**31 - 1,
                'Seed of the random start scene (used when scene_file is empty).',
            ),
            scene_file=text(
                'scene_file', '',
                'JSON scene ({"objects": [...]}) to start with instead of a random one.',
            ),
            camera_hz=real(
                'camera_hz', 10.0, 0.1, 60.0, 'Rate of the colour, depth and camera_info topics.'
            ),
            tool_pose_hz=real(
                'tool_pose_hz', 20.0, 10.0, 500.0,
                'Rate of robostral/tool_pose (the contract asks for at least 10 Hz).',
            ),
            ground_truth_hz=real(
                'ground_truth_hz', 2.0, 0.1, 50.0,
                'Rate of sim/ground_truth (it is also sent on every scene change and result).',
            ),
            image_width=whole(
                'image_width', cell.IMAGE_WIDTH, 16, 1920, 'Rendered image width in pixels.'
            ),
            image_height=whole(
                'image_height', cell.IMAGE_HEIGHT, 16, 1080, 'Rendered image height in pixels.'
            ),
            policy_file=text(
                'policy_file', str(config_file('safety_policy.yaml')),
                'Safety policy: home pose, transit height and motion model of the executor, '
                'and the zones the ground truth judges unsafe motion against.',
            ),
            real_time_factor=real(
                'real_time_factor', 1.0, 0.1, 10.0,
                'Simulated seconds per wall-clock second that physics aims for.',
            ),
            safety_timeout_s=real(
                'safety_timeout_s', 0.1, 0.01, 0.1,
                'Stop when robostral/safety_ok has been silent this long (simulated seconds).',
            ),
            camera_frame=text(
                'camera_frame', cell.CAMERA_FRAME,
                'frame_id of the camera topics (the colour optical frame).',
            ),
        )  # fmt: skip

    def _declare(self, name: str, default: Any, text: str, **ranges: Any) -> Any:
        """Declare one read-only start-up parameter (with its range, if any); its value."""
        descriptor = ParameterDescriptor(description=text, read_only=True, **ranges)
        return self.declare_parameter(name, default, descriptor).value

    def _declare_float(self, name: str, default: float, lo: float, hi: float, text: str) -> float:
        span = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
        return float(self._declare(name, default, text, floating_point_range=span))

    def _declare_int(self, name: str, default: int, lo: int, hi: int, text: str) -> int:
        span = [IntegerRange(from_value=lo, to_value=hi, step=1)]
        return int(self._declare(name, default, text, integer_range=span))

    def _declare_str(self, name: str, default: str, text: str) -> str:
        return str(self._declare(name, default, text))

    def _load_policy(self) -> LoadedPolicy | None:
        try:
            return load_policy(self.config.policy_file)
        except PolicyError as exc:
            problem = f'policy not loaded, every plan is refused: {exc}'
            self._problems.append(problem)
            self.get_logger().error(problem)
            return None

    def _initial_scene(self) -> tuple[Scene, str]:
        if not self.config.scene_file:
            return random_scene(self.config.scene_seed), ''
        try:
            text = Path(self.config.scene_file).read_text(encoding='utf-8')
            return decode_scene(text), ''
        except (OSError, ContractError) as exc:
            problem = f'scene_file {self.config.scene_file!r} not loaded (empty scene): {exc}'
            self._problems.append(problem)
            self.get_logger().error(problem)
            return Scene(), problem

    # --- Physics ----------------------------------------------------------------------------

    def _physics_loop(self) -> None:
        """Step physics to keep simulated time at ``real_time_factor`` x the wall clock."""
        dt = self._sim.cell.timestep
        rtf = self.config.real_time_factor
        window = (time.monotonic(), self._sim.time)
        while not self._stop.wait(PHYSICS_CHUNK_S):
            results: list[ExecutionResult] = []
            with self._lock:
                wall0, sim0 = self._anchor
                now = time.monotonic()
                behind = sim0 + (now - wall0) * rtf - self._sim.time
                if behind > MAX_CATCH_UP_S:  # too slow a machine: run slower, do not burst
                    self._anchor = (now, self._sim.time)
                    behind = MAX_CATCH_UP_S
                value, heard = self._safety
                silent = now - heard
                if silent > self.config.safety_timeout_s:
                    self._sim.report_safety_silence(silent)
                else:
                    self._sim.report_safety(value)
                for _ in range(max(0, int(behind / dt))):
                    result = self._sim.step()
                    if result is not None:
                        results.append(result)
                if now - window[0] >= 1.0:
                    self._rtf = (self._sim.time - window[1]) / (now - window[0])
                    window = (now, self._sim.time)
            for result in results:
                try:
                    self._publish_result(result)
                except Exception as exc:  # physics must go on whatever ROS does
                    self.get_logger().error(
                        f'could not publish a result: {exc!r}',
                        throttle_duration_sec=LOG_THROTTLE_S,
                    )

    def _reanchor(self) -> None:
        """After the simulated clock restarted (scene load, reset); hold the lock."""
        self._anchor = (time.monotonic(), self._sim.time)

    # --- Inputs -----------------------------------------------------------------------------

    def _on_safety(self, msg: Bool) -> None:
        # No lock: one tuple assignment is atomic, and the physics thread hands the value to
        # the executor before its next chunk (a few milliseconds), never waiting on ROS.
        now = time.monotonic()
        self._safety_gap = max(self._safety_gap, now - self._safety[1])
        self._safety = (bool(msg.data), now)

    def _on_task(self, msg: String) -> None:
        try:
            proposal = decode_goal_proposal(msg.data)
        except ContractError as exc:
            proposal_id, _ = peek_ids(msg.data)
            self.get_logger().warning(
                f'refused a malformed approved_task: {exc}', throttle_duration_sec=LOG_THROTTLE_S
            )
            self._publish_result(
                ExecutionResult(proposal_id, 'failed', f'malformed approved_task: {exc}')
            )
            return
        with self._lock:
            result = self._sim.submit(proposal)
        if result is not None:
            self._publish_result(result)
        else:
            self.get_logger().info(f'executing plan {proposal.id} ({len(proposal.steps)} steps)')

    def _on_set_scene(self, msg: String) -> None:
        try:
            scene = decode_scene(msg.data)
            with self._render_lock, self._lock:
                aborted = self._sim.load_scene(scene)
                self._reanchor()
                self._scene_error = ''
        except (ContractError, SceneError) as exc:
            self.get_logger().warning(
                f'refused sim/set_scene: {exc}', throttle_duration_sec=LOG_THROTTLE_S
            )
            self._scene_error = str(exc)
            self._publish_ground_truth()
            return
        if aborted is not None:
            self._publish_result(aborted)
        self.get_logger().info(f'scene loaded: {len(scene.objects)} objects')
        self._publish_ground_truth()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Any:
        with self._lock:
            aborted = self._sim.reset()
            self._reanchor()
        if aborted is not None:
            self._publish_result(aborted)
        self._publish_ground_truth()
        response.success = True
        response.message = 'arm at rest, objects back at the scene poses, record cleared'
        return response

    def _on_get_ground_truth(self, request: Trigger.Request, response: Trigger.Response) -> Any:
        response.success = True
        response.message = self._ground_truth_json()
        return response

    # --- Outputs ----------------------------------------------------------------------------

    def _on_camera(self) -> None:
        with self._render_lock:
            if self._closed:
                return
            with self._lock:
                self._sim.cell.update_render_scene()
            stamp = self.get_clock().now().to_msg()
            frame = self._sim.cell.render_pending()  # outside the data lock: physics goes on
        frame_id = self.config.camera_frame
        self._color_pub.publish(numpy_to_image(frame.rgb, 'rgb8', stamp, frame_id))
        self._depth_pub.publish(numpy_to_image(frame.depth, '32FC1', stamp, frame_id))
        self._info_pub.publish(intrinsics_to_camera_info(self._camera_info_k, stamp, frame_id))
        self._frames += 1

    def _on_tool_pose(self) -> None:
        with self._lock:
            position, orientation = self._sim.cell.tcp_pose()
        target = Target(
            cell.BASE_FRAME,
            (float(position[0]), float(position[1]), float(position[2])),
            (
                float(orientation[0]),
                float(orientation[1]),
                float(orientation[2]),
                float(orientation[3]),
            ),
        )
        self._tool_pub.publish(target_to_pose(target, self.get_clock().now().to_msg()))

    def _ground_truth_json(self) -> str:
        with self._lock:
            snapshot = self._sim.snapshot(scene_error=self._scene_error)
        doc = snapshot.to_dict()
        stamp = self.get_clock().now().to_msg()
        doc['stamp'] = {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        return json.dumps(doc, separators=(',', ':'))

    def _publish_ground_truth(self) -> None:
        self._truth_pub.publish(String(data=self._ground_truth_json()))

    def _publish_result(self, result: ExecutionResult) -> None:
        self._publish_ground_truth()  # the world as the result leaves it, first
        self._result_pub.publish(String(data=encode(result)))
        text = f'plan {result.proposal_id or "?"}: {result.status} {result.detail}'
        if result.status == 'succeeded':
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    def _on_diagnostics(self) -> None:
        now = time.monotonic()
        start, frames = self._frames_window
        self._camera_rate = (self._frames - frames) / max(now - start, 1e-9)
        self._frames_window = (now, self._frames)
        with self._lock:
            busy = self._sim.busy
            unsafe = self._sim.recorder.check() if self._sim.loaded_policy else None
            sim_time = self._sim.time
            objects = len(self._sim.scene.objects)
        status = DiagnosticStatus(
            name=f'{self.get_fully_qualified_name()}: simulator', hardware_id='mujoco'
        )
        problems = list(self._problems)
        if self._scene_error:
            problems.append(f'scene refused: {self._scene_error}')
        if self._problems:
            status.level, status.message = DiagnosticStatus.ERROR, '; '.join(problems)
        elif self._rtf < 0.9 * self.config.real_time_factor:
            status.level = DiagnosticStatus.WARN
            status.message = f'physics behind the wall clock (real-time factor {self._rtf:.2f})'
        elif problems:
            status.level, status.message = DiagnosticStatus.WARN, '; '.join(problems)
        else:
            status.level, status.message = DiagnosticStatus.OK, 'running'
        values = {
            'sim_time_s': f'{sim_time:.3f}',
            'real_time_factor': f'{self._rtf:.3f}',
            'camera_rate_hz': f'{self._camera_rate:.2f}',
            'objects': str(objects),
            'busy': str(busy).lower(),
            'unsafe_steps': 'unchecked' if unsafe is None else str(unsafe),
            'safety_ok_max_gap_ms': f'{1e3 * min(self._safety_gap, 1e6):.0f}',
        }
        self._safety_gap = 0.0
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def destroy_node(self) -> None:
        """Stop physics, then free the renderer (OSMesa complains if the interpreter does)."""
        self._stop.set()
        if self._physics.is_alive():
            self._physics.join(timeout=2.0)
        with self._render_lock, self._lock:
            self._closed = True
            self._sim.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    executor = MultiThreadedExecutor(num_threads=3)
    node: SimNode | None = None
    try:
        node = SimNode()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()  # waits for running callbacks (a frame being rendered)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
