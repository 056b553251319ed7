"""Geometry: pinhole round trips, transforms, quaternions, and zone tests vs dense sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robostral_agent import geometry as g

INTR = g.CameraIntrinsics(fx=615.0, fy=612.5, cx=319.5, cy=241.0, width=640, height=480)

finite = st.floats(-2.0, 2.0, allow_nan=False)
points = st.tuples(finite, finite, finite).map(np.array)
unit_quaternions = (
    st.tuples(finite, finite, finite, finite)
    .filter(lambda q: np.linalg.norm(q) > 1e-3)
    .map(lambda q: np.array(q) / np.linalg.norm(q))
)


@given(st.floats(0, 639), st.floats(0, 479), st.floats(0.05, 10.0))
def test_deproject_then_project_returns_the_pixel(u: float, v: float, depth: float) -> None:
    p = INTR.deproject(u, v, depth)
    assert p[2] == pytest.approx(depth)
    uv = INTR.project(p)
    assert uv == pytest.approx([u, v], abs=1e-6)


def test_deproject_is_vectorised() -> None:
    u, v = np.meshgrid(np.arange(0, 640, 64), np.arange(0, 480, 48))
    pts = INTR.deproject(u, v, np.full(u.shape, 2.0))
    assert pts.shape == (*u.shape, 3)
    assert INTR.project(pts) == pytest.approx(np.stack([u, v], -1))


def test_principal_point_is_on_axis() -> None:
    assert INTR.deproject(319.5, 241.0, 1.5) == pytest.approx([0.0, 0.0, 1.5])


def test_project_refuses_points_behind_camera() -> None:
    with pytest.raises(g.GeometryError):
        INTR.project([0.0, 0.0, -1.0])


def test_intrinsics_from_k_and_validation() -> None:
    k = [500.0, 0.0, 320.0, 0.0, 501.0, 240.0, 0.0, 0.0, 1.0]
    intr = g.CameraIntrinsics.from_k(k, 640, 480)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (500.0, 501.0, 320.0, 240.0)
    assert intr.k == k
    with pytest.raises(g.GeometryError, match='skew'):
        g.CameraIntrinsics.from_k([500, 3, 320, 0, 501, 240, 0, 0, 1], 640, 480)
    with pytest.raises(g.GeometryError, match='9'):
        g.CameraIntrinsics.from_k([500, 0, 320], 640, 480)
    with pytest.raises(g.GeometryError, match='positive'):
        g.CameraIntrinsics.from_k([0, 0, 320, 0, 501, 240, 0, 0, 1], 640, 480)
    with pytest.raises(g.GeometryError, match='finite'):
        g.CameraIntrinsics(math.nan, 1.0, 0.0, 0.0, 10, 10)


def test_from_fov_matches_the_pinhole_relation() -> None:
    intr = g.CameraIntrinsics.from_fov(60.0, 640, 480)
    top = intr.deproject(intr.cx, 0.0 - 0.5, 1.0)  # the upper edge of the first row
    assert math.degrees(2 * math.atan2(-top[1], 1.0)) == pytest.approx(60.0, abs=0.2)


def test_undistort_pixels_inverts_opencv_distortion() -> None:
    cv2 = pytest.importorskip('cv2')
    intr = g.CameraIntrinsics.from_k(INTR.k, 640, 480, (-0.1, 0.02, 0.001, -0.001, 0.0))
    ideal = np.array([[100.0, 80.0], [320.0, 240.0], [600.0, 400.0]])
    rays = np.column_stack([(ideal - [INTR.cx, INTR.cy]) / [INTR.fx, INTR.fy], np.ones(3)])
    distorted, _ = cv2.projectPoints(
        rays, np.zeros(3), np.zeros(3), np.asarray(intr.k).reshape(3, 3),
        np.asarray(intr.distortion),
    )  # fmt: skip
    assert intr.undistort_pixels(distorted.reshape(-1, 2)) == pytest.approx(ideal, abs=1e-3)
    assert INTR.undistort_pixels(ideal) == pytest.approx(ideal)


# --- Quaternions and transforms --------------------------------------------------------------


def test_quaternion_unit_checks() -> None:
    assert g.quaternion_is_unit([1.0, 0.0, 0.0, 0.0])
    assert g.quaternion_is_unit([0.0, 0.0, 0.0, 1.0005])
    assert not g.quaternion_is_unit([0.0, 0.0, 0.0, 1.01])
    assert not g.quaternion_is_unit([math.nan, 0.0, 0.0, 1.0])
    assert not g.quaternion_is_unit([0.0, 0.0, 1.0])
    with pytest.raises(g.GeometryError):
        g.normalize_quaternion([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(g.GeometryError):
        g.normalize_quaternion([math.inf, 0.0, 0.0, 1.0])
    assert g.normalize_quaternion([0.0, 0.0, 0.0, 2.0]) == pytest.approx([0, 0, 0, 1])


def test_tool_down_quaternion_points_down() -> None:
    assert g.tool_axis([1.0, 0.0, 0.0, 0.0]) == pytest.approx([0.0, 0.0, -1.0])
    assert g.angle_between_deg(g.tool_axis([1.0, 0.0, 0.0, 0.0]), [0, 0, -1]) == pytest.approx(0.0)
    assert g.angle_between_deg([1, 0, 0], [-1, 0, 0]) == pytest.approx(180.0)


@given(unit_quaternions, points, points)
def test_transform_inverse_and_composition(q: np.ndarray, t: np.ndarray, p: np.ndarray) -> None:
    tf = g.Transform.from_pose(t, q)
    assert tf.inverse().apply(tf.apply(p)) == pytest.approx(p, abs=1e-9)
    assert (tf @ tf.inverse()).apply(p) == pytest.approx(p, abs=1e-9)
    assert np.allclose(tf.matrix() @ np.append(p, 1.0), np.append(tf.apply(p), 1.0))
    q2 = tf.orientation
    assert min(np.linalg.norm(q2 - q), np.linalg.norm(q2 + q)) < 1e-9


def test_transform_from_xyz_quat() -> None:
    tf = g.Transform.from_xyz_quat([1.0, 2.0, 3.0, 0.0, 0.0, math.sin(math.pi / 4),
                                    math.cos(math.pi / 4)])  # fmt: skip
    assert tf.apply([1.0, 0.0, 0.0]) == pytest.approx([1.0, 3.0, 3.0])
    with pytest.raises(g.GeometryError):
        g.Transform.from_xyz_quat([1.0, 2.0, 3.0])
    with pytest.raises(g.GeometryError):
        g.Transform.from_pose([math.nan, 0, 0], [0, 0, 0, 1])


# --- Zones and segments: exact tests agree with dense sampling -------------------------------

BOX_LO = np.array([0.52, -0.08, -0.01])
BOX_HI = np.array([0.62, 0.08, 0.30])
CYL = (np.array([0.0, -0.5]), 0.08, 0.0, 1.0)


def test_point_in_zones() -> None:
    assert g.point_in_box([0.57, 0.0, 0.1], BOX_LO, BOX_HI)
    assert g.point_in_box(BOX_HI, BOX_LO, BOX_HI)  # closed
    assert not g.point_in_box([0.57, 0.0, 0.31], BOX_LO, BOX_HI)
    assert g.point_in_cylinder([0.08, -0.5, 0.5], *CYL)  # on the wall
    assert not g.point_in_cylinder([0.081, -0.5, 0.5], *CYL)
    assert not g.point_in_cylinder([0.0, -0.5, 1.01], *CYL)


def _box_distance(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.maximum(np.maximum(lo - p, p - hi), 0.0), axis=-1)


def _cylinder_distance(p: np.ndarray, c: np.ndarray, r: float, z0: float, z1: float):
    radial = np.maximum(np.linalg.norm(p[..., :2] - c, axis=-1) - r, 0.0)
    vertical = np.maximum(np.maximum(z0 - p[..., 2], p[..., 2] - z1), 0.0)
    return np.hypot(radial, vertical)


SAMPLES = 4001
near_box = st.tuples(
    st.floats(0.3, 0.85), st.floats(-0.3, 0.3), st.floats(-0.2, 0.5)
).map(np.array)  # fmt: skip
near_cyl = st.tuples(st.floats(-0.3, 0.3), st.floats(-0.8, -0.2), st.floats(-0.3, 1.3)).map(
    np.array
)


def _samples(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + np.linspace(0.0, 1.0, SAMPLES)[:, None] * (b - a)


@given(near_box, near_box)
def test_segment_vs_box_agrees_with_dense_sampling(a: np.ndarray, b: np.ndarray) -> None:
    hit = g.segment_intersects_box(a, b, BOX_LO, BOX_HI)
    dist = _box_distance(_samples(a, b), BOX_LO, BOX_HI)
    spacing = np.linalg.norm(b - a) / (SAMPLES - 1)
    if np.any(dist == 0.0):
        assert hit
    if hit:
        assert dist.min() <= spacing + 1e-12
    else:
        assert dist.min() > 0.0


@given(near_cyl, near_cyl)
def test_segment_vs_cylinder_agrees_with_dense_sampling(a: np.ndarray, b: np.ndarray) -> None:
    hit = g.segment_intersects_cylinder(a, b, *CYL)
    dist = _cylinder_distance(_samples(a, b), *CYL)
    spacing = np.linalg.norm(b - a) / (SAMPLES - 1)
    if np.any(dist == 0.0):
        assert hit
    if hit:
        assert dist.min() <= spacing + 1e-12
    else:
        assert dist.min() > 0.0


@given(st.floats(0.0, 0.3), st.floats(-0.2, 0.2))
def test_vertical_and_horizontal_segments(z: float, y: float) -> None:
    """Axis-parallel segments hit the degenerate (zero-delta) branches of the slab test."""
    inside_y = -0.08 <= y <= 0.08
    assert g.segment_intersects_box([0.57, y, -0.2], [0.57, y, 0.5], BOX_LO, BOX_HI) == inside_y
    assert g.segment_intersects_box([0.3, y, z], [0.8, y, z], BOX_LO, BOX_HI) == inside_y


def test_segment_touching_a_face_counts() -> None:
    assert g.segment_intersects_box([0.40, 0.0, 0.30], [0.70, 0.0, 0.30], BOX_LO, BOX_HI)
    assert not g.segment_intersects_box([0.40, 0.0, 0.3001], [0.70, 0.0, 0.3001], BOX_LO, BOX_HI)
    # A vertical segment exactly on the cylinder wall.
    assert g.segment_intersects_cylinder([0.08, -0.5, -1.0], [0.08, -0.5, 2.0], *CYL)
    # A degenerate (point) segment.
    assert g.segment_intersects_cylinder([0.0, -0.5, 0.5], [0.0, -0.5, 0.5], *CYL)
    assert not g.segment_intersects_cylinder([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], *CYL)


def test_segment_inside_box() -> None:
    lo, hi = np.array([0.15, -0.55, -0.01]), np.array([0.75, 0.55, 0.60])
    assert g.segment_inside_box([0.2, 0.0, 0.1], [0.7, 0.5, 0.5], lo, hi)
    assert not g.segment_inside_box([0.2, 0.0, 0.1], [0.8, 0.5, 0.5], lo, hi)
