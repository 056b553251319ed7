"""The launcher: children always end (SIGINT, escalation, grandchildren, parent signals, parent
death), and the cell's command lines and environment are what the nodes need."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from robostral_agent.launcher import (
    CellSettings,
    ChildExitedError,
    ChildSpec,
    ProcessGroup,
    cell_specs,
    node_argv,
    node_environment,
    pick_domain_id,
    sim_cpus,
)

ROOT = Path(__file__).resolve().parents[1]

CLEAN = """
import time
print('up', flush=True)
try:
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    print('got SIGINT', flush=True)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print('up', flush=True)
while True:
    time.sleep(0.05)
"""
# Leaves a stubborn grandchild behind in its process group, then ends on SIGINT.
WITH_GRANDCHILD = f"""
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}])
print('grandchild', grandchild.pid, flush=True)
try:
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    pass
"""
# A parent that holds one child in a ProcessGroup and waits to be signalled or killed.
PARENT = f"""
import sys, time
from pathlib import Path
from robostral_agent.launcher import ChildSpec, ProcessGroup
with ProcessGroup(stop_timeout_s=5.0) as group:
    child = group.start(ChildSpec('sleeper', (sys.executable, '-c', {CLEAN!r}), Path(sys.argv[1])))
    print(child.pid, flush=True)
    while True:
        time.sleep(0.05)
"""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as ended)."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return False
    return stat.rsplit(')', 1)[1].split()[0] != 'Z'


def processes_matching(text: str) -> list[tuple[int, str]]:
    """Running processes whose command line contains ``text`` (e.g. a run's namespace)."""
    found = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / 'cmdline').read_bytes()
        except OSError:
            continue
        cmdline = raw.replace(b'\0', b' ').decode(errors='replace')
        if text in cmdline and alive(int(entry.name)):
            found.append((int(entry.name), cmdline))
    return found


def wait_until(predicate: Callable[[], object], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def spec(tmp_path: Path, name: str, code: str) -> ChildSpec:
    return ChildSpec(name, (sys.executable, '-c', code), tmp_path / f'{name}.log')


def log_has(path: Path, text: str) -> Callable[[], bool]:
    return lambda: path.is_file() and text in path.read_text()


def test_children_get_sigint_first_and_end_cleanly(tmp_path: Path) -> None:
    with ProcessGroup() as group:
        children = [group.start(spec(tmp_path, f'c{i}', CLEAN)) for i in range(2)]
        for child in children:
            assert wait_until(log_has(child.spec.log_path, 'up'), 30.0)
    report = group.report
    assert report is not None and report.clean, report
    for child in children:
        assert 'got SIGINT' in child.spec.log_path.read_text()
        assert not alive(child.pid)


def test_a_child_that_ignores_sigint_and_sigterm_is_killed(tmp_path: Path) -> None:
    group = ProcessGroup(stop_timeout_s=0.3, term_timeout_s=0.3)
    with group:
        child = group.start(spec(tmp_path, 'stubborn', STUBBORN))
        assert wait_until(log_has(child.spec.log_path, 'up'), 30.0)
    assert group.report is not None
    assert group.report.escalated == {'stubborn': 'SIGKILL'}
    assert group.report.returncodes == {'stubborn': -signal.SIGKILL}
    assert not group.report.clean and not alive(child.pid)


def test_grandchildren_in_the_group_do_not_survive(tmp_path: Path) -> None:
    with ProcessGroup(stop_timeout_s=2.0) as group:
        child = group.start(spec(tmp_path, 'parent', WITH_GRANDCHILD))
        assert wait_until(log_has(child.spec.log_path, 'grandchild'), 30.0)
        grandchild = int(child.spec.log_path.read_text().split()[1])
        assert alive(grandchild)
    assert not alive(child.pid)
    assert wait_until(lambda: not alive(grandchild), 5.0), 'the grandchild outlived the group'


def test_an_exception_in_the_block_stops_every_child(tmp_path: Path) -> None:
    started = []

    def run() -> None:
        with ProcessGroup() as group:
            started.append(group.start(spec(tmp_path, 'c', CLEAN)))
            assert wait_until(log_has(started[0].spec.log_path, 'up'), 30.0)
            raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        run()
    assert started[0].poll() is not None and not alive(started[0].pid)


def test_check_reports_a_child_that_ended_with_its_log(tmp_path: Path) -> None:
    code = "print('model file missing', flush=True); raise SystemExit(3)"
    with ProcessGroup() as group:
        child = group.start(spec(tmp_path, 'agent', code))
        assert wait_until(lambda: child.poll() is not None, 30.0)
        with pytest.raises(ChildExitedError) as info:
            group.check()
    assert info.value.name == 'agent' and info.value.returncode == 3
    assert 'model file missing' in str(info.value) and 'exit code 3' in str(info.value)


def _parent(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, '-c', PARENT, str(tmp_path / 'child.log')],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    child_pid = int(proc.stdout.readline())
    assert wait_until(log_has(tmp_path / 'child.log', 'up'), 30.0)
    return proc, child_pid


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signalled_parent_stops_its_children_before_it_exits(
    tmp_path: Path, signum: int
) -> None:
    proc, child_pid = _parent(tmp_path)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert 'KeyboardInterrupt' in err or 'Interrupted' in err, err
    assert not alive(child_pid), 'the child outlived its parent'
    assert 'got SIGINT' in (tmp_path / 'child.log').read_text()  # stopped cleanly


def test_a_killed_parent_takes_its_children_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to clean up: the kernel's parent-death signal does it."""
    proc, child_pid = _parent(tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    assert wait_until(lambda: not alive(child_pid), 10.0), 'orphaned child still running'


# --- the cell's command lines ------------------------------------------------------------------


def test_cell_specs_start_the_supervisor_first_with_the_run_s_files(tmp_path: Path) -> None:
    settings = CellSettings(
        namespace='/cell7', run_dir=tmp_path, audit_log=tmp_path / 'audit.jsonl',
        model_path='/models/m', real_time_factor=2.0,
    )  # fmt: skip
    env = {'ROS_DOMAIN_ID': '9'}
    specs = cell_specs(settings, env)
    assert [s.name for s in specs] == ['supervisor', 'sim', 'agent']
    by_name = {s.name: s for s in specs}
    supervisor = by_name['supervisor'].argv
    assert supervisor[:2] == (sys.executable, '-c')
    assert supervisor[2] == 'from robostral_agent.ros.supervisor_node import main; main()'
    assert supervisor[3:7] == ('--ros-args', '-r', '__ns:=/cell7', '--params-file')
    assert supervisor[7].endswith('config/supervisor.yaml')
    overrides = {a for a in supervisor if ':=' in a}
    assert f'state_file:={tmp_path / "supervisor_state.json"}' in overrides
    assert f'audit_log:={tmp_path / "audit.jsonl"}' in overrides
    assert 'safety_ok_rate_hz:=50.0' in overrides
    assert f'policy_file:={settings.policy_file}' in by_name['sim'].argv
    assert 'real_time_factor:=2.0' in by_name['sim'].argv
    assert 'model_path:=/models/m' in by_name['agent'].argv
    assert all(s.env == env and s.log_path.parent == tmp_path / 'logs' for s in specs)
    default_model = cell_specs(CellSettings('/c', tmp_path, tmp_path / 'a.jsonl'), env)
    assert not any('model_path' in a for a in default_model[2].argv)


def test_node_argv_formats_parameter_values_for_ros() -> None:
    argv = node_argv('agent', '/x', Path('p.yaml'), {'autostart': True, 'torch_threads': 1})
    assert argv[-4:] == ('-p', 'autostart:=true', '-p', 'torch_threads:=1')


def test_the_domain_is_kept_when_set_else_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_domain_id({'ROS_DOMAIN_ID': '17'}) == 17
    drawn = {pick_domain_id({}) for _ in range(50)}
    assert drawn <= set(range(1, 101)) and len(drawn) > 1
    monkeypatch.setenv('MUJOCO_GL', 'egl')
    env = node_environment(23, Path('/tmp/logs'))
    assert env['ROS_DOMAIN_ID'] == '23' and env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert env['HF_HUB_OFFLINE'] == '1' and env['MUJOCO_GL'] == 'egl'
    assert env['ROS_LOG_DIR'] == '/tmp/logs' and env['PATH'] == os.environ['PATH']


def test_the_cell_gets_a_fast_dds_profile_for_camera_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                'RMW_IMPLEMENTATION'):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    profile = tmp_path / 'logs' / 'fastdds.xml'
    env = node_environment(1, tmp_path, fastdds_profile=profile)
    assert env['FASTDDS_DEFAULT_PROFILES_FILE'] == str(profile)
    text = profile.read_text()
    assert '<segment_size>8388608</segment_size>' in text and 'UDPv4' in text
    monkeypatch.setenv('FASTDDS_DEFAULT_PROFILES_FILE', '/etc/mine.xml')
    assert node_environment(1, tmp_path, fastdds_profile=profile)[
        'FASTDDS_DEFAULT_PROFILES_FILE'
    ] == '/etc/mine.xml'  # fmt: skip
    monkeypatch.delenv('FASTDDS_DEFAULT_PROFILES_FILE')
    monkeypatch.setenv('RMW_IMPLEMENTATION', 'rmw_cyclonedds_cpp')
    assert 'FASTDDS_DEFAULT_PROFILES_FILE' not in node_environment(1, tmp_path, profile)


def test_the_simulator_is_pinned_to_one_cpu(tmp_path: Path) -> None:
    assert sim_cpus({0, 1}) == (1,) and sim_cpus({2, 5, 7}) == (7,) and sim_cpus({3}) == ()
    settings = CellSettings('/c', tmp_path, tmp_path / 'a.jsonl')
    by_name = {s.name: s for s in cell_specs(settings, {})}
    assert by_name['sim'].cpus == sim_cpus() and by_name['agent'].cpus == ()
    unpinned = CellSettings('/c', tmp_path, tmp_path / 'a.jsonl', pin_sim=False)
    assert all(s.cpus == () for s in cell_specs(unpinned, {}))
    cpu = max(os.sched_getaffinity(0))
    code = "import os; print('cpus', sorted(os.sched_getaffinity(0)), flush=True)"
    with ProcessGroup() as group:
        child = group.start(ChildSpec('pinned', (sys.executable, '-c', code),
                                      tmp_path / 'pinned.log', cpus=(cpu,)))  # fmt: skip
        assert wait_until(log_has(child.spec.log_path, 'cpus'), 30.0)
    assert f'cpus [{cpu}]' in child.spec.log_path.read_text()
