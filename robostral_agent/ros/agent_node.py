"""``agent_node``: the VLM agent as a ROS 2 lifecycle node (INTERFACES.md sections 1 to 3).

Thin on purpose: it buffers camera messages, screens instructions in the subscription
callback (stop intent trips ``robostral/estop`` at once, in every lifecycle state, without
the model), queues accepted ones (bounded: overflow is answered ``busy``), and runs them one
at a time on a worker thread through :class:`robostral_agent.vlm.agent.Agent`. Every
instruction gets statuses on ``robostral/instruction_status``; a plan goes out on
``robostral/goal_proposal``, the annotated frame on ``robostral/agent/debug_image``.

Lifecycle: configure loads the model (a failure is a logged ``FAILURE``, not a crash),
activate starts the worker, deactivate stops it, cleanup frees the model. With
``autostart`` (default) the node configures and activates itself once spinning.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String

from robostral_agent import paths
from robostral_agent.cell import BASE_FRAME, reference_camera
from robostral_agent.contract import Instruction, InstructionStatus, Stamp, encode
from robostral_agent.geometry import GeometryError
from robostral_agent.ros import qos
from robostral_agent.ros.agent_frames import FrameBuffer
from robostral_agent.ros.conversions import numpy_to_image
from robostral_agent.vlm.agent import (
    STOP_INTENT,
    Agent,
    AgentConfig,
    Outcome,
    format_timings,
    screen,
)
from robostral_agent.vlm.annotate import annotate
from robostral_agent.vlm.backend import (
    DEVICES,
    DTYPES,
    LOC_TOLERANCE_PX,
    BackendError,
    TransformersBackend,
)
from robostral_agent.vlm.frames import Frame
from robostral_agent.vlm.grounding import GroundingConfig

NODE_NAME = 'robostral_agent'
DEFAULT_MODEL = 'models/robostral-tiny'
NOT_ACTIVE = 'NOT_ACTIVE'
QUEUE_FULL = 'QUEUE_FULL'
INTERNAL_ERROR = 'INTERNAL_ERROR'


@dataclass(frozen=True)
class AgentNodeConfig:
    """Every parameter of the node, read once at configure (all are start-up settings)."""

    autostart: bool = True
    model_path: str = DEFAULT_MODEL
    device: str = 'auto'
    dtype: str = 'auto'
    trust_remote_code: bool = False
    constrained_decoding: str = 'auto'
    torch_threads: int = 1
    loc_tolerance_px: float = LOC_TOLERANCE_PX
    camera_pose: tuple[float, ...] = tuple(reference_camera().pose7)
    base_frame: str = BASE_FRAME
    max_frame_skew_ms: float = 50.0
    max_frame_age_s: float = 2.0
    frame_buffer: int = 10
    queue_size: int = 2
    inference_timeout_s: float = 10.0
    max_instruction_chars: int = 500
    center_fraction: float = 0.5
    depth_valid_fraction: float = 0.3
    min_depth_m: float = 0.05
    max_depth_m: float = 5.0
    table_z: float = 0.0
    surface_to_center_m: float = 0.02
    min_grasp_height_m: float = 0.01
    refine_foreground: bool = True
    foreground_height_m: float = 0.008
    top_band_m: float = 0.004
    foreground_margin: float = 0.25
    foreground_reach: float = 1.0
    min_object_pixels: int = 10
    place_height_m: float = 0.10
    inspect_height_m: float = 0.15
    move_to_height_m: float = 0.10
    home_pose: tuple[float, ...] = (0.30, 0.0, 0.35, 1.0, 0.0, 0.0, 0.0)
    tool_orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0)
    publish_debug_image: bool = True
    diagnostics_period_s: float = 1.0

    def grounding(self) -> GroundingConfig:
        return GroundingConfig(
            camera_pose=self.camera_pose,
            base_frame=self.base_frame,
            center_fraction=self.center_fraction,
            min_valid_fraction=self.depth_valid_fraction,
            min_depth_m=self.min_depth_m,
            max_depth_m=self.max_depth_m,
            table_z=self.table_z,
            surface_to_center_m=self.surface_to_center_m,
            min_grasp_height_m=self.min_grasp_height_m,
            refine_foreground=self.refine_foreground,
            foreground_height_m=self.foreground_height_m,
            top_band_m=self.top_band_m,
            foreground_margin=self.foreground_margin,
            foreground_reach=self.foreground_reach,
            min_object_pixels=self.min_object_pixels,
            place_height_m=self.place_height_m,
            inspect_height_m=self.inspect_height_m,
            move_to_height_m=self.move_to_height_m,
            home_pose=self.home_pose,
            tool_orientation=tuple(self.tool_orientation),  # type: ignore[arg-type]
        )

    def model_dir(self) -> Path:
        """``model_path``; a relative path is relative to the package's share directory."""
        path = Path(self.model_path).expanduser()
        return path if path.is_absolute() else paths.share_dir() / path


def _floats(lo: float, hi: float) -> dict[str, Any]:
    return {'floating_point_range': [FloatingPointRange(from_value=lo, to_value=hi)]}


def _ints(lo: int, hi: int) -> dict[str, Any]:
    return {'integer_range': [IntegerRange(from_value=lo, to_value=hi, step=1)]}


# name -> (description, extra descriptor fields); defaults come from AgentNodeConfig.
PARAMETERS: dict[str, tuple[str, dict[str, Any]]] = {
    'autostart': ('configure and activate at start; false: wait for a lifecycle manager', {}),
    'model_path': (
        'model directory (transformers files + robostral.yaml); relative to the share dir',
        {},
    ),
    'device': ('auto (CUDA when available, else CPU), cpu or cuda', {}),
    'dtype': ('auto (bf16/fp16 on CUDA, fp32 on CPU), float32, bfloat16 or float16', {}),
    'trust_remote_code': ('allow Python code shipped in the model directory (unsafe)', {}),
    'constrained_decoding': ('auto (as robostral.yaml says), on or off', {}),
    'torch_threads': ('CPU threads for torch; 0: torch default (all cores)', _ints(0, 256)),
    'loc_tolerance_px': (
        'camera pixels a box edge may be off and still land on the object (confidence)',
        _floats(0.1, 1000.0),
    ),
    'camera_pose': ('[x, y, z, qx, qy, qz, qw] of the camera optical frame in base_frame', {}),
    'base_frame': ('frame of every target', {}),
    'max_frame_skew_ms': ('max stamp difference of a colour/depth pair', _floats(0.0, 1000.0)),
    'max_frame_age_s': ('frames older than this are refused (STALE_FRAME)', _floats(0.0, 60.0)),
    'frame_buffer': ('colour and depth messages kept for pairing', _ints(1, 100)),
    'queue_size': ('instructions waiting behind the running one; more: busy', _ints(1, 100)),
    'inference_timeout_s': ('bound on one model call (MODEL_TIMEOUT)', _floats(0.0, 600.0)),
    'max_instruction_chars': ('longer instructions are refused', _ints(1, 4096)),
    'center_fraction': ('central part of a box whose depth is used', _floats(0.01, 1.0)),
    'depth_valid_fraction': ('min valid depth fraction there, else NO_DEPTH', _floats(0.0, 1.0)),
    'min_depth_m': ('depth below this is invalid', _floats(0.0, 100.0)),
    'max_depth_m': ('depth above this is invalid', _floats(0.0, 100.0)),
    'table_z': ('table top height in base_frame', _floats(-10.0, 10.0)),
    'surface_to_center_m': ('surface-to-centre distance of unknown objects', _floats(0.0, 1.0)),
    'min_grasp_height_m': ('lowest pick target above the table', _floats(0.0, 1.0)),
    'refine_foreground': ('find the object in its box by depth (objects, not bins)', {}),
    'foreground_height_m': ('a point this high above the table is an object', _floats(0.001, 1.0)),
    'top_band_m': ('points this close to its top give an object centre', _floats(0.0005, 0.5)),
    'foreground_margin': ('box growth per side for that search, of its size', _floats(0.0, 2.0)),
    'foreground_reach': (
        'how far past the grown box (box sizes per side) the object found is followed',
        _floats(0.0, 4.0),
    ),
    'min_object_pixels': ('smaller groups of such points are depth noise', _ints(1, 100000)),
    'place_height_m': ('place target height above the table', _floats(0.0, 2.0)),
    'inspect_height_m': ('inspect target height above the object', _floats(0.0, 2.0)),
    'move_to_height_m': ('move_to target height above the object', _floats(0.0, 2.0)),
    'home_pose': ('[x, y, z, qx, qy, qz, qw] of home (the policy home)', {}),
    'tool_orientation': ('[qx, qy, qz, qw] of every target; [1, 0, 0, 0] points down', {}),
    'publish_debug_image': ('publish robostral/agent/debug_image', {}),
    'diagnostics_period_s': ('period of /diagnostics', _floats(0.1, 60.0)),
}
assert set(PARAMETERS) == {f.name for f in fields(AgentNodeConfig)}


def _stamp_now(node: LifecycleNode) -> Stamp:
    return Stamp.from_ns(node.get_clock().now().nanoseconds)


class AgentNode(LifecycleNode):
    """The agent node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._param_errors: list[str] = []
        self.config = self._declare_parameters()
        self._agent: Agent | None = None
        self._state = 'unconfigured'
        self._failure = ''
        self._queue: queue.Queue[tuple[Instruction, float, int]] = queue.Queue(
            maxsize=self.config.queue_size
        )
        self._stop_epoch = 0
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._running = threading.Event()
        self._in_flight = False
        self.stats = {'processed': 0, 'busy': 0, 'stopped': 0, 'queue_high_water': 0}
        self._last_latency_ms = 0.0
        self._last_detail = ''
        self._frames = FrameBuffer(self.config.frame_buffer)
        self._camera_subs: list[Any] = []
        self._proposal_pub: Any = None
        self._debug_pub: Any = None
        # Always there, in every state: stopping and answering must never depend on the model.
        # Their own callback group: under a multi-threaded executor (see main()) instructions
        # are screened, and a stop published, even while a manager's configure is loading.
        operator = MutuallyExclusiveCallbackGroup()
        self._status_pub = self.create_publisher(
            String, 'robostral/instruction_status', qos.RELIABLE_BURST
        )
        self._estop_pub = self.create_publisher(Bool, 'robostral/estop', qos.RELIABLE)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.instruction_sub = self.create_subscription(
            String, 'robostral/instruction', self._on_instruction, qos.RELIABLE_BURST,
            callback_group=operator,
        )  # fmt: skip
        self.create_timer(
            self.config.diagnostics_period_s, self._publish_diagnostics, callback_group=operator
        )
        self._closing = False
        self._autostart_thread: threading.Thread | None = None
        if self.config.autostart:
            self._autostart_thread = threading.Thread(
                target=self._autostart, name='agent-autostart', daemon=True
            )
            self._autostart_thread.start()

    # --- parameters ------------------------------------------------------------------------------

    def _declare_parameters(self) -> AgentNodeConfig:
        """Declare every parameter with its descriptor; bad overrides fail configure, not init."""
        defaults = AgentNodeConfig()
        values: dict[str, Any] = {}
        for name, (description, extra) in PARAMETERS.items():
            default = getattr(defaults, name)
            default = list(default) if isinstance(default, tuple) else default
            descriptor = ParameterDescriptor(description=description, read_only=True, **extra)
            try:
                value = self.declare_parameter(name, default, descriptor).value
            except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
                self._param_errors.append(f'{name}: {exc}')
                value = self.declare_parameter(
                    name, default, descriptor, ignore_override=True
                ).value
            values[name] = tuple(value) if isinstance(default, list) else value
        return AgentNodeConfig(**values)

    def _check_config(self) -> list[str]:
        errors = list(self._param_errors)
        cfg = self.config
        for name, options in (
            ('device', DEVICES),
            ('dtype', DTYPES),
            ('constrained_decoding', ('auto', 'on', 'off')),
        ):
            if getattr(cfg, name) not in options:
                errors.append(f'{name}: {getattr(cfg, name)!r} is not one of {", ".join(options)}')
        for name, length in (('camera_pose', 7), ('home_pose', 7), ('tool_orientation', 4)):
            if len(getattr(cfg, name)) != length:
                errors.append(f'{name}: needs {length} numbers')
        return errors

    # --- lifecycle ---------------------------------------------------------------------------

    def _autostart(self) -> None:
        """Configure then activate (INTERFACES.md section 1), off the executor thread.

        The model load can take minutes; on its own thread it never holds up the executor,
        which keeps screening instructions: a stop is published during the load too.
        """
        try:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS and not self._closing:
                self.trigger_activate()
        except Exception as exc:  # destroyed mid-load at shutdown: nothing left to start
            if not self._closing:
                self.get_logger().error(f'autostart failed: {exc!r}')

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model; any failure is logged and reported, the node stays unconfigured."""
        errors = self._check_config()
        if not errors:
            try:
                grounding = self.config.grounding()
            except GeometryError as exc:
                errors.append(f'grounding parameters: {exc}')
        if errors:
            return self._configure_failed('invalid parameters: ' + '; '.join(errors))
        cfg = self.config
        constrained = {'auto': None, 'on': True, 'off': False}[cfg.constrained_decoding]
        model_dir = cfg.model_dir()
        self.get_logger().info(f'loading model from {model_dir} (device {cfg.device})')
        try:
            backend = TransformersBackend(
                model_dir,
                device=cfg.device,
                dtype=cfg.dtype,
                trust_remote_code=cfg.trust_remote_code,
                constrained=constrained,
                threads=cfg.torch_threads,
                loc_tolerance_px=cfg.loc_tolerance_px,
            )
        except BackendError as exc:
            return self._configure_failed(f'cannot load the model: {exc}')
        for warning in backend.warnings:
            self.get_logger().warning(warning)
        agent_config = AgentConfig(
            grounding=grounding,
            max_frame_age_s=cfg.max_frame_age_s,
            inference_timeout_s=cfg.inference_timeout_s,
        )
        self._agent = Agent(backend, agent_config)
        self._proposal_pub = self.create_lifecycle_publisher(
            String, 'robostral/goal_proposal', qos.RELIABLE
        )
        self._debug_pub = self.create_lifecycle_publisher(Image, 'robostral/agent/debug_image', 2)
        sensor = qos.SENSOR
        self._camera_subs = [
            self.create_subscription(
                Image, 'camera/color/image_raw', self._frames.add_color, sensor
            ),
            self.create_subscription(
                Image, 'camera/aligned_depth_to_color/image_raw', self._frames.add_depth, sensor
            ),
            self.create_subscription(
                CameraInfo, 'camera/color/camera_info', self._frames.set_info, sensor
            ),
        ]
        self._failure = ''
        self._state = 'inactive'
        card = backend.card
        self.get_logger().info(
            f'model {backend.name} ({card.output_format}, constrained {card.constrained}) '
            f'on {backend.device}/{backend.dtype}, weights sha256 {backend.sha256[:16]}...'
        )
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, message: str) -> TransitionCallbackReturn:
        self._failure = message
        self.get_logger().error(f'configure failed: {message}')
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._running.set()
        self._worker = threading.Thread(target=self._work, name='agent-worker', daemon=True)
        self._worker.start()
        self._state = 'active'
        self.get_logger().info('active: processing instructions')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._state = 'inactive'
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._release()
        self._state = 'finalized'
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        self._running.clear()
        if self._worker is not None:
            self._worker.join(timeout=self.config.inference_timeout_s + 2.0)
            if self._worker.is_alive():
                self.get_logger().warning('worker still busy with a model call; left behind')
            self._worker = None
        self._drain(NOT_ACTIVE, 'the agent was deactivated', state='error')

    def _release(self) -> None:
        for sub in self._camera_subs:
            self.destroy_subscription(sub)
        self._camera_subs = []
        for pub in (self._proposal_pub, self._debug_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._proposal_pub = self._debug_pub = None
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    def destroy_node(self) -> None:
        self._closing = True
        self._stop_worker()
        self._release()
        super().destroy_node()

    # --- instructions ------------------------------------------------------------------------

    def _status(
        self, instruction_id: str, state: str, detail: str = '', latency_ms: float = 0.0,
        proposal_id: str = '',
    ) -> None:  # fmt: skip
        status = InstructionStatus(instruction_id, state, proposal_id, detail, latency_ms)
        self._status_pub.publish(String(data=encode(status)))

    def _on_instruction(self, msg: String) -> None:
        """Screen in the callback; stop at once; queue the rest (bounded)."""
        t0 = time.perf_counter()
        screened = screen(msg.data, self.config.max_instruction_chars)
        if screened.state == 'stopped':
            self._estop_pub.publish(Bool(data=True))
            with self._lock:
                self._stop_epoch += 1
                self.stats['stopped'] += 1
            self.get_logger().warning(f'stop intent in instruction {screened.instruction_id!r}')
            self._drain(STOP_INTENT, 'dropped by a stop instruction')
            self._status(screened.instruction_id, 'stopped', screened.detail, _ms_since(t0))
            return
        if screened.state == 'rejected_input' or screened.instruction is None:
            self.get_logger().warning(
                f'instruction refused: {screened.detail}', throttle_duration_sec=2.0
            )
            self._status(screened.instruction_id, 'rejected_input', screened.detail, _ms_since(t0))
            return
        if self._state != 'active':
            detail = f'{NOT_ACTIVE}: the agent is {self._state}'
            if self._failure:
                detail += f' ({self._failure})'
            self._status(screened.instruction_id, 'error', detail[:1000], _ms_since(t0))
            return
        try:
            self._queue.put_nowait((screened.instruction, t0, self._stop_epoch))
        except queue.Full:
            self.stats['busy'] += 1
            detail = f'{QUEUE_FULL}: one instruction running, {self._queue.maxsize} waiting'
            self._status(screened.instruction_id, 'busy', detail, _ms_since(t0))
            return
        depth = self._queue.qsize() + int(self._in_flight)
        self.stats['queue_high_water'] = max(self.stats['queue_high_water'], depth)
        self._status(screened.instruction_id, 'received', '', _ms_since(t0))

    def _drain(self, reason: str, message: str, state: str = 'stopped') -> None:
        """Answer and drop every waiting instruction (after a stop, or on deactivate)."""
        while True:
            try:
                instruction, t0, _ = self._queue.get_nowait()
            except queue.Empty:
                return
            self._status(instruction.id, state, f'{reason}: {message}', _ms_since(t0))

    def _work(self) -> None:
        """The worker thread: one instruction at a time, off the executor."""
        while self._running.is_set():
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self._in_flight = True
            try:
                self._process(*item)
            except Exception as exc:  # the worker must survive anything an instruction does
                self.get_logger().error(f'instruction {item[0].id!r} failed: {exc!r}')
                self._status(item[0].id, 'error', f'{INTERNAL_ERROR}: {exc!r}'[:1000])
            finally:
                self._in_flight = False

    def _process(self, instruction: Instruction, t0: float, epoch: int) -> None:
        agent = self._agent
        if agent is None:
            return
        frame_holder: list[Frame] = []

        def get_frame() -> Frame:
            frame_holder.append(self._frames.frame(self.config.max_frame_skew_ms * 1e-3))
            return frame_holder[-1]

        outcome = agent.plan(instruction, get_frame, _stamp_now(self))
        if self._stop_epoch != epoch:
            detail = f'{STOP_INTENT}: a stop arrived while it was planned; proposal dropped'
            self._status(instruction.id, 'stopped', detail, _ms_since(t0))
            return
        t_pub = time.perf_counter()
        proposal_id = ''
        if outcome.proposal is not None and self._proposal_pub is not None:
            self._proposal_pub.publish(String(data=encode(outcome.proposal)))
            proposal_id = outcome.proposal.id
        outcome.timings_ms['publish'] = _ms_since(t_pub)
        latency = _ms_since(t0)
        detail = '; '.join(p for p in (outcome.detail, format_timings(outcome.timings_ms)) if p)
        self._status(instruction.id, outcome.state, detail[:2000], latency, proposal_id)
        self.stats['processed'] += 1
        self._last_latency_ms, self._last_detail = latency, outcome.detail
        if outcome.state != 'proposed':
            self.get_logger().warning(
                f'instruction {instruction.id!r}: {outcome.state}: {outcome.detail}',
                throttle_duration_sec=2.0,
            )
        if frame_holder and self.config.publish_debug_image and self._debug_pub is not None:
            self._publish_debug(frame_holder[-1], outcome)

    def _publish_debug(self, frame: Frame, outcome: Outcome) -> None:
        image = annotate(frame.color, outcome)
        self._debug_pub.publish(numpy_to_image(image, 'rgb8', frame.stamp, frame.frame_id))

    # --- diagnostics -------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(
            name=f'{self.get_fully_qualified_name()}: agent', hardware_id=NODE_NAME
        )
        agent = self._agent
        if self._state == 'active':
            status.level, status.message = DiagnosticStatus.OK, 'active'
        elif self._failure:
            status.level, status.message = DiagnosticStatus.ERROR, self._failure[:200]
        else:
            status.level, status.message = DiagnosticStatus.WARN, self._state
        colors, depths, info = self._frames.counts()
        values = {
            'state': self._state,
            'model': agent.backend.name if agent else '',
            'sha256': agent.backend.sha256 if agent else '',
            'device': f'{agent.backend.device}/{agent.backend.dtype}' if agent else '',
            'output_format': agent.backend.card.output_format if agent else '',
            'last_latency_ms': f'{self._last_latency_ms:.1f}',
            'last_detail': self._last_detail[:200],
            'queue': str(self._queue.qsize()),
            'queue_size': str(self._queue.maxsize),
            'in_flight': str(self._in_flight).lower(),
            'buffered_frames': f'{colors} colour, {depths} depth, camera_info {info}',
            **{k: str(v) for k, v in self.stats.items()},
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def main(args: list[str] | None = None) -> None:
    """Console script ``agent_node``."""
    rclpy.init(args=args)
    node = None
    try:
        node = AgentNode()
        # autostart loads the model on its own thread; a manager's configure runs on the
        # executor, so then a second executor thread keeps stop intents flowing (~3 ms slower).
        managed = not node.config.autostart
        rclpy.spin(node, MultiThreadedExecutor(2) if managed else SingleThreadedExecutor())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
