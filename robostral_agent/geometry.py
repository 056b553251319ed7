"""Camera and cell geometry: pinhole model, rigid transforms, zone and segment tests (numpy).

Conventions follow ROS: quaternions are ``[x, y, z, w]``, positions are metres, the camera
optical frame has z forward, x right, y down (REP 103/105). The zone tests are closed:
touching a boundary counts as inside / intersecting, so callers that use them to refuse
motion are conservative at the edges (fail closed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

Array = NDArray[np.float64]

QUATERNION_TOLERANCE = 1e-3
_EPS = 1e-12


class GeometryError(ValueError):
    """Invalid geometric input (non-finite values, degenerate intrinsics, zero quaternion)."""


# --- Quaternions -----------------------------------------------------------------------------


def quaternion_is_unit(q: Sequence[float], tolerance: float = QUATERNION_TOLERANCE) -> bool:
    """True when ``q`` has four finite components and a norm within ``tolerance`` of 1.

    Pure Python on purpose: the contract decoder calls it per step without numpy overhead.
    """
    if len(q) != 4 or not all(isinstance(c, int | float) and math.isfinite(c) for c in q):
        return False
    return abs(math.sqrt(sum(c * c for c in q)) - 1.0) <= tolerance


def normalize_quaternion(q: ArrayLike) -> Array:
    """``q / |q|``; refuses non-finite or (near-)zero quaternions instead of inventing one."""
    quat = np.asarray(q, dtype=np.float64)
    if quat.shape != (4,) or not np.all(np.isfinite(quat)):
        raise GeometryError(f'quaternion must be 4 finite numbers, got {q!r}')
    norm = float(np.linalg.norm(quat))
    if norm < 1e-6:
        raise GeometryError('quaternion has zero length')
    return quat / norm


def quaternion_to_matrix(q: ArrayLike) -> Array:
    """Rotation matrix of a unit quaternion ``[x, y, z, w]`` (normalised first)."""
    return Rotation.from_quat(normalize_quaternion(q)).as_matrix()


def matrix_to_quaternion(rotation: ArrayLike) -> Array:
    """``[x, y, z, w]`` of a rotation matrix, with ``w >= 0`` (a canonical sign)."""
    quat = Rotation.from_matrix(np.asarray(rotation, dtype=np.float64)).as_quat()
    return -quat if quat[3] < 0 else quat


def tool_axis(q: ArrayLike) -> Array:
    """The tool's approach direction (+z of the tool frame) in the parent frame."""
    return quaternion_to_matrix(q)[:, 2]


def angle_between_deg(a: ArrayLike, b: ArrayLike) -> float:
    """Angle in degrees between two non-zero vectors (numerically safe near 0 and 180)."""
    u = np.asarray(a, dtype=np.float64)
    v = np.asarray(b, dtype=np.float64)
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu < _EPS or nv < _EPS:
        raise GeometryError('angle to a zero vector is undefined')
    cross = float(np.linalg.norm(np.cross(u, v)))
    return math.degrees(math.atan2(cross, float(np.dot(u, v))))


# --- Rigid transforms ------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """A rigid transform ``parent <- child``: ``p_parent = R @ p_child + t``."""

    rotation: Array
    translation: Array

    @classmethod
    def identity(cls) -> Transform:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_pose(cls, position: ArrayLike, orientation: ArrayLike) -> Transform:
        """From a position and an ``[x, y, z, w]`` quaternion (a ROS pose)."""
        t = np.asarray(position, dtype=np.float64)
        if t.shape != (3,) or not np.all(np.isfinite(t)):
            raise GeometryError(f'position must be 3 finite numbers, got {position!r}')
        return cls(quaternion_to_matrix(orientation), t)

    @classmethod
    def from_xyz_quat(cls, pose: Sequence[float]) -> Transform:
        """From ``[x, y, z, qx, qy, qz, qw]``, the form of the agent's ``camera_pose``."""
        if len(pose) != 7:
            raise GeometryError(f'pose must be [x, y, z, qx, qy, qz, qw], got {len(pose)} values')
        return cls.from_pose(pose[:3], pose[3:])

    @property
    def orientation(self) -> Array:
        return matrix_to_quaternion(self.rotation)

    def matrix(self) -> Array:
        out = np.eye(4)
        out[:3, :3] = self.rotation
        out[:3, 3] = self.translation
        return out

    def inverse(self) -> Transform:
        r_inv = self.rotation.T
        return Transform(r_inv, -r_inv @ self.translation)

    def __matmul__(self, other: Transform) -> Transform:
        """Compose: ``(a @ b)`` maps b's child frame into a's parent frame."""
        return Transform(
            self.rotation @ other.rotation, self.rotation @ other.translation + self.translation
        )

    def apply(self, points: ArrayLike) -> Array:
        """Map points ``(..., 3)`` from the child frame into the parent frame."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.rotation.T + self.translation


# --- Pinhole camera --------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics as in ``sensor_msgs/CameraInfo`` (``k`` row-major 3x3)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    # OpenCV-ordered coefficients (plumb_bob: k1 k2 p1 p2 k3); empty or all zero: none.
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values):
            raise GeometryError('camera intrinsics must be finite')
        if self.fx <= 0 or self.fy <= 0:
            raise GeometryError(f'focal lengths must be positive, got fx={self.fx} fy={self.fy}')
        if self.width <= 0 or self.height <= 0:
            raise GeometryError(f'image size must be positive, got {self.width}x{self.height}')
        if not all(math.isfinite(c) for c in self.distortion):
            raise GeometryError('distortion coefficients must be finite')

    @classmethod
    def from_k(
        cls, k: Sequence[float], width: int, height: int, distortion: Sequence[float] = ()
    ) -> CameraIntrinsics:
        """From a ``CameraInfo.k`` (9 numbers, row-major); refuses skew or a bad last row."""
        mat = np.asarray(k, dtype=np.float64).reshape(-1)
        if mat.shape != (9,):
            raise GeometryError(f'K must have 9 elements, got {mat.size}')
        if abs(mat[1]) > 1e-9 or abs(mat[3]) > 1e-9 or not np.allclose(mat[6:], [0, 0, 1]):
            raise GeometryError(f'K is not a pinhole matrix without skew: {mat.tolist()}')
        coeffs = tuple(float(c) for c in distortion)
        return cls(
            float(mat[0]), float(mat[4]), float(mat[2]), float(mat[5]), width, height, coeffs
        )

    @property
    def distorted(self) -> bool:
        return any(c != 0.0 for c in self.distortion)

    def undistort_pixels(self, pixels: ArrayLike) -> Array:
        """Distorted pixels ``(N, 2)`` -> ideal pinhole pixels (OpenCV's iterative model)."""
        px = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        if not self.distorted:
            return px
        import cv2  # only needed for real lenses; keeps the pure path light

        k = np.asarray(self.k).reshape(3, 3)
        out = cv2.undistortPoints(px.reshape(-1, 1, 2), k, np.asarray(self.distortion), P=k)
        return out.reshape(-1, 2)

    @classmethod
    def from_fov(cls, fovy_deg: float, width: int, height: int) -> CameraIntrinsics:
        """Square pixels, principal point at the centre, from a vertical field of view."""
        f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
        return cls(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    @property
    def k(self) -> list[float]:
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    def deproject(self, u: ArrayLike, v: ArrayLike, depth: ArrayLike) -> Array:
        """Pixel coordinates and depth along the optical axis -> points ``(..., 3)``."""
        u_, v_, z = np.broadcast_arrays(
            np.asarray(u, np.float64), np.asarray(v, np.float64), np.asarray(depth, np.float64)
        )
        x = (u_ - self.cx) / self.fx * z
        y = (v_ - self.cy) / self.fy * z
        return np.stack([x, y, z], axis=-1)

    def project(self, points: ArrayLike) -> Array:
        """Points ``(..., 3)`` in the optical frame -> pixels ``(..., 2)``; z must be > 0."""
        p = np.asarray(points, dtype=np.float64)
        if np.any(p[..., 2] <= 0):
            raise GeometryError('cannot project a point at or behind the camera')
        u = self.fx * p[..., 0] / p[..., 2] + self.cx
        v = self.fy * p[..., 1] / p[..., 2] + self.cy
        return np.stack([u, v], axis=-1)

    def contains(self, u: float, v: float) -> bool:
        """Whether a (sub)pixel coordinate lies on the image."""
        return 0.0 <= u <= self.width - 1 and 0.0 <= v <= self.height - 1


# --- Zones and segments ----------------------------------------------------------------------


def point_in_box(p: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> bool:
    """Closed axis-aligned box test."""
    q = np.asarray(p, dtype=np.float64)
    return bool(np.all(q >= np.asarray(lo)) and np.all(q <= np.asarray(hi)))


def point_in_cylinder(
    p: ArrayLike, center_xy: ArrayLike, radius: float, z_min: float, z_max: float
) -> bool:
    """Closed vertical cylinder test."""
    q = np.asarray(p, dtype=np.float64)
    c = np.asarray(center_xy, dtype=np.float64)
    if not z_min <= q[2] <= z_max:
        return False
    return float(np.sum((q[:2] - c) ** 2)) <= radius * radius


def _clip_to_slab(
    start: float, delta: float, lo: float, hi: float, t0: float, t1: float
) -> tuple[float, float]:
    """Narrow ``[t0, t1]`` to where ``start + t * delta`` lies in ``[lo, hi]`` (maybe empty)."""
    if abs(delta) < _EPS:
        # Too short along this axis to divide by: keep the whole range when either end is in
        # the slab (an error under _EPS, on the side of reporting contact).
        end = start + delta
        return (t0, t1) if min(start, end) <= hi and max(start, end) >= lo else (1.0, 0.0)
    ta, tb = (lo - start) / delta, (hi - start) / delta
    if ta > tb:
        ta, tb = tb, ta
    return max(t0, ta), min(t1, tb)


def segment_intersects_box(a: ArrayLike, b: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> bool:
    """Whether the closed segment ``a -> b`` touches the closed box (slab method)."""
    pa = np.asarray(a, dtype=np.float64)
    d = np.asarray(b, dtype=np.float64) - pa
    lo_ = np.asarray(lo, dtype=np.float64)
    hi_ = np.asarray(hi, dtype=np.float64)
    t0, t1 = 0.0, 1.0
    for axis in range(3):
        t0, t1 = _clip_to_slab(pa[axis], d[axis], lo_[axis], hi_[axis], t0, t1)
        if t0 > t1:
            return False
    return True


def segment_intersects_cylinder(
    a: ArrayLike, b: ArrayLike, center_xy: ArrayLike, radius: float, z_min: float, z_max: float
) -> bool:
    """Whether the closed segment ``a -> b`` touches the closed vertical cylinder.

    Clip the segment to the cylinder's height, then minimise the (convex) squared horizontal
    distance to the axis over what is left: the minimum is at the clamped vertex.
    """
    pa = np.asarray(a, dtype=np.float64)
    d = np.asarray(b, dtype=np.float64) - pa
    t0, t1 = _clip_to_slab(pa[2], d[2], z_min, z_max, 0.0, 1.0)
    if t0 > t1:
        return False
    rel = pa[:2] - np.asarray(center_xy, dtype=np.float64)
    dxy = d[:2]
    quad = float(dxy @ dxy)
    t = t0 if quad < _EPS else min(max(-float(rel @ dxy) / quad, t0), t1)
    closest = rel + t * dxy
    return float(closest @ closest) <= radius * radius


def segment_inside_box(a: ArrayLike, b: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> bool:
    """A box is convex, so a segment lies inside exactly when both of its ends do."""
    return point_in_box(a, lo, hi) and point_in_box(b, lo, hi)
