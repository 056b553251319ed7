"""The safety policy file, version 1 (INTERFACES.md section 5): model, strict loader, hash.

The loader refuses anything it does not fully understand: unknown or duplicate keys, wrong
types, non-finite numbers, empty boxes, a home outside the workspace. Every error names the
field (``keepout_zones[1].radius``) so an integrator can fix the file without guessing.
The policy version is the SHA-256 of the file's bytes, so a verdict and an audit record pin
exactly which rules were in force.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from robostral_agent.contract import TASKS
from robostral_agent.geometry import (
    angle_between_deg,
    point_in_box,
    point_in_cylinder,
    quaternion_is_unit,
    tool_axis,
)

CHECK_PATH_MODES: Final = ('none', 'straight_line', 'transit')


class PolicyError(ValueError):
    """The policy file is missing, unreadable or invalid; ``field`` names where."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f'{field}: {message}' if field else message)


@dataclass(frozen=True, slots=True)
class BoxZone:
    name: str
    min: tuple[float, float, float]
    max: tuple[float, float, float]
    type: str = 'box'

    def contains(self, p: tuple[float, float, float] | Any) -> bool:
        return point_in_box(p, self.min, self.max)


@dataclass(frozen=True, slots=True)
class CylinderZone:
    name: str
    center: tuple[float, float]
    radius: float
    z_min: float
    z_max: float
    type: str = 'cylinder'

    def contains(self, p: tuple[float, float, float] | Any) -> bool:
        return point_in_cylinder(p, self.center, self.radius, self.z_min, self.z_max)


Zone = BoxZone | CylinderZone


@dataclass(frozen=True, slots=True)
class Workspace:
    min: tuple[float, float, float]
    max: tuple[float, float, float]

    def contains(self, p: tuple[float, float, float] | Any) -> bool:
        return point_in_box(p, self.min, self.max)


@dataclass(frozen=True, slots=True)
class Pose:
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class ToolOrientation:
    axis: tuple[float, float, float]
    max_angle_deg: float


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy; field names and meanings are those of the file."""

    version: int
    base_frame: str
    workspace: Workspace
    keepout_zones: tuple[Zone, ...]
    allowed_tasks: tuple[str, ...]
    home: Pose
    min_confidence: float
    max_proposal_age_s: float
    max_image_age_s: float
    max_future_skew_s: float
    max_goal_rate_hz: float
    max_step_m: float
    require_tool_pose: bool
    check_path: str
    transit_height: float
    tool_orientation: ToolOrientation | None
    require_approval_for: tuple[str, ...]
    approval_timeout_s: float
    authorized_operators: tuple[str, ...]
    start_latched: bool

    def zone_containing(self, p: Any) -> Zone | None:
        """The first keep-out zone that contains ``p`` (closed), if any."""
        for zone in self.keepout_zones:
            if zone.contains(p):
                return zone
        return None


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A policy with its version: the SHA-256 (hex) of the exact bytes it was read from."""

    policy: Policy
    version: str
    path: str


# --- YAML without silent surprises -----------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise PolicyError(str(key), f'duplicate key (line {key_node.start_mark.line + 1})')
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# --- Field readers -----------------------------------------------------------------------------


class _Fields:
    __slots__ = ('_data', '_path', '_seen')

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise PolicyError(path, f'expected a mapping, got {_kind(data)}')
        self._data = data
        self._path = path
        self._seen: set[Any] = set()

    def sub(self, key: str) -> str:
        return f'{self._path}.{key}' if self._path else key

    def get(self, key: str, convert: Callable[[Any, str], Any], default: Any = ...) -> Any:
        self._seen.add(key)
        if key not in self._data:
            if default is ...:
                raise PolicyError(self.sub(key), 'missing')
            return default
        return convert(self._data[key], self.sub(key))

    def done(self) -> None:
        extra = [k for k in self._data if k not in self._seen]
        if extra:
            raise PolicyError(self.sub(str(extra[0])), 'unknown key')


def _kind(value: Any) -> str:
    return 'null' if value is None else type(value).__name__


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(path, f'expected a number, got {_kind(value)}')
    number = float(value)
    if not math.isfinite(number):
        raise PolicyError(path, 'must be finite')
    return number


def _positive(value: Any, path: str) -> float:
    number = _number(value, path)
    if number <= 0:
        raise PolicyError(path, f'must be > 0, got {number}')
    return number


def _non_negative(value: Any, path: str) -> float:
    number = _number(value, path)
    if number < 0:
        raise PolicyError(path, f'must be >= 0, got {number}')
    return number


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(path, f'expected true or false, got {_kind(value)}')
    return value


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(path, f'expected a non-empty string, got {value!r}')
    return value


def _vector(length: int) -> Callable[[Any, str], tuple[float, ...]]:
    def convert(value: Any, path: str) -> tuple[float, ...]:
        if not isinstance(value, list) or len(value) != length:
            raise PolicyError(path, f'expected a list of {length} numbers, got {value!r}')
        return tuple(_number(v, f'{path}[{i}]') for i, v in enumerate(value))

    return convert


def _names(options: tuple[str, ...] | None) -> Callable[[Any, str], tuple[str, ...]]:
    def convert(value: Any, path: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise PolicyError(path, f'expected a list, got {_kind(value)}')
        out = tuple(_name(v, f'{path}[{i}]') for i, v in enumerate(value))
        for i, item in enumerate(out):
            if options is not None and item not in options:
                raise PolicyError(f'{path}[{i}]', f'{item!r} is not one of {", ".join(options)}')
        if len(set(out)) != len(out):
            raise PolicyError(path, 'repeated entry')
        return out

    return convert


def _box_corners(f: _Fields, path: str) -> tuple[Any, Any]:
    lo = f.get('min', _vector(3))
    hi = f.get('max', _vector(3))
    if any(a >= b for a, b in zip(lo, hi, strict=True)):
        raise PolicyError(path, f'min must be below max on every axis, got {lo} and {hi}')
    return lo, hi


def _workspace(value: Any, path: str) -> Workspace:
    f = _Fields(value, path)
    lo, hi = _box_corners(f, path)
    f.done()
    return Workspace(lo, hi)


def _zone(value: Any, path: str) -> Zone:
    f = _Fields(value, path)
    name = f.get('name', _name)
    kind = f.get('type', _name)
    if kind == 'box':
        lo, hi = _box_corners(f, path)
        f.done()
        return BoxZone(name, lo, hi)
    if kind == 'cylinder':
        zone = CylinderZone(
            name,
            f.get('center', _vector(2)),
            f.get('radius', _positive),
            f.get('z_min', _number),
            f.get('z_max', _number),
        )
        f.done()
        if zone.z_min >= zone.z_max:
            raise PolicyError(path, f'z_min must be below z_max, got {zone.z_min}, {zone.z_max}')
        return zone
    raise PolicyError(f.sub('type'), f"expected 'box' or 'cylinder', got {kind!r}")


def _zones(value: Any, path: str) -> tuple[Zone, ...]:
    if not isinstance(value, list):
        raise PolicyError(path, f'expected a list, got {_kind(value)}')
    zones = tuple(_zone(z, f'{path}[{i}]') for i, z in enumerate(value))
    names = [z.name for z in zones]
    if len(set(names)) != len(names):
        raise PolicyError(path, 'zone names must be unique')
    return zones


def _pose(value: Any, path: str) -> Pose:
    f = _Fields(value, path)
    position = f.get('position', _vector(3))
    orientation = f.get('orientation', _vector(4))
    f.done()
    if not quaternion_is_unit(orientation):
        raise PolicyError(f'{path}.orientation', 'must be a unit quaternion [x, y, z, w]')
    return Pose(position, orientation)


def _tool_orientation(value: Any, path: str) -> ToolOrientation:
    f = _Fields(value, path)
    axis = f.get('axis', _vector(3))
    max_angle = f.get('max_angle_deg', _positive)
    f.done()
    if math.hypot(*axis) < 1e-9:
        raise PolicyError(f'{path}.axis', 'must not be the zero vector')
    if max_angle > 180.0:
        raise PolicyError(f'{path}.max_angle_deg', f'must be <= 180, got {max_angle}')
    return ToolOrientation(axis, max_angle)


def _version(value: Any, path: str) -> int:
    if isinstance(value, bool) or value != 1 or not isinstance(value, int):
        raise PolicyError(path, f'unsupported policy version {value!r} (this build reads 1)')
    return 1


def _check_path(value: Any, path: str) -> str:
    if value not in CHECK_PATH_MODES:
        raise PolicyError(path, f'expected one of {", ".join(CHECK_PATH_MODES)}, got {value!r}')
    return str(value)


def _unit_interval(value: Any, path: str) -> float:
    number = _number(value, path)
    if not 0.0 <= number <= 1.0:
        raise PolicyError(path, f'must be in [0, 1], got {number}')
    return number


def parse_policy(data: Any) -> Policy:
    """Validate a parsed YAML document (a mapping) into a :class:`Policy`."""
    f = _Fields(data, '')
    policy = Policy(
        version=f.get('version', _version),
        base_frame=f.get('base_frame', _name),
        workspace=f.get('workspace', _workspace),
        keepout_zones=f.get('keepout_zones', _zones),
        allowed_tasks=f.get('allowed_tasks', _names(TASKS)),
        home=f.get('home', _pose),
        min_confidence=f.get('min_confidence', _unit_interval),
        max_proposal_age_s=f.get('max_proposal_age_s', _positive),
        max_image_age_s=f.get('max_image_age_s', _positive),
        max_future_skew_s=f.get('max_future_skew_s', _non_negative),
        max_goal_rate_hz=f.get('max_goal_rate_hz', _positive),
        max_step_m=f.get('max_step_m', _positive),
        require_tool_pose=f.get('require_tool_pose', _bool),
        check_path=f.get('check_path', _check_path),
        transit_height=f.get('transit_height', _number),
        tool_orientation=f.get('tool_orientation', _tool_orientation, None),
        require_approval_for=f.get('require_approval_for', _names(TASKS)),
        approval_timeout_s=f.get('approval_timeout_s', _positive),
        authorized_operators=f.get('authorized_operators', _names(None)),
        start_latched=f.get('start_latched', _bool),
    )
    f.done()
    ws = policy.workspace
    if not ws.contains(policy.home.position):
        raise PolicyError('home.position', f'{policy.home.position} is outside the workspace')
    zone = policy.zone_containing(policy.home.position)
    if zone is not None:
        raise PolicyError('home.position', f'inside keep-out zone {zone.name!r}')
    limit = policy.tool_orientation
    if limit is not None:
        angle = angle_between_deg(tool_axis(policy.home.orientation), limit.axis)
        if angle > limit.max_angle_deg:
            raise PolicyError(
                'home.orientation',
                f'tool axis is {angle:.1f} deg from tool_orientation.axis (max_angle_deg '
                f'{limit.max_angle_deg}): every home step would be refused',
            )
    if not ws.min[2] <= policy.transit_height <= ws.max[2]:
        raise PolicyError(
            'transit_height',
            f'{policy.transit_height} is outside the workspace height [{ws.min[2]}, {ws.max[2]}]',
        )
    return policy


def parse_policy_text(text: str | bytes) -> Policy:
    """Parse and validate YAML text (duplicate keys refused)."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no objects
    except PolicyError:
        raise
    except yaml.YAMLError as exc:
        raise PolicyError('', f'not valid YAML: {exc}') from exc
    if data is None:
        raise PolicyError('', 'the policy file is empty')
    return parse_policy(data)


def load_policy(path: str | Path) -> LoadedPolicy:
    """Read, hash and validate a policy file; any failure is a :class:`PolicyError`."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError('', f'cannot read policy file {str(path)!r}: {exc.strerror}') from exc
    version = hashlib.sha256(raw).hexdigest()
    return LoadedPolicy(parse_policy_text(raw), version, str(path))
