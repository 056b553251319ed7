"""The package is a well-formed ament_python package: manifest, setup, dependencies, colcon."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'robostral_agent'

# Top-level import name -> the package.xml key that provides it.
IMPORT_KEYS = {
    'rclpy': 'rclpy',
    'rcl_interfaces': 'rcl_interfaces',
    'std_msgs': 'std_msgs',
    'std_srvs': 'std_srvs',
    'sensor_msgs': 'sensor_msgs',
    'geometry_msgs': 'geometry_msgs',
    'diagnostic_msgs': 'diagnostic_msgs',
    'visualization_msgs': 'visualization_msgs',
    'lifecycle_msgs': 'lifecycle_msgs',
    'builtin_interfaces': 'builtin_interfaces',
    'ament_index_python': 'ament_index_python',
    'launch': 'launch',
    'launch_ros': 'launch_ros',
    'numpy': 'python3-numpy',
    'scipy': 'python3-scipy',
    'cv2': 'python3-opencv',
    'yaml': 'python3-yaml',
    'PIL': 'python3-pil',
    'torch': 'python3-torch',
    'transformers': 'python3-transformers-pip',
    'tokenizers': 'python3-tokenizers-pip',
    'xgrammar': 'python3-xgrammar-pip',
    'mujoco': 'python3-mujoco-pip',
    'rich': 'python3-rich',
    'tqdm': 'python3-tqdm',
}
# Keys verified in rosdistro (rosdep/base.yaml, python.yaml) on 2026-11-29; any other key
# must be defined in this package's rosdep/robostral.yaml, or `rosdep install` fails.
ROSDISTRO_KEYS = {
    'python3-numpy', 'python3-scipy', 'python3-opencv', 'python3-yaml', 'python3-pil',
    'python3-torch', 'python3-transformers-pip', 'python3-mujoco-pip', 'python3-rich',
    'python3-tqdm', 'python3-pytest', 'python3-hypothesis',
}  # fmt: skip


def _manifest() -> ET.Element:
    return ET.parse(ROOT / 'package.xml').getroot()


def _third_party_imports(paths: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    stdlib = sys.stdlib_module_names
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                if top not in stdlib and top not in ('robostral_agent', '__future__'):
                    found.setdefault(top, path)
    return found


def test_manifest_is_format_3_ament_python() -> None:
    root = _manifest()
    assert root.tag == 'package'
    assert root.get('format') == '3'
    assert root.findtext('name') == 'robostral_agent'
    assert root.findtext('export/build_type') == 'ament_python'
    assert root.findtext('buildtool_depend') == 'ament_python'
    for tag in ('version', 'description', 'maintainer', 'license'):
        assert (root.findtext(tag) or '').strip(), tag


def test_every_runtime_import_is_declared() -> None:
    declared = {e.text for e in _manifest() if e.tag in ('depend', 'exec_depend', 'build_depend')}
    sources = list(PACKAGE.rglob('*.py')) + list((ROOT / 'launch').glob('*.py'))
    imports = _third_party_imports(sources)
    unknown = {name: str(path) for name, path in imports.items() if name not in IMPORT_KEYS}
    assert not unknown, f'map these imports to a rosdep key in IMPORT_KEYS: {unknown}'
    missing = {
        IMPORT_KEYS[name]: str(path)
        for name, path in imports.items()
        if IMPORT_KEYS[name] not in declared
    }
    assert not missing, f'declare in package.xml: {missing}'


def test_every_system_dependency_key_resolves() -> None:
    """ROS packages resolve by name; python3-* keys from rosdistro or our own rosdep file."""
    import yaml

    own = set(yaml.safe_load((ROOT / 'rosdep' / 'robostral.yaml').read_text()))
    for element in _manifest():
        key = element.text or ''
        if element.tag.endswith('depend') and key.startswith('python3-'):
            assert key in ROSDISTRO_KEYS | own, f'{key}: in neither rosdistro nor our rosdep file'
    assert own <= {e.text for e in _manifest()}, 'rosdep/robostral.yaml defines unused keys'


def test_setup_cfg_installs_scripts_where_ros2_run_looks() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    assert cfg['develop']['script_dir'] == '$base/lib/robostral_agent'
    assert cfg['install']['install_scripts'] == '$base/lib/robostral_agent'


def console_scripts() -> dict[str, str]:
    """``name -> module:function`` from setup.py's entry points, read without running it."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    entries = [
        elt.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        for key, value in zip(node.keys, node.values, strict=True)
        if isinstance(key, ast.Constant) and key.value == 'console_scripts'
        for elt in getattr(value, 'elts', [])
        if isinstance(elt, ast.Constant)
    ]
    return dict(tuple(part.strip() for part in entry.split('=')) for entry in entries)


def test_console_scripts_point_at_callables() -> None:
    for name, target in console_scripts().items():
        module, func = target.split(':')
        mod = __import__(module, fromlist=[func])
        assert callable(getattr(mod, func)), name


def test_resource_marker_exists() -> None:
    assert (ROOT / 'resource' / 'robostral_agent').is_file()


@pytest.mark.slow
def test_colcon_build_in_a_temporary_workspace(tmp_path: Path) -> None:
    result = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'colcon_check.sh'), str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / 'install' / 'robostral_agent'
    share = prefix / 'share' / 'robostral_agent'
    for name in console_scripts():
        assert (prefix / 'lib' / 'robostral_agent' / name).is_file(), name
    assert (share / 'package.xml').is_file()
    for folder in ('launch', 'config'):
        for source in (ROOT / folder).glob('*'):
            if source.suffix in ('.py', '.yaml'):
                assert (share / folder / source.name).is_file(), source
