"""Child processes that always end: the cell's nodes as children of ``robostral demo``/``eval``.

Where ``ros2 launch`` is not installed, the demo and the evaluation start the three nodes
themselves. Whatever happens to the parent (a normal end, an exception, Ctrl-C, SIGTERM,
SIGHUP, even SIGKILL), no node may be left running: an orphaned supervisor or simulator would
keep publishing into the next run's graph. Pure Python (no rclpy), Linux.

How each child is started and stopped:

* its own session and process group (``start_new_session``), so that the terminal's Ctrl-C
  reaches the parent only (the parent then stops the children in order, cleanly) and so that
  a signal to the group also reaches anything the child started;
* ``PR_SET_PDEATHSIG`` = SIGTERM: when the parent dies without cleaning up (SIGKILL), the
  kernel sends the child SIGTERM, which the ROS nodes handle like Ctrl-C;
* output to a log file (never a pipe nobody reads: a full pipe would block the child);
* :meth:`ProcessGroup.stop`: SIGINT to every group at once (rclpy's clean shutdown: the
  supervisor writes its ``shutdown`` audit record), then SIGTERM to what is left after
  ``stop_timeout_s``, then SIGKILL after ``term_timeout_s``; a second Ctrl-C while stopping
  skips straight to SIGKILL. The group is SIGKILLed at the end in any case, so a grandchild
  that ignored the signals does not survive its parent.

While a :class:`ProcessGroup` is open in the main thread, SIGTERM and SIGHUP raise
:class:`Interrupted` (a ``KeyboardInterrupt``) so that they unwind through the same
``finally`` blocks as Ctrl-C.

Nodes are started with the running interpreter, ``sys.executable -c "from
robostral_agent.ros.<node> import main; main()" --ros-args ...``, not through the console
scripts: those may not be on ``PATH`` (a venv that is not activated, ``make demo``), and this
way the children run exactly the code and environment of the command that starts them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import random
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from robostral_agent.paths import config_file

PR_SET_PDEATHSIG: Final = 1
POLL_S: Final = 0.05
NODE_MODULES: Final = {
    'sim': 'robostral_agent.ros.sim_node',
    'supervisor': 'robostral_agent.ros.supervisor_node',
    'agent': 'robostral_agent.ros.agent_node',
}


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while children were running (handled like Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f'interrupted by {signal.Signals(signum).name}')


class ChildExitedError(RuntimeError):
    """A child ended while it was expected to run; the message holds the end of its log."""

    def __init__(self, name: str, returncode: int, log_tail: str) -> None:
        self.name = name
        self.returncode = returncode
        self.log_tail = log_tail
        how = f'signal {-returncode}' if returncode < 0 else f'exit code {returncode}'
        super().__init__(f'{name} ended unexpectedly ({how}); the end of its log:\n{log_tail}')


@dataclass(frozen=True)
class ChildSpec:
    """What to run: ``argv`` with ``env`` (``None``: the parent's), output to ``log_path``."""

    name: str
    argv: tuple[str, ...]
    log_path: Path
    env: Mapping[str, str] | None = None
    cpus: tuple[int, ...] = ()  # CPU affinity of the child (and what it starts); () = any


def _pdeathsig_setter() -> Any:
    """A ``preexec_fn`` that asks the kernel to SIGTERM the child when its parent dies.

    Resolved in the parent so that the forked child runs only a ctypes call before exec.
    ``None`` where libc has no ``prctl`` (not Linux): children then rely on :meth:`stop`.
    """
    name = ctypes.util.find_library('c')
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_pdeathsig() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return set_pdeathsig


class Child:
    """One running child process and its log."""

    def __init__(self, spec: ChildSpec, popen: subprocess.Popen[bytes], log: TextIO) -> None:
        self.spec = spec
        self.popen = popen
        self._log = log

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the child's process group; False when the group is gone."""
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.spec.log_path.read_text(encoding='utf-8', errors='replace')
        except OSError as exc:
            return f'(log {self.spec.log_path} unreadable: {exc})'
        return '\n'.join(text.splitlines()[-lines:])

    def close_log(self) -> None:
        self._log.close()


@dataclass
class StopReport:
    """How each child ended: its return code and the signal that ended it, if escalated."""

    returncodes: dict[str, int | None] = field(default_factory=dict)
    escalated: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """Every child ended on SIGINT alone, with exit code 0 (or the SIGINT status)."""
        ok = (0, -int(signal.SIGINT))
        return not self.escalated and all(rc in ok for rc in self.returncodes.values())


class ProcessGroup:
    """Starts children and guarantees they end; use it as a context manager.

    ``with ProcessGroup() as group: group.start(spec)``; leaving the block (normally, by an
    exception or by Ctrl-C) calls :meth:`stop`. Start children from the thread that will
    outlive them (the main thread): the kernel's parent-death signal follows the thread.
    """

    def __init__(self, stop_timeout_s: float = 10.0, term_timeout_s: float = 5.0) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.term_timeout_s = term_timeout_s
        self.children: list[Child] = []
        self.report: StopReport | None = None
        self._saved: dict[int, Any] = {}
        self._hurry = False
        self._preexec = _pdeathsig_setter()

    # --- context and signals ---------------------------------------------------------------

    def __enter__(self) -> ProcessGroup:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                self._saved[signum] = signal.signal(signum, self._raise_interrupted)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            for signum, handler in self._saved.items():
                signal.signal(signum, handler)
            self._saved.clear()

    @staticmethod
    def _raise_interrupted(signum: int, frame: types.FrameType | None) -> None:
        raise Interrupted(signum)

    # --- children ----------------------------------------------------------------------------

    def start(self, spec: ChildSpec) -> Child:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = spec.log_path.open('w', encoding='utf-8')
        try:
            popen = subprocess.Popen(
                list(spec.argv),
                env=None if spec.env is None else dict(spec.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._preexec_for(spec),
            )
        except BaseException:
            log.close()
            raise
        child = Child(spec, popen, log)
        self.children.append(child)
        return child

    def _preexec_for(self, spec: ChildSpec) -> Any:
        """The parent-death signal, plus the CPU affinity when the spec asks for one."""
        if not spec.cpus:
            return self._preexec
        deathsig, cpus = self._preexec, set(spec.cpus)

        def preexec() -> None:
            os.sched_setaffinity(0, cpus)
            if deathsig is not None:
                deathsig()

        return preexec

    def check(self) -> None:
        """Raise :class:`ChildExitedError` for the first child that has ended."""
        for child in self.children:
            rc = child.poll()
            if rc is not None:
                raise ChildExitedError(child.name, rc, child.log_tail())

    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    def stop(self) -> StopReport:
        """SIGINT, then SIGTERM, then SIGKILL (see the module docstring); idempotent."""
        if self.report is not None:
            return self.report
        report = StopReport()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_second_interrupt)
        try:
            running = [c for c in self.children if c.poll() is None]
            for child in running:
                child.signal_group(signal.SIGINT)
            running = self._wait(running, self.stop_timeout_s)
            for child in running:
                report.escalated[child.name] = 'SIGTERM'
                child.signal_group(signal.SIGTERM)
            running = self._wait(running, self.term_timeout_s)
            for child in running:
                report.escalated[child.name] = 'SIGKILL'
                child.signal_group(signal.SIGKILL)
            self._wait(running, 5.0, hurry_ok=False)
            for child in self.children:
                child.signal_group(signal.SIGKILL)  # stragglers left in the group, if any
                try:
                    child.popen.wait(timeout=5.0)
                except subprocess.TimeoutExpired:  # unkillable (D state): say so, go on
                    report.escalated[child.name] = 'SIGKILL (did not end)'
                report.returncodes[child.name] = child.poll()
                child.close_log()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self.report = report
        return report

    def _on_second_interrupt(self, signum: int, frame: types.FrameType | None) -> None:
        self._hurry = True

    def _wait(self, children: list[Child], timeout_s: float, hurry_ok: bool = True) -> list[Child]:
        """Wait until ``children`` end or the timeout passes; those still running."""
        deadline = time.monotonic() + timeout_s
        running = [c for c in children if c.poll() is None]
        while running and time.monotonic() < deadline and not (hurry_ok and self._hurry):
            time.sleep(POLL_S)
            running = [c for c in running if c.poll() is None]
        return running


# --- The cell's nodes ---------------------------------------------------------------------------


def node_argv(
    node: str,
    namespace: str,
    params_file: Path,
    overrides: Mapping[str, object] | None = None,
    python: str = sys.executable,
) -> tuple[str, ...]:
    """The command line of one node (``sim``, ``supervisor`` or ``agent``)."""
    module = NODE_MODULES[node]
    argv = [python, '-c', f'from {module} import main; main()', '--ros-args']
    argv += ['-r', f'__ns:={namespace}', '--params-file', str(params_file)]
    for name, value in (overrides or {}).items():
        argv += ['-p', f'{name}:={_param_text(value)}']
    return tuple(argv)


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)  # keeps '50.0' a double
    return str(value)


def pick_domain_id(environ: Mapping[str, str] = os.environ) -> int:
    """``ROS_DOMAIN_ID`` when set, else a random one in 1..100 (0 is every ROS default)."""
    text = environ.get('ROS_DOMAIN_ID', '').strip()
    if text:
        return int(text)
    return random.SystemRandom().randint(1, 100)


# Fast DDS with its default 512 KiB shared-memory segment cannot pass a 640x480 frame (0.9 MB
# colour, 1.2 MB depth) through shared memory: it falls back to UDP in 64 KiB fragments, and a
# busy reader loses whole frames (measured on this 2-core machine at load 3.7: the agent's
# newest colour/depth pair was a median 0.47 s, at worst 2.2 s, older than the newest frame;
# with this profile it was the newest frame every time). UDP stays for discovery and for
# peers on other hosts. Only Fast DDS reads it; a profile the user set is kept.
FASTDDS_PROFILE: Final = """<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>shm_frames</transport_id>
      <type>SHM</type>
      <segment_size>8388608</segment_size>
      <maxMessageSize>4194304</maxMessageSize>
    </transport_descriptor>
    <transport_descriptor>
      <transport_id>udp</transport_id>
      <type>UDPv4</type>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="robostral_cell" is_default_profile="true">
    <rtps>
      <userTransports>
        <transport_id>shm_frames</transport_id>
        <transport_id>udp</transport_id>
      </userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""
FASTDDS_PROFILE_VARS: Final = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')


def node_environment(
    domain_id: int, log_dir: Path, fastdds_profile: Path | None = None
) -> dict[str, str]:
    """The parent's environment, pinned to this host, this domain and offline models.

    With ``fastdds_profile`` (a path), :data:`FASTDDS_PROFILE` is written there and named in
    ``FASTDDS_DEFAULT_PROFILES_FILE``, unless the RMW is not Fast DDS or a profile is set.
    """
    env = dict(os.environ)
    rmw = env.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp') or 'rmw_fastrtps_cpp'
    if (
        fastdds_profile is not None
        and rmw.startswith('rmw_fastrtps')
        and not any(env.get(var) for var in FASTDDS_PROFILE_VARS)
    ):
        fastdds_profile.parent.mkdir(parents=True, exist_ok=True)
        fastdds_profile.write_text(FASTDDS_PROFILE, encoding='utf-8')
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(fastdds_profile)
    env['ROS_DOMAIN_ID'] = str(domain_id)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['ROS_LOG_DIR'] = str(log_dir)
    env['PYTHONUNBUFFERED'] = '1'
    env['HF_HUB_OFFLINE'] = '1'
    env['TRANSFORMERS_OFFLINE'] = '1'
    env.setdefault('MUJOCO_GL', 'osmesa')
    env.setdefault('PYOPENGL_PLATFORM', env['MUJOCO_GL'])
    return env


@dataclass(frozen=True)
class CellSettings:
    """One simulated cell as ``robostral demo``/``eval`` start it.

    Parameter files are the shipped ones (``config/``); only what a run must own is
    overridden: the namespace, the supervisor's ``state_file`` and ``audit_log``, one
    ``policy_file`` for the supervisor and the simulator's checker, ``safety_ok_rate_hz``
    (50 Hz: a 20 Hz stream on a loaded 2-core machine sometimes leaves the simulator's
    100 ms silence window and aborts a plan), and optionally the model, the start scene and
    the simulator's real-time factor.
    """

    namespace: str
    run_dir: Path
    audit_log: Path
    policy_file: Path = field(default_factory=lambda: config_file('safety_policy.yaml'))
    model_path: str = ''  # '' keeps config/agent.yaml's model_path
    scene_file: Path | None = None
    real_time_factor: float = 1.0
    safety_ok_rate_hz: float = 50.0
    agent_params: Path = field(default_factory=lambda: config_file('agent.yaml'))
    supervisor_params: Path = field(default_factory=lambda: config_file('supervisor.yaml'))
    sim_params: Path = field(default_factory=lambda: config_file('sim.yaml'))
    pin_sim: bool = True  # the simulator on one CPU: see sim_cpus()

    @property
    def log_dir(self) -> Path:
        return self.run_dir / 'logs'

    @property
    def state_file(self) -> Path:
        return self.run_dir / 'supervisor_state.json'


def sim_cpus(available: set[int] | None = None) -> tuple[int, ...]:
    """One CPU for the simulator (the highest one this process may use), when there are two
    or more.

    sim_node spins a ``MultiThreadedExecutor`` of the installed rclpy (Kilted 9.1.2), which
    re-yields tasks still queued in its thread pool and so busy-loops holding the GIL while
    its workers wait (ros2/rclpy#1452, fixed upstream by ros2/rclpy#1547). With free cores
    the loop starves the physics thread and the ``safety_ok`` callback: measured here with
    a 50 Hz heartbeat, gaps of 0.3-1.3 s and a real-time factor down to 0.35 on an idle
    machine, 50-300 ms under load; on one core, 34-99 ms and 1.00x under the same load.
    The node is a Python process bound by the GIL, so one core costs it nothing else.
    """
    cpus = sorted(os.sched_getaffinity(0) if available is None else available)
    return (cpus[-1],) if len(cpus) >= 2 else ()


def cell_specs(settings: CellSettings, env: Mapping[str, str]) -> list[ChildSpec]:
    """The three nodes, supervisor first (the gate is up before anything can move)."""
    policy = str(settings.policy_file)
    sim: dict[str, object] = {
        'policy_file': policy,
        'real_time_factor': float(settings.real_time_factor),
    }
    if settings.scene_file is not None:
        sim['scene_file'] = str(settings.scene_file)
    agent: dict[str, object] = {}
    if settings.model_path:
        agent['model_path'] = settings.model_path
    nodes = [
        ('supervisor', settings.supervisor_params, {
            'policy_file': policy,
            'state_file': str(settings.state_file),
            'audit_log': str(settings.audit_log),
            'safety_ok_rate_hz': float(settings.safety_ok_rate_hz),
        }),
        ('sim', settings.sim_params, sim),
        ('agent', settings.agent_params, agent),
    ]  # fmt: skip
    pinned = sim_cpus() if settings.pin_sim else ()
    return [
        ChildSpec(
            name,
            node_argv(name, settings.namespace, params, overrides),
            settings.log_dir / f'{name}.log',
            env,
            pinned if name == 'sim' else (),
        )
        for name, params, overrides in nodes
    ]


@contextlib.contextmanager
def running(specs: Sequence[ChildSpec], **kwargs: float) -> Iterator[ProcessGroup]:
    """Start ``specs`` in a :class:`ProcessGroup`; every one is stopped on the way out."""
    with ProcessGroup(**kwargs) as group:
        for spec in specs:
            group.start(spec)
        yield group
