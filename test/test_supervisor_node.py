"""supervisor_node over DDS: a private context, a unique namespace, a peer node that talks
to it through the real topics and the real reset service."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from helpers import spin_until
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from robostral_agent.contract import decode_verdict
from robostral_agent.paths import config_file
from robostral_agent.ros.supervisor_node import SupervisorNode, default_data_dir
from robostral_agent.safety import examples as ex
from robostral_agent.safety.audit import verify_file

pytestmark = pytest.mark.ros

REFERENCE = yaml.safe_load(config_file('safety_policy.yaml').read_text())
TIMEOUT_S = 10.0
LATCHED_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


class Rig:
    """The supervisor node plus a peer node in one private context and executor."""

    def __init__(self, context: Any, namespace: str, tmp_path: Path, **overrides: Any) -> None:
        self.context, self.namespace, self.tmp = context, namespace, tmp_path
        self.executor = SingleThreadedExecutor(context=context)
        self.peer = rclpy.create_node('peer', namespace=namespace, context=context)
        self.executor.add_node(self.peer)
        self.verdicts: list[dict[str, Any]] = []
        self.tasks: list[str] = []
        self.goals: list[PoseStamped] = []
        self.safety: list[bool] = []
        self.diagnostics: list[DiagnosticStatus] = []
        peer = self.peer
        peer.create_subscription(
            String, 'robostral/verdict', lambda m: self.verdicts.append(json.loads(m.data)), 100
        )
        peer.create_subscription(
            String, 'robostral/approved_task', lambda m: self.tasks.append(m.data), 100
        )
        peer.create_subscription(PoseStamped, 'robostral/approved_goal', self.goals.append, 100)
        peer.create_subscription(
            Bool, 'robostral/safety_ok', lambda m: self.safety.append(m.data), 100
        )
        peer.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.proposals = peer.create_publisher(String, 'robostral/goal_proposal', 100)
        self.estop = peer.create_publisher(Bool, 'robostral/estop', 10)
        self.decisions = peer.create_publisher(String, 'robostral/operator_decision', 10)
        self.tool_pose = peer.create_publisher(PoseStamped, 'robostral/tool_pose', 10)
        self.reset_client = peer.create_client(Trigger, 'robostral/reset')
        self.node: SupervisorNode | None = None
        self.start(**overrides)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.diagnostics += [s for s in msg.status if s.name.startswith(self.namespace + '/')]

    def start(self, **overrides: Any) -> None:
        params = {
            'state_file': str(self.tmp / 'state.json'),
            'audit_log': str(self.tmp / 'audit.jsonl'),
            **overrides,
        }
        self.node = SupervisorNode(
            context=self.context,
            namespace=self.namespace,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        )
        self.executor.add_node(self.node)
        matched = self.spin(
            lambda: (
                self.proposals.get_subscription_count() > 0
                and self.estop.get_subscription_count() > 0
                and self.decisions.get_subscription_count() > 0
                and self.peer.count_publishers(f'{self.namespace}/robostral/verdict') > 0
                and self.peer.count_publishers(f'{self.namespace}/robostral/approved_goal') > 0
                and self.reset_client.service_is_ready()
            )
        )
        assert matched, 'the supervisor and the peer did not discover each other'

    def stop(self) -> None:
        if self.node is not None:
            self.executor.remove_node(self.node)
            self.node.close()
            self.node.destroy_node()
            self.node = None

    def spin(self, predicate: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> bool:
        return spin_until(self.executor, predicate, timeout_s)

    def now_ns(self) -> int:
        return self.peer.get_clock().now().nanoseconds

    def reset(self) -> Trigger.Response:
        future = self.reset_client.call_async(Trigger.Request())
        assert self.spin(future.done), 'no answer from robostral/reset'
        return future.result()

    def propose(self, document: dict[str, Any] | str) -> dict[str, Any]:
        """Publish one proposal and return its verdict (the next one that arrives)."""
        count = len(self.verdicts)
        text = document if isinstance(document, str) else ex.to_text(document)
        self.proposals.publish(String(data=text))
        assert self.spin(lambda: len(self.verdicts) > count), 'no verdict arrived'
        return self.verdicts[count]

    def ready(self) -> None:
        assert self.reset().success
        assert self.spin(lambda: bool(self.safety) and self.safety[-1] is True)

    def close(self) -> None:
        self.stop()
        self.executor.shutdown()
        self.peer.destroy_node()


@pytest.fixture
def rig(ros_context: Any, namespace: str, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(ros_context, namespace, tmp_path)
    try:
        yield r
    finally:
        r.close()


def test_proposals_in_verdicts_out_and_goals_only_when_approved(rig: Rig) -> None:
    # Starts latched (start_latched: true): nothing passes before a reset.
    assert rig.spin(lambda: bool(rig.safety))
    assert rig.safety[-1] is False
    assert rig.propose(ex.pick_place(rig.now_ns()))['reasons'] == ['ESTOP_LATCHED']
    rig.ready()
    good = ex.to_text(ex.pick_place(rig.now_ns(), proposal_id='good'))
    verdict = rig.propose(good)
    assert decode_verdict(json.dumps(verdict)).approved
    assert verdict['proposal_id'] == 'good'
    assert verdict['policy_version'] == rig.node._core.policy_version  # type: ignore[union-attr]
    assert rig.spin(lambda: len(rig.tasks) == 1 and len(rig.goals) == 2)
    assert rig.tasks == [good]  # unchanged
    positions = [(g.pose.position.x, g.pose.position.y, g.pose.position.z) for g in rig.goals]
    assert positions == [ex.RED_CUBE_PICK, ex.LEFT_BIN_PLACE]
    assert {g.header.frame_id for g in rig.goals} == {'base_link'}
    assert rig.goals[0].pose.orientation.x == 1.0
    bad = ex.proposal([ex.step('pick', ex.FIXTURE_INSIDE)], rig.now_ns())
    assert set(rig.propose(bad)['reasons']) == {'IN_KEEPOUT_ZONE', 'PATH_CROSSES_KEEPOUT'}
    garbage = rig.propose('{"schema": "robostral.goal_proposal/1", "id": "g1", "steps": 3')
    assert garbage['reasons'] == ['MALFORMED']
    assert garbage['proposal_id'] == ''
    missing = rig.propose({'schema': 'robostral.goal_proposal/1', 'id': 'm1'})
    assert (missing['reasons'], missing['proposal_id']) == (['MALFORMED'], 'm1')
    # The node survived all of that and still judges.
    assert rig.propose(ex.pick_place(rig.now_ns()))['state'] == 'approved'
    assert rig.spin(lambda: len(rig.tasks) == 2 and len(rig.goals) == 4)
    assert len(rig.tasks) == 2  # nothing was published for the rejected plans


def test_estop_and_reset_through_the_real_topic_and_service(rig: Rig) -> None:
    rig.ready()
    held = rig.propose(ex.proposal([ex.step('move_to', (0.42, 0.05, 0.12))], rig.now_ns()))
    assert held['state'] == 'pending_approval'
    count = len(rig.verdicts)
    rig.estop.publish(Bool(data=True))
    assert rig.spin(lambda: rig.safety[-1] is False and len(rig.verdicts) > count)
    dropped = rig.verdicts[count]
    assert (dropped['proposal_id'], dropped['reasons']) == (held['proposal_id'], ['ESTOP_LATCHED'])
    assert rig.propose(ex.pick_place(rig.now_ns()))['reasons'] == ['ESTOP_LATCHED']
    refused = rig.reset()
    assert not refused.success
    assert 'still pressed' in refused.message
    rig.estop.publish(Bool(data=False))
    # Until the release is processed a reset is refused; spin until one succeeds.
    before_reset = ex.pick_place(rig.now_ns())
    assert rig.spin(lambda: rig.reset().success)
    assert rig.spin(lambda: rig.safety[-1] is True)
    assert rig.propose(before_reset)['reasons'] == ['ESTOP_LATCHED']  # never released
    assert rig.propose(ex.pick_place(rig.now_ns()))['state'] == 'approved'
    kinds = [
        json.loads(line)['kind'] for line in (rig.tmp / 'audit.jsonl').read_text().splitlines()
    ]
    assert kinds.count('estop') == 2
    assert 'reset' in kinds


def test_operator_decision_through_the_topic(rig: Rig) -> None:
    rig.ready()
    doc = ex.proposal([ex.step('move_to', (0.42, 0.05, 0.12))], rig.now_ns())
    assert rig.propose(doc)['state'] == 'pending_approval'
    count = len(rig.verdicts)
    decision = {'proposal_id': doc['id'], 'approve': True, 'operator': 'alice'}
    rig.decisions.publish(String(data=json.dumps(decision)))
    assert rig.spin(lambda: len(rig.verdicts) > count and len(rig.tasks) == 1)
    assert rig.verdicts[count]['state'] == 'approved'
    assert json.loads(rig.tasks[0])['id'] == doc['id']
    rig.decisions.publish(String(data='not json at all'))  # logged, recorded, survived
    assert rig.propose(ex.pick_place(rig.now_ns()))['state'] == 'approved'


def test_tool_pose_starts_the_first_leg(rig: Rig) -> None:
    rig.ready()
    pose = PoseStamped()
    pose.header.frame_id = 'base_link'
    pose.pose.position.x, pose.pose.position.z = 0.57, 0.20  # inside the fixture
    pose.pose.orientation.x, pose.pose.orientation.w = 1.0, 0.0
    pose.header.stamp = rig.peer.get_clock().now().to_msg()
    rig.tool_pose.publish(pose)
    core = rig.node._core  # type: ignore[union-attr]
    assert rig.spin(lambda: core._tool_pose is not None)
    pose.header.stamp = rig.peer.get_clock().now().to_msg()
    rig.tool_pose.publish(pose)
    verdict = rig.propose(ex.pick_place(rig.now_ns()))
    assert verdict['reasons'] == ['PATH_CROSSES_KEEPOUT']
    assert 'leg 0 (rise' in verdict['detail']


def test_markers_are_latched_and_follow_the_last_goal(rig: Rig) -> None:
    rig.ready()
    rig.propose(ex.proposal([ex.step('pick', ex.FIXTURE_INSIDE)], rig.now_ns()))
    arrays: list[MarkerArray] = []
    # A late subscriber still gets the markers (transient local).
    rig.peer.create_subscription(
        MarkerArray, 'robostral/safety_markers', arrays.append, LATCHED_QOS
    )

    def has_goal() -> bool:
        return any(m.ns == 'last_goal' for a in arrays for m in a.markers)

    assert rig.spin(has_goal)
    markers = arrays[-1].markers
    assert markers[0].action == Marker.DELETEALL
    by_ns: dict[str, list[Marker]] = {}
    for m in markers[1:]:
        by_ns.setdefault(m.ns, []).append(m)
    assert len(by_ns['workspace'][0].points) == 24
    zones = by_ns['keepout_zones']
    assert [m.type for m in zones] == [Marker.CUBE, Marker.CYLINDER]
    assert zones[0].scale.x == pytest.approx(0.10)
    goal = by_ns['last_goal'][0]
    assert (goal.color.r, goal.color.g) == (pytest.approx(0.9), pytest.approx(0.1))  # red
    assert 'rejected' in by_ns['last_goal_label'][0].text


def test_diagnostics_report_state_version_and_counts(rig: Rig) -> None:
    rig.ready()
    rig.propose(ex.pick_place(rig.now_ns()))
    rig.propose('junk')
    n = len(rig.diagnostics)

    def counted() -> bool:
        if len(rig.diagnostics) <= n:
            return False
        values = {kv.key: kv.value for kv in rig.diagnostics[-1].values}
        return values['approved'] == '1' and values['rejected.MALFORMED'] == '1'

    assert rig.spin(counted)
    status = rig.diagnostics[-1]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.OK
    assert status.name == f'{rig.namespace}/safety_supervisor'
    assert values['state'] == 'ready'
    assert values['latched'] == 'false'
    assert values['policy_version'] == rig.node._core.policy_version  # type: ignore[union-attr]
    assert values['rejected'] == '1'


def test_missing_policy_means_not_ready_everywhere(
    ros_context: Any, namespace: str, tmp_path: Path
) -> None:
    rig = Rig(ros_context, namespace, tmp_path, policy_file=str(tmp_path / 'absent.yaml'))
    try:
        assert rig.spin(lambda: bool(rig.safety))
        assert rig.safety[-1] is False
        verdict = rig.propose(ex.pick_place(rig.now_ns()))
        assert verdict['reasons'] == ['NOT_READY']
        assert verdict['latched'] is True
        response = rig.reset()
        assert not response.success
        assert 'absent.yaml' in response.message
        assert rig.spin(lambda: any(s.level == DiagnosticStatus.ERROR for s in rig.diagnostics))
        error = next(s for s in rig.diagnostics if s.level == DiagnosticStatus.ERROR)
        assert 'absent.yaml' in error.message
    finally:
        rig.close()


def test_restart_comes_up_latched_and_continues_the_audit_chain(rig: Rig) -> None:
    rig.ready()
    assert rig.propose(ex.pick_place(rig.now_ns()))['state'] == 'approved'
    rig.stop()
    rig.safety.clear()
    rig.start()
    assert rig.spin(lambda: bool(rig.safety))
    assert rig.safety[-1] is False
    assert rig.propose(ex.pick_place(rig.now_ns()))['reasons'] == ['ESTOP_LATCHED']
    rig.stop()
    report = verify_file(rig.tmp / 'audit.jsonl')
    assert report.ok, report.error
    kinds = [
        json.loads(line)['kind'] for line in (rig.tmp / 'audit.jsonl').read_text().splitlines()
    ]
    assert kinds.count('policy_load') == 2
    assert kinds.count('shutdown') == 2


def test_parameters_are_declared_read_only_with_descriptions(rig: Rig) -> None:
    node = rig.node
    assert node is not None
    for name in ('policy_file', 'state_file', 'audit_log', 'safety_ok_rate_hz'):
        descriptor = node.describe_parameter(name)
        assert descriptor.read_only, name
        assert descriptor.description, name
    (rate_range,) = node.describe_parameter('safety_ok_rate_hz').floating_point_range
    assert rate_range.from_value == 20.0  # the contract's floor
    assert node.config.safety_ok_rate_hz == 50.0
    assert node.config.policy_file == str(config_file('safety_policy.yaml'))
    result = node.set_parameters([Parameter('safety_ok_rate_hz', value=100.0)])[0]
    assert not result.successful


def test_safety_ok_is_repeated_well_above_the_contracts_20_hz(rig: Rig) -> None:
    """INTERFACES section 2: safety_ok at >= 20 Hz. The default is 50 Hz, so the 20 Hz
    floor holds with room for late ticks (received over 1 s of spinning, in-process)."""
    first, t0 = len(rig.safety), time.monotonic()
    rig.spin(lambda: time.monotonic() - t0 >= 1.0, timeout_s=2.0)
    rate = (len(rig.safety) - first) / (time.monotonic() - t0)
    assert rate >= 20.0, rate


def test_out_of_range_rate_falls_back_to_the_default(
    ros_context: Any, namespace: str, tmp_path: Path
) -> None:
    rig = Rig(ros_context, namespace, tmp_path, safety_ok_rate_hz=5.0)
    try:
        assert rig.node is not None
        assert rig.node.config.safety_ok_rate_hz == 50.0
    finally:
        rig.close()


def test_policy_variant_applies(ros_context: Any, namespace: str, tmp_path: Path) -> None:
    document = copy.deepcopy(REFERENCE)
    document['start_latched'] = False
    document['authorized_operators'] = ['bob']
    policy = tmp_path / 'policy.yaml'
    policy.write_text(yaml.safe_dump(document))
    (tmp_path / 'state.json').write_text(json.dumps({
        'schema': 'robostral.latch_state/1', 'latched': False, 'reason': 'reset',
        'changed_ns': 0, 'last_reset_ns': 0,
    }))  # fmt: skip
    rig = Rig(ros_context, namespace, tmp_path, policy_file=str(policy))
    try:
        assert rig.spin(lambda: bool(rig.safety) and rig.safety[-1] is True)
        verdict = rig.propose(ex.pick_place(rig.now_ns(), operator='alice'))
        assert verdict['reasons'] == ['UNAUTHORIZED_OPERATOR']
    finally:
        rig.close()


def test_default_data_dir_is_per_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('ROS_HOME', '/var/tmp/roshome')
    assert default_data_dir('/cell1') == Path('/var/tmp/roshome/robostral/cell1')
    assert default_data_dir('/') == Path('/var/tmp/roshome/robostral')
    monkeypatch.delenv('ROS_HOME')
    assert default_data_dir('/a/b') == Path.home() / '.ros' / 'robostral' / 'a/b'
