"""Grounding against synthetic RGB-D frames whose true 3D points are known exactly.

The depth images are ray-cast here analytically (table plane, balls, cubes, cylinders) through
the reference camera, so every expected target is computed, not copied from the code under
test. The geometric chain (box -> pixel -> depth -> K -> camera pose) must land within 1 mm
of the true point; the surface -> centre correction for solid objects within a few mm (the
simulator's grasp tolerates about 1.5 cm).
"""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from robostral_agent.cell import BIN_CENTERS, reference_camera
from robostral_agent.geometry import CameraIntrinsics, GeometryError
from robostral_agent.vlm import grounding
from robostral_agent.vlm.grounding import (
    GroundingConfig,
    GroundingError,
    box_to_pixels,
    ground,
    locate,
    pixel_window,
)

CAMERA = reference_camera()
K = CAMERA.intrinsics
CONFIG = GroundingConfig(camera_pose=tuple(CAMERA.pose7))
MM = 1e-3


def _rays(intrinsics: CameraIntrinsics) -> np.ndarray:
    """Per-pixel ray directions in the optical frame, scaled to z = 1 (so s = depth)."""
    v, u = np.mgrid[0 : intrinsics.height, 0 : intrinsics.width].astype(np.float64)
    pixels = np.stack([u.ravel(), v.ravel()], axis=1)
    ideal = intrinsics.undistort_pixels(pixels)
    x = (ideal[:, 0] - intrinsics.cx) / intrinsics.fx
    y = (ideal[:, 1] - intrinsics.cy) / intrinsics.fy
    return np.stack([x, y, np.ones_like(x)], axis=1).reshape(
        intrinsics.height, intrinsics.width, 3
    )


class Scene:
    """Ray casting of a table (z = 0) and solid objects; depth is z in the optical frame."""

    def __init__(self, intrinsics: CameraIntrinsics = K) -> None:
        self.intrinsics = intrinsics
        rotation = CAMERA.transform.rotation
        self.origin = np.asarray(CAMERA.position)
        self.dirs = _rays(intrinsics) @ rotation.T  # base frame, s along it is the depth
        self.depth = self._plane(0.0)
        self.ids = np.zeros(self.depth.shape, np.int32)

    def _plane(self, z: float) -> np.ndarray:
        dz = self.dirs[..., 2]
        with np.errstate(divide='ignore', invalid='ignore'):
            s = (z - self.origin[2]) / dz
        return np.where(s > 0, s, np.inf)

    def _keep(self, s: np.ndarray, ident: int) -> None:
        closer = s < self.depth
        self.depth = np.where(closer, s, self.depth)
        self.ids[closer] = ident

    def ball(self, centre: tuple[float, float, float], radius: float, ident: int) -> None:
        oc = self.origin - np.asarray(centre)
        a = np.sum(self.dirs**2, axis=-1)
        b = 2.0 * self.dirs @ oc
        c = oc @ oc - radius**2
        disc = b * b - 4 * a * c
        with np.errstate(invalid='ignore'):
            s = (-b - np.sqrt(disc)) / (2 * a)
        self._keep(np.where(disc >= 0, s, np.inf), ident)

    def box(self, lo: tuple[float, ...], hi: tuple[float, ...], ident: int) -> None:
        t0 = np.full(self.depth.shape, -np.inf)
        t1 = np.full(self.depth.shape, np.inf)
        for axis in range(3):
            d = self.dirs[..., axis]
            with np.errstate(divide='ignore', invalid='ignore'):
                ta = (lo[axis] - self.origin[axis]) / d
                tb = (hi[axis] - self.origin[axis]) / d
            t0 = np.maximum(t0, np.minimum(ta, tb))
            t1 = np.minimum(t1, np.maximum(ta, tb))
        self._keep(np.where((t0 <= t1) & (t0 > 0), t0, np.inf), ident)

    def cylinder(self, xy: tuple[float, float], radius: float, height: float, ident: int) -> None:
        o = self.origin[:2] - np.asarray(xy)
        d = self.dirs[..., :2]
        a = np.sum(d**2, axis=-1)
        b = 2.0 * d @ o
        c = o @ o - radius**2
        disc = b * b - 4 * a * c
        with np.errstate(invalid='ignore'):
            side = (-b - np.sqrt(disc)) / (2 * a)
        z_side = self.origin[2] + side * self.dirs[..., 2]
        side = np.where((disc >= 0) & (z_side >= 0) & (z_side <= height), side, np.inf)
        top = self._plane(height)
        p = self.origin[:2] + top[..., None] * d
        top = np.where(np.sum((p - np.asarray(xy)) ** 2, axis=-1) <= radius**2, top, np.inf)
        self._keep(np.minimum(side, top), ident)

    def image(self) -> np.ndarray:
        return self.depth.astype(np.float32)

    def box_of(self, ident: int) -> tuple[float, float, float, float]:
        """The silhouette's bounding box as image fractions (x0, y0, x1, y1)."""
        rows, cols = np.nonzero(self.ids == ident)
        h, w = self.depth.shape
        return (cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h)


def _box_around(u: float, v: float, half: float = 10.0) -> tuple[float, float, float, float]:
    """Fractions of a box centred on pixel (u, v): edge at u +- half -> (u + 0.5) / W."""
    w, h = K.width, K.height
    return ((u - half + 0.5) / w, (v - half + 0.5) / h, (u + half + 0.5) / w, (v + half + 0.5) / h)


def _pixel_of(point: tuple[float, float, float], intrinsics: CameraIntrinsics = K) -> np.ndarray:
    in_camera = CAMERA.transform.inverse().apply(point)
    return intrinsics.project(in_camera)


TABLE_POINTS = [(0.45, 0.10, 0.0), (0.30, -0.22, 0.0), (0.60, 0.40, 0.0), (0.45, -0.40, 0.0)]


@pytest.mark.parametrize('point', TABLE_POINTS)
def test_surface_point_within_1mm(point: tuple[float, float, float]) -> None:
    depth = Scene().image()
    u, v = _pixel_of(point)
    found = locate(_box_around(u, v), 'left bin', depth, K, CONFIG)
    assert found.surface is not None
    assert np.linalg.norm(np.subtract(found.surface, point)) < 1 * MM
    assert found.pixel == pytest.approx((u, v), abs=1e-9)
    place = ground('place', 'left bin', _box_around(u, v), depth, K, CONFIG)
    expected = (point[0], point[1], CONFIG.place_height_m)
    assert np.linalg.norm(np.subtract(place.target.position, expected)) < 1 * MM
    assert place.target.frame_id == 'base_link'
    assert place.target.orientation == (1.0, 0.0, 0.0, 0.0)


def test_holes_in_depth_are_skipped_until_too_few_remain() -> None:
    point = TABLE_POINTS[0]
    u, v = _pixel_of(point)
    box = _box_around(u, v, half=12.0)
    rng = np.random.default_rng(3)
    depth = Scene().image()
    holes = depth.copy()
    mask = rng.random(depth.shape) < 0.5
    holes[mask & (rng.random(depth.shape) < 0.5)] = np.nan
    holes[mask] = np.where(np.isnan(holes[mask]), np.nan, 0.0)  # NaN and zero holes
    found = locate(box, 'left bin', holes, K, CONFIG)
    assert np.linalg.norm(np.subtract(found.surface, point)) < 1 * MM
    assert 0.4 < found.valid_fraction < 0.6
    mostly_holes = depth.copy()
    mostly_holes[rng.random(depth.shape) < 0.85] = np.nan
    with pytest.raises(GroundingError) as err:
        locate(box, 'left bin', mostly_holes, K, CONFIG)
    assert err.value.code == grounding.NO_DEPTH
    beyond = depth.copy() + CONFIG.max_depth_m  # all out of range
    with pytest.raises(GroundingError, match='NO_DEPTH'):
        locate(box, 'left bin', beyond, K, CONFIG)


def test_distorted_camera_is_undistorted_before_deprojection() -> None:
    lens = replace(K, distortion=(-0.3, 0.12, 0.001, -0.002, 0.0))
    depth = Scene(lens).image()
    point = (0.70, 0.45, 0.0)
    in_camera = CAMERA.transform.inverse().apply(point)
    k = np.asarray(lens.k).reshape(3, 3)
    distorted, _ = cv2.projectPoints(
        in_camera.reshape(1, 1, 3), np.zeros(3), np.zeros(3), k, np.asarray(lens.distortion)
    )
    u, v = distorted.reshape(2)
    assert np.hypot(*(np.array([u, v]) - _pixel_of(point))) > 3  # the lens matters here
    found = locate(_box_around(u, v, 6.0), 'right bin', depth, lens, CONFIG)
    assert np.linalg.norm(np.subtract(found.surface, point)) < 1 * MM


def _place(scene: Scene, shape: str, xy: tuple[float, float], ident: int) -> tuple[float, ...]:
    """Put a reference-sized object on the table; its centre."""
    if shape == 'ball':
        scene.ball((*xy, 0.02), 0.02, ident)
        return (*xy, 0.02)
    if shape == 'cube':
        scene.box((xy[0] - 0.02, xy[1] - 0.02, 0.0), (xy[0] + 0.02, xy[1] + 0.02, 0.04), ident)
        return (*xy, 0.02)
    scene.cylinder(xy, 0.02, 0.05, ident)
    return (*xy, 0.025)


SHAPES_AT = [('ball', (0.40, -0.10)), ('cube', (0.45, 0.12)), ('cylinder', (0.55, -0.20))]


@pytest.mark.parametrize('refine', [True, False])
@pytest.mark.parametrize(('shape', 'xy'), SHAPES_AT)
def test_pick_targets_the_object_centre(shape: str, xy: tuple[float, float], refine: bool) -> None:
    scene = Scene()
    centre = _place(scene, shape, xy, 1)
    depth = scene.image()
    box = scene.box_of(1)
    config = replace(CONFIG, refine_foreground=refine)
    pick = ground('pick', f'red {shape}', box, depth, K, config)
    error = np.linalg.norm(np.subtract(pick.target.position, centre))
    # measured, refined: ball 1.2 mm, cube 0.6 mm, cylinder 1.2 mm; from the box centre alone:
    # 1.9, 1.0 and 3.9 mm (the grasp tolerates ~15 mm)
    assert error < 5 * MM, f'{shape}: {error * 1e3:.1f} mm from the centre'
    surface_error = np.linalg.norm(np.subtract(pick.surface, centre))
    assert surface_error > error  # the correction moved the point towards the centre
    inspect = ground('inspect', f'red {shape}', box, depth, K, config)
    assert inspect.target.position[2] == pytest.approx(pick.target.position[2] + 0.15)
    move = ground('move_to', f'red {shape}', box, depth, K, config)
    assert move.target.position[2] == pytest.approx(pick.target.position[2] + 0.10)


@pytest.mark.parametrize(('shape', 'xy'), SHAPES_AT)
def test_the_depth_corrects_a_box_that_is_off(shape: str, xy: tuple[float, float]) -> None:
    """A model's box shifted by 40% of its width and 30% of its height, as robostral-tiny's
    often are: the object's own depth still finds its centre; the box centre misses it."""
    scene = Scene()
    centre = _place(scene, shape, xy, 1)
    x0, y0, x1, y1 = scene.box_of(1)
    dx, dy = 0.4 * (x1 - x0), 0.3 * (y1 - y0)
    box = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
    refined = ground('pick', f'red {shape}', box, scene.image(), K, CONFIG)
    plain = ground('pick', f'red {shape}', box, scene.image(), K,
                   replace(CONFIG, refine_foreground=False))  # fmt: skip
    # measured: ball 1.2 / 21.6 mm, cube 3.6 / 19.2 mm, cylinder 2.2 / 30.2 mm
    assert np.linalg.norm(np.subtract(refined.target.position, centre)) < 5 * MM
    assert np.linalg.norm(np.subtract(plain.target.position, centre)) > 15 * MM
    # Without the margin and the reach the box cuts the object's top, and its centre comes
    # out worse.
    tight = ground('pick', f'red {shape}', box, scene.image(), K,
                   replace(CONFIG, foreground_margin=0.0, foreground_reach=0.0))  # fmt: skip
    assert np.linalg.norm(np.subtract(tight.target.position, centre)) > np.linalg.norm(
        np.subtract(refined.target.position, centre)
    )


@pytest.mark.parametrize(('shape', 'xy'), SHAPES_AT)
def test_the_object_is_followed_beyond_a_box_on_its_edge(
    shape: str, xy: tuple[float, float]
) -> None:
    """A box beside the object (shifted by its whole width), whose grown margin holds only
    the object's edge: the object's group is followed out of the box (foreground_reach), so
    its whole top gives the centre; without the reach only the sliver in the margin does."""
    scene = Scene()
    centre = _place(scene, shape, xy, 1)
    x0, y0, x1, y1 = scene.box_of(1)
    shift = x1 - x0
    box = (x0 + shift, y0, x1 + shift, y1)
    reached = ground('pick', f'red {shape}', box, scene.image(), K, CONFIG)
    clipped = ground('pick', f'red {shape}', box, scene.image(), K,
                     replace(CONFIG, foreground_reach=0.0))  # fmt: skip
    # measured: ball 1.2 / 12.5 mm, cube 0.6 / 16.5 mm, cylinder 1.2 / 13.3 mm
    assert np.linalg.norm(np.subtract(reached.target.position, centre)) < 3 * MM
    assert np.linalg.norm(np.subtract(clipped.target.position, centre)) > 10 * MM


def test_an_edge_in_the_margin_does_not_make_a_box_on_bare_table_an_object() -> None:
    """The reach moves the centre found, never whether an object is found: a box on bare
    table whose grown margin holds a corner of an object (a few pixels, under
    min_object_pixels) stays NO_OBJECT, as it was without the reach."""
    scene = Scene()
    centre = _place(scene, 'cube', (0.45, 0.12), 1)
    x0, y0, x1, y1 = scene.box_of(1)
    shift = 1.14  # of the box's size, down and across
    box = (x0 + shift * (x1 - x0), y0 + shift * (y1 - y0), x1 + shift * (x1 - x0),
           y1 + shift * (y1 - y0))  # fmt: skip
    height, width = scene.depth.shape
    r0, r1, c0, c1 = pixel_window(box_to_pixels(box, width, height), 1.5, scene.depth.shape)
    assert 0 < (scene.ids[r0 : r1 + 1, c0 : c1 + 1] == 1).sum() < CONFIG.min_object_pixels
    with pytest.raises(GroundingError, match='NO_OBJECT'):
        ground('pick', 'red cube', box, scene.image(), K, CONFIG)
    # Counted (one pixel is enough), the corner is followed to the whole object's centre.
    pick = ground('pick', 'red cube', box, scene.image(), K, replace(CONFIG, min_object_pixels=1))
    assert np.linalg.norm(np.subtract(pick.target.position, centre)) < 3 * MM


def test_the_object_under_the_box_centre_wins_over_a_neighbour() -> None:
    scene = Scene()
    centre = _place(scene, 'cube', (0.45, 0.05), 1)
    _place(scene, 'cylinder', (0.45, 0.105), 2)
    x0, y0, x1, y1 = scene.box_of(1)
    grow = (x1 - x0) * 0.75
    box = (x0 - grow, y0, x1 + grow, y1)  # wider on both sides, centred on the cube
    h, w = scene.depth.shape
    inside = scene.ids[int(y0 * h) : int(y1 * h), int(box[0] * w) : int(box[2] * w)]
    assert (inside == 2).sum() > 50  # the neighbour is in the box
    pick = ground('pick', 'red cube', box, scene.image(), K, CONFIG)
    assert np.linalg.norm(np.subtract(pick.target.position, centre)) < 5 * MM


def test_an_object_box_on_bare_table_is_not_found() -> None:
    """Nothing stands in the box: the model's box missed; no proposal (not a grasp at air).
    Without the refinement the same box grounds on the table."""
    u, v = _pixel_of(TABLE_POINTS[0])
    depth = Scene().image()
    with pytest.raises(GroundingError) as err:
        ground('pick', 'red cube', _box_around(u, v), depth, K, CONFIG)
    assert err.value.code == grounding.NO_OBJECT
    plain = ground('pick', 'red cube', _box_around(u, v), depth, K,
                   replace(CONFIG, refine_foreground=False))  # fmt: skip
    assert plain.target.position[2] == pytest.approx(CONFIG.min_grasp_height_m)
    # A bin's box is never refined: its floor is the table.
    ground('place', 'left bin', _box_around(u, v), depth, K, CONFIG)
    # Depth noise: a few pixels 3 cm nearer the camera at the box centre are no object.
    noisy = depth.copy()
    cu, cv = round(u), round(v)
    noisy[cv : cv + 3, cu : cu + 3] -= 0.03  # 9 pixels, under min_object_pixels
    with pytest.raises(GroundingError, match='NO_OBJECT'):
        ground('pick', 'red cube', _box_around(u, v), noisy, K, CONFIG)
    speck = ground('pick', 'red cube', _box_around(u, v), noisy, K,
                   replace(CONFIG, min_object_pixels=9))  # fmt: skip
    assert speck.pixel == pytest.approx((cu + 1, cv + 1))


def test_a_wrong_table_z_errs_on_the_safe_side() -> None:
    """table_z 2 cm too low: every point stands, but the object's top is still the highest,
    so its centre is still found. Above the object's top: nothing stands, NO_OBJECT."""
    scene = Scene()
    centre = _place(scene, 'cube', (0.45, 0.12), 1)
    box = scene.box_of(1)
    low = ground('pick', 'red cube', box, scene.image(), K, replace(CONFIG, table_z=-0.02))
    assert np.linalg.norm(np.subtract(low.target.position, centre)) < 5 * MM
    with pytest.raises(GroundingError, match='NO_OBJECT'):
        ground('pick', 'red cube', box, scene.image(), K, replace(CONFIG, table_z=0.05))


@pytest.mark.parametrize(
    'change',
    [
        {'foreground_height_m': 0.0},
        {'top_band_m': -0.001},
        {'foreground_margin': 3.0},
        {'foreground_reach': -0.5},
        {'foreground_reach': 5.0},
        {'min_object_pixels': 0},
    ],
)
def test_bad_foreground_settings_are_refused(change: dict) -> None:
    with pytest.raises(GeometryError):
        replace(CONFIG, **change)


def test_bins_place_and_move_to_above_the_floor() -> None:
    scene = Scene()
    cx, cy = BIN_CENTERS['left']
    u, v = _pixel_of((cx, cy, 0.0))
    box = _box_around(u, v, 20.0)
    depth = scene.image()
    move = ground('move_to', 'left bin', box, depth, K, CONFIG)
    assert np.linalg.norm(np.subtract(move.target.position, (cx, cy, 0.10))) < 1 * MM


def test_min_grasp_height_clamps_pick_targets() -> None:
    high = replace(CONFIG, min_grasp_height_m=0.05)
    scene = Scene()
    scene.ball((0.40, 0.0, 0.02), 0.02, 1)
    pick = ground('pick', 'green ball', scene.box_of(1), scene.image(), K, high)
    assert pick.target.position[2] == pytest.approx(0.05)


def test_unknown_objects_use_surface_to_center() -> None:
    point = TABLE_POINTS[1]
    u, v = _pixel_of(point)
    depth = Scene().image()
    config = replace(CONFIG, min_grasp_height_m=-1, refine_foreground=False)
    near = ground('pick', 'widget', _box_around(u, v), depth, K, config)
    far = ground('pick', 'widget', _box_around(u, v), depth, K,
                 replace(config, surface_to_center_m=0.05))  # fmt: skip
    assert np.linalg.norm(np.subtract(far.target.position, near.target.position)) == pytest.approx(
        0.03, abs=1e-9
    )


def test_home_comes_from_the_configuration() -> None:
    home = ground('home', '', None, np.zeros((480, 640), np.float32), K, CONFIG)
    assert home.target.position == (0.30, 0.0, 0.35)
    assert home.target.orientation == (1.0, 0.0, 0.0, 0.0)
    assert home.pixel is None and home.bbox is None


@pytest.mark.parametrize(
    ('box', 'code'),
    [
        ((0.5, 0.5, 0.4, 0.6), grounding.BOX_INVALID),
        ((0.5, 0.6, 0.6, 0.5), grounding.BOX_INVALID),
        ((-0.1, 0.2, 0.3, 0.4), grounding.BOX_OUTSIDE_IMAGE),
        ((0.1, 0.2, 1.3, 0.4), grounding.BOX_OUTSIDE_IMAGE),
        ((0.1, math.nan, 0.3, 0.4), grounding.BOX_INVALID),
    ],
)
def test_bad_boxes_are_refused(box: tuple[float, ...], code: str) -> None:
    depth = Scene().image()
    with pytest.raises(GroundingError) as err:
        ground('pick', 'red cube', box, depth, K, CONFIG)
    assert err.value.code == code


def test_a_box_of_the_whole_image_and_a_point_box_are_accepted() -> None:
    depth = Scene().image()
    ground('place', 'left bin', (0.0, 0.0, 1.0, 1.0), depth, K, CONFIG)
    point = ground('place', 'left bin', (0.5, 0.5, 0.5, 0.5), depth, K, CONFIG)
    assert point.valid_fraction == 1.0


def test_intrinsics_must_match_the_depth_image() -> None:
    small = CameraIntrinsics.from_fov(37.0, 320, 240)
    with pytest.raises(GroundingError, match='BAD_CAMERA'):
        locate((0.4, 0.4, 0.6, 0.6), 'red cube', Scene().image(), small, CONFIG)
