"""sim_node in this process: parameters, the shipped config file, a missing policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from helpers import spin_until
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from robostral_agent.ros.sim_node import SimNode
from robostral_agent.sim import plans

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]


def _shipped() -> dict[str, object]:
    doc = yaml.safe_load((ROOT / 'config' / 'sim.yaml').read_text())
    return doc['/**']['ros__parameters']


def test_the_config_file_sets_declared_parameters_only(ros_context: object) -> None:
    overrides = [Parameter(name, value=value) for name, value in _shipped().items()]
    node = SimNode(context=ros_context, parameter_overrides=overrides)
    try:
        declared = set(node.list_parameters([], 0).names)
        assert set(_shipped()) <= declared
        assert node.config.camera_hz == 10.0 and node.config.tool_pose_hz >= 10.0
        assert (node.config.image_width, node.config.image_height) == (640, 480)
        for name in declared - {'use_sim_time', 'start_type_description_service'}:
            descriptor = node.describe_parameter(name)
            assert descriptor.description and descriptor.read_only, name
        result = node.set_parameters([Parameter('camera_hz', value=30.0)])[0]
        assert not result.successful  # start-up settings cannot change under a running cell
    finally:
        node.destroy_node()


def test_a_missing_policy_refuses_plans_and_says_why(ros_context: object) -> None:
    node = SimNode(
        context=ros_context,
        parameter_overrides=[
            Parameter('policy_file', value='/nonexistent/policy.yaml'),
            Parameter('image_width', value=64),
            Parameter('image_height', value=48),
        ],
    )
    listener = rclpy.create_node('diag_listener', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    statuses: list[DiagnosticStatus] = []
    listener.create_subscription(
        DiagnosticArray, '/diagnostics', lambda m: statuses.extend(m.status), 10
    )
    try:
        with node._lock:  # the core the node holds
            result = node._sim.submit(plans.proposal([plans.move_to_step('x', (0.4, 0.0))]))
        assert result is not None and result.status == 'failed'
        assert 'policy' in result.detail
        assert spin_until(executor, lambda: listener.count_publishers('/diagnostics') > 0, 10.0)
        node._on_diagnostics()  # the 1 Hz timer's work, now
        assert spin_until(executor, lambda: any(s.name.endswith('simulator') for s in statuses))
        status = next(s for s in statuses if s.name.endswith('simulator'))
        assert status.level == DiagnosticStatus.ERROR
        assert 'policy' in status.message
        assert node._sim.cell.render().rgb.shape == (48, 64, 3)  # the cell itself still runs
    finally:
        executor.shutdown()
        listener.destroy_node()
        node.destroy_node()
