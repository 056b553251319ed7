"""The QoS profiles of the cell's topics, in one place so that every node and client agree.

A publisher and a subscriber only match when their profiles are compatible, so the nodes
(agent, supervisor, simulator) and the operator's client must build them alike. The contract
(INTERFACES.md section 2) fixes two of them: camera inputs use ``qos_profile_sensor_data``
and operator inputs are reliable, keep last 10.
"""

from __future__ import annotations

from typing import Final

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)


def reliable(depth: int) -> QoSProfile:
    """Reliable, keep last ``depth``, volatile: a message is delivered or the queue is full."""
    return QoSProfile(
        depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST
    )


# Camera inputs (INTERFACES.md section 2): best effort, keep last, as camera drivers publish.
SENSOR: Final = qos_profile_sensor_data
# Operator inputs (INTERFACES.md section 2) and the cell's other commands and states.
RELIABLE: Final = reliable(10)
# Reliable with a deeper history, so that a burst (instructions, their statuses, what a
# client journals) is answered, not dropped.
RELIABLE_BURST: Final = reliable(100)
# Keep last 10, best effort: a best-effort subscriber matches reliable and best-effort
# publishers alike (robostral/safety_ok).
BEST_EFFORT: Final = QoSProfile(
    depth=10, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST
)
# The latest state, kept for late joiners (ground truth, safety markers): reliable, transient
# local, keep last 1.
LATCHED: Final = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
