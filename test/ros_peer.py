"""A separate-process ROS node for cross-process tests: publishes a known image until killed.

Usage: python ros_peer.py TOPIC SEED
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import qos_profile_sensor_data

from robostral_agent.ros.conversions import numpy_to_image


def known_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def main() -> None:
    topic, seed = sys.argv[1], int(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node('image_peer')
    from sensor_msgs.msg import Image

    pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
    image = known_image(seed)

    def publish() -> None:
        msg = numpy_to_image(image, 'rgb8', frame_id='peer_optical_frame')
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)

    node.create_timer(0.05, publish)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
