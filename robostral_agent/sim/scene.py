"""Scenes of the reference cell: validation of given scenes, random valid scenes from a seed.

A scene given as JSON (``contract.decode_scene``) is placed exactly as written; it is only
refused when physics could not start from it (an object off the table, two objects or an
object and a bin wall or the robot pedestal interpenetrating). Random scenes are drawn with
numpy's PCG64 generator from an integer seed, so the same seed gives the same scene on every
machine: 1 to 6 objects, each (shape, colour) at most once so that any instruction naming
one is unambiguous, centres in the free placement area, at least ``MIN_OBJECT_SPACING``
apart.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

from robostral_agent import cell
from robostral_agent.contract import COLORS, SHAPES, Scene, SceneObject
from robostral_agent.sim import mjcf

MAX_RANDOM_OBJECTS = 6
PEDESTAL_CLEARANCE = 0.10 + 0.03  # pedestal radius + an object's half diagonal


class SceneError(ValueError):
    """A scene cannot be simulated as given; the message says which object and why."""


def footprint_radius(shape: str) -> float:
    """Radius of the circle that holds an object's footprint at any yaw."""
    half = cell.OBJECT_SIZE / 2.0
    return half * math.sqrt(2.0) if shape == 'cube' else half


def _in_bin_wall(x: float, y: float, radius: float) -> str | None:
    """The bin whose walls the footprint circle at (x, y) would cut, if any."""
    for name, (cx, cy) in cell.BIN_CENTERS.items():
        inner = cell.BIN_INNER / 2.0
        outer = inner + cell.BIN_WALL_THICKNESS
        dx, dy = abs(x - cx), abs(y - cy)
        inside_outer = dx < outer + radius and dy < outer + radius
        inside_inner = dx <= inner - radius and dy <= inner - radius
        if inside_outer and not inside_inner:
            return name
    return None


def validate_scene(scene: Scene) -> None:
    """Raise :class:`SceneError` when ``scene`` cannot start as a physical state."""
    tx, ty = mjcf.TABLE_CENTER_XY
    half_x, half_y = mjcf.TABLE_SIZE[0] / 2.0, mjcf.TABLE_SIZE[1] / 2.0
    for i, obj in enumerate(scene.objects):
        x, y = obj.xy
        r = footprint_radius(obj.shape)
        if not (abs(x - tx) <= half_x - r and abs(y - ty) <= half_y - r):
            raise SceneError(f'objects[{i}] ({obj.label}) at {obj.xy} is not on the table')
        if math.hypot(x, y) < PEDESTAL_CLEARANCE:
            raise SceneError(f'objects[{i}] ({obj.label}) at {obj.xy} is inside the robot base')
        wall = _in_bin_wall(x, y, r)
        if wall is not None:
            raise SceneError(f'objects[{i}] ({obj.label}) at {obj.xy} cuts the {wall} bin wall')
    for (i, a), (j, b) in itertools.combinations(enumerate(scene.objects), 2):
        gap = math.dist(a.xy, b.xy) - footprint_radius(a.shape) - footprint_radius(b.shape)
        if gap < 0.0:
            raise SceneError(f'objects[{i}] ({a.label}) and objects[{j}] ({b.label}) overlap')


def random_scene(
    seed: int,
    n_objects: int | None = None,
    avoid: Callable[[float, float], bool] | None = None,
    max_tries: int = 10_000,
) -> Scene:
    """A random valid scene; the same ``seed`` (and arguments) always gives the same scene.

    ``n_objects`` defaults to a random count in 1..6. ``avoid(x, y)`` may refuse positions
    (for example those inside a policy's keep-out zones) so that generated cases stay
    solvable. Positions are rounded to 0.1 mm and yaws to 1 mrad so the JSON is readable.
    """
    rng = np.random.default_rng(seed)
    pairs = [(s, c) for s in SHAPES for c in COLORS]
    count = int(rng.integers(1, MAX_RANDOM_OBJECTS + 1)) if n_objects is None else n_objects
    if not 0 <= count <= min(MAX_RANDOM_OBJECTS, len(pairs)):
        raise SceneError(f'n_objects must be in 0..{MAX_RANDOM_OBJECTS}, got {count}')
    chosen = rng.choice(len(pairs), size=count, replace=False)
    (x0, x1), (y0, y1) = cell.FREE_AREA
    objects: list[SceneObject] = []
    tries = 0
    for index in chosen:
        shape, color = pairs[int(index)]
        while True:
            tries += 1
            if tries > max_tries:
                raise SceneError(f'no room for {count} objects after {max_tries} tries')
            x = round(float(rng.uniform(x0, x1)), 4)
            y = round(float(rng.uniform(y0, y1)), 4)
            yaw = round(float(rng.uniform(-math.pi / 4.0, math.pi / 4.0)), 3)
            if avoid is not None and avoid(x, y):
                continue
            if all(math.dist((x, y), o.xy) >= cell.MIN_OBJECT_SPACING for o in objects):
                objects.append(SceneObject(shape, color, (x, y), yaw if shape == 'cube' else 0.0))
                break
    scene = Scene(tuple(objects))
    validate_scene(scene)
    return scene
