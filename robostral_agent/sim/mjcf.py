"""The MJCF of the reference work cell, generated from :mod:`robostral_agent.cell`.

One function, :func:`cell_mjcf`, writes the whole model as an XML string: the table (its top
is ``z = 0`` = ``base_link``), the two bins, the fixed RGB-D camera, a 6-axis industrial-style
arm with a parallel gripper, and the objects of one scene. Generating text (rather than
editing a template file) keeps every dimension tied to ``cell.py``, so the simulator, the
Gazebo world test and the agent's default camera pose cannot drift apart; the string is also
easy to dump and open in MuJoCo's viewer (``python -m robostral_agent.sim.mjcf > cell.xml``).

The arm is a 6-axis arm in the layout of today's collaborative industrial arms: base pan,
three parallel pitch joints (shoulder, elbow, wrist 1), then wrist 2 and wrist 3 at right
angles with offsets. With the tool pointing down, wrist 2 stands at a right angle, as far as
it can be from the wrist singularity; a spherical wrist would meet its singularity (tool in
line with the forearm) at just the poses that picking from this table needs. The links are
visual only (no contacts), which keeps the contact set small and physics fast; the palm and
fingers collide with everything. Each joint has a position servo and a velocity servo (a PD
controller with velocity feed-forward) and gravity compensation, so the executor commands
joint trajectories and physics does the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from robostral_agent import cell
from robostral_agent.contract import Scene, SceneObject

# --- Arm dimensions (metres) and joint data -------------------------------------------------

PEDESTAL_HEIGHT: Final = 0.15
PEDESTAL_RADIUS: Final = 0.09
SHOULDER_HEIGHT: Final = 0.40  # shoulder (joint 2) axis above the table
SHOULDER_OFFSET: Final = 0.14  # joint 2 sits this far to the side of the joint 1 axis
UPPER_ARM: Final = 0.60  # shoulder -> elbow
ELBOW_OFFSET: Final = 0.12  # the forearm steps back towards the joint 1 axis
FOREARM: Final = 0.54  # elbow -> wrist 1
WRIST1_LENGTH: Final = 0.11  # wrist 1 -> wrist 2, along the joint 4 axis
WRIST2_LENGTH: Final = 0.10  # wrist 2 -> wrist 3, along the joint 5 axis
FLANGE_LENGTH: Final = 0.06  # wrist 3 -> flange, along the joint 6 axis
PALM_LENGTH: Final = 0.05
FINGER_LENGTH: Final = 0.09
FINGER_THICKNESS: Final = 0.012
FINGER_WIDTH: Final = 0.04  # pad size across the closing direction
FINGER_OPEN: Final = 0.04  # per finger: 8 cm between open pads
TCP_ABOVE_FINGERTIP: Final = 0.012  # the tool centre point sits this far above the tips
FLANGE_TO_TCP: Final = PALM_LENGTH + FINGER_LENGTH - TCP_ABOVE_FINGERTIP

ARM_JOINTS: Final = ('joint1', 'joint2', 'joint3', 'joint4', 'joint5', 'joint6')
FINGER_JOINTS: Final = ('finger_left', 'finger_right')
# Joint ranges (radians), as wide as on the collaborative arms this one is modelled on.
JOINT_RANGES: Final = (
    (-3.1, 3.1),
    (-3.1, 3.1),
    (-3.05, 3.05),
    (-6.2, 6.2),
    (-6.2, 6.2),
    (-6.2, 6.2),
)
# Servo stiffness (N m / rad) and reflected motor inertia (kg m^2) per joint. The stiffness
# is high enough that a halted arm stops within a few tens of milliseconds; the armature keeps
# the stiff servos stable at the 2 ms time step.
JOINT_KP: Final = (20000.0, 20000.0, 15000.0, 2000.0, 2000.0, 800.0)
JOINT_ARMATURE: Final = (1.0, 1.0, 0.6, 0.08, 0.08, 0.03)
# Rough link inertia seen by each joint (kg m^2), for critically damped velocity gains.
_LINK_INERTIA: Final = (3.0, 3.0, 1.0, 0.05, 0.03, 0.01)
JOINT_KV: Final = tuple(
    2.0 * math.sqrt(kp * (armature + inertia))
    for kp, armature, inertia in zip(JOINT_KP, JOINT_ARMATURE, _LINK_INERTIA, strict=True)
)
GRIP_FORCE: Final = 20.0  # newtons per finger at most
GRIP_KP: Final = 800.0

TIMESTEP: Final = 0.002
TABLE_SIZE: Final = (1.2, 1.6)  # x, y extent of the table top
TABLE_CENTER_XY: Final = (0.35, 0.0)
TABLE_THICKNESS: Final = 0.04
BIN_FLOOR_THICKNESS: Final = 0.004
OBJECT_MASS: Final = 0.05

# Names the rest of the simulator looks up.
TCP_SITE: Final = 'tcp'
CAMERA_NAME: Final = 'rgbd'
GRIP_ACTUATOR: Final = 'grip'


def _f(values: Iterable[float]) -> str:
    """Space-separated numbers with enough digits for sub-micrometre positions."""
    return ' '.join(f'{v:.9g}' for v in values)


def mujoco_camera_quat(orientation_xyzw: Sequence[float]) -> np.ndarray:
    """MuJoCo ``quat`` (w, x, y, z) of a camera whose optical frame has ``orientation_xyzw``.

    A MuJoCo camera looks along its -z with +y up: the optical frame (REP 103: z forward,
    y down) turned 180 degrees about its x axis.
    """
    from scipy.spatial.transform import Rotation

    optical = Rotation.from_quat(np.asarray(orientation_xyzw, dtype=np.float64))
    mj = optical * Rotation.from_rotvec([math.pi, 0.0, 0.0])
    x, y, z, w = mj.as_quat()
    return np.array([w, x, y, z])


@dataclass(frozen=True)
class ObjectBody:
    """How one scene object is named in the model (``index`` is its place in the scene)."""

    index: int
    obj: SceneObject

    @property
    def body(self) -> str:
        return f'object{self.index}'

    @property
    def geom(self) -> str:
        return f'object{self.index}_geom'

    @property
    def joint(self) -> str:
        return f'object{self.index}_free'


def _object_xml(item: ObjectBody) -> str:
    obj = item.obj
    rgba = _f(cell.COLOR_RGBA[obj.color])
    z = cell.object_grasp_height(obj.shape)
    half = cell.OBJECT_SIZE / 2.0
    if obj.shape == 'cube':
        geom = f'type="box" size="{_f((half, half, half))}"'
    elif obj.shape == 'ball':
        geom = f'type="sphere" size="{half:.9g}"'
    else:
        geom = f'type="cylinder" size="{_f((half, cell.CYLINDER_HEIGHT / 2.0))}"'
    quat = _f((math.cos(obj.yaw / 2.0), 0.0, 0.0, math.sin(obj.yaw / 2.0)))
    return (
        f'<body name="{item.body}" pos="{_f((*obj.xy, z))}" quat="{quat}">'
        f'<freejoint name="{item.joint}"/>'
        f'<geom name="{item.geom}" class="object" {geom} rgba="{rgba}" mass="{OBJECT_MASS}"/>'
        '</body>'
    )


def _bin_xml(name: str, center: tuple[float, float]) -> str:
    inner, wall, height = cell.BIN_INNER, cell.BIN_WALL_THICKNESS, cell.BIN_WALL_HEIGHT
    half_out = inner / 2.0 + wall
    off = inner / 2.0 + wall / 2.0
    walls = [
        ((off, 0.0), (wall / 2.0, half_out)),
        ((-off, 0.0), (wall / 2.0, half_out)),
        ((0.0, off), (inner / 2.0, wall / 2.0)),
        ((0.0, -off), (inner / 2.0, wall / 2.0)),
    ]
    parts = [
        f'<geom name="{name}_floor" class="bin" type="box" '
        f'pos="0 0 {BIN_FLOOR_THICKNESS / 2.0:.9g}" '
        f'size="{_f((half_out, half_out, BIN_FLOOR_THICKNESS / 2.0))}"/>'
    ]
    for i, ((dx, dy), (sx, sy)) in enumerate(walls):
        parts.append(
            f'<geom name="{name}_wall{i}" class="bin" type="box" '
            f'pos="{_f((dx, dy, height / 2.0))}" size="{_f((sx, sy, height / 2.0))}"/>'
        )
    return f'<body name="{name}" pos="{_f((*center, cell.TABLE_TOP_Z))}">{"".join(parts)}</body>'


def _finger_xml(name: str, sign: int, finger_y: float, half: tuple[float, ...]) -> str:
    """One finger: slides along link 6's z (``sign`` = which side), pad facing the other."""
    z = sign * FINGER_THICKNESS / 2.0
    return f"""
                  <body name="{name}" gravcomp="1">
                    <inertial pos="0 {finger_y:.9g} {z:.9g}" mass="0.05"
                              diaginertia="1e-5 1e-5 1e-5"/>
                    <joint name="{name}" type="slide" axis="0 0 {sign}"
                           range="0 {FINGER_OPEN:.9g}" armature="0.01" damping="2"/>
                    <geom name="{name}_geom" class="finger" type="box"
                          pos="{_f((0, finger_y, z))}" size="{_f(half)}"/>
                  </body>"""


def _arm_xml() -> str:
    """The arm, from the pedestal to the fingers. Zero pose: upper arm and forearm upright.

    The layout of a collaborative 6-axis arm: three parallel pitch joints (shoulder, elbow,
    wrist 1) and two offset wrist joints, so that with the tool pointing down wrist 2 sits at
    a right angle, as far as it can be from a wrist singularity.
    """
    r = JOINT_RANGES
    tip = FLANGE_LENGTH + PALM_LENGTH
    finger_y = tip + FINGER_LENGTH / 2.0
    finger_half = (FINGER_WIDTH / 2.0, FINGER_LENGTH / 2.0, FINGER_THICKNESS / 2.0)
    along_y = 'quat="0.7071068 0.7071068 0 0"'  # a cylinder's axis along y
    # The TCP frame: +z (approach) along the flange axis (+y of link 6) and +y along -z of
    # link 6 (the fingers close along it): a -90 degree turn about x.
    tcp_quat = _f((math.sqrt(0.5), -math.sqrt(0.5), 0.0, 0.0))
    fingers = '\n'.join(
        _finger_xml(name, sign, finger_y, finger_half)
        for name, sign in zip(FINGER_JOINTS, (1, -1), strict=True)
    )
    j = [
        f'name="joint{i + 1}" range="{_f(r[i])}" armature="{JOINT_ARMATURE[i]:.9g}" damping="1"'
        for i in range(6)
    ]
    return f"""
    <body name="pedestal" pos="0 0 0">
      <geom class="arm_dark" type="cylinder" size="{PEDESTAL_RADIUS} {PEDESTAL_HEIGHT / 2:.9g}"
            pos="0 0 {PEDESTAL_HEIGHT / 2:.9g}"/>
      <body name="link1" pos="0 0 {PEDESTAL_HEIGHT:.9g}" gravcomp="1">
        <inertial pos="0 0 0.12" mass="4" diaginertia="0.03 0.03 0.02"/>
        <joint {j[0]} axis="0 0 1"/>
        <geom class="arm" type="cylinder" size="0.075 0.125" pos="0 0 0.125"/>
        <body name="link2" pos="0 {SHOULDER_OFFSET:.9g} {SHOULDER_HEIGHT - PEDESTAL_HEIGHT:.9g}"
              gravcomp="1">
          <inertial pos="0 0 {UPPER_ARM / 2:.9g}" mass="7" diaginertia="0.2 0.2 0.02"/>
          <joint {j[1]} axis="0 1 0"/>
          <geom class="arm_dark" type="cylinder" size="0.075 0.075" {along_y}/>
          <geom class="arm" type="capsule" fromto="0 0 0 0 0 {UPPER_ARM:.9g}" size="0.055"/>
          <body name="link3" pos="0 {-ELBOW_OFFSET:.9g} {UPPER_ARM:.9g}" gravcomp="1">
            <inertial pos="0 0 {FOREARM / 2:.9g}" mass="3" diaginertia="0.07 0.07 0.005"/>
            <joint {j[2]} axis="0 1 0"/>
            <geom class="arm_dark" type="cylinder" size="0.06 0.065" {along_y}/>
            <geom class="arm" type="capsule" fromto="0 0 0 0 0 {FOREARM:.9g}" size="0.045"/>
            <body name="link4" pos="0 0 {FOREARM:.9g}" gravcomp="1">
              <inertial pos="0 0.05 0" mass="1.2" diaginertia="0.002 0.002 0.002"/>
              <joint {j[3]} axis="0 1 0"/>
              <geom class="arm_dark" type="cylinder" size="0.045 0.05"
                    pos="0 {WRIST1_LENGTH / 2:.9g} 0" {along_y}/>
              <body name="link5" pos="0 {WRIST1_LENGTH:.9g} 0" gravcomp="1">
                <inertial pos="0 0 0.05" mass="1.2" diaginertia="0.002 0.002 0.002"/>
                <joint {j[4]} axis="0 0 1"/>
                <geom class="arm" type="cylinder" size="0.042 0.05"
                      pos="0 0 {WRIST2_LENGTH / 2:.9g}"/>
                <body name="link6" pos="0 0 {WRIST2_LENGTH:.9g}" gravcomp="1">
                  <inertial pos="0 0.06 0" mass="0.8" diaginertia="0.002 0.002 0.002"/>
                  <joint {j[5]} axis="0 1 0"/>
                  <geom class="arm_dark" type="cylinder" size="0.04 {FLANGE_LENGTH / 2:.9g}"
                        pos="0 {FLANGE_LENGTH / 2:.9g} 0" {along_y}/>
                  <geom name="palm" class="gripper" type="box"
                        pos="0 {FLANGE_LENGTH + PALM_LENGTH / 2:.9g} 0"
                        size="{_f((0.025, PALM_LENGTH / 2, FINGER_OPEN + 0.025))}"/>
                  <site name="{TCP_SITE}" pos="0 {FLANGE_LENGTH + FLANGE_TO_TCP:.9g} 0"
                        quat="{tcp_quat}" size="0.006" rgba="1 0 1 0"/>
{fingers}
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""


def _actuators_xml() -> str:
    lines = []
    for name, (lo, hi), kp in zip(ARM_JOINTS, JOINT_RANGES, JOINT_KP, strict=True):
        lines.append(
            f'<position name="{name}_pos" joint="{name}" kp="{kp:.9g}" '
            f'ctrlrange="{_f((lo, hi))}"/>'
        )
    for name, kv in zip(ARM_JOINTS, JOINT_KV, strict=True):
        lines.append(f'<velocity name="{name}_vel" joint="{name}" kv="{kv:.9g}"/>')
    lines.append(
        f'<position name="{GRIP_ACTUATOR}" joint="finger_left" kp="{GRIP_KP:.9g}" '
        f'ctrlrange="0 {FINGER_OPEN:.9g}" forcerange="{_f((-GRIP_FORCE, GRIP_FORCE))}"/>'
    )
    return '\n    '.join(lines)


def cell_mjcf(
    scene: Scene,
    camera: cell.CameraSpec | None = None,
    offscreen_size: tuple[int, int] = (1280, 960),
) -> str:
    """The whole cell with ``scene``'s objects, as an MJCF string.

    ``camera`` defaults to :func:`cell.reference_camera`; the offscreen buffer must be at
    least as large as any image rendered from the model.
    """
    cam = camera or cell.reference_camera()
    tx, ty = TABLE_CENTER_XY
    table_half = (TABLE_SIZE[0] / 2.0, TABLE_SIZE[1] / 2.0, TABLE_THICKNESS / 2.0)
    leg_height = 0.75 - TABLE_THICKNESS
    legs = ''.join(
        f'<geom class="furniture" type="box" size="0.03 0.03 {leg_height / 2:.9g}" '
        f'pos="{_f((tx + sx * (table_half[0] - 0.06), ty + sy * (table_half[1] - 0.06), -TABLE_THICKNESS - leg_height / 2))}"/>'  # noqa: E501
        for sx in (-1, 1)
        for sy in (-1, 1)
    )
    objects = ''.join(_object_xml(ObjectBody(i, o)) for i, o in enumerate(scene.objects))
    bins = ''.join(_bin_xml(f'{name}_bin', center) for name, center in cell.BIN_CENTERS.items())
    width, height = offscreen_size
    return f"""<mujoco model="robostral_workcell">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="3"/>
  <size memory="8M"/>
  <statistic center="0.35 0 0.3" extent="1.5"/>
  <visual>
    <global offwidth="{width}" offheight="{height}"/>
    <map znear="0.01" zfar="6"/>
    <quality shadowsize="2048"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.3 0.3 0.3" specular="0.02 0.02 0.02"/>
  </visual>
  <asset>
    <texture name="floor_tex" type="2d" builtin="checker" width="256" height="256"
             rgb1="0.32 0.33 0.35" rgb2="0.28 0.29 0.31"/>
    <material name="floor_mat" texture="floor_tex" texrepeat="8 8"/>
    <material name="table_mat" rgba="0.62 0.60 0.56 1" specular="0.05" shininess="0.05"/>
  </asset>
  <default>
    <geom contype="1" conaffinity="1" friction="0.8 0.005 0.0001" solref="0.004 1"/>
    <default class="furniture"><geom rgba="0.45 0.45 0.47 1"/></default>
    <default class="bin"><geom rgba="0.25 0.27 0.30 1"/></default>
    <default class="object"><geom condim="4" friction="1.0 0.01 0.001"/></default>
    <default class="arm"><geom contype="0" conaffinity="0" rgba="0.93 0.55 0.12 1"/></default>
    <default class="arm_dark"><geom contype="0" conaffinity="0" rgba="0.2 0.2 0.22 1"/></default>
    <default class="gripper"><geom rgba="0.25 0.25 0.28 1"/></default>
    <default class="finger">
      <geom condim="4" friction="1.5 0.02 0.001" rgba="0.15 0.15 0.15 1"/>
    </default>
  </default>
  <worldbody>
    <light name="sun" directional="true" pos="0.3 0.3 2.5" dir="-0.1 -0.1 -1"
           diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1" castshadow="false"/>
    <geom name="floor" type="plane" size="4 4 0.1" pos="0 0 -0.75" material="floor_mat"/>
    <geom name="table" type="box" size="{_f(table_half)}"
          pos="{_f((tx, ty, cell.TABLE_TOP_Z - TABLE_THICKNESS / 2))}" material="table_mat"/>
    {legs}
    <camera name="{CAMERA_NAME}" pos="{_f(cam.position)}"
            quat="{_f(mujoco_camera_quat(cam.orientation))}" fovy="{cam.fovy_deg:.9g}"/>
    {bins}
    {_arm_xml()}
    {objects}
  </worldbody>
  <contact>
    <exclude body1="finger_left" body2="finger_right"/>
  </contact>
  <equality>
    <joint joint1="finger_right" joint2="finger_left" polycoef="0 1 0 0 0"
           solref="0.005 1"/>
  </equality>
  <actuator>
    {_actuators_xml()}
  </actuator>
</mujoco>
"""


if __name__ == '__main__':  # pragma: no cover - a developer's aid
    import sys

    sys.stdout.write(cell_mjcf(Scene()))
