"""Kinematics of the simulated arm: forward kinematics and damped least-squares IK.

Inverse kinematics runs on a private scratch ``MjData`` with MuJoCo's own forward kinematics
and site Jacobian (``mj_jacSite``), so it never disturbs the physics state. The solver is the
classic damped least squares (Levenberg-Marquardt) step on the 6-D pose error, with joint
limits enforced by clamping; MuJoCo offers the Jacobians but no IK solver, and the few lines
here are clearer than bending a general optimiser (scipy's) to a 6-joint arm at 500 Hz.

Quaternions at this module's boundary follow the contract, ``[x, y, z, w]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from numpy.typing import ArrayLike, NDArray

from robostral_agent.sim import mjcf

Array = NDArray[np.float64]

ROTATION_WEIGHT = 0.3  # metres per radian: how much an orientation error counts against position


def xyzw_to_wxyz(q: ArrayLike) -> Array:
    x, y, z, w = np.asarray(q, dtype=np.float64)
    return np.array([w, x, y, z])


def wxyz_to_xyzw(q: ArrayLike) -> Array:
    w, x, y, z = np.asarray(q, dtype=np.float64)
    out = np.array([x, y, z, w])
    return -out if w < 0 else out


def rotation_error(target_wxyz: ArrayLike, current_wxyz: ArrayLike) -> Array:
    """Rotation vector (world frame, radians) that turns ``current`` into ``target``."""
    inv = np.empty(4)
    mujoco.mju_negQuat(inv, np.asarray(current_wxyz, dtype=np.float64))
    diff = np.empty(4)
    mujoco.mju_mulQuat(diff, np.asarray(target_wxyz, dtype=np.float64), inv)
    if diff[0] < 0:  # the short way round
        diff = -diff
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, diff, 1.0)
    return vel


def slerp_wxyz(a: ArrayLike, b: ArrayLike, s: float) -> Array:
    """Spherical interpolation between unit quaternions (``s`` in [0, 1])."""
    qa = np.asarray(a, dtype=np.float64)
    qb = np.asarray(b, dtype=np.float64)
    if float(np.dot(qa, qb)) < 0.0:
        qb = -qb
    vel = rotation_error(qb, qa)
    out = np.empty(4)
    step = np.empty(4)
    mujoco.mju_axisAngle2Quat(step, vel / (np.linalg.norm(vel) or 1.0), np.linalg.norm(vel) * s)
    mujoco.mju_mulQuat(out, step, qa)
    return out / np.linalg.norm(out)


@dataclass(frozen=True)
class IkResult:
    q: Array
    position_error: float  # metres
    rotation_error: float  # radians
    iterations: int

    def converged(self, pos_tol: float, rot_tol: float) -> bool:
        return self.position_error <= pos_tol and self.rotation_error <= rot_tol


class ArmKinematics:
    """Forward kinematics, Jacobians and IK of the arm on a scratch copy of the model's data."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, mjcf.TCP_SITE)
        joint_ids = [
            mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in mjcf.ARM_JOINTS
        ]
        self.qpos_index = np.array([model.jnt_qposadr[j] for j in joint_ids])
        self.dof_index = np.array([model.jnt_dofadr[j] for j in joint_ids])
        self.lower = np.array([model.jnt_range[j][0] for j in joint_ids])
        self.upper = np.array([model.jnt_range[j][1] for j in joint_ids])
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def _set(self, q: ArrayLike) -> None:
        self.data.qpos[self.qpos_index] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def _pose(self) -> tuple[Array, Array]:
        position = self.data.site_xpos[self.site_id].copy()
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self.site_id])
        return position, quat

    def forward(self, q: ArrayLike) -> tuple[Array, Array]:
        """TCP position and orientation (MuJoCo ``wxyz``) for joint angles ``q``."""
        self._set(q)
        return self._pose()

    def jacobian(self, q: ArrayLike) -> Array:
        """The 6x6 TCP Jacobian (linear rows, then angular rows) over the arm joints."""
        self._set(q)
        return self._jacobian_here()

    def _jacobian_here(self) -> Array:
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
        return np.vstack([self._jacp[:, self.dof_index], self._jacr[:, self.dof_index]])

    def ik_step(
        self,
        q: Array,
        position: Array,
        quat_wxyz: Array,
        damping: float = 0.02,
        max_step: float = 0.2,
    ) -> tuple[Array, float, float]:
        """One damped least-squares step from ``q``; returns (q', pos error, rot error) at q."""
        self._set(q)
        current_p, current_q = self._pose()
        e_pos = position - current_p
        e_rot = rotation_error(quat_wxyz, current_q)
        err = np.concatenate([e_pos, ROTATION_WEIGHT * e_rot])
        jac = self._jacobian_here()
        jac[3:] *= ROTATION_WEIGHT
        lhs = jac @ jac.T + (damping**2) * np.eye(6)
        dq = jac.T @ np.linalg.solve(lhs, err)
        largest = float(np.max(np.abs(dq)))
        if largest > max_step:
            dq *= max_step / largest
        q_next = np.clip(q + dq, self.lower, self.upper)
        return q_next, float(np.linalg.norm(e_pos)), float(np.linalg.norm(e_rot))

    def solve(
        self,
        position: ArrayLike,
        quat_wxyz: ArrayLike,
        q_seed: ArrayLike,
        max_iterations: int = 200,
        pos_tol: float = 1e-4,
        rot_tol: float = 1e-3,
    ) -> IkResult:
        """Iterate :meth:`ik_step` from ``q_seed`` until within tolerance or out of iterations."""
        target_p = np.asarray(position, dtype=np.float64)
        target_q = np.asarray(quat_wxyz, dtype=np.float64)
        q = np.clip(np.asarray(q_seed, dtype=np.float64), self.lower, self.upper)
        for i in range(max_iterations):
            q_next, e_pos, e_rot = self.ik_step(q, target_p, target_q)
            if e_pos <= pos_tol and e_rot <= rot_tol:
                return IkResult(q, e_pos, e_rot, i)
            q = q_next
        p, quat = self.forward(q)
        return IkResult(
            q,
            float(np.linalg.norm(target_p - p)),
            float(np.linalg.norm(rotation_error(target_q, quat))),
            max_iterations,
        )

    def joint_velocity(self, q: ArrayLike, twist: ArrayLike, damping: float = 0.02) -> Array:
        """Joint velocities that realise a TCP twist ``[v; w]`` at ``q`` (damped inverse)."""
        jac = self.jacobian(q)
        lhs = jac @ jac.T + (damping**2) * np.eye(6)
        return jac.T @ np.linalg.solve(lhs, np.asarray(twist, dtype=np.float64))
