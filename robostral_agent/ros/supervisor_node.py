"""supervisor_node: the independent, fail-closed gate between goal proposals and motion.

A thin ROS shell around :class:`robostral_agent.safety.supervisor.Supervisor`: each callback
converts its message, calls the core with the node clock's time, and publishes what the core
returns (verdicts, approved tasks and goals) after the core has written them to the audit
log. Topics and services are those of INTERFACES.md section 2, all relative.

Parameters (read once at start; read-only):

* ``policy_file``: the safety policy YAML (default: the package's
  ``config/safety_policy.yaml``). Missing or invalid: the node runs, ``NOT_READY`` for
  everything, the reason in the log and on /diagnostics.
* ``state_file``: the persisted latch (default
  ``$ROS_HOME/robostral/<namespace>/supervisor_state.json``, ``ROS_HOME`` defaulting to
  ``~/.ros``; the namespace keeps cells on one machine apart).
* ``audit_log``: the hash-chained audit log (default ``.../<namespace>/audit.jsonl``).
* ``safety_ok_rate_hz``: how often ``robostral/safety_ok`` is repeated (default 50.0, range
  20.0 to 1000.0: the contract's floor is 20 Hz, but a stream at exactly the floor reads
  just under it whenever a tick is late, and a consumer that stops on 100 ms of silence,
  as the simulator's executor does, aborts a plan after two late ticks at 20 Hz).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from robostral_agent.contract import Stamp, Verdict, encode, peek_ids
from robostral_agent.paths import config_file
from robostral_agent.ros import qos
from robostral_agent.ros.conversions import msg_to_stamp, pose_to_target, target_to_pose
from robostral_agent.ros.supervisor_markers import diagnostic_status, safety_markers
from robostral_agent.safety.supervisor import Outcome, Supervisor

NODE_NAME: Final = 'safety_supervisor'
MIN_SAFETY_OK_RATE_HZ: Final = 20.0
DEFAULT_SAFETY_OK_RATE_HZ: Final = 50.0
MAX_SAFETY_OK_RATE_HZ: Final = 1000.0
DIAGNOSTICS_PERIOD_S: Final = 1.0
MARKERS_PERIOD_S: Final = 0.2  # markers follow decisions at most 5 times a second
LOG_THROTTLE_S: Final = 1.0

# Proposals in and decisions out: a burst must be judged and answered, not overwritten.
# 1000 messages (about 1 MB) hold 5 s of a 200 Hz flood while the node catches up; older
# proposals then come out as STALE_PROPOSAL verdicts instead of silently dropped samples.
DECISION_QOS: Final = qos.reliable(1000)


@dataclass(frozen=True)
class SupervisorNodeConfig:
    policy_file: str
    state_file: str
    audit_log: str
    safety_ok_rate_hz: float


def default_data_dir(namespace: str) -> Path:
    """``$ROS_HOME/robostral/<namespace>`` (``~/.ros`` without ROS_HOME), writable by the
    user and apart per namespace, so two cells on one machine never share a log."""
    ros_home = Path(os.environ.get('ROS_HOME') or Path.home() / '.ros')
    return ros_home / 'robostral' / namespace.strip('/')


def _shipped_policy() -> str:
    try:
        return str(config_file('safety_policy.yaml'))
    except FileNotFoundError:
        return ''  # no share directory: the node reports NOT_READY and says why


def _now_ns(node: Node) -> int:
    return node.get_clock().now().nanoseconds


class SupervisorNode(Node):
    """ROS facade of the supervisor core (one core object; callbacks are serialised)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.config = self._read_parameters()
        log = self.get_logger()
        self._core = Supervisor.open(
            self.config.policy_file, self.config.state_file, self.config.audit_log, _now_ns(self)
        )
        status = self._core.status()
        if status.state == 'not_ready':
            log.error(f'NOT READY, every proposal is rejected: {status.reason}')
        else:
            log.info(
                f'policy {self.config.policy_file} (version {status.policy_version[:12]}), '
                f'audit log {self.config.audit_log}: {status.state} ({status.reason})'
            )
        self._verdict_pub = self.create_publisher(String, 'robostral/verdict', DECISION_QOS)
        self._task_pub = self.create_publisher(String, 'robostral/approved_task', DECISION_QOS)
        self._goal_pub = self.create_publisher(
            PoseStamped, 'robostral/approved_goal', DECISION_QOS
        )
        self._ok_pub = self.create_publisher(Bool, 'robostral/safety_ok', qos.RELIABLE)
        self._markers_pub = self.create_publisher(
            MarkerArray, 'robostral/safety_markers', qos.LATCHED
        )
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(
            String, 'robostral/goal_proposal', self._on_proposal, DECISION_QOS
        )
        self.create_subscription(Bool, 'robostral/estop', self._on_estop, qos.RELIABLE)
        self.create_subscription(
            String, 'robostral/operator_decision', self._on_decision, qos.RELIABLE
        )
        self.create_subscription(PoseStamped, 'robostral/tool_pose', self._on_tool_pose, 10)
        self.create_service(Trigger, 'robostral/reset', self._on_reset)
        self.create_timer(1.0 / self.config.safety_ok_rate_hz, self._on_tick)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.create_timer(MARKERS_PERIOD_S, self._flush_markers)
        self._markers_dirty = True
        self._flush_markers()
        self._publish_safety_ok()
        self._publish_diagnostics()

    # --- Parameters -------------------------------------------------------------------------

    def _declare(self, name: str, default: Any, descriptor: ParameterDescriptor) -> Any:
        """Declare one start-up parameter; a bad override is logged and the default used."""
        try:
            return self.declare_parameter(name, default, descriptor).value
        except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
            self.get_logger().error(f'parameter {name}: {exc}; using the default {default!r}')
            return self.declare_parameter(name, default, descriptor, ignore_override=True).value

    def _read_parameters(self) -> SupervisorNodeConfig:
        data_dir = default_data_dir(self.get_namespace())
        text = ParameterType.PARAMETER_STRING

        def path(description: str) -> ParameterDescriptor:
            return ParameterDescriptor(type=text, description=description, read_only=True)

        rate_range = FloatingPointRange(
            from_value=MIN_SAFETY_OK_RATE_HZ, to_value=MAX_SAFETY_OK_RATE_HZ, step=0.0
        )
        return SupervisorNodeConfig(
            policy_file=self._declare(
                'policy_file',
                _shipped_policy(),
                path('Safety policy YAML (version 1); missing or invalid: NOT_READY.'),
            ),
            state_file=self._declare(
                'state_file',
                str(data_dir / 'supervisor_state.json'),
                path('Persisted latch state; missing or unreadable: start latched.'),
            ),
            audit_log=self._declare(
                'audit_log',
                str(data_dir / 'audit.jsonl'),
                path('Hash-chained JSON-lines audit log (robostral audit verify FILE).'),
            ),
            safety_ok_rate_hz=self._declare(
                'safety_ok_rate_hz',
                DEFAULT_SAFETY_OK_RATE_HZ,
                ParameterDescriptor(
                    type=ParameterType.PARAMETER_DOUBLE,
                    description='How often robostral/safety_ok is published (Hz).',
                    read_only=True,
                    floating_point_range=[rate_range],
                ),
            ),
        )

    # --- Publishing ---------------------------------------------------------------------------

    def _publish_safety_ok(self, value: bool | None = None) -> None:
        ok = self._core.safety_ok if value is None else value
        self._ok_pub.publish(Bool(data=ok))

    def _publish(self, outcome: Outcome) -> None:
        """Verdicts first, then each approved plan and its goals (already audited)."""
        log = self.get_logger()
        for verdict in outcome.verdicts:
            self._verdict_pub.publish(String(data=encode(verdict)))
            self._log_verdict(verdict)
        for plan in outcome.approved:
            self._task_pub.publish(String(data=plan.text))
            for step in plan.proposal.steps:
                self._goal_pub.publish(target_to_pose(step.target, plan.proposal.stamp))
        for note in outcome.notes:
            log.info(note)
        if outcome.verdicts:
            self._markers_dirty = True

    def _log_verdict(self, verdict: Verdict) -> None:
        log = self.get_logger()
        if verdict.state == 'rejected':
            log.warning(
                f'rejected {verdict.proposal_id or "<unreadable>"}: '
                f'{", ".join(verdict.reasons)}: {verdict.detail}',
                throttle_duration_sec=LOG_THROTTLE_S,
            )
        else:
            log.info(
                f'{verdict.state} {verdict.proposal_id}', throttle_duration_sec=LOG_THROTTLE_S
            )

    def _flush_markers(self) -> None:
        if not self._markers_dirty:
            return
        self._markers_dirty = False
        policy = self._core.policy.policy if self._core.policy is not None else None
        stamp = self.get_clock().now().to_msg()
        self._markers_pub.publish(safety_markers(policy, self._core.last_goal, stamp))

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [diagnostic_status(self._core.status(), self.get_fully_qualified_name())]
        self._diag_pub.publish(msg)

    # --- Callbacks ------------------------------------------------------------------------------

    def _guard(self, what: str, call: Callable[[], None]) -> bool:
        """Run a callback body; a bug is logged, never allowed to take the gate down."""
        try:
            call()
        except Exception as exc:  # the node must outlive any single message
            self.get_logger().error(f'{what} failed: {type(exc).__name__}: {exc}')
            return False
        return True

    def _on_proposal(self, msg: String) -> None:
        text = msg.data

        def handle() -> None:
            self._publish(self._core.propose(text, _now_ns(self)))

        if not self._guard('proposal', handle):
            proposal_id, instruction_id = peek_ids(text)
            verdict = Verdict(
                proposal_id=proposal_id,
                instruction_id=instruction_id,
                state='rejected',
                reasons=('NOT_READY',),
                detail='internal error while judging this proposal (see the supervisor log)',
                policy_version=self._core.policy_version,
                latched=not self._core.safety_ok,
                stamp=Stamp.from_ns(_now_ns(self)),
            )
            self._verdict_pub.publish(String(data=encode(verdict)))

    def _on_estop(self, msg: Bool) -> None:
        pressed = bool(msg.data)
        if pressed:
            self._publish_safety_ok(False)  # at once: before the core persists anything

        def handle() -> None:
            self._publish(self._core.estop(pressed, _now_ns(self)))

        self._guard('e-stop', handle)
        self._publish_safety_ok()
        self._publish_diagnostics()

    def _on_decision(self, msg: String) -> None:
        def handle() -> None:
            self._publish(self._core.decide(msg.data, _now_ns(self)))

        self._guard('operator decision', handle)

    def _on_tool_pose(self, msg: PoseStamped) -> None:
        def handle() -> None:
            stamp_ns = msg_to_stamp(msg.header.stamp).to_ns()
            why = self._core.update_tool_pose(pose_to_target(msg), stamp_ns)
            if why:
                self.get_logger().warning(why, throttle_duration_sec=5.0)

        self._guard('tool pose', handle)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = False, 'internal error (see the supervisor log)'

        def handle() -> None:
            result = self._core.reset(_now_ns(self))
            response.success, response.message = result.success, result.message
            if result.success:
                self.get_logger().info(f'reset: {result.message}')
            else:
                self.get_logger().warning(f'reset refused: {result.message}')

        self._guard('reset', handle)
        self._publish_safety_ok()
        self._publish_diagnostics()
        return response

    def _on_tick(self) -> None:
        self._guard('tick', lambda: self._publish(self._core.tick(_now_ns(self))))
        self._publish_safety_ok()

    def close(self) -> None:
        """Record the shutdown in the audit log and release it."""
        self._core.close(_now_ns(self))


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node: SupervisorNode | None = None
    try:
        node = SupervisorNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
