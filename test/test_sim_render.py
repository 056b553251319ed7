"""The cell camera: K and pose match the renderer, depth is metric, renders are deterministic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from robostral_agent import cell
from robostral_agent.contract import Scene, SceneObject
from robostral_agent.geometry import Transform
from robostral_agent.sim import Lighting, WorkCell, random_scene
from robostral_agent.sim.workcell import resting_height

# Balls spread over the image: centre, the free area's corners, inside both bins.
BALLS = Scene(
    tuple(
        SceneObject('ball', color, xy)
        for color, xy in [
            ('red', (0.45, 0.0)),
            ('green', (0.29, 0.24)),
            ('blue', (0.61, -0.24)),
            ('yellow', (0.45, 0.40)),
            ('red', (0.30, -0.22)),
            ('blue', (0.60, 0.22)),
        ]
    )
)


@pytest.fixture(scope='module')
def balls() -> WorkCell:
    wc = WorkCell(BALLS)
    yield wc
    wc.close()


def projected_centres(wc: WorkCell) -> np.ndarray:
    """Where the published K and camera pose put each ball's centre."""
    cam = wc.camera
    centres = np.array([[*o.xy, resting_height(o)] for o in wc.scene.objects])
    return cam.intrinsics.project(cam.transform.inverse().apply(centres))


def rendered_centres(wc: WorkCell) -> np.ndarray:
    """Centroid of each ball's silhouette in a segmentation render.

    A sphere's silhouette is an ellipse whose centre lies within ~0.05 px of the projection
    of the sphere's centre at these distances, so the centroid is a precise probe of K.
    """
    seg = wc.render_segmentation()
    out = []
    for i in range(len(wc.scene.objects)):
        vs, us = np.nonzero(seg.object_mask(i))
        assert us.size > 100, f'ball {i} is barely visible ({us.size} px)'
        out.append((us.mean(), vs.mean()))
    return np.array(out)


def test_published_k_puts_points_where_the_renderer_draws_them(balls: WorkCell) -> None:
    error = np.linalg.norm(projected_centres(balls) - rendered_centres(balls), axis=1)
    # A half-pixel convention error (cx = w/2 instead of (w-1)/2) would show as 0.5 px.
    assert error.max() < 0.25, error


def test_intrinsics_follow_the_ros_pixel_centre_convention(balls: WorkCell) -> None:
    k = balls.camera.intrinsics
    assert (k.width, k.height) == (cell.IMAGE_WIDTH, cell.IMAGE_HEIGHT)
    assert (k.cx, k.cy) == ((k.width - 1) / 2.0, (k.height - 1) / 2.0)
    assert k.fx == pytest.approx(k.fy)


def table_rays(wc: WorkCell, frame_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected optical-axis depth of table pixels (ray-plane intersection) and the rendered."""
    seg = wc.render_segmentation()
    table = (seg.geom == wc.model.geom('table').id).astype(np.uint8)
    # Colour and depth are anti-aliased: pixels on an object's silhouette mix both depths.
    vs, us = np.nonzero(cv2.erode(table, np.ones((5, 5), np.uint8)))
    pick = np.linspace(0, us.size - 1, 2000).astype(int)
    u, v = us[pick].astype(float), vs[pick].astype(float)
    cam = wc.camera
    rays = cam.intrinsics.deproject(u, v, np.ones_like(u))  # optical frame, z = 1
    world = rays @ cam.transform.rotation.T
    origin = np.asarray(cam.position)
    scale = (cell.TABLE_TOP_Z - origin[2]) / world[:, 2]  # metres along each z=1 ray
    hit = origin + world * scale[:, None]
    # Pixels near the table's edges may show its side faces: keep the top well inside.
    (x0, x1), (y0, y1) = (-0.2, 0.9), (-0.75, 0.75)
    top = (hit[:, 0] > x0) & (hit[:, 0] < x1) & (hit[:, 1] > y0) & (hit[:, 1] < y1)
    assert top.sum() > 1000
    return scale[top], frame_depth[vs[pick], us[pick]][top]


def test_depth_is_metric_distance_along_the_optical_axis(balls: WorkCell) -> None:
    frame = balls.render()
    expected, rendered = table_rays(balls, frame.depth)
    assert frame.depth.dtype == np.float32
    assert np.abs(rendered - expected).max() < 0.005
    assert np.median(np.abs(rendered - expected)) < 0.001


def test_depth_of_an_object_top_matches_its_height(balls: WorkCell) -> None:
    frame = balls.render()
    cam = balls.camera
    (u, v) = projected_centres(balls)[0]
    top = np.array([0.45, 0.0, 0.04])  # the ball's top, seen from above at this pixel roughly
    z_top = cam.transform.inverse().apply(top)[2]
    assert abs(float(frame.depth[round(v), round(u)]) - z_top) < 0.01


def test_same_seed_same_scene_and_bit_identical_images() -> None:
    assert random_scene(11) == random_scene(11)
    assert random_scene(11) != random_scene(12)
    with WorkCell(random_scene(11)) as a, WorkCell(random_scene(11)) as b:
        fa, fb = a.render(), b.render()
        np.testing.assert_array_equal(fa.rgb, fb.rgb)
        np.testing.assert_array_equal(fa.depth, fb.depth)
        a.load_scene(random_scene(12))
        assert not np.array_equal(a.render().rgb, fa.rgb)
        a.load_scene(random_scene(11))
        np.testing.assert_array_equal(a.render().rgb, fa.rgb)


def test_a_moved_camera_renders_where_its_own_k_and_pose_say() -> None:
    moved = cell.reference_camera(position=(-0.14, 0.01, 1.24), look_at=(0.46, 0.01, 0.0))
    with WorkCell(BALLS) as wc:
        before = rendered_centres(wc)
        wc.set_camera(moved)
        after = rendered_centres(wc)
        assert np.linalg.norm(after - before, axis=1).min() > 2.0  # the view did move
        error = np.linalg.norm(projected_centres(wc) - after, axis=1)
        assert error.max() < 0.25, error


def test_lighting_and_colours_change_pixels_not_depth() -> None:
    with WorkCell(BALLS) as wc:
        base = wc.render()
        wc.set_lighting(Lighting(ambient=0.5, diffuse=0.1, sun_direction=(0.3, 0.2, -1.0)))
        wc.set_rgba('table', (0.3, 0.35, 0.4, 1.0))
        lit = wc.render()
        assert np.abs(lit.rgb.astype(int) - base.rgb.astype(int)).mean() > 5.0
        np.testing.assert_array_equal(lit.depth, base.depth)
        wc.set_rgba(0, (0.2, 0.9, 0.9, 1.0))
        ball = wc.render_segmentation().object_mask(0)
        recoloured = wc.render().rgb
        assert np.abs(recoloured[ball].astype(int) - lit.rgb[ball].astype(int)).mean() > 50
        wc.load_scene(BALLS)  # lighting and table colour persist; objects take their names'
        np.testing.assert_array_equal(wc.render().rgb, lit.rgb)


def _box_mask(camera: cell.CameraSpec, lo: tuple, hi: tuple) -> np.ndarray:
    """Image region covered by an axis-aligned box (the hull of its projected corners)."""
    corners = np.array(
        [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    uv = camera.intrinsics.project(camera.transform.inverse().apply(corners))
    mask = np.zeros((camera.intrinsics.height, camera.intrinsics.width), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(uv).astype(np.int32)), 1)
    return mask.astype(bool)


def protected_region(camera: cell.CameraSpec) -> np.ndarray:
    """Free placement area (up to the tallest object) and both bins, with a 1 cm margin."""
    (x0, x1), (y0, y1) = cell.FREE_AREA
    m = 0.01
    mask = _box_mask(camera, (x0 - m, y0 - m, 0.0), (x1 + m, y1 + m, cell.CYLINDER_HEIGHT))
    half = cell.BIN_INNER / 2.0 + cell.BIN_WALL_THICKNESS + m
    for cx, cy in cell.BIN_CENTERS.values():
        mask |= _box_mask(
            camera, (cx - half, cy - half, 0.0), (cx + half, cy + half, cell.BIN_WALL_HEIGHT)
        )
    return mask


def test_the_arm_at_rest_hides_no_part_of_the_free_area_or_the_bins() -> None:
    with WorkCell(Scene()) as wc:
        robot = wc.render_segmentation().robot_mask()
        protected = protected_region(wc.camera)
    assert robot.sum() > 1000  # the arm is in the picture (the test can fail)
    assert protected.sum() > 50_000
    assert not (robot & protected).any(), f'{int((robot & protected).sum())} robot pixels cover it'


def test_the_protected_region_check_catches_an_arm_in_the_way() -> None:
    """The same check flags the arm at the policy home pose, above the middle of the table."""
    with WorkCell(Scene()) as wc:
        kin = wc.kinematics
        result = kin.solve((0.30, 0.0, 0.35), (0.0, 1.0, 0.0, 0.0), (0.0, 0.3, 0.6, 0.0, 0.7, 0.0))
        assert result.converged(1e-4, 1e-3)
        wc.data.qpos[kin.qpos_index] = result.q
        import mujoco

        mujoco.mj_forward(wc.model, wc.data)
        robot = wc.render_segmentation().robot_mask()
        assert (robot & protected_region(wc.camera)).sum() > 1000


def test_camera_transform_is_the_reference_optical_frame(balls: WorkCell) -> None:
    ref = cell.reference_camera()
    assert balls.camera.pose7 == ref.pose7
    t = Transform.from_xyz_quat(ref.pose7)
    forward = t.rotation[:, 2]
    look = np.subtract(cell.CAMERA_LOOK_AT, cell.CAMERA_POSITION)
    np.testing.assert_allclose(forward, look / np.linalg.norm(look), atol=1e-9)
