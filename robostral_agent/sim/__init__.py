"""MuJoCo reference work cell: scene, rendering, arm, executor, ground truth (no rclpy).

MuJoCo picks its OpenGL back end when it is first imported. Headless machines need OSMesa
(CPU) or EGL (GPU); without a display and without ``MUJOCO_GL`` set, this package chooses
OSMesa, so ``import robostral_agent.sim`` renders on any machine. Set ``MUJOCO_GL=egl`` to
render on a GPU.
"""

import os

if not os.environ.get('MUJOCO_GL') and not os.environ.get('DISPLAY'):
    os.environ['MUJOCO_GL'] = 'osmesa'

from robostral_agent.sim import plans
from robostral_agent.sim.render import Frame, RenderError
from robostral_agent.sim.scene import SceneError, random_scene, validate_scene
from robostral_agent.sim.workcell import Lighting, Segmentation, WorkCell

__all__ = [  # noqa: RUF022 - grouped by kind
    'Frame',
    'Lighting',
    'RenderError',
    'SceneError',
    'Segmentation',
    'plans',
    'WorkCell',
    'random_scene',
    'validate_scene',
]
