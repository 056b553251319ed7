"""The pure core never imports rclpy, directly or through anything it imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PURE = ('contract', 'geometry', 'safety', 'vlm', 'sim')

PROBE = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    attempts = []

    class Blocker:
        # Records and refuses any import of rclpy (a guarded `try: import rclpy` counts too).
        def find_spec(self, name, path=None, target=None):
            if name == 'rclpy' or name.startswith('rclpy.'):
                attempts.append((name, current))
                raise ImportError('rclpy is forbidden in the pure core')
            return None

    sys.meta_path.insert(0, Blocker())
    current = None
    import robostral_agent
    names = []
    for pure in {pure!r}:
        full = 'robostral_agent.' + pure
        names.append(full)
        spec = importlib.util.find_spec(full)
        if spec and spec.submodule_search_locations:
            names += [m.name for m in pkgutil.walk_packages(
                spec.submodule_search_locations, full + '.')]
    for name in names:
        current = name
        importlib.import_module(name)
    leaked = [m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.')]
    print('IMPORTED', len(names))
    if attempts or leaked:
        print('ATTEMPTS', attempts, 'LEAKED', leaked)
        sys.exit(1)
    """
).format(pure=PURE)


def _run_probe(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, timeout=120, check=False
    )


def test_pure_core_does_not_import_rclpy() -> None:
    result = _run_probe(PROBE)
    assert result.returncode == 0, result.stdout + result.stderr
    count = int(result.stdout.split('IMPORTED')[1].split()[0])
    assert count >= len(PURE)


def test_the_probe_catches_a_guarded_rclpy_import(tmp_path: Path) -> None:
    """The probe itself must be able to fail, even on an import hidden behind try/except."""
    module = tmp_path / 'robostral_agent_fake_core.py'
    module.write_text('try:\n    import rclpy.node\nexcept ImportError:\n    pass\n')
    code = f'import sys; sys.path.insert(0, {str(tmp_path)!r})\n' + PROBE.replace(
        'for name in names:', "names.append('robostral_agent_fake_core')\nfor name in names:"
    )
    result = _run_probe(code)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "('rclpy', 'robostral_agent_fake_core')" in result.stdout
