"""Shared fixtures: hypothesis profiles, a private rclpy context, unique ROS names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    'default', deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile('thorough', parent=settings.get_profile('default'), max_examples=2000)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'default'))

os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('MUJOCO_GL', 'osmesa')


def ros_domain_id() -> int:
    """The run's domain (make test picks one per run); tests isolate further by namespace."""
    return int(os.environ.get('ROS_DOMAIN_ID', '0'))


@pytest.fixture
def namespace() -> str:
    """A namespace no other test (or concurrent run in the same domain) uses."""
    return f'/t{uuid.uuid4().hex[:10]}'


@pytest.fixture
def ros_context() -> Iterator[object]:
    """A private rclpy context (never the global one), shut down after the test."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id())
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)
