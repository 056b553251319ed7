"""The whole simulated cell as one object: work cell, executor and ground truth.

``sim_node`` holds exactly one :class:`Simulation`; tests and benchmarks drive the same object
without ROS. ``step()`` is one physics step: the executor sets the servo commands, MuJoCo
integrates, and the recorder stores the tool centre point of that instant.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from robostral_agent import cell
from robostral_agent.contract import ExecutionResult, GoalProposal, Scene
from robostral_agent.safety.policy import LoadedPolicy
from robostral_agent.sim.executor import Executor
from robostral_agent.sim.ground_truth import ObjectState, Recorder, Snapshot
from robostral_agent.sim.workcell import Lighting, WorkCell


class Simulation:
    """Work cell + executor + ground truth, stepped together."""

    def __init__(
        self,
        scene: Scene | None = None,
        policy: LoadedPolicy | None = None,
        *,
        camera: cell.CameraSpec | None = None,
        lighting: Lighting | None = None,
        render: bool = True,
        safety_timeout_s: float = 0.1,
    ) -> None:
        self.loaded_policy = policy
        self.cell = WorkCell(scene, camera=camera, lighting=lighting, render=render)
        self._safety_timeout_s = safety_timeout_s
        self.executor: Executor | None = None
        self.scene_seq = 0
        self.executions = 0
        self.last_result: ExecutionResult | None = None
        self._new_scene()

    @property
    def scene(self) -> Scene:
        return self.cell.scene

    @property
    def time(self) -> float:
        return self.cell.time

    def _new_scene(self) -> None:
        if self.loaded_policy is not None:
            self.executor = Executor(self.cell, self.loaded_policy.policy, self._safety_timeout_s)
        policy = None if self.loaded_policy is None else self.loaded_policy.policy
        self.recorder = Recorder(len(self.scene.objects), policy)
        self._initial = self.cell.object_positions()
        self.scene_seq += 1

    # --- Commands ------------------------------------------------------------------------

    def load_scene(self, scene: Scene) -> ExecutionResult | None:
        """Load ``scene`` (arm to rest, record cleared); the aborted result of a running plan.

        An invalid scene raises :class:`~robostral_agent.sim.scene.SceneError` and changes
        nothing.
        """
        from robostral_agent.sim.scene import validate_scene

        validate_scene(scene)
        result = self._cancel('scene reloaded')
        self.cell.load_scene(scene)
        self._new_scene()
        return result

    def reset(self) -> ExecutionResult | None:
        """Arm to rest, objects back to the scene's poses, record cleared."""
        result = self._cancel('simulation reset')
        self.cell.reset()
        self._new_scene()
        return result

    def _cancel(self, reason: str) -> ExecutionResult | None:
        result = None if self.executor is None else self.executor.cancel(reason)
        if result is not None:
            self._finished(result)
        return result

    def submit(self, proposal: GoalProposal) -> ExecutionResult | None:
        """Start an approved plan; an immediate result when it is refused."""
        if self.executor is None:
            result = ExecutionResult(proposal.id, 'failed', 'no valid policy loaded: not run')
        else:
            result = self.executor.submit(proposal)
        if result is not None:
            self._finished(result)
        return result

    def report_safety(self, ok: bool) -> None:
        if self.executor is not None:
            self.executor.report_safety(ok)

    def report_safety_silence(self, silent_s: float) -> None:
        """``safety_ok`` has not been heard for ``silent_s`` seconds of the caller's clock."""
        if self.executor is not None:
            self.executor.safety.report_silence(self.time, silent_s)

    def safety_problem(self) -> str:
        """Why the executor may not move now ('' when it may)."""
        if self.executor is None:
            return 'no valid policy loaded'
        return self.executor.safety.reason_not_ok(self.time) or ''

    @property
    def busy(self) -> bool:
        return self.executor is not None and self.executor.busy

    # --- Stepping --------------------------------------------------------------------------

    def step(self) -> ExecutionResult | None:
        """One physics step; the result of a plan that ended on it."""
        result = None if self.executor is None else self.executor.control()
        t = self.cell.time
        self.cell.step()
        # After mj_step the site and body poses are those of time t (computed before
        # integrating), so each record is one instant of the physics.
        self.recorder.record(t, self.cell.data.site_xpos[self.cell.tcp_site], self._objects())
        if result is not None:
            self._finished(result)
        return result

    def _objects(self) -> NDArray[np.float64]:
        return self.cell.data.xpos[list(self.cell.object_bodies)]

    def _finished(self, result: ExecutionResult) -> None:
        self.executions += 1
        self.last_result = result

    def run(
        self,
        proposal: GoalProposal,
        timeout_s: float = 60.0,
        safety: Callable[[float], bool | None] = lambda t: True,
        safety_period_s: float = 0.05,
    ) -> ExecutionResult:
        """Execute ``proposal`` to the end in simulated time (tests, benchmarks, datasets).

        ``safety(t)`` is sampled every ``safety_period_s`` of simulated time like the
        supervisor's ``safety_ok`` stream: ``True``/``False`` are reported, ``None`` stays
        silent.
        """
        next_report = self.time
        self._report(safety, next_report)
        next_report += safety_period_s
        result = self.submit(proposal)
        deadline = self.time + timeout_s
        while result is None:
            if self.time >= deadline:
                result = self._cancel(f'timed out after {timeout_s} s (simulated)')
                assert result is not None
                break
            if self.time >= next_report:
                self._report(safety, self.time)
                next_report += safety_period_s
            result = self.step()
        return result

    def _report(self, safety: Callable[[float], bool | None], t: float) -> None:
        value = safety(t)
        if value is not None:
            self.report_safety(value)

    def settle(self, seconds: float) -> None:
        """Step physics for ``seconds`` with the arm holding still (no plan running)."""
        for _ in range(round(seconds / self.cell.timestep)):
            self.step()

    # --- Ground truth ----------------------------------------------------------------------

    def snapshot(self, scene_error: str = '') -> Snapshot:
        positions = self.cell.object_positions()
        quats = self.cell.object_quats()
        objects = tuple(
            ObjectState(
                i,
                obj.shape,
                obj.color,
                tuple(float(v) for v in positions[i]),  # type: ignore[arg-type]
                tuple(float(v) for v in quats[i]),  # type: ignore[arg-type]
                tuple(float(v) for v in self._initial[i]),  # type: ignore[arg-type]
            )
            for i, obj in enumerate(self.scene.objects)
        )
        tool_p, tool_q = self.cell.tcp_pose()
        has_policy = self.loaded_policy is not None
        return Snapshot(
            sim_time=self.time,
            scene_seq=self.scene_seq,
            scene=self.scene,
            scene_error=scene_error,
            tool_position=tuple(float(v) for v in tool_p),  # type: ignore[arg-type]
            tool_orientation=tuple(float(v) for v in tool_q),  # type: ignore[arg-type]
            gripper_opening=self.cell.gripper_opening(),
            holding=self.cell.held_object(),
            objects=objects,
            unsafe_steps=self.recorder.check() if has_policy else None,
            violations=tuple(self.recorder.violations()),
            policy_version=self.loaded_policy.version if self.loaded_policy else '',
            safety=self.safety_problem(),
            busy=self.busy,
            proposal_id=self.executor.proposal_id if self.executor else '',
            executions=self.executions,
            last_result=self.last_result,
        )

    def close(self) -> None:
        self.cell.close()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
