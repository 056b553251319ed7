"""The reference work cell (INTERFACES.md section 6): one source for every dimension.

The simulator builds its MJCF from these numbers, the Gazebo world is checked against them,
the agent's default ``camera_pose`` is derived from them, and the dataset generator and the
evaluation use the same vocabulary, so nothing drifts. Pure Python and numpy; no MuJoCo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from robostral_agent.contract import BINS, COLORS, SHAPES
from robostral_agent.geometry import CameraIntrinsics, Transform, matrix_to_quaternion

BASE_FRAME: Final = 'base_link'
CAMERA_FRAME: Final = 'camera_color_optical_frame'
TABLE_TOP_Z: Final = 0.0

# Objects (metres): cube edge, ball diameter, cylinder diameter and height.
OBJECT_SIZE: Final = 0.04
CYLINDER_HEIGHT: Final = 0.05
OBJECT_HEIGHT: Final = {'cube': OBJECT_SIZE, 'ball': OBJECT_SIZE, 'cylinder': CYLINDER_HEIGHT}
COLOR_RGBA: Final = {
    'red': (0.85, 0.12, 0.10, 1.0),
    'green': (0.10, 0.65, 0.20, 1.0),
    'blue': (0.10, 0.25, 0.85, 1.0),
    'yellow': (0.95, 0.85, 0.10, 1.0),
}

# Bins: centre (x, y) in base_link, inside size, wall height and thickness.
BIN_CENTERS: Final = {'left': (0.45, 0.40), 'right': (0.45, -0.40)}
BIN_INNER: Final = 0.16
BIN_WALL_HEIGHT: Final = 0.06
BIN_WALL_THICKNESS: Final = 0.01

# Where objects may be placed (x, y ranges) and the minimum centre distance between them in
# generated scenes: the open gripper (5.2 cm from the tool centre to a finger's outside), a
# target error of 1.5 cm and a neighbour's footprint (up to 2.9 cm) must fit in between.
FREE_AREA: Final = ((0.28, 0.62), (-0.25, 0.25))
MIN_OBJECT_SPACING: Final = 0.10

# The fixed RGB-D camera: behind and above the robot, looking down at the table centre.
# The image's left is +y ("left bin" is on the left of the image).
CAMERA_POSITION: Final = (-0.15, 0.0, 1.25)
CAMERA_LOOK_AT: Final = (0.45, 0.0, 0.0)
CAMERA_FOVY_DEG: Final = 37.0
IMAGE_WIDTH: Final = 640
IMAGE_HEIGHT: Final = 480

# The arm's rest pose: where it stands at start, after a reset and after a scene load. Folded
# low to the left of the base with the tool tilted 45 degrees from straight down towards -y,
# so that no robot pixel covers the free placement area or the bins in the camera image
# (test_sim_render checks it with a segmentation render), while the tool centre point is
# inside the policy workspace, outside every keep-out zone and within 0.85 m of every bin and
# free-area target, so the supervisor's first-leg checks from the published tool pose pass.
# Orientation [x, y, z, w]: 135 degrees about base x (straight down is 180 degrees).
REST_TCP_POSITION: Final = (0.20, 0.38, 0.10)
REST_TCP_ORIENTATION: Final = (0.9238795325112867, 0.0, 0.0, 0.3826834323650898)
# The tool pointing straight down (+z of the tool along -z of the base), as targets use it.
TOOL_DOWN: Final = (1.0, 0.0, 0.0, 0.0)

assert set(COLOR_RGBA) == set(COLORS)
assert set(OBJECT_HEIGHT) == set(SHAPES)
assert set(BIN_CENTERS) == set(BINS)


def look_at_rotation(position: tuple[float, ...], target: tuple[float, ...]) -> np.ndarray:
    """Rotation (base <- optical) of a camera at ``position`` looking at ``target``.

    Optical frame (REP 103): z forward, x to the image's right, y down. With the camera
    looking along +x, the image's right is -y of the base frame.
    """
    z = np.asarray(target, float) - np.asarray(position, float)
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])  # horizontal, to the right of the view direction
    if np.linalg.norm(x) < 1e-9:
        raise ValueError('a camera looking straight down needs an explicit roll')
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.column_stack([x, y, z])


@dataclass(frozen=True)
class CameraSpec:
    """Pose of the optical frame in base_link, and the pinhole intrinsics of the render."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]  # [x, y, z, w]
    intrinsics: CameraIntrinsics
    fovy_deg: float

    @property
    def transform(self) -> Transform:
        """``base_link <- camera_color_optical_frame``."""
        return Transform.from_pose(self.position, self.orientation)

    @property
    def pose7(self) -> list[float]:
        """``[x, y, z, qx, qy, qz, qw]``: the agent's ``camera_pose`` parameter."""
        return [*self.position, *self.orientation]


def reference_camera(
    position: tuple[float, float, float] = CAMERA_POSITION,
    look_at: tuple[float, float, float] = CAMERA_LOOK_AT,
    fovy_deg: float = CAMERA_FOVY_DEG,
    width: int = IMAGE_WIDTH,
    height: int = IMAGE_HEIGHT,
) -> CameraSpec:
    """The reference camera (or a perturbed copy, for dataset randomisation)."""
    rotation = look_at_rotation(position, look_at)
    intrinsics = CameraIntrinsics.from_fov(fovy_deg, width, height)
    x, y, z = (float(v) for v in position)
    qx, qy, qz, qw = (float(v) for v in matrix_to_quaternion(rotation))
    return CameraSpec((x, y, z), (qx, qy, qz, qw), intrinsics, fovy_deg)


def object_grasp_height(shape: str) -> float:
    """Height above the table of an object's centre: where the tool centre point grasps."""
    return TABLE_TOP_Z + OBJECT_HEIGHT[shape] / 2.0


def in_bin(xy: tuple[float, float], bin_name: str, margin: float = 0.0) -> bool:
    """Whether a horizontal position lies inside a bin's inner walls (shrunk by ``margin``)."""
    cx, cy = BIN_CENTERS[bin_name]
    half = BIN_INNER / 2.0 - margin
    return abs(xy[0] - cx) <= half and abs(xy[1] - cy) <= half
