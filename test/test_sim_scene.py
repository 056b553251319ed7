"""Scenes: random ones are valid and reproducible; given ones are placed exactly or refused."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robostral_agent import cell
from robostral_agent.contract import Scene, SceneObject, decode_scene, encode
from robostral_agent.sim import SceneError, WorkCell, random_scene, validate_scene
from robostral_agent.sim.mjcf import BIN_FLOOR_THICKNESS


@settings(max_examples=200)
@given(st.integers(0, 2**31 - 1))
def test_random_scenes_are_valid_unambiguous_and_in_the_free_area(seed: int) -> None:
    scene = random_scene(seed)
    assert 1 <= len(scene.objects) <= 6
    pairs = [(o.shape, o.color) for o in scene.objects]
    assert len(set(pairs)) == len(pairs)  # each (shape, colour) at most once
    (x0, x1), (y0, y1) = cell.FREE_AREA
    for obj in scene.objects:
        assert x0 <= obj.xy[0] <= x1 and y0 <= obj.xy[1] <= y1
    for a, b in itertools.combinations(scene.objects, 2):
        assert math.dist(a.xy, b.xy) >= cell.MIN_OBJECT_SPACING
    validate_scene(scene)
    assert decode_scene(encode(scene)) == scene  # JSON-exact (rounded values)


def test_random_scenes_repeat_per_seed_and_honour_count_and_avoid() -> None:
    assert random_scene(5) == random_scene(5)
    assert len({random_scene(s) for s in range(20)}) == 20
    assert len(random_scene(9, n_objects=6).objects) == 6
    assert random_scene(9, n_objects=0) == Scene()
    clear = random_scene(3, n_objects=6, avoid=lambda x, y: x > 0.45)
    assert all(o.xy[0] <= 0.45 for o in clear.objects)
    with pytest.raises(SceneError):
        random_scene(1, n_objects=7)
    with pytest.raises(SceneError, match='no room'):
        random_scene(1, n_objects=6, avoid=lambda x, y: x > 0.3)


@pytest.mark.parametrize(
    ('objects', 'message'),
    [
        ([SceneObject('cube', 'red', (1.2, 0.0))], 'not on the table'),
        ([SceneObject('ball', 'red', (0.05, 0.05))], 'robot base'),
        ([SceneObject('cube', 'red', (0.45, 0.48))], 'left bin wall'),
        (
            [SceneObject('cube', 'red', (0.4, 0.1)), SceneObject('ball', 'blue', (0.44, 0.1))],
            'overlap',
        ),
    ],
)
def test_impossible_scenes_are_refused_with_the_reason(
    objects: list[SceneObject], message: str
) -> None:
    with pytest.raises(SceneError, match=message):
        validate_scene(Scene(tuple(objects)))


def test_a_given_scene_is_placed_exactly() -> None:
    scene = decode_scene(
        '{"objects": [{"shape": "cube", "color": "red", "xy": [0.40, 0.10], "yaw": 0.3},'
        ' {"shape": "ball", "color": "blue", "xy": [0.50, -0.12]},'
        ' {"shape": "cylinder", "color": "yellow", "xy": [0.45, -0.40]}]}'
    )  # the cylinder starts inside the right bin: allowed
    wc = WorkCell(scene, render=False)
    positions, quats = wc.object_positions(), wc.object_quats()
    floor = [0.0, 0.0, BIN_FLOOR_THICKNESS]  # the cylinder stands on the bin's floor
    for obj, pos, z0 in zip(scene.objects, positions, floor, strict=True):
        np.testing.assert_allclose(pos, [*obj.xy, cell.object_grasp_height(obj.shape) + z0])
    wc.step(500)  # one second: everything rests where it was put
    np.testing.assert_allclose(wc.object_positions(), positions, atol=5e-4)
    yaw = 2 * math.atan2(quats[0][2], quats[0][3])
    assert yaw == pytest.approx(0.3)
    with pytest.raises(SceneError):
        wc.load_scene(Scene((SceneObject('cube', 'red', (0.45, 0.48)),)))
    assert wc.scene == scene  # a refused scene changes nothing
    wc.close()
