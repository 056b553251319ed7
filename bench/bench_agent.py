"""Benchmark: agent_node latency per stage and end to end, plumbing overhead, peak RSS.

For each tiny model family (random weights, built here), ``agent_node`` runs in its own
process with ``config/agent.yaml``; this script publishes synthetic 640x480 RGB-D frames at
20 Hz and sends instructions one at a time, like an operator would. Per instruction:

* stages, as the node measured them (the ``timings_ms`` of its ``proposed`` status): frame
  conversion (pairing + message -> numpy), preprocessing (resize + processor), generate,
  decode (token probabilities, text, spans), parse, grounding, publish;
* end to end here: instruction published -> proposal received (both over DDS);
* plumbing overhead = end to end - generate, for the same instruction; of which ``dds`` =
  end to end - the node's own latency (callback -> status published): the two DDS hops and
  this script's executor.

Random weights plan different things for different images, so the script first looks for an
image whose answer is a grounded plan and then times that one (the answer, hence the token
count, is the same every time). Peak RSS is the node process's VmHWM. Prints a table and one
JSON line. Run: ``.venv/bin/python bench/bench_agent.py [--runs N] [--families a,b]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from robostral_agent.cell import reference_camera
from robostral_agent.ros.conversions import intrinsics_to_camera_info, numpy_to_image
from robostral_agent.vlm import tiny

ROOT = Path(__file__).resolve().parents[1]
STAGES = ('convert', 'preprocess', 'generate', 'decode', 'parse', 'ground', 'publish')
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
FRAME_ID = 'camera_color_optical_frame'
INSTRUCTION = 'put the red cube in the left bin'


def table_depth() -> np.ndarray:
    """Depth of the table plane (z = 0) seen by the reference camera."""
    camera = reference_camera()
    k = camera.intrinsics
    v, u = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)
    dz = rays @ camera.transform.rotation[2]
    return (-camera.position[2] / dz).astype(np.float32)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {'p50': statistics.median(ordered), 'p95': p95}


def peak_rss_mb(pid: int) -> float:
    status = Path(f'/proc/{pid}/status').read_text()
    return int(re.search(r'VmHWM:\s+(\d+) kB', status).group(1)) / 1024.0


class Client:
    """Publishes frames, sends instructions, and timestamps what comes back."""

    def __init__(self, context: Any, namespace: str) -> None:
        self.node = rclpy.create_node('bench_client', context=context, namespace=namespace)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.statuses: dict[str, dict[str, Any]] = {}
        self.proposal_at: dict[str, float] = {}
        self.node.create_subscription(
            String, 'robostral/instruction_status', self._on_status, RELIABLE
        )
        self.node.create_subscription(String, 'robostral/goal_proposal', self._on_proposal, 10)
        self.pub = self.node.create_publisher(String, 'robostral/instruction', RELIABLE)
        sensor = qos_profile_sensor_data
        self.color_pub = self.node.create_publisher(Image, 'camera/color/image_raw', sensor)
        self.depth_pub = self.node.create_publisher(
            Image, 'camera/aligned_depth_to_color/image_raw', sensor
        )
        self.info_pub = self.node.create_publisher(CameraInfo, 'camera/color/camera_info', sensor)
        self.depth = table_depth()
        self.info = intrinsics_to_camera_info(reference_camera().intrinsics, frame_id=FRAME_ID)
        self.color = self.image(0)
        self.node.create_timer(0.05, self._frame)

    @staticmethod
    def image(seed: int) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)

    def _frame(self) -> None:
        stamp = self.node.get_clock().now().to_msg()
        self.color_pub.publish(numpy_to_image(self.color, 'rgb8', stamp, FRAME_ID))
        self.depth_pub.publish(numpy_to_image(self.depth, '32FC1', stamp, FRAME_ID))
        self.info.header.stamp = stamp
        self.info_pub.publish(self.info)

    def _on_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        if status['state'] != 'received':
            status['at'] = time.perf_counter()
            self.statuses[status['instruction_id']] = status

    def _on_proposal(self, msg: String) -> None:
        self.proposal_at[json.loads(msg.data)['instruction_id']] = time.perf_counter()

    def spin_until(self, predicate: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.01)
        return predicate()

    def ask(self, instruction_id: str, text: str, timeout_s: float = 30.0) -> tuple[float, dict]:
        """Send one instruction; wait for its final status (and proposal, if any)."""
        self.pub.publish(String(data=json.dumps({'id': instruction_id, 'text': text})))
        sent = time.perf_counter()

        def done() -> bool:
            status = self.statuses.get(instruction_id)
            if status is None:
                return False
            return status['state'] != 'proposed' or instruction_id in self.proposal_at

        if not self.spin_until(done, timeout_s):
            raise TimeoutError(f'no answer to {instruction_id}')
        return sent, self.statuses[instruction_id]


def timings(detail: str) -> dict[str, float]:
    found = re.search(r'timings_ms: (.*)$', detail)
    if not found:
        return {}
    return {k: float(v) for k, v in (pair.split('=') for pair in found.group(1).split())}


def bench_family(family: str, model: Path, runs: int, context: Any, index: int) -> dict:
    namespace = f'/bench{os.getpid()}_{index}'
    cmd = [
        sys.executable, '-c', 'from robostral_agent.ros.agent_node import main; main()',
        '--ros-args', '-r', f'__ns:={namespace}',
        '--params-file', str(ROOT / 'config' / 'agent.yaml'), '-p', f'model_path:={model}',
        '--log-level', 'error',
    ]  # fmt: skip
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
    node = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    client = Client(context, namespace)
    try:
        deadline, n = time.monotonic() + 90.0, 0
        while True:  # wait until the model is loaded and frames flow
            n += 1
            try:
                _, status = client.ask(f'probe-{n}', 'go home', timeout_s=2.0)
            except TimeoutError:
                status = {'detail': 'no answer'}
            if not status['detail'].startswith(('NOT_ACTIVE', 'NO_FRAME', 'no answer')):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f'{family}: agent_node never became ready: {status}')
            client.spin_until(lambda: False, 0.2)
        seed, end_event = 0, 'final status'
        for candidate in range(30):  # an image whose answer is a grounded plan
            client.color = client.image(candidate)
            client.spin_until(lambda: False, 0.15)  # let a frame of it reach the node
            _, status = client.ask(f'find-{candidate}', INSTRUCTION)
            if status['state'] == 'proposed':
                seed, end_event = candidate, 'proposal'
                break
        client.color = client.image(seed)
        client.spin_until(lambda: False, 0.15)
        rows = []
        for i in range(runs):
            instruction_id = f'run-{i}'
            sent, status = client.ask(instruction_id, INSTRUCTION)
            end = client.proposal_at.get(instruction_id, status['at'])
            stage = timings(status['detail'])
            e2e = (end - sent) * 1e3
            rows.append({
                **stage, 'e2e': e2e, 'overhead': e2e - stage.get('generate', 0.0),
                'dds': e2e - status['latency_ms'], 'state': status['state'],
            })  # fmt: skip
        rss = peak_rss_mb(node.pid)
    finally:
        client.executor.shutdown()
        client.node.destroy_node()
        node.send_signal(signal.SIGINT)
        try:
            node.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
    states = sorted({r['state'] for r in rows})
    result = {
        'family': family,
        'end_event': end_event,
        'states': states,
        'runs': runs,
        'peak_rss_mb': round(rss, 1),
    }
    for key in (*STAGES, 'e2e', 'overhead', 'dds'):
        values = [r[key] for r in rows if key in r]
        if values:
            result[key] = {k: round(v, 2) for k, v in percentiles(values).items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=30, help='timed instructions per family')
    parser.add_argument('--families', default='paligemma,idefics3,florence2')
    args = parser.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    context = rclpy.Context()
    rclpy.init(context=context)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for index, family in enumerate(args.families.split(',')):
                model = tiny.FAMILIES[family][0](Path(tmp) / family)
                results.append(bench_family(family, model, args.runs, context, index))
    finally:
        rclpy.try_shutdown(context=context)
    head = f'{"family":<10} {"end at":<12} ' + ' '.join(f'{s:>13}' for s in (*STAGES, 'e2e'))
    print('p50 / p95 in ms; end to end = instruction published -> proposal received')
    print(head + f' {"overhead":>13} {"of it DDS":>13} {"RSS MB":>7}')
    for r in results:
        cells = [
            f'{r[k]["p50"]:>6.1f}/{r[k]["p95"]:<6.1f}' if k in r else f'{"-":>13}'
            for k in (*STAGES, 'e2e', 'overhead', 'dds')
        ]
        print(f'{r["family"]:<10} {r["end_event"]:<12} ' + ' '.join(cells) +
              f' {r["peak_rss_mb"]:>7.0f}')  # fmt: skip
    target = all(r['overhead']['p50'] < 10.0 for r in results)
    print(f'plumbing overhead p50 < 10 ms: {"met" if target else "NOT met"}')
    print(json.dumps({'bench': 'agent', 'results': results, 'overhead_target_met': target}))


if __name__ == '__main__':
    main()
