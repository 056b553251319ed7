"""The simulated work cell without ROS: model, physics state, camera, scene loading.

This is the API the dataset generator and the evaluation build on::

    from robostral_agent.sim import WorkCell, Lighting, random_scene
    with WorkCell(random_scene(seed=3)) as wc:            # the reference camera, 640 x 480
        frame = wc.render()                               # frame.rgb (H, W, 3), frame.depth (H, W)
        wc.set_camera(cell.reference_camera(position=(-0.152, 0.003, 1.249)))
        wc.set_lighting(Lighting(ambient=0.4, sun_direction=(0.1, -0.2, -1.0)))
        wc.set_rgba('table', (0.6, 0.58, 0.55, 1.0))
        boxes = wc.render_segmentation().object_boxes()  # {object index: (u0, v0, u1, v1)}

Loading a scene rebuilds the MuJoCo model (a few milliseconds) and re-binds the renderer
(about 30 ms), then puts the arm at its rest pose. Camera pose, lighting and colours can be
changed without a rebuild. Nothing here is random: the same scene and settings give the same
pixels, bit for bit, on the same machine and MuJoCo build.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import mujoco
import numpy as np
from numpy.typing import NDArray

from robostral_agent import cell
from robostral_agent.contract import Scene, SceneObject
from robostral_agent.sim import mjcf
from robostral_agent.sim.arm import ArmKinematics, wxyz_to_xyzw, xyzw_to_wxyz
from robostral_agent.sim.render import CellRenderer, Frame, RenderError
from robostral_agent.sim.scene import validate_scene

# A held object's centre lies this close to the tool centre point (grasp tolerance: 1.5 cm).
HOLD_RADIUS = 0.025
# A gripper closed on an object is narrower than this (objects are 4 cm, a cube's diagonal 5.7).
HOLD_MAX_OPENING = 0.065
# An elbow-up seed near the rest pose: IK from it lands on the same branch every time.
_REST_SEED = (1.0, 1.0, 1.9, 2.4, 2.0, 2.7)


@dataclass(frozen=True)
class Lighting:
    """Scene lighting: a camera headlight and one directional 'sun' (grey levels 0..1)."""

    ambient: float = 0.3
    diffuse: float = 0.3
    sun_diffuse: float = 0.5
    sun_direction: tuple[float, float, float] = (-0.1, -0.1, -1.0)
    shadows: bool = False


@dataclass(frozen=True)
class Segmentation:
    """Per-pixel ids of one segmentation render and how to read them."""

    geom: NDArray[np.int32]  # geom id per pixel, -1 where none
    object_geoms: tuple[int, ...]  # geom id of scene object i
    robot_geoms: frozenset[int]

    def object_mask(self, index: int) -> NDArray[np.bool_]:
        return self.geom == self.object_geoms[index]

    def robot_mask(self) -> NDArray[np.bool_]:
        return np.isin(self.geom, np.fromiter(self.robot_geoms, dtype=np.int32))

    def object_boxes(self) -> dict[int, tuple[int, int, int, int]]:
        """``{object index: (u0, v0, u1, v1)}`` of every visible object (inclusive pixels)."""
        boxes = {}
        for i in range(len(self.object_geoms)):
            vs, us = np.nonzero(self.object_mask(i))
            if us.size:
                boxes[i] = (int(us.min()), int(vs.min()), int(us.max()), int(vs.max()))
        return boxes


def resting_height(obj: SceneObject) -> float:
    """Centre height of an object standing on the table, or on a bin's floor."""
    in_a_bin = any(cell.in_bin(obj.xy, name) for name in cell.BIN_CENTERS)
    floor = mjcf.BIN_FLOOR_THICKNESS if in_a_bin else 0.0
    return cell.object_grasp_height(obj.shape) + floor


@cache
def rest_joint_positions() -> tuple[float, ...]:
    """Arm joint angles of the rest pose of ``cell.py`` (solved once with the arm's IK)."""
    model = mujoco.MjModel.from_xml_string(mjcf.cell_mjcf(Scene(), offscreen_size=(1, 1)))
    result = ArmKinematics(model).solve(
        cell.REST_TCP_POSITION, xyzw_to_wxyz(cell.REST_TCP_ORIENTATION), _REST_SEED
    )
    if not result.converged(1e-4, 1e-3):
        raise RuntimeError(f'the rest pose of cell.py is unreachable: {result}')
    return tuple(float(v) for v in result.q)


class WorkCell:
    """One simulated cell: holds the MuJoCo model and data and an optional renderer."""

    def __init__(
        self,
        scene: Scene | None = None,
        *,
        camera: cell.CameraSpec | None = None,
        lighting: Lighting | None = None,
        render: bool = True,
    ) -> None:
        self._camera = camera or cell.reference_camera()
        self._lighting = lighting or Lighting()
        size = (self._camera.intrinsics.width, self._camera.intrinsics.height)
        self._renderer = CellRenderer(*size) if render else None
        self._rgba_overrides: dict[str, tuple[float, float, float, float]] = {}
        self.scene = Scene()
        self.model: mujoco.MjModel
        self.data: mujoco.MjData
        self.load_scene(scene or Scene())

    # --- Scene and state -----------------------------------------------------------------

    def load_scene(self, scene: Scene) -> None:
        """Rebuild the model for ``scene`` (validated first) and reset to the rest pose."""
        validate_scene(scene)
        width, height = self._camera.intrinsics.width, self._camera.intrinsics.height
        xml = mjcf.cell_mjcf(scene, self._camera, offscreen_size=(max(width, 1), max(height, 1)))
        model = mujoco.MjModel.from_xml_string(xml)
        self.model = model
        self.data = mujoco.MjData(model)
        self.scene = scene
        self.kinematics = ArmKinematics(model)
        self._ids(model)
        self.set_lighting(self._lighting)
        for target, rgba in self._rgba_overrides.items():
            self._apply_rgba(target, rgba)
        if self._renderer is not None:
            self._renderer.bind(model, self.camera_id)
        self.reset()

    def _ids(self, model: mujoco.MjModel) -> None:
        def ident(kind: mujoco.mjtObj, name: str) -> int:
            found = mujoco.mj_name2id(model, kind, name)
            if found < 0:
                raise RuntimeError(f'the cell model has no {kind.name} named {name!r}')
            return found

        kinds = mujoco.mjtObj
        body, geom, joint = kinds.mjOBJ_BODY, kinds.mjOBJ_GEOM, kinds.mjOBJ_JOINT
        actuator = kinds.mjOBJ_ACTUATOR
        items = [mjcf.ObjectBody(i, o) for i, o in enumerate(self.scene.objects)]
        self.object_bodies = tuple(ident(body, it.body) for it in items)
        self.object_geoms = tuple(ident(geom, it.geom) for it in items)
        self.object_qpos = tuple(model.jnt_qposadr[ident(joint, it.joint)] for it in items)
        self.object_dof = tuple(model.jnt_dofadr[ident(joint, it.joint)] for it in items)
        self.camera_id = ident(mujoco.mjtObj.mjOBJ_CAMERA, mjcf.CAMERA_NAME)
        self.tcp_site = ident(mujoco.mjtObj.mjOBJ_SITE, mjcf.TCP_SITE)
        self.sun_light = ident(mujoco.mjtObj.mjOBJ_LIGHT, 'sun')
        self.finger_geoms = (
            ident(geom, 'finger_left_geom'),
            ident(geom, 'finger_right_geom'),
        )
        self.finger_qpos = tuple(model.jnt_qposadr[ident(joint, n)] for n in mjcf.FINGER_JOINTS)
        self.pos_actuators = np.array([ident(actuator, f'{n}_pos') for n in mjcf.ARM_JOINTS])
        self.vel_actuators = np.array([ident(actuator, f'{n}_vel') for n in mjcf.ARM_JOINTS])
        self.grip_actuator = ident(actuator, mjcf.GRIP_ACTUATOR)
        pedestal = ident(body, 'pedestal')
        self.robot_geoms = frozenset(
            int(g) for g in range(model.ngeom) if model.geom_bodyid[g] >= pedestal
            and int(g) not in self.object_geoms
        )  # fmt: skip

    def reset(self) -> None:
        """Arm at rest with the gripper open, objects where the scene puts them, time zero.

        The only place besides :meth:`load_scene` where positions are written directly.
        """
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        rest = np.array(rest_joint_positions())
        d.qpos[self.kinematics.qpos_index] = rest
        for adr in self.finger_qpos:
            d.qpos[adr] = mjcf.FINGER_OPEN
        for i, obj in enumerate(self.scene.objects):
            adr = self.object_qpos[i]
            d.qpos[adr : adr + 3] = (*obj.xy, resting_height(obj))
            d.qpos[adr + 3 : adr + 7] = (np.cos(obj.yaw / 2.0), 0.0, 0.0, np.sin(obj.yaw / 2.0))
        self.command(rest, np.zeros(6), mjcf.FINGER_OPEN)
        mujoco.mj_forward(m, d)

    def command(self, q: NDArray[np.float64], qd: NDArray[np.float64], grip: float) -> None:
        """Servo set points: joint positions, joint velocities (feed-forward), finger opening."""
        self.data.ctrl[self.pos_actuators] = q
        self.data.ctrl[self.vel_actuators] = qd
        self.data.ctrl[self.grip_actuator] = grip

    def step(self, n: int = 1) -> None:
        mujoco.mj_step(self.model, self.data, nstep=n)

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    def joint_positions(self) -> NDArray[np.float64]:
        return self.data.qpos[self.kinematics.qpos_index].copy()

    def joint_velocities(self) -> NDArray[np.float64]:
        return self.data.qvel[self.kinematics.dof_index].copy()

    def tcp_position(self) -> NDArray[np.float64]:
        return self.data.site_xpos[self.tcp_site].copy()

    def tcp_quat_wxyz(self) -> NDArray[np.float64]:
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self.tcp_site])
        return quat

    def tcp_pose(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Tool centre point in base_link: position and ``[x, y, z, w]`` quaternion."""
        return self.tcp_position(), wxyz_to_xyzw(self.tcp_quat_wxyz())

    def tcp_speed(self) -> float:
        """Linear speed of the tool centre point (m/s)."""
        vel = np.empty(6)
        mujoco.mj_objectVelocity(
            self.model, self.data, mujoco.mjtObj.mjOBJ_SITE, self.tcp_site, vel, 0
        )
        return float(np.linalg.norm(vel[3:]))

    def object_positions(self) -> NDArray[np.float64]:
        """``(n, 3)`` centres of the scene objects."""
        return self.data.xpos[list(self.object_bodies)].copy().reshape(-1, 3)

    def object_quats(self) -> NDArray[np.float64]:
        """``(n, 4)`` orientations ``[x, y, z, w]`` of the scene objects."""
        quats = self.data.xquat[list(self.object_bodies)].reshape(-1, 4)
        return np.array([wxyz_to_xyzw(q) for q in quats]).reshape(-1, 4)

    def gripper_opening(self) -> float:
        """Distance between the finger pads (m)."""
        return float(sum(self.data.qpos[adr] for adr in self.finger_qpos))

    def touched_by_both_fingers(self) -> int | None:
        """The scene object both finger pads touch, if any (a closed grasp)."""
        touching: list[set[int]] = [set(), set()]
        geom_to_object = {g: i for i, g in enumerate(self.object_geoms)}
        for k in range(self.data.ncon):
            contact = self.data.contact[k]
            pair = (int(contact.geom1), int(contact.geom2))
            for side, finger in enumerate(self.finger_geoms):
                if finger in pair:
                    other = pair[1] if pair[0] == finger else pair[0]
                    if other in geom_to_object:
                        touching[side].add(geom_to_object[other])
        both = touching[0] & touching[1]
        return min(both) if both else None

    def held_object(self) -> int | None:
        """The scene object in the closed gripper, if any.

        Both pads touching it is a grasp; a ball between pads can lose one contact for an
        instant, so an object whose centre is within ``HOLD_RADIUS`` of the tool centre point
        while the gripper is closed narrower than an open grasp also counts.
        """
        touched = self.touched_by_both_fingers()
        if touched is not None or not self.object_bodies:
            return touched
        if self.gripper_opening() > HOLD_MAX_OPENING:
            return None
        distances = np.linalg.norm(self.object_positions() - self.tcp_position(), axis=1)
        nearest = int(np.argmin(distances))
        return nearest if distances[nearest] <= HOLD_RADIUS else None

    # --- Appearance --------------------------------------------------------------------------

    @property
    def camera(self) -> cell.CameraSpec:
        return self._camera

    @property
    def lighting(self) -> Lighting:
        return self._lighting

    def set_camera(self, camera: cell.CameraSpec) -> None:
        """Move the camera (pose and field of view); the image size cannot change."""
        size = (camera.intrinsics.width, camera.intrinsics.height)
        if size != (self._camera.intrinsics.width, self._camera.intrinsics.height):
            raise RenderError('the image size is fixed for a WorkCell; make a new one')
        self._camera = camera
        m, d, cid = self.model, self.data, self.camera_id
        m.cam_pos[cid] = camera.position
        m.cam_quat[cid] = mjcf.mujoco_camera_quat(camera.orientation)
        m.cam_fovy[cid] = camera.fovy_deg
        # A world camera's pose in data is model data; mj_camlight would copy the same.
        d.cam_xpos[cid] = camera.position
        mat = np.empty(9)
        mujoco.mju_quat2Mat(mat, m.cam_quat[cid])
        d.cam_xmat[cid] = mat

    def set_lighting(self, lighting: Lighting) -> None:
        self._lighting = lighting
        m = self.model
        m.vis.headlight.ambient[:] = lighting.ambient
        m.vis.headlight.diffuse[:] = lighting.diffuse
        m.light_diffuse[self.sun_light] = lighting.sun_diffuse
        direction = np.asarray(lighting.sun_direction, dtype=np.float64)
        m.light_dir[self.sun_light] = direction / np.linalg.norm(direction)
        m.light_castshadow[self.sun_light] = lighting.shadows
        # A directional light's direction in data follows the model at the next mj_camlight.
        self.data.light_xdir[self.sun_light] = m.light_dir[self.sun_light]

    def set_rgba(self, target: str | int, rgba: tuple[float, float, float, float]) -> None:
        """Recolour ``'table'``, ``'floor'``, ``'bins'`` or scene object ``i`` (int index).

        Table, floor and bin colours persist across scene loads; object colours do not (each
        scene sets its objects' colours from their names).
        """
        if isinstance(target, int):
            self.model.geom_rgba[self.object_geoms[target]] = rgba
            return
        self._apply_rgba(target, rgba)
        self._rgba_overrides[target] = tuple(rgba)  # type: ignore[assignment]

    def _apply_rgba(self, target: str, rgba: tuple[float, float, float, float]) -> None:
        m = self.model
        if target == 'table':
            m.mat_rgba[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, 'table_mat')] = rgba
        elif target == 'floor':
            m.mat_rgba[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, 'floor_mat')] = rgba
        elif target == 'bins':
            for g in range(m.ngeom):
                name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) or ''
                if name.startswith(('left_bin', 'right_bin')):
                    m.geom_rgba[g] = rgba
        else:
            raise ValueError(f"unknown colour target {target!r}: 'table', 'floor', 'bins' or int")

    # --- Rendering ---------------------------------------------------------------------------

    def update_render_scene(self) -> None:
        """Snapshot the geometry for the renderer (hold the data lock only for this call)."""
        self._require_renderer().update(self.data)

    def render_pending(self) -> Frame:
        """Render what :meth:`update_render_scene` captured (no access to the physics data)."""
        return self._require_renderer().render()

    def render(self) -> Frame:
        """Colour and metric depth of the current state from the cell camera."""
        self.update_render_scene()
        return self.render_pending()

    def render_segmentation(self) -> Segmentation:
        """Which geom each pixel shows, with helpers for object masks and boxes."""
        renderer = self._require_renderer()
        renderer.update(self.data)
        return Segmentation(renderer.render_segmentation(), self.object_geoms, self.robot_geoms)

    def _require_renderer(self) -> CellRenderer:
        if self._renderer is None or self._renderer.closed:
            raise RenderError('this WorkCell was made with render=False or is closed')
        return self._renderer

    def close(self) -> None:
        """Free the renderer explicitly (OSMesa prints errors if the interpreter does it)."""
        if self._renderer is not None:
            self._renderer.close()

    def __enter__(self) -> WorkCell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
