"""supervisor_node as its own process: killed with SIGKILL in the middle of a burst of
proposals, it has lost no record of any verdict it published; restarted, it is latched and
continues the same audit chain; stopped with SIGINT, it shuts down cleanly."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rclpy
from helpers import spin_until
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from robostral_agent.paths import config_file
from robostral_agent.safety import examples as ex
from robostral_agent.safety.audit import verify_file

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BURST = 1000
KILL_AFTER = 300
START_TIMEOUT_S = 60.0


def start_supervisor(namespace: str, tmp_path: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable, '-m', 'robostral_agent.ros.supervisor_node', '--ros-args',
        '-r', f'__ns:={namespace}',
        '--params-file', str(config_file('supervisor.yaml')),
        '-p', f'state_file:={tmp_path / "state.json"}',
        '-p', f'audit_log:={tmp_path / "audit.jsonl"}',
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def output_of(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out or ''


class Peer:
    def __init__(self, context: Any, namespace: str) -> None:
        self.node = rclpy.create_node('burst_peer', namespace=namespace, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.verdicts: list[dict[str, Any]] = []
        self.safety: list[bool] = []
        self.node.create_subscription(
            String, 'robostral/verdict', lambda m: self.verdicts.append(json.loads(m.data)), 1000
        )
        self.node.create_subscription(
            Bool, 'robostral/safety_ok', lambda m: self.safety.append(m.data), 10
        )
        self.proposals = self.node.create_publisher(String, 'robostral/goal_proposal', BURST)
        self.reset_client = self.node.create_client(Trigger, 'robostral/reset')
        self.namespace = namespace

    def spin(self, predicate: Any, timeout_s: float = 10.0) -> bool:
        return spin_until(self.executor, predicate, timeout_s)

    def connected(self, proc: subprocess.Popen[str]) -> bool:
        return (
            self.spin(
                lambda: (
                    proc.poll() is not None
                    or (
                        self.proposals.get_subscription_count() > 0
                        and self.node.count_publishers(f'{self.namespace}/robostral/verdict') > 0
                        and self.reset_client.service_is_ready()
                        and bool(self.safety)
                    )
                ),
                START_TIMEOUT_S,
            )
            and proc.poll() is None
        )

    def reset(self) -> Trigger.Response:
        future = self.reset_client.call_async(Trigger.Request())
        assert self.spin(future.done), 'no answer from robostral/reset'
        return future.result()

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def peer(ros_context: Any, namespace: str) -> Iterator[Peer]:
    p = Peer(ros_context, namespace)
    try:
        yield p
    finally:
        p.close()


@dataclass
class Run:
    """A supervisor process and, once the ``supervisor`` block has ended, all it printed."""

    proc: subprocess.Popen[str]
    log: str = ''


@contextlib.contextmanager
def supervisor(peer: Peer, namespace: str, tmp_path: Path) -> Iterator[Run]:
    """Start a supervisor process and wait until ``peer`` is connected to it; on the way
    out kill it if it still runs and keep its output in ``Run.log``."""
    run = Run(start_supervisor(namespace, tmp_path))
    try:
        assert peer.connected(run.proc), output_of(run.proc)
        yield run
    finally:
        run.log = output_of(run.proc)


def decisions(path: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for line in path.read_bytes().split(b'\n'):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if record['kind'] == 'decision':
            out[record['data']['verdict']['proposal_id']] = record['data']['verdict']
    return out


def test_sigkill_mid_burst_loses_no_acknowledged_record(
    peer: Peer, namespace: str, tmp_path: Path
) -> None:
    audit = tmp_path / 'audit.jsonl'
    with supervisor(peer, namespace, tmp_path) as run:
        assert peer.safety[-1] is False  # started latched
        assert peer.reset().success
        sent = 0
        while len(peer.verdicts) < KILL_AFTER:
            assert sent < BURST, 'the burst ended before the kill'
            for _ in range(20):
                doc = ex.pick_place(peer.now_ns(), proposal_id=f'burst-{sent}')
                peer.proposals.publish(String(data=ex.to_text(doc)))
                sent += 1
            # Keep at most a few dozen proposals in flight, so the kill lands mid-burst.
            assert peer.spin(lambda s=sent: len(peer.verdicts) >= s - 40), output_of(run.proc)
        run.proc.send_signal(signal.SIGKILL)
        assert run.proc.wait(timeout=30) == -signal.SIGKILL
    log = run.log
    received = list(peer.verdicts)
    assert len(received) >= KILL_AFTER
    assert sent < BURST
    report = verify_file(audit)
    assert report.ok, f'{report.error}\n{log}'
    recorded = decisions(audit)
    missing = [v['proposal_id'] for v in received if v['proposal_id'] not in recorded]
    assert not missing, f'verdicts published but not in the audit log: {missing[:5]}'
    assert all(recorded[v['proposal_id']] == v for v in received)
    assert {v['state'] for v in received} <= {'approved', 'rejected'}
    assert any(v['state'] == 'approved' for v in received)
    assert any(v['reasons'] == ['RATE_LIMITED'] for v in received)


def test_restart_is_latched_and_sigint_stops_cleanly(
    peer: Peer, namespace: str, tmp_path: Path
) -> None:
    audit = tmp_path / 'audit.jsonl'
    with supervisor(peer, namespace, tmp_path) as first:
        assert peer.reset().success
        assert peer.spin(lambda: peer.safety[-1] is True)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)
    # Simulate the crash tearing the record being written when the process died.
    with audit.open('ab') as handle:
        handle.write(b'{"data":{"i":')
    peer.safety.clear()
    with supervisor(peer, namespace, tmp_path) as second:
        assert peer.safety[-1] is False  # restarted: latched until an explicit reset
        count = len(peer.verdicts)
        peer.proposals.publish(String(data=ex.to_text(ex.pick_place(peer.now_ns()))))
        assert peer.spin(lambda: len(peer.verdicts) > count)
        # (The first sample after discovery may wait for a DDS heartbeat and arrive stale;
        # what matters here is the latch.)
        assert 'ESTOP_LATCHED' in peer.verdicts[count]['reasons'], peer.verdicts[count]
        assert 'start_latched' in peer.verdicts[count]['detail']
        second.proc.send_signal(signal.SIGINT)
        assert second.proc.wait(timeout=30) == 0
    log = second.log
    assert 'Traceback' not in log, log
    report = verify_file(audit)
    assert report.ok, report.error
    assert report.recovered  # the torn line is accounted for
    records = []
    for line in audit.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # the torn line, kept in place and accounted for by the recovery record
    kinds = [r['kind'] for r in records]
    assert kinds[-1] == 'shutdown'
    assert 'recovery' in kinds
    assert kinds.count('policy_load') == 2
