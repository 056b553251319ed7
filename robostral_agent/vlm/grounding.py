"""Grounding: a box on the colour image -> a 3D tool target in the base frame.

The chain, each link a reason code when it breaks:

1. Box (image fractions) -> pixels. A box edge at fraction ``f`` lies at ``u = f*W - 0.5``
   in ``CameraInfo`` pixel coordinates (pixel centres at integers, the left image edge at
   -0.5). Corners must be ordered and on the image (``BOX_INVALID``, ``BOX_OUTSIDE_IMAGE``).
2. Depth: the median of the valid depth (finite, within ``[min_depth_m, max_depth_m]``) over
   the central ``center_fraction`` of the box. Less than ``min_valid_fraction`` valid ->
   ``NO_DEPTH`` (no proposal): a hole or a reflective surface must not become a guess.
3. Camera frame: the box centre deprojected with ``K`` at that depth (undistorted first when
   ``CameraInfo.d`` is non-zero).
4. Base frame: through ``camera_pose`` (``[x, y, z, qx, qy, qz, qw]`` of the optical frame).
5. Surface -> object centre (pick, inspect, move_to on objects). The depth gives a point on
   the visible surface; the object's centre lies further along the same viewing ray. For a
   shape of the reference vocabulary the distance follows from its size: a ball's radius; for
   a cube or cylinder (the ray enters through the top face for a camera looking down) half
   its height divided by the ray's downward slope, capped by the side-entry distance. Any
   other object uses ``surface_to_center_m``. The centre is kept at least
   ``min_grasp_height_m`` above the table. Bins need no correction: the depth at their
   centre is their floor.

   With ``refine_foreground`` (objects only, the default), the box's own depth decides where
   in it the object is, replacing steps 3 to 5: every valid pixel of the box, grown by
   ``foreground_margin`` of its size on each side (a box a few pixels off cuts the object),
   is deprojected; those standing at least ``foreground_height_m`` above the table form
   8-connected groups; a group with ``min_object_pixels`` or more inside the grown box
   counts (fewer is depth noise, or a neighbour's edge in the margin), and the one with the
   most pixels in the box's central region (with none there, the most in the grown box) is
   the object. Groups are formed in a window ``foreground_reach`` box sizes wider on each
   side, so that the object's group is whole even where the box holds only part of it: the
   reach moves the centre found, never whether an object is found. Its top (the 95th
   percentile of its heights) and the points within ``top_band_m`` of it give the centre:
   across, their mean (the top of an upright cube, cylinder or ball lies over its centre,
   wherever the camera sees it from); up, the top less half the shape's height. A model's
   box is often loose or a few pixels off; the depth is not. No such group: nothing stands
   in the box, the model's box is on bare table
   -> ``NO_OBJECT`` (no proposal; grasping at the table would only miss).
6. Target per task (the team's motion model): ``pick`` at the object's centre; ``place``
   above the grounded point at ``place_height_m`` over the table; ``inspect``
   ``inspect_height_m`` above the object; ``move_to`` ``move_to_height_m`` above the object
   (or over the table, for a bin); ``home`` the configured pose. Tool orientation is
   ``tool_orientation`` (``[1, 0, 0, 0]``: pointing straight down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import ndimage  # connected components (foreground): scipy's, not hand-written

from robostral_agent.cell import BASE_FRAME, OBJECT_HEIGHT, OBJECT_SIZE, TABLE_TOP_Z
from robostral_agent.contract import Target
from robostral_agent.geometry import CameraIntrinsics, GeometryError, Transform
from robostral_agent.vlm.errors import ReasonError
from robostral_agent.vlm.formats import Box

# Reason codes of grounding failures (the status detail starts with one).
BOX_INVALID: Final = 'BOX_INVALID'
BOX_OUTSIDE_IMAGE: Final = 'BOX_OUTSIDE_IMAGE'
NO_DEPTH: Final = 'NO_DEPTH'
NO_OBJECT: Final = 'NO_OBJECT'
BAD_CAMERA: Final = 'BAD_CAMERA'

DOWN: Final = (1.0, 0.0, 0.0, 0.0)
_EDGE_TOLERANCE: Final = 1e-6


class GroundingError(ReasonError):
    """A step cannot be grounded; ``code`` is one of this module's reason codes."""


@dataclass(frozen=True)
class GroundingConfig:
    """Grounding parameters (the agent node's parameters of the same names)."""

    camera_pose: tuple[float, ...]
    base_frame: str = BASE_FRAME
    center_fraction: float = 0.5
    min_valid_fraction: float = 0.3
    min_depth_m: float = 0.05
    max_depth_m: float = 5.0
    table_z: float = TABLE_TOP_Z
    surface_to_center_m: float = OBJECT_SIZE / 2.0
    min_grasp_height_m: float = 0.01
    place_height_m: float = 0.10
    inspect_height_m: float = 0.15
    move_to_height_m: float = 0.10
    home_pose: tuple[float, ...] = (0.30, 0.0, 0.35, 1.0, 0.0, 0.0, 0.0)
    tool_orientation: tuple[float, float, float, float] = DOWN
    refine_foreground: bool = True
    foreground_height_m: float = 0.008
    top_band_m: float = 0.004
    foreground_margin: float = 0.25
    foreground_reach: float = 1.0
    min_object_pixels: int = 10

    def __post_init__(self) -> None:
        Transform.from_xyz_quat(self.camera_pose)  # raises GeometryError when invalid
        Transform.from_xyz_quat(self.home_pose)
        Transform.from_pose((0.0, 0.0, 0.0), self.tool_orientation)
        if not 0.0 < self.center_fraction <= 1.0:
            raise GeometryError('center_fraction must be in (0, 1]')
        if not 0.0 <= self.min_valid_fraction <= 1.0:
            raise GeometryError('min_valid_fraction must be in [0, 1]')
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            raise GeometryError('need 0 <= min_depth_m < max_depth_m')
        if not (self.foreground_height_m > 0.0 and self.top_band_m > 0.0):
            raise GeometryError('foreground_height_m and top_band_m must be positive')
        if not 0.0 <= self.foreground_margin <= 2.0:
            raise GeometryError('foreground_margin must be in [0, 2]')
        if not 0.0 <= self.foreground_reach <= 4.0:
            raise GeometryError('foreground_reach must be in [0, 4]')
        if self.min_object_pixels < 1:
            raise GeometryError('min_object_pixels must be at least 1')

    @property
    def camera(self) -> Transform:
        """``base_frame <- camera optical frame``."""
        return Transform.from_xyz_quat(self.camera_pose)


@dataclass(frozen=True)
class Grounded:
    """A grounded step: the target plus what the debug image and the proposal show."""

    task: str
    label: str
    target: Target
    pixel: tuple[float, float] | None = None
    bbox: tuple[float, float, float, float] | None = None
    surface: tuple[float, float, float] | None = None  # base frame, for the record
    valid_fraction: float | None = None


def box_to_pixels(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """Fractions ``(x0, y0, x1, y1)`` -> ``(u0, v0, u1, v1)`` in CameraInfo pixel coordinates."""
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) for v in box):
        raise GroundingError(BOX_INVALID, 'box has non-finite coordinates')
    if x0 > x1 or y0 > y1:
        raise GroundingError(BOX_INVALID, f'box corners are not ordered: {_fmt(box)}')
    lo, hi = -_EDGE_TOLERANCE, 1.0 + _EDGE_TOLERANCE
    if min(x0, y0) < lo or max(x1, y1) > hi:
        raise GroundingError(BOX_OUTSIDE_IMAGE, f'box {_fmt(box)} reaches outside the image')
    return (x0 * width - 0.5, y0 * height - 0.5, x1 * width - 0.5, y1 * height - 0.5)


def _fmt(box: Box) -> str:
    return '[' + ', '.join(f'{v:.3f}' for v in box) + ']'


def pixel_window(
    bbox: tuple[float, float, float, float], fraction: float, shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """Rows ``r0..r1`` and columns ``c0..c1`` (inclusive) of the pixels whose centres lie in
    the central ``fraction`` of a pixel box, clipped to the image; at least the pixel under
    the box centre."""
    u0, v0, u1, v1 = bbox
    cu, cv = (u0 + u1) / 2.0, (v0 + v1) / 2.0
    hu, hv = (u1 - u0) * fraction / 2.0, (v1 - v0) * fraction / 2.0
    height, width = shape[:2]
    c0 = min(max(math.ceil(cu - hu), 0), width - 1)
    c1 = max(min(math.floor(cu + hu), width - 1), c0)
    r0 = min(max(math.ceil(cv - hv), 0), height - 1)
    r1 = max(min(math.floor(cv + hv), height - 1), r0)
    return r0, r1, c0, c1


def valid_depth(region: np.ndarray, config: GroundingConfig) -> np.ndarray:
    """Where ``region`` holds a usable depth."""
    with np.errstate(invalid='ignore'):
        return (
            np.isfinite(region) & (region >= config.min_depth_m) & (region <= config.max_depth_m)
        )


def centre_depth(
    depth: np.ndarray, bbox: tuple[float, float, float, float], config: GroundingConfig
) -> tuple[float, float]:
    """Median valid depth over the box's central region, and the valid fraction there."""
    r0, r1, c0, c1 = pixel_window(bbox, config.center_fraction, depth.shape)
    region = depth[r0 : r1 + 1, c0 : c1 + 1]
    valid = valid_depth(region, config)
    fraction = float(np.count_nonzero(valid)) / region.size
    if fraction < config.min_valid_fraction or not valid.any():
        raise GroundingError(
            NO_DEPTH,
            f'only {fraction:.0%} of the depth at the box centre is valid '
            f'(need {config.min_valid_fraction:.0%})',
        )
    return float(np.median(region[valid])), fraction


def foreground(
    depth: np.ndarray,
    bbox: tuple[float, float, float, float],
    intrinsics: CameraIntrinsics,
    config: GroundingConfig,
) -> tuple[tuple[float, float], np.ndarray] | None:
    """The object's own pixels in the box (module docstring, step 5): their mean pixel and
    their points in the base frame ``(n, 3)``; None when no group of ``min_object_pixels``
    standing above the table lies in the grown box."""
    grown = 1.0 + 2.0 * config.foreground_margin
    r0, r1, c0, c1 = pixel_window(bbox, grown + 2.0 * config.foreground_reach, depth.shape)
    region = depth[r0 : r1 + 1, c0 : c1 + 1].astype(np.float64)
    valid = valid_depth(region, config)
    if not valid.any():
        return None
    rows, cols = np.nonzero(valid)
    pixels = intrinsics.undistort_pixels(np.stack([cols + c0, rows + r0], axis=1))
    points = config.camera.apply(
        intrinsics.deproject(pixels[:, 0], pixels[:, 1], region[rows, cols])
    )
    standing = points[:, 2] - config.table_z >= config.foreground_height_m
    above = np.zeros_like(valid)
    above[rows, cols] = standing
    groups, count = ndimage.label(above, structure=np.ones((3, 3), dtype=bool))

    def inside(fraction: float) -> np.ndarray:
        """Pixels of each group in the box's central ``fraction``."""
        wr0, wr1, wc0, wc1 = pixel_window(bbox, fraction, depth.shape)
        window = groups[wr0 - r0 : wr1 - r0 + 1, wc0 - c0 : wc1 - c0 + 1]
        return np.bincount(window.ravel(), minlength=count + 1)[1:]

    # A group counts when at least min_object_pixels of it lie in the grown box (fewer is
    # depth noise, or a neighbour's edge in the margin rather than what the model pointed
    # at): the reach changes where the object's centre is found, never whether one is.
    in_box = inside(grown)
    in_box = in_box * (in_box >= config.min_object_pixels)
    if not in_box.any():
        return None
    in_centre = inside(config.center_fraction) * (in_box > 0)
    best = 1 + int(np.argmax(in_centre if in_centre.any() else in_box))
    mine = groups[rows, cols] == best  # the valid pixels' order, as ``points``
    pixel = (float(cols[mine].mean() + c0), float(rows[mine].mean() + r0))
    return pixel, points[mine]


def top_centre(
    label: str, points: np.ndarray, config: GroundingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """An upright object's centre from its visible points, and the middle of its top
    (module docstring, step 5)."""
    top = float(np.percentile(points[:, 2], 95))
    band = points[points[:, 2] >= top - config.top_band_m]
    shape = shape_of(label)
    half = OBJECT_HEIGHT[shape] / 2.0 if shape is not None else config.surface_to_center_m
    x, y = band[:, :2].mean(axis=0)
    return np.array([x, y, top - half]), np.array([x, y, top])


def shape_of(label: str) -> str | None:
    """The reference shape a label names (``'red cube'`` -> ``'cube'``), if any."""
    word = label.rsplit(' ', 1)[-1]
    return word if word in OBJECT_HEIGHT else None


def is_bin(label: str) -> bool:
    return label.endswith(' bin') or label == 'bin'


def surface_to_center(label: str, ray: np.ndarray, config: GroundingConfig) -> float:
    """Distance along the unit viewing ray ``ray`` (base frame) from surface to centre."""
    if is_bin(label):
        return 0.0
    shape = shape_of(label)
    if shape is None:
        return config.surface_to_center_m
    radius = OBJECT_SIZE / 2.0
    if shape == 'ball':
        return radius
    down = max(-float(ray[2]), 1e-6)
    across = float(math.hypot(ray[0], ray[1]))
    through_top = OBJECT_HEIGHT[shape] / 2.0 / down
    through_side = radius / across if across > 1e-6 else math.inf
    return min(through_top, through_side)


def locate(
    box: Box,
    label: str,
    depth: np.ndarray,
    intrinsics: CameraIntrinsics,
    config: GroundingConfig,
) -> Grounded:
    """The object's (or bin's) centre in the base frame; target filled in by :func:`ground`."""
    height, width = depth.shape
    if (width, height) != (intrinsics.width, intrinsics.height):
        raise GroundingError(
            BAD_CAMERA,
            f'CameraInfo is {intrinsics.width}x{intrinsics.height}, depth is {width}x{height}',
        )
    bbox = box_to_pixels(box, width, height)
    z, fraction = centre_depth(depth, bbox, config)
    pixel = ((bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0)
    if config.refine_foreground and not is_bin(label):
        found = foreground(depth, bbox, intrinsics, config)
        if found is None:
            raise GroundingError(
                NO_OBJECT,
                f'nothing in the box of {label!r} stands {config.foreground_height_m * 100:.1f} '
                'cm or more above the table',
            )
        pixel, points = found
        centre, surface = top_centre(label, points, config)
    else:
        ideal = intrinsics.undistort_pixels([pixel])[0]
        camera = config.camera
        surface = camera.apply(intrinsics.deproject(ideal[0], ideal[1], z))
        ray = surface - camera.translation
        ray /= np.linalg.norm(ray)
        centre = surface + surface_to_center(label, ray, config) * ray
    if not is_bin(label):
        centre[2] = max(centre[2], config.table_z + config.min_grasp_height_m)
    return Grounded(
        task='',
        label=label,
        target=Target(config.base_frame, tuple(float(c) for c in centre), config.tool_orientation),
        pixel=pixel,
        bbox=bbox,
        surface=tuple(float(c) for c in surface),
        valid_fraction=fraction,
    )


def ground(
    task: str,
    label: str,
    box: Box | None,
    depth: np.ndarray,
    intrinsics: CameraIntrinsics,
    config: GroundingConfig,
) -> Grounded:
    """One step's target (module docstring, item 6)."""
    orientation = config.tool_orientation
    if task == 'home':
        pose = config.home_pose
        target = Target(config.base_frame, tuple(pose[:3]), tuple(pose[3:]))  # type: ignore[arg-type]
        return Grounded(task, label, target)
    if box is None:
        raise GroundingError(BOX_INVALID, f'{task} needs a box')
    found = locate(box, label, depth, intrinsics, config)
    x, y, z = found.target.position
    if task == 'place':
        z = config.table_z + config.place_height_m
    elif task == 'inspect':
        z += config.inspect_height_m
    elif task == 'move_to':
        z = (config.table_z if is_bin(label) else z) + config.move_to_height_m
    target = Target(config.base_frame, (x, y, z), orientation)
    return Grounded(
        task, label, target, found.pixel, found.bbox, found.surface, found.valid_fraction
    )
