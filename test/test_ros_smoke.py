"""Two nodes in separate processes exchange a sensor_msgs/Image through DDS."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
from helpers import spin_until, stop_process
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from ros_peer import known_image
from sensor_msgs.msg import Image

from robostral_agent.ros.conversions import image_to_numpy

pytestmark = pytest.mark.ros


def test_image_crosses_processes_through_dds(ros_context: object, namespace: str) -> None:
    topic = f'{namespace}/camera/color/image_raw'
    peer = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name('ros_peer.py')), topic, '11'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    node = rclpy.create_node('image_sink', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received: list[Image] = []
    node.create_subscription(Image, topic, received.append, qos_profile_sensor_data)
    try:
        arrived = spin_until(executor, lambda: bool(received), timeout_s=30.0)
    finally:
        executor.shutdown()
        node.destroy_node()
        output = stop_process(peer, timeout_s=10)
    assert arrived, f'no image arrived from the peer process; its output:\n{output}'
    assert peer.returncode in (0, -signal.SIGINT), output
    msg = received[0]
    assert msg.header.frame_id == 'peer_optical_frame'
    assert msg.header.stamp.sec > 0
    np.testing.assert_array_equal(image_to_numpy(msg), known_image(11))
