"""The safety policy file, version 1: every field validated, unknown and duplicate keys
refused, and every error naming the field (INTERFACES.md section 5)."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from robostral_agent.paths import config_file
from robostral_agent.safety.policy import (
    BoxZone,
    CylinderZone,
    PolicyError,
    load_policy,
    parse_policy,
    parse_policy_text,
)

SHIPPED = config_file('safety_policy.yaml')


def reference() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text())


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with ``path`` (``a.b[1].c``) set, or deleted for ``...``."""
    out = copy.deepcopy(document)
    parts = [int(p) if p.isdigit() else p for p in re.findall(r'[^.\[\]]+', path)]
    node = out
    for part in parts[:-1]:
        node = node[part]
    if value is ...:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return out


def _error(document: Any) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(document)
    return info.value


# --- The shipped file -----------------------------------------------------------------------


def test_shipped_policy_is_the_interfaces_example() -> None:
    loaded = load_policy(SHIPPED)
    p = loaded.policy
    assert loaded.version == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert loaded.path == str(SHIPPED)
    assert p.version == 1
    assert p.base_frame == 'base_link'
    assert (p.workspace.min, p.workspace.max) == ((0.15, -0.55, -0.01), (0.75, 0.55, 0.60))
    fixture, column = p.keepout_zones
    assert fixture == BoxZone('fixture', (0.52, -0.08, -0.01), (0.62, 0.08, 0.30))
    assert column == CylinderZone('column', (0.0, -0.5), 0.08, 0.0, 1.0)
    assert p.allowed_tasks == ('pick', 'place', 'move_to', 'inspect', 'home')
    assert p.home.position == (0.30, 0.0, 0.35)
    assert p.home.orientation == (1.0, 0.0, 0.0, 0.0)
    assert (p.min_confidence, p.max_proposal_age_s, p.max_image_age_s) == (0.6, 2.0, 5.0)
    assert (p.max_future_skew_s, p.max_goal_rate_hz, p.max_step_m) == (0.5, 2.0, 0.9)
    assert p.require_tool_pose is False
    assert (p.check_path, p.transit_height) == ('transit', 0.35)
    assert p.tool_orientation is not None
    assert (p.tool_orientation.axis, p.tool_orientation.max_angle_deg) == ((0, 0, -1), 30)
    assert p.require_approval_for == ('move_to',)
    assert p.approval_timeout_s == 15.0
    assert p.authorized_operators == ()
    assert p.start_latched is True


def test_version_is_the_sha256_of_the_exact_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / 'a.yaml', tmp_path / 'b.yaml'
    a.write_bytes(SHIPPED.read_bytes())
    b.write_bytes(SHIPPED.read_bytes() + b'# a comment changes the version\n')
    assert load_policy(a).version == load_policy(SHIPPED).version
    assert load_policy(b).version != load_policy(a).version
    assert load_policy(b).policy == load_policy(a).policy


# --- Every field is required (tool_orientation is the one optional field) -------------------

REQUIRED = [k for k in reference() if k != 'tool_orientation']


@pytest.mark.parametrize('key', REQUIRED)
def test_missing_top_level_field_is_named(key: str) -> None:
    error = _error(_set(reference(), key, ...))
    assert error.field == key
    assert 'missing' in error.message


def test_tool_orientation_is_optional() -> None:
    assert parse_policy(_set(reference(), 'tool_orientation', ...)).tool_orientation is None


@pytest.mark.parametrize(
    'path',
    [
        'workspace.min',
        'workspace.max',
        'keepout_zones[0].name',
        'keepout_zones[0].type',
        'keepout_zones[0].min',
        'keepout_zones[1].center',
        'keepout_zones[1].radius',
        'keepout_zones[1].z_min',
        'home.position',
        'home.orientation',
        'tool_orientation.axis',
        'tool_orientation.max_angle_deg',
    ],
)
def test_missing_nested_field_is_named(path: str) -> None:
    error = _error(_set(reference(), path, ...))
    assert error.field == path
    assert 'missing' in error.message


# --- Unknown and duplicate keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    ('container', 'expected'),
    [
        ('', 'speed_limit'),
        ('workspace', 'workspace.speed_limit'),
        ('keepout_zones[0]', 'keepout_zones[0].speed_limit'),
        ('keepout_zones[1]', 'keepout_zones[1].speed_limit'),
        ('home', 'home.speed_limit'),
        ('tool_orientation', 'tool_orientation.speed_limit'),
    ],
)
def test_unknown_key_is_refused_and_named(container: str, expected: str) -> None:
    path = f'{container}.speed_limit' if container else 'speed_limit'
    error = _error(_set(reference(), path, 1.0))
    assert error.field == expected
    assert 'unknown key' in error.message


def test_box_field_on_a_cylinder_is_unknown() -> None:
    error = _error(_set(reference(), 'keepout_zones[1].min', [0.0, 0.0, 0.0]))
    assert error.field == 'keepout_zones[1].min'


@pytest.mark.parametrize(
    ('text', 'key'),
    [
        ('min_confidence: 0.6\nmin_confidence: 0.1\n', 'min_confidence'),
        ('workspace: {min: [0, 0, 0], min: [1, 1, 1], max: [2, 2, 2]}\n', 'min'),
        ('home:\n  position: [0.3, 0, 0.35]\n  position: [0.3, 0, 0.2]\n', 'position'),
    ],
)
def test_duplicate_keys_are_refused(text: str, key: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text)
    assert info.value.field == key
    assert 'duplicate key' in info.value.message


def test_duplicate_key_in_a_full_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / 'policy.yaml'
    path.write_text(SHIPPED.read_text() + 'check_path: none\n')
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.field == 'check_path'


# --- Types and values -------------------------------------------------------------------------

BAD_VALUES = [
    ('version', 2, 'version', 'unsupported policy version'),
    ('version', '1', 'version', 'unsupported policy version'),
    ('version', 1.0, 'version', 'unsupported policy version'),
    ('version', True, 'version', 'unsupported policy version'),
    ('base_frame', '', 'base_frame', 'non-empty string'),
    ('base_frame', 3, 'base_frame', 'non-empty string'),
    ('workspace', [0, 1], 'workspace', 'expected a mapping'),
    ('workspace.min', [0.15, -0.55], 'workspace.min', 'list of 3 numbers'),
    ('workspace.min', [0.15, 'a', 0.0], 'workspace.min[1]', 'expected a number'),
    ('workspace.max', [0.75, 0.55, float('nan')], 'workspace.max[2]', 'must be finite'),
    ('workspace.max', [0.75, float('inf'), 0.6], 'workspace.max[1]', 'must be finite'),
    ('workspace.max', [0.75, 0.55, -0.5], 'workspace', 'min must be below max'),
    ('keepout_zones', {'a': 1}, 'keepout_zones', 'expected a list'),
    ('keepout_zones[0]', 'fixture', 'keepout_zones[0]', 'expected a mapping'),
    ('keepout_zones[0].type', 'sphere', 'keepout_zones[0].type', "'box' or 'cylinder'"),
    ('keepout_zones[0].name', '  ', 'keepout_zones[0].name', 'non-empty string'),
    ('keepout_zones[0].max', [0.62, 0.08, -0.02], 'keepout_zones[0]', 'min must be below'),
    ('keepout_zones[1].name', 'fixture', 'keepout_zones', 'unique'),
    ('keepout_zones[1].radius', 0.0, 'keepout_zones[1].radius', 'must be > 0'),
    ('keepout_zones[1].radius', -0.1, 'keepout_zones[1].radius', 'must be > 0'),
    ('keepout_zones[1].center', [0.0], 'keepout_zones[1].center', 'list of 2 numbers'),
    ('keepout_zones[1].z_max', -1.0, 'keepout_zones[1]', 'z_min must be below z_max'),
    ('keepout_zones[1].z_min', None, 'keepout_zones[1].z_min', 'expected a number'),
    ('allowed_tasks', 'pick', 'allowed_tasks', 'expected a list'),
    ('allowed_tasks', ['pick', 'dance'], 'allowed_tasks[1]', 'not one of'),
    ('allowed_tasks', ['pick', 'pick'], 'allowed_tasks', 'repeated'),
    ('home.position', [0.30, 0.0], 'home.position', 'list of 3 numbers'),
    ('home.position', [0.9, 0.0, 0.35], 'home.position', 'outside the workspace'),
    ('home.position', [0.57, 0.0, 0.2], 'home.position', "keep-out zone 'fixture'"),
    ('home.orientation', [1.0, 0.0, 0.0, 0.5], 'home.orientation', 'unit quaternion'),
    ('home.orientation', [0.0, 0.0, 0.0, 1.0], 'home.orientation', 'tool axis'),
    ('min_confidence', 1.5, 'min_confidence', 'must be in [0, 1]'),
    ('min_confidence', -0.1, 'min_confidence', 'must be in [0, 1]'),
    ('min_confidence', '0.6', 'min_confidence', 'expected a number'),
    ('max_proposal_age_s', 0, 'max_proposal_age_s', 'must be > 0'),
    ('max_image_age_s', -1.0, 'max_image_age_s', 'must be > 0'),
    ('max_image_age_s', float('nan'), 'max_image_age_s', 'must be finite'),
    ('max_future_skew_s', -0.1, 'max_future_skew_s', 'must be >= 0'),
    ('max_goal_rate_hz', 0.0, 'max_goal_rate_hz', 'must be > 0'),
    ('max_goal_rate_hz', True, 'max_goal_rate_hz', 'expected a number'),
    ('max_step_m', 0.0, 'max_step_m', 'must be > 0'),
    ('require_tool_pose', 'no', 'require_tool_pose', 'true or false'),
    ('require_tool_pose', 0, 'require_tool_pose', 'true or false'),
    ('check_path', 'curved', 'check_path', 'none, straight_line, transit'),
    ('transit_height', 0.9, 'transit_height', 'outside the workspace height'),
    ('transit_height', '0.35', 'transit_height', 'expected a number'),
    ('tool_orientation', [0, 0, -1], 'tool_orientation', 'expected a mapping'),
    ('tool_orientation.axis', [0, 0, 0], 'tool_orientation.axis', 'zero vector'),
    ('tool_orientation.axis', [0, -1], 'tool_orientation.axis', 'list of 3 numbers'),
    ('tool_orientation.max_angle_deg', 0, 'tool_orientation.max_angle_deg', 'must be > 0'),
    ('tool_orientation.max_angle_deg', 181, 'tool_orientation.max_angle_deg', '<= 180'),
    ('require_approval_for', ['fly'], 'require_approval_for[0]', 'not one of'),
    ('require_approval_for', None, 'require_approval_for', 'expected a list'),
    ('approval_timeout_s', 0.0, 'approval_timeout_s', 'must be > 0'),
    ('authorized_operators', [''], 'authorized_operators[0]', 'non-empty string'),
    ('authorized_operators', ['alice', 'alice'], 'authorized_operators', 'repeated'),
    ('authorized_operators', [7], 'authorized_operators[0]', 'non-empty string'),
    ('start_latched', 'yes please', 'start_latched', 'true or false'),
]


@pytest.mark.parametrize(('path', 'value', 'field', 'message'), BAD_VALUES)
def test_bad_value_is_refused_with_its_field(
    path: str, value: Any, field: str, message: str
) -> None:
    error = _error(_set(reference(), path, value))
    assert error.field == field
    assert message in error.message
    assert str(error).startswith(f'{field}: ')


def test_every_top_level_field_has_a_bad_value_case() -> None:
    """The table above must keep covering every field of the file."""
    covered = {path.split('.')[0].split('[')[0] for path, *_ in BAD_VALUES}
    assert covered == set(reference())


@pytest.mark.parametrize(
    ('path', 'value'),
    [
        ('check_path', 'none'),
        ('check_path', 'straight_line'),
        ('allowed_tasks', []),
        ('keepout_zones', []),
        ('authorized_operators', ['alice', 'bob']),
        ('require_approval_for', []),
        ('max_future_skew_s', 0.0),
        ('min_confidence', 0),
        ('transit_height', 0.6),
    ],
)
def test_valid_variations_load(path: str, value: Any) -> None:
    parsed = parse_policy(_set(reference(), path, value))
    assert getattr(parsed, path) == (tuple(value) if isinstance(value, list) else value)


# --- Whole documents and files --------------------------------------------------------------


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        ('', 'empty'),
        ('- 1\n- 2\n', 'expected a mapping'),
        ('version: [1\n', 'not valid YAML'),
        ('!!python/object/apply:os.system ["true"]\n', 'not valid YAML'),
    ],
)
def test_bad_documents(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text)
    assert message in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / 'nope.yaml')
    assert 'cannot read policy file' in info.value.message
    assert 'nope.yaml' in info.value.message


def test_unreadable_path_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match='cannot read policy file'):
        load_policy(tmp_path)  # a directory
