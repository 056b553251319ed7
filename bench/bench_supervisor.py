"""Benchmark: supervisor_node as its own process, driven over DDS from this process.

* ``verdict``: proposal published -> verdict received, one at a time (p50/p99 over
  ``--proposals``, 1000 by default). Target p99 < 10 ms.
* ``estop``: ``robostral/estop`` true published -> ``robostral/safety_ok`` false received
  (p50/max over ``--trips``, 50 by default; each trip is released and reset before the next).
  Target max < 100 ms.
* ``sustained``: ``--rate`` proposals/s (200) for ``--duration`` s (30): every verdict must
  arrive; the supervisor's resident memory (VmRSS) before and after.

The policy is the reference policy with ``max_goal_rate_hz`` raised so that plans are approved
(the slower path: approved_task and approved_goal are published too). Prints a table and one
JSON line. Run: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=<n>
.venv/bin/python bench/bench_supervisor.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from robostral_agent.paths import config_file
from robostral_agent.safety import examples as ex

NAMESPACE = f'/bench{os.getpid()}'


def rss_kib(pid: int) -> int:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    raise RuntimeError('no VmRSS')


class Driver:
    def __init__(self) -> None:
        self.node = rclpy.create_node('bench_driver', namespace=NAMESPACE)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.arrivals: dict[str, float] = {}
        self.safety: list[tuple[float, bool]] = []
        self.node.create_subscription(String, 'robostral/verdict', self._on_verdict, 1000)
        self.node.create_subscription(Bool, 'robostral/safety_ok', self._on_safety, 100)
        self.proposals = self.node.create_publisher(String, 'robostral/goal_proposal', 1000)
        self.estop = self.node.create_publisher(Bool, 'robostral/estop', 10)
        self.reset_client = self.node.create_client(Trigger, 'robostral/reset')

    def _on_verdict(self, msg: String) -> None:
        self.arrivals[json.loads(msg.data)['proposal_id']] = time.perf_counter()

    def _on_safety(self, msg: Bool) -> None:
        self.safety.append((time.perf_counter(), msg.data))

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.001)
        return predicate()

    def reset(self) -> bool:
        future = self.reset_client.call_async(Trigger.Request())
        if not self.spin_until(future.done):
            raise RuntimeError('reset: no answer')
        return future.result().success

    def send(self, proposal_id: str) -> float:
        doc = ex.pick_place(self.node.get_clock().now().nanoseconds, proposal_id=proposal_id)
        text = ex.to_text(doc)
        sent = time.perf_counter()
        self.proposals.publish(String(data=text))
        return sent


def latency(driver: Driver, count: int, prefix: str = 'lat') -> dict[str, float]:
    times = []
    for i in range(count):
        pid = f'{prefix}-{i}'
        sent = driver.send(pid)
        if not driver.spin_until(lambda p=pid: p in driver.arrivals, 5.0):
            raise RuntimeError(f'no verdict for {pid}')
        times.append((driver.arrivals[pid] - sent) * 1e3)
    arr = np.array(times)
    return {'p50_ms': float(np.percentile(arr, 50)), 'p99_ms': float(np.percentile(arr, 99)),
            'max_ms': float(arr.max()), 'count': count}  # fmt: skip


def estop_trips(driver: Driver, trips: int) -> dict[str, float]:
    times = []
    for _ in range(trips):
        driver.safety.clear()
        sent = time.perf_counter()
        driver.estop.publish(Bool(data=True))
        if not driver.spin_until(lambda: any(not ok for _, ok in driver.safety), 5.0):
            raise RuntimeError('safety_ok never went false')
        first_false = next(t for t, ok in driver.safety if not ok)
        times.append((first_false - sent) * 1e3)
        driver.estop.publish(Bool(data=False))
        if not driver.spin_until(driver.reset, 5.0):
            raise RuntimeError('reset refused after release')
        driver.spin_until(lambda: bool(driver.safety) and driver.safety[-1][1], 5.0)
    arr = np.array(times)
    return {'p50_ms': float(np.percentile(arr, 50)), 'max_ms': float(arr.max()),
            'trips': trips}  # fmt: skip


def sustained(driver: Driver, pid: int, rate: float, duration: float) -> dict[str, float]:
    rss_before = rss_kib(pid)
    total = int(rate * duration)
    start = time.perf_counter()
    ids = []
    for i in range(total):
        due = start + i / rate
        while time.perf_counter() < due:
            driver.executor.spin_once(timeout_sec=max(0.0, due - time.perf_counter()))
        ids.append(f'load-{i}')
        driver.send(ids[-1])
    driver.spin_until(lambda: all(i in driver.arrivals for i in ids), 10.0)
    elapsed = time.perf_counter() - start
    received = sum(i in driver.arrivals for i in ids)
    return {'sent': total, 'received': received, 'lost': total - received,
            'achieved_rate_hz': total / elapsed, 'rss_kib_before': rss_before,
            'rss_kib_after': rss_kib(pid)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--proposals', type=int, default=1000)
    parser.add_argument('--trips', type=int, default=50)
    parser.add_argument('--rate', type=float, default=200.0)
    parser.add_argument('--duration', type=float, default=30.0)
    args = parser.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    with tempfile.TemporaryDirectory() as tmp:
        document = yaml.safe_load(config_file('safety_policy.yaml').read_text())
        document['max_goal_rate_hz'] = 10000.0
        policy = Path(tmp) / 'policy.yaml'
        policy.write_text(yaml.safe_dump(document))
        proc = subprocess.Popen([
            sys.executable, '-m', 'robostral_agent.ros.supervisor_node', '--ros-args',
            '-r', f'__ns:={NAMESPACE}', '-p', f'policy_file:={policy}',
            '-p', f'state_file:={tmp}/state.json', '-p', f'audit_log:={tmp}/audit.jsonl',
            '--log-level', 'warn',
        ])  # fmt: skip
        rclpy.init()
        driver = Driver()
        try:
            if not driver.spin_until(
                lambda: (
                    driver.proposals.get_subscription_count() > 0
                    and driver.reset_client.service_is_ready()
                ),
                60.0,
            ):
                raise RuntimeError('supervisor_node did not come up')
            if not driver.reset():
                raise RuntimeError('reset refused')
            latency(driver, 50, 'warm-up')  # discovery, first samples, caches
            results = {
                'verdict': latency(driver, args.proposals),
                'estop': estop_trips(driver, args.trips),
                'sustained': sustained(driver, proc.pid, args.rate, args.duration),
            }
        finally:
            driver.node.destroy_node()
            rclpy.try_shutdown()
            proc.terminate()
            proc.wait(timeout=30)
    v, e, s = results['verdict'], results['estop'], results['sustained']
    print(f'{"measure":<34} {"value":>12}')
    print(f'{"proposal -> verdict p50 (ms)":<34} {v["p50_ms"]:12.2f}')
    print(f'{"proposal -> verdict p99 (ms)":<34} {v["p99_ms"]:12.2f}')
    print(f'{"estop -> safety_ok false p50 (ms)":<34} {e["p50_ms"]:12.2f}')
    print(f'{"estop -> safety_ok false max (ms)":<34} {e["max_ms"]:12.2f}')
    print(f'{"sustained sent / received":<34} {s["sent"]:>6d}/{s["received"]:<5d}')
    print(f'{"sustained achieved rate (Hz)":<34} {s["achieved_rate_hz"]:12.1f}')
    print(f'{"supervisor RSS before/after (MiB)":<34} '
          f'{s["rss_kib_before"] / 1024:6.1f}/{s["rss_kib_after"] / 1024:<5.1f}')  # fmt: skip
    targets = {'verdict_p99_lt_10ms': v['p99_ms'] < 10.0, 'estop_max_lt_100ms': e['max_ms'] < 100,
               'no_lost_verdict': s['lost'] == 0}  # fmt: skip
    print('targets:', ', '.join(f'{k} {"met" if ok else "NOT met"}' for k, ok in targets.items()))
    print(f'load average (1 min, shared 2-core machine): {os.getloadavg()[0]:.2f}')
    print(
        json.dumps(
            {
                'bench': 'supervisor_dds',
                'loadavg_1min': os.getloadavg()[0],
                **results,
                'targets': targets,
            }
        )
    )


if __name__ == '__main__':
    main()
