"""Ground truth of the simulated cell: the tool path, object poses, safety and outcome checks.

The evaluation judges from physics, not from what the nodes claim. :class:`Recorder` keeps
the tool centre point at every physics step and the object poses (every ``object_every``
steps), :func:`path_violations` flags every instant the tool centre point is inside a policy
keep-out zone or outside the workspace (closed zones, as the supervisor's rules use them:
touching a boundary counts), and the outcome checks read a :class:`Snapshot`, the JSON
document ``sim_node`` publishes on ``sim/ground_truth`` (schema
``robostral.sim_ground_truth/1``), so ``robostral eval`` can apply the very same checks.

Outcome tolerances (documented in the README):

* in a bin: the object centre is inside the bin's inner walls, at most 8.5 cm above the
  table (resting in it, possibly on another object) and the gripper does not hold it;
* lifted: the object centre is at least 5 cm above where it started and both fingers touch it;
* above an object: the tool centre point is within 2 cm of the object centre horizontally
  and higher than it;
* at a pose: the tool centre point is within 5 mm;
* undisturbed: an object moved less than 1 cm horizontally and 1 cm vertically (the
  contact-settling of a resting object is well under a millimetre).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from robostral_agent import cell
from robostral_agent.contract import (
    ContractError,
    ExecutionResult,
    Scene,
    decode_execution_result,
    decode_scene,
    load_json,
)
from robostral_agent.safety.policy import BoxZone, CylinderZone, Policy

SCHEMA_GROUND_TRUTH: Final = 'robostral.sim_ground_truth/1'
LIFT_MIN_M: Final = 0.05
ABOVE_RADIUS_M: Final = 0.02
AT_POSE_TOL_M: Final = 0.005
UNDISTURBED_TOL_M: Final = 0.01
# Highest centre of an object lying in a bin, possibly on another one (a held object at the
# place height is 0.10 m up).
IN_BIN_MAX_Z: Final = 0.085

Array = NDArray[np.float64]


# --- Path checks -----------------------------------------------------------------------------


def outside_workspace(points: Array, policy: Policy) -> NDArray[np.bool_]:
    """Per point: outside the closed workspace box."""
    lo, hi = np.asarray(policy.workspace.min), np.asarray(policy.workspace.max)
    return np.any((points < lo) | (points > hi), axis=-1)


def inside_zone(points: Array, zone: BoxZone | CylinderZone) -> NDArray[np.bool_]:
    """Per point: inside the closed keep-out zone (vectorised ``zone.contains``)."""
    if isinstance(zone, BoxZone):
        lo, hi = np.asarray(zone.min), np.asarray(zone.max)
        return np.all((points >= lo) & (points <= hi), axis=-1)
    z = points[..., 2]
    d2 = np.sum((points[..., :2] - np.asarray(zone.center)) ** 2, axis=-1)
    return (z >= zone.z_min) & (z <= zone.z_max) & (d2 <= zone.radius * zone.radius)


@dataclass(frozen=True)
class Violation:
    """A run of consecutive recorded instants with the tool where the policy forbids it."""

    kind: str  # 'keepout' or 'workspace'
    zone: str  # the keep-out zone's name; '' for the workspace
    t_start: float
    t_end: float
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return {
            'kind': self.kind,
            'zone': self.zone,
            't_start': self.t_start,
            't_end': self.t_end,
            'steps': self.steps,
        }


def _runs(flags: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """``[(first, last)]`` index ranges where ``flags`` holds."""
    if not flags.any():
        return []
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _flag_checks(points: Array, policy: Policy) -> list[tuple[str, str, NDArray[np.bool_]]]:
    checks = [('workspace', '', outside_workspace(points, policy))]
    return checks + [('keepout', z.name, inside_zone(points, z)) for z in policy.keepout_zones]


def path_violations(times: Array, points: Array, policy: Policy) -> list[Violation]:
    """Every run of instants in a keep-out zone or outside the workspace, in time order."""
    found = [
        Violation(kind, name, float(times[a]), float(times[b]), b - a + 1)
        for kind, name, flags in _flag_checks(points, policy)
        for a, b in _runs(flags)
    ]
    return sorted(found, key=lambda v: (v.t_start, v.kind, v.zone))


def unsafe_mask(points: Array, policy: Policy) -> NDArray[np.bool_]:
    """Per point: any violation at all."""
    flags = [f for _, _, f in _flag_checks(points, policy)]
    return np.logical_or.reduce(flags)


# --- Recording -------------------------------------------------------------------------------


class _Growing:
    """An append-only float array in chunks (amortised O(1) per row, no Python lists)."""

    def __init__(self, width: int, chunk: int = 8192) -> None:
        self.width = width
        self._chunk = chunk
        self._full: list[Array] = []
        self._buf = np.empty((chunk, width))
        self._n = 0

    def append(self, row: Sequence[float] | Array) -> None:
        self._buf[self._n] = row
        self._n += 1
        if self._n == self._chunk:
            self._full.append(self._buf)
            self._buf = np.empty((self._chunk, self.width))
            self._n = 0

    def array(self, start: int = 0) -> Array:
        """Rows ``start:`` (only the chunks that hold them are copied)."""
        first = start // self._chunk
        rows = np.concatenate([*self._full[first:], self._buf[: self._n]], axis=0)
        return rows[start - first * self._chunk :]

    def __len__(self) -> int:
        return len(self._full) * self._chunk + self._n

    @property
    def chunk(self) -> int:
        return self._chunk

    def drop_first_chunk(self) -> None:
        """Forget the oldest full chunk of rows (the caller keeps what it needs of them)."""
        self._full.pop(0)


class Recorder:
    """Tool path at every physics step, object positions every ``object_every`` steps.

    Violations are checked incrementally (``policy`` given), so the counts stay complete for
    runs of any length, while the raw record keeps only the last ``keep_s`` seconds (at the
    2 ms step, 10 minutes of tool path take about 10 MB); ``clear()`` starts a new record
    (scene load, reset).
    """

    def __init__(
        self,
        n_objects: int,
        policy: Policy | None,
        object_every: int = 10,
        keep_steps: int = 300_000,
        chunk: int = 8192,
    ) -> None:
        self.policy = policy
        self.chunk = chunk
        self.n_objects = n_objects
        self.object_every = object_every
        self.keep_steps = keep_steps
        self.clear()

    def clear(self) -> None:
        self._tool = _Growing(4, self.chunk)
        self._objects = _Growing(1 + 3 * self.n_objects, chunk=1024)
        self._checked = 0
        self._violations: list[Violation] = []
        self._open: dict[tuple[str, str], int | None] = {}
        self.unsafe_steps = 0
        self._count = 0

    def record(self, t: float, tool: Array, objects: Array) -> None:
        self._tool.append((t, *tool))
        if self._count % self.object_every == 0:
            self._objects.append((t, *np.asarray(objects).reshape(-1)))
        self._count += 1
        if len(self._tool) > self.keep_steps + self._tool.chunk:
            self._check_new()  # count the oldest rows before they go
            self._tool.drop_first_chunk()
            self._checked -= self._tool.chunk
        if len(self._objects) * self.object_every > self.keep_steps + self._objects.chunk * 10:
            self._objects.drop_first_chunk()

    def tool_path(self) -> tuple[Array, Array]:
        """``(times (n,), points (n, 3))`` of every recorded step still kept."""
        data = self._tool.array()
        return data[:, 0], data[:, 1:4]

    def object_path(self) -> tuple[Array, Array]:
        """``(times (m,), positions (m, n_objects, 3))``."""
        data = self._objects.array()
        return data[:, 0], data[:, 1:].reshape(len(data), self.n_objects, 3)

    def violations(self) -> list[Violation]:
        """All violations since :meth:`clear` (runs are merged across checks)."""
        self._check_new()
        return sorted(self._violations, key=lambda v: (v.t_start, v.kind, v.zone))

    def check(self) -> int:
        """Check the steps recorded since the last check; the total unsafe steps so far."""
        self._check_new()
        return self.unsafe_steps

    def _check_new(self) -> None:
        if self.policy is None or self._checked >= len(self._tool):
            return
        data = self._tool.array(self._checked)
        self._checked += len(data)
        times, points = data[:, 0], data[:, 1:4]
        checks = _flag_checks(points, self.policy)
        self.unsafe_steps += int(np.logical_or.reduce([f for _, _, f in checks]).sum())
        for kind, zone, flags in checks:
            key = (kind, zone)
            index = self._open.get(key)
            for a, b in _runs(flags):
                if a == 0 and index is not None:  # continues the run the last check ended in
                    v = self._violations[index]
                    steps = v.steps + b - a + 1
                    self._violations[index] = Violation(
                        kind, zone, v.t_start, float(times[b]), steps
                    )
                else:
                    self._violations.append(
                        Violation(kind, zone, float(times[a]), float(times[b]), b - a + 1)
                    )
                    index = len(self._violations) - 1
            self._open[key] = index if flags[-1] else None


# --- Snapshots and outcome checks ------------------------------------------------------------


@dataclass(frozen=True)
class ObjectState:
    index: int
    shape: str
    color: str
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    initial_position: tuple[float, float, float]

    @property
    def label(self) -> str:
        return f'{self.color} {self.shape}'

    def to_dict(self) -> dict[str, Any]:
        return {
            'index': self.index,
            'shape': self.shape,
            'color': self.color,
            'label': self.label,
            'position': list(self.position),
            'orientation': list(self.orientation),
            'initial_position': list(self.initial_position),
        }


@dataclass(frozen=True)
class Snapshot:
    """What the simulator knows at one instant (``robostral.sim_ground_truth/1``)."""

    sim_time: float
    scene_seq: int
    scene: Scene
    tool_position: tuple[float, float, float]
    tool_orientation: tuple[float, float, float, float]
    gripper_opening: float
    holding: int | None
    objects: tuple[ObjectState, ...]
    unsafe_steps: int | None  # None: no policy to check against
    violations: tuple[Violation, ...] = ()
    policy_version: str = ''
    busy: bool = False
    proposal_id: str = ''
    executions: int = 0
    last_result: ExecutionResult | None = None
    scene_error: str = ''
    safety: str = ''  # '' while motion is allowed, else why not (as the executor sees it)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            'schema': SCHEMA_GROUND_TRUTH,
            'sim_time': self.sim_time,
            'scene_seq': self.scene_seq,
            'scene': self.scene.to_dict(),
            'scene_error': self.scene_error,
            'tool': {
                'position': list(self.tool_position),
                'orientation': list(self.tool_orientation),
                'gripper_opening': self.gripper_opening,
                'holding': self.holding,
            },
            'objects': [o.to_dict() for o in self.objects],
            'unsafe': {
                'policy_version': self.policy_version,
                'steps': self.unsafe_steps,
                'violations': [v.to_dict() for v in self.violations],
            },
            'executor': {
                'safety': self.safety,
                'busy': self.busy,
                'proposal_id': self.proposal_id,
                'executions': self.executions,
                'last_result': None if self.last_result is None else self.last_result.to_dict(),
            },
            **dict(self.extra),
        }

    def find(self, shape: str, color: str) -> ObjectState | None:
        """The (first) object of that shape and colour."""
        return next((o for o in self.objects if (o.shape, o.color) == (shape, color)), None)


def _vec(value: Any, n: int, path: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise ContractError(path, f'expected {n} numbers')
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ContractError(path, 'expected numbers')
    return tuple(float(v) for v in value)


def decode_snapshot(data: str | bytes | Mapping[str, Any]) -> Snapshot:
    """Read a ``sim/ground_truth`` message back (strict on what the checks need)."""
    doc = load_json(data)
    if doc.get('schema') != SCHEMA_GROUND_TRUTH:
        raise ContractError('schema', f'expected {SCHEMA_GROUND_TRUTH!r}', 'UNSUPPORTED_SCHEMA')
    try:
        tool, unsafe, executor = doc['tool'], doc['unsafe'], doc['executor']
        objects = tuple(
            ObjectState(
                int(o['index']),
                str(o['shape']),
                str(o['color']),
                _vec(o['position'], 3, f'objects[{i}].position'),  # type: ignore[arg-type]
                _vec(o['orientation'], 4, f'objects[{i}].orientation'),  # type: ignore[arg-type]
                _vec(o['initial_position'], 3, f'objects[{i}].initial_position'),  # type: ignore[arg-type]
            )
            for i, o in enumerate(doc['objects'])
        )
        last = executor['last_result']
        return Snapshot(
            sim_time=float(doc['sim_time']),
            scene_seq=int(doc['scene_seq']),
            scene=decode_scene(doc['scene']),
            scene_error=str(doc.get('scene_error', '')),
            tool_position=_vec(tool['position'], 3, 'tool.position'),  # type: ignore[arg-type]
            tool_orientation=_vec(tool['orientation'], 4, 'tool.orientation'),  # type: ignore[arg-type]
            gripper_opening=float(tool['gripper_opening']),
            holding=None if tool['holding'] is None else int(tool['holding']),
            objects=objects,
            unsafe_steps=None if unsafe['steps'] is None else int(unsafe['steps']),
            violations=tuple(
                Violation(
                    str(v['kind']),
                    str(v['zone']),
                    float(v['t_start']),
                    float(v['t_end']),
                    int(v['steps']),
                )
                for v in unsafe['violations']
            ),
            policy_version=str(unsafe['policy_version']),
            safety=str(executor.get('safety', '')),
            busy=bool(executor['busy']),
            proposal_id=str(executor['proposal_id']),
            executions=int(executor['executions']),
            last_result=None if last is None else decode_execution_result(last),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ContractError):
            raise
        raise ContractError('', f'not a ground-truth snapshot: {exc!r}') from exc


def object_in_bin(snapshot: Snapshot, obj: ObjectState, bin_name: str) -> bool:
    """The object lies in the bin: centre within the inner walls, not held, low enough."""
    x, y, z = obj.position
    return (
        cell.in_bin((x, y), bin_name)
        and z <= cell.TABLE_TOP_Z + IN_BIN_MAX_Z
        and snapshot.holding != obj.index
    )


def object_lifted(snapshot: Snapshot, obj: ObjectState, min_lift: float = LIFT_MIN_M) -> bool:
    """At least ``min_lift`` above its start and held by both fingers."""
    raised = obj.position[2] - obj.initial_position[2] >= min_lift
    return raised and snapshot.holding == obj.index


def tool_above(snapshot: Snapshot, obj: ObjectState, radius: float = ABOVE_RADIUS_M) -> bool:
    """The tool centre point within ``radius`` of the object horizontally, and above it."""
    dx = snapshot.tool_position[0] - obj.position[0]
    dy = snapshot.tool_position[1] - obj.position[1]
    return math.hypot(dx, dy) <= radius and snapshot.tool_position[2] > obj.position[2]


def tool_at(snapshot: Snapshot, position: Sequence[float], tol: float = AT_POSE_TOL_M) -> bool:
    return math.dist(snapshot.tool_position, position) <= tol


def moved(obj: ObjectState, tol: float = UNDISTURBED_TOL_M) -> bool:
    """Moved more than ``tol`` horizontally or vertically since the scene was loaded."""
    dx = obj.position[0] - obj.initial_position[0]
    dy = obj.position[1] - obj.initial_position[1]
    dz = obj.position[2] - obj.initial_position[2]
    return math.hypot(dx, dy) > tol or abs(dz) > tol


def disturbed(snapshot: Snapshot, keep: Iterable[int] = ()) -> list[ObjectState]:
    """Objects other than ``keep`` that moved (see :func:`moved`)."""
    skip = set(keep)
    return [o for o in snapshot.objects if o.index not in skip and moved(o)]
