"""The operator's side of the wires: one client node for the CLI, the demo and the evaluation.

:class:`CellClient` owns a private rclpy context (no global state, no signal handlers: Ctrl-C
stays a plain ``KeyboardInterrupt`` for the caller), one node with a unique name, and an
executor spinning on a background thread. Callbacks only decode and append to a journal
under a condition variable; the caller's thread publishes (instructions, e-stop, operator
decisions, scenes), calls services, and waits on the journal with :meth:`CellClient.wait`,
which always has a timeout. Messages that do not decode are counted in ``bad`` with the
reason, never raised: a stranger's garbage on a topic must not end an operator command.

It speaks only the contract of INTERFACES.md (relative names under ``namespace``) plus the
simulator's ``sim/*`` topics and services (ground truth, scenes), which exist only in a
simulated cell.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from robostral_agent.contract import (
    ContractError,
    ExecutionResult,
    GoalProposal,
    Instruction,
    InstructionStatus,
    OperatorDecision,
    Scene,
    Verdict,
    decode_execution_result,
    decode_goal_proposal,
    decode_instruction_status,
    decode_verdict,
    encode,
    load_json,
    new_id,
)
from robostral_agent.ros import qos
from robostral_agent.ros.conversions import ConversionError, image_to_numpy, msg_to_stamp
from robostral_agent.sim.ground_truth import Snapshot, decode_snapshot

T = TypeVar('T')

JOURNAL_LIMIT: Final = 5000  # messages kept per kind (a long `status --watch` stays bounded)
SPIN_PERIOD_S: Final = 0.05
# /diagnostics values whose highest value over a run is kept (CellClient.peaks): the
# simulator's longest wait between two safety_ok messages, per diagnostics period.
PEAK_KEYS: Final = ('safety_ok_max_gap_ms',)


class ClientError(RuntimeError):
    """A wait timed out or a service failed; the message says what was awaited."""


@dataclass(frozen=True)
class Received(Generic[T]):
    """A decoded message and when it arrived (``time.monotonic()``)."""

    t: float
    msg: T


@dataclass(frozen=True)
class Truth:
    """A ground-truth snapshot with the stamp the simulator put on it (node clock, ns)."""

    snapshot: Snapshot
    stamp_ns: int


@dataclass(frozen=True)
class DebugFrame:
    """An annotated frame from ``robostral/agent/debug_image`` (RGB, uint8)."""

    stamp_ns: int
    image: np.ndarray


def _level(value: bytes | int) -> int:
    """DiagnosticStatus.level arrives as a one-byte ``bytes`` in rclpy."""
    return value[0] if isinstance(value, bytes | bytearray) else int(value)


def normalize_namespace(namespace: str) -> str:
    """``''``/``'/'`` -> ``''``; ``'cell1'`` -> ``'/cell1'``; no trailing slash."""
    ns = namespace.strip().strip('/')
    return f'/{ns}' if ns else ''


def _ns_of(namespace: str) -> str:
    return normalize_namespace(namespace) or '/'


class CellClient:
    """See the module docstring. Use as a context manager (``with CellClient(ns) as c``)."""

    def __init__(
        self,
        namespace: str = '',
        *,
        domain_id: int | None = None,
        name: str = 'robostral_cli',
        camera_info: bool = False,
        debug_images: bool = False,
        sim: bool = False,
    ) -> None:
        self.namespace = normalize_namespace(namespace)
        self.journal_lock = threading.Condition()
        self.statuses: deque[Received[InstructionStatus]] = deque(maxlen=JOURNAL_LIMIT)
        self.proposals: dict[str, Received[GoalProposal]] = {}
        self.verdicts: deque[Received[Verdict]] = deque(maxlen=JOURNAL_LIMIT)
        self.results: deque[Received[ExecutionResult]] = deque(maxlen=JOURNAL_LIMIT)
        self.truths: deque[Received[Truth]] = deque(maxlen=50)
        self.diagnostics: dict[str, Received[dict[str, Any]]] = {}
        self.safety_ok: Received[bool] | None = None
        self.camera_stamps: deque[int] = deque(maxlen=50)
        self.debug_frames: deque[Received[DebugFrame]] = deque(maxlen=50)
        self.bad: deque[str] = deque(maxlen=100)
        self.verdict_count = 0  # every verdict heard (the deque above is bounded)
        self.peaks: dict[str, float] = {}  # '<status name>/<key>' -> highest value heard

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        try:
            self.node = rclpy.create_node(
                f'{name}_{uuid.uuid4().hex[:8]}',
                namespace=_ns_of(self.namespace),
                context=self.context,
                start_parameter_services=False,
            )
            self._create_endpoints(camera_info, debug_images, sim)
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
        except BaseException:
            rclpy.try_shutdown(context=self.context)
            raise
        self._stop = threading.Event()
        self._spinner = threading.Thread(target=self._spin, name='cell-client', daemon=True)
        self._spinner.start()

    # --- set-up and tear-down ----------------------------------------------------------------

    def _create_endpoints(self, camera_info: bool, debug_images: bool, sim: bool) -> None:
        n = self.node
        self.instruction_pub = n.create_publisher(String, 'robostral/instruction', qos.RELIABLE)
        self.estop_pub = n.create_publisher(Bool, 'robostral/estop', qos.RELIABLE)
        self.decision_pub = n.create_publisher(String, 'robostral/operator_decision', qos.RELIABLE)
        self.reset_client = n.create_client(Trigger, 'robostral/reset')
        sub = n.create_subscription
        burst = qos.RELIABLE_BURST  # what the client journals: a burst must not be dropped
        self.status_sub = sub(String, 'robostral/instruction_status', self._on_status, burst)
        self.proposal_sub = sub(String, 'robostral/goal_proposal', self._on_proposal, burst)
        self.verdict_sub = sub(String, 'robostral/verdict', self._on_verdict, burst)
        self.result_sub = sub(String, 'robostral/execution_result', self._on_result, burst)
        self.safety_sub = sub(Bool, 'robostral/safety_ok', self._on_safety_ok, qos.BEST_EFFORT)
        n.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, burst)
        if camera_info:
            n.create_subscription(
                CameraInfo, 'camera/color/camera_info', self._on_camera_info,
                qos.SENSOR,
            )  # fmt: skip
        if debug_images:
            n.create_subscription(
                Image, 'robostral/agent/debug_image', self._on_debug_image, qos.RELIABLE
            )
        self.scene_pub = None
        self.sim_reset_client = self.truth_client = None
        if sim:
            self.scene_pub = n.create_publisher(String, 'sim/set_scene', qos.RELIABLE)
            self.sim_reset_client = n.create_client(Trigger, 'sim/reset')
            self.truth_client = n.create_client(Trigger, 'sim/get_ground_truth')
            n.create_subscription(String, 'sim/ground_truth', self._on_truth, qos.LATCHED)

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=SPIN_PERIOD_S)
            except Exception as exc:  # a shutdown race or a callback bug: note it, go on
                if self._stop.is_set() or not self.context.ok():
                    return
                self._note_bad(f'executor: {exc!r}')

    def close(self) -> None:
        """Stop spinning, destroy the node, shut the private context down (idempotent)."""
        self._stop.set()
        try:  # every step runs even when Ctrl-C lands in the middle of one
            if self._spinner.is_alive():
                self._spinner.join(timeout=5.0)
        finally:
            try:
                self.executor.shutdown(timeout_sec=1.0)
                self.node.destroy_node()
            finally:
                rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> CellClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- callbacks (executor thread): decode, append, notify ---------------------------------

    def _note_bad(self, text: str) -> None:
        with self.journal_lock:
            self.bad.append(text)

    def _add(self, append: Callable[[], None]) -> None:
        with self.journal_lock:
            append()
            self.journal_lock.notify_all()

    def _decoded(self, what: str, decode: Callable[[str], T], data: str) -> T | None:
        try:
            return decode(data)
        except ContractError as exc:
            self._note_bad(f'{what}: {exc}')
            return None

    def _on_status(self, msg: String) -> None:
        status = self._decoded('instruction_status', decode_instruction_status, msg.data)
        if status is not None:
            self._add(lambda: self.statuses.append(Received(time.monotonic(), status)))

    def _on_proposal(self, msg: String) -> None:
        proposal = self._decoded('goal_proposal', decode_goal_proposal, msg.data)
        if proposal is not None:

            def add() -> None:
                if len(self.proposals) >= JOURNAL_LIMIT:
                    self.proposals.pop(next(iter(self.proposals)))
                self.proposals[proposal.id] = Received(time.monotonic(), proposal)

            self._add(add)

    def _on_verdict(self, msg: String) -> None:
        verdict = self._decoded('verdict', decode_verdict, msg.data)
        if verdict is not None:

            def add() -> None:
                self.verdicts.append(Received(time.monotonic(), verdict))
                self.verdict_count += 1

            self._add(add)

    def _on_result(self, msg: String) -> None:
        result = self._decoded('execution_result', decode_execution_result, msg.data)
        if result is not None:
            self._add(lambda: self.results.append(Received(time.monotonic(), result)))

    def _on_truth(self, msg: String) -> None:
        try:
            snapshot = decode_snapshot(msg.data)
            stamp = load_json(msg.data).get('stamp') or {}
            stamp_ns = int(stamp.get('sec', 0)) * 1_000_000_000 + int(stamp.get('nanosec', 0))
        except (ContractError, TypeError, ValueError, AttributeError) as exc:
            self._note_bad(f'sim/ground_truth: {exc}')
            return
        truth = Truth(snapshot, stamp_ns)
        self._add(lambda: self.truths.append(Received(time.monotonic(), truth)))

    def _on_safety_ok(self, msg: Bool) -> None:
        value = bool(msg.data)

        def add() -> None:
            self.safety_ok = Received(time.monotonic(), value)

        self._add(add)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()

        def add() -> None:
            for status in msg.status:
                for kv in status.values:
                    if kv.key in PEAK_KEYS:
                        with contextlib.suppress(ValueError):
                            key = f'{status.name}/{kv.key}'
                            self.peaks[key] = max(self.peaks.get(key, 0.0), float(kv.value))
                self.diagnostics[status.name] = Received(
                    now,
                    {
                        'level': _level(status.level),
                        'message': status.message,
                        'values': {kv.key: kv.value for kv in status.values},
                    },
                )

        self._add(add)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        stamp = msg_to_stamp(msg.header.stamp).to_ns()
        self._add(lambda: self.camera_stamps.append(stamp))

    def _on_debug_image(self, msg: Image) -> None:
        try:
            image = np.array(image_to_numpy(msg))  # a copy: the message buffer is reused
        except ConversionError as exc:
            self._note_bad(f'debug_image: {exc}')
            return
        frame = DebugFrame(msg_to_stamp(msg.header.stamp).to_ns(), image)
        self._add(lambda: self.debug_frames.append(Received(time.monotonic(), frame)))

    # --- waiting -----------------------------------------------------------------------------

    def wait(
        self,
        predicate: Callable[[], Any],
        timeout_s: float,
        poll: Callable[[], None] | None = None,
    ) -> Any:
        """Wait until ``predicate()`` (evaluated under the journal lock) is truthy.

        Returns its value, or ``None`` at the timeout. ``poll`` runs about every 0.2 s
        outside the lock and may raise (e.g. a child process that died).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self.journal_lock:
                step_end = min(deadline, time.monotonic() + 0.2)
                value = self.journal_lock.wait_for(
                    predicate, timeout=max(0.0, step_end - time.monotonic())
                )
            if value:
                return value
            if poll is not None:
                poll()
            if time.monotonic() >= deadline:
                with self.journal_lock:
                    return predicate() or None

    # --- journal queries (call inside wait predicates or with the lock held) -----------------

    def status_for(
        self, instruction_id: str, final: bool = True
    ) -> Received[InstructionStatus] | None:
        """The latest status of an instruction (``final``: not ``received``)."""
        for item in reversed(self.statuses):
            status = item.msg
            if status.instruction_id == instruction_id and not (
                final and status.state == 'received'
            ):
                return item
        return None

    def verdict_for(self, proposal_id: str, final: bool = True) -> Received[Verdict] | None:
        """The latest verdict on a proposal (``final``: not ``pending_approval``)."""
        for item in reversed(self.verdicts):
            verdict = item.msg
            if verdict.proposal_id == proposal_id and not (
                final and verdict.state == 'pending_approval'
            ):
                return item
        return None

    def result_for(self, proposal_id: str) -> Received[ExecutionResult] | None:
        return next((r for r in reversed(self.results) if r.msg.proposal_id == proposal_id), None)

    def latest_truth(self) -> Truth | None:
        return self.truths[-1].msg if self.truths else None

    def node_status(self, node: str) -> Received[dict[str, Any]] | None:
        """The latest /diagnostics status of one of this cell's nodes (by node name).

        The agent and the supervisor name their status after their fully qualified name,
        so cells in other namespaces of the same domain are told apart.
        """
        fqn = f'{self.namespace}/{node}'
        for name, item in self.diagnostics.items():
            if name == fqn or name.startswith(f'{fqn}:'):
                return item
        return None

    def snapshot_journal(self) -> dict[str, Any]:
        """A consistent copy of the journal's scalars, for printing."""
        with self.journal_lock:
            return {
                'safety_ok': self.safety_ok,
                'diagnostics': dict(self.diagnostics),
                'verdicts': list(self.verdicts),
                'bad': list(self.bad),
            }

    # --- commands (caller's thread) --------------------------------------------------------------

    def send_instruction(
        self, text: str, operator: str = '', instruction_id: str = ''
    ) -> tuple[Instruction, float]:
        """Publish an instruction as JSON; ``(instruction, monotonic time of the publish)``."""
        instruction = Instruction(instruction_id or new_id(), text, operator)
        t = time.monotonic()
        self.instruction_pub.publish(String(data=encode(instruction)))
        return instruction, t

    def estop(self, pressed: bool) -> None:
        self.estop_pub.publish(Bool(data=pressed))

    def decide(self, proposal_id: str, approve: bool, operator: str = '') -> None:
        decision = OperatorDecision(proposal_id, approve, operator)
        self.decision_pub.publish(String(data=encode(decision)))

    def set_scene(self, scene: Scene) -> None:
        if self.scene_pub is None:
            raise ClientError('this client was made without the simulator endpoints (sim=True)')
        self.scene_pub.publish(String(data=encode(scene)))

    def call(self, client: Any, timeout_s: float, what: str) -> Trigger.Response:
        """Call a ``Trigger`` service; :class:`ClientError` when it is absent or silent."""
        if client is None:
            raise ClientError(f'{what}: no such service in this client')
        deadline = time.monotonic() + timeout_s
        while not client.service_is_ready():
            if time.monotonic() >= deadline:
                raise ClientError(
                    f'{what}: the service {client.srv_name} is not available '
                    f'(namespace {self.namespace or "/"}, waited {timeout_s:.0f} s)'
                )
            time.sleep(0.05)
        done = threading.Event()
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(max(0.0, deadline - time.monotonic())):
            client.remove_pending_request(future)
            raise ClientError(f'{what}: no answer from {client.srv_name} within {timeout_s} s')
        response = future.result()
        if response is None:
            raise ClientError(
                f'{what}: the call to {client.srv_name} failed: {future.exception()}'
            )
        return response

    def reset(self, timeout_s: float = 10.0) -> Trigger.Response:
        """Call ``robostral/reset`` (clears the supervisor's latch when allowed)."""
        return self.call(self.reset_client, timeout_s, 'reset')

    def get_truth(self, timeout_s: float = 10.0) -> Truth:
        """A fresh ground-truth snapshot through ``sim/get_ground_truth``."""
        response = self.call(self.truth_client, timeout_s, 'ground truth')
        try:
            stamp = load_json(response.message).get('stamp') or {}
            return Truth(
                decode_snapshot(response.message),
                int(stamp.get('sec', 0)) * 1_000_000_000 + int(stamp.get('nanosec', 0)),
            )
        except (ContractError, TypeError, ValueError, AttributeError) as exc:
            raise ClientError(f'ground truth: unreadable answer: {exc}') from exc

    # --- matching ----------------------------------------------------------------------------

    def subscribers_matched(self, publishers: Iterable[Any]) -> bool:
        """Every publisher reaches at least one subscriber (DDS discovery is done)."""
        return all(p.get_subscription_count() > 0 for p in publishers)

    def publishers_matched(self, subscriptions: Iterable[Any]) -> bool:
        """Every subscription hears at least one publisher (nothing it says is missed)."""
        return all(s.get_publisher_count() > 0 for s in subscriptions)
