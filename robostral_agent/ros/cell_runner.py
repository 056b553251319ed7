"""A simulated cell as child processes plus a client: what ``robostral demo``/``eval`` run on.

:func:`simulated_cell` starts the three nodes (:mod:`robostral_agent.launcher`), opens a
:class:`~robostral_agent.ros.cell_client.CellClient` in the same domain and namespace, and
waits until the cell is ready:

* supervisor: ``robostral/safety_ok`` heard (``false`` at first: it starts latched), the
  reset service and the operator-decision subscription matched;
* simulator: a camera frame heard (``camera_info``), the latched ground truth received,
  the scene subscription and the ground-truth service matched;
* agent: its /diagnostics say ``active`` (model loaded), the instruction subscription
  matched. An agent whose configure failed (no model, a bad parameter) ends the wait at
  once with its reason.

A child that exits during the run raises :class:`~robostral_agent.launcher.ChildExitedError`
from every wait (``Cell.poll``). Leaving the context closes the client, then stops the
children (SIGINT, SIGTERM, SIGKILL), also on an exception or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from robostral_agent.contract import Scene
from robostral_agent.launcher import (
    CellSettings,
    ProcessGroup,
    cell_specs,
    node_environment,
    pick_domain_id,
)
from robostral_agent.ros.cell_client import CellClient, ClientError, DebugFrame, Truth
from robostral_agent.ros.instruction_runner import InstructionRun, follow
from robostral_agent.vlm import frames

AGENT_NODE: Final = 'robostral_agent'
SUPERVISOR_NODE: Final = 'safety_supervisor'
DIAGNOSTIC_ERROR: Final = 2
# Statuses the agent gives without looking at a camera frame.
NO_FRAME_STATES: Final = ('stopped', 'rejected_input', 'busy')
# Status details (reason codes of the agent) that say its frames were too old or missing.
STALE_DETAILS: Final = (frames.STALE_FRAME, frames.NO_FRAME, frames.FRAME_MISMATCH)
_BUFFERED: Final = re.compile(r'(\d+) colour, (\d+) depth, camera_info (True|False)')


class CellError(RuntimeError):
    """The cell did not become ready, refused a command, or stopped answering."""


@dataclass
class Cell:
    """A running simulated cell: its settings, its child processes and the client."""

    settings: CellSettings
    group: ProcessGroup
    client: CellClient
    domain_id: int

    def poll(self) -> None:
        """Raise when a node process has ended (passed to every wait)."""
        self.group.check()

    def wait(self, predicate: Callable[[], object], timeout_s: float) -> object:
        return self.client.wait(predicate, timeout_s, self.poll)

    def reset_latch(self, timeout_s: float = 10.0) -> str:
        """Call ``robostral/reset`` and wait for ``safety_ok`` true; the supervisor's answer."""
        try:
            response = self.client.reset(timeout_s)
        except ClientError as exc:
            raise CellError(str(exc)) from exc
        if not response.success:
            raise CellError(f'the supervisor refused the reset: {response.message}')
        client = self.client
        if not self.wait(lambda: client.safety_ok is not None and client.safety_ok.msg, 5.0):
            raise CellError('reset accepted, but safety_ok did not turn true within 5 s')
        return response.message

    def load_scene(self, scene: Scene, timeout_s: float = 20.0) -> Truth:
        """Publish ``scene`` on ``sim/set_scene``; the first ground truth that shows it.

        :class:`CellError` when the simulator refuses it (``scene_error``) or never shows it.
        """
        client = self.client
        with client.journal_lock:
            seq = max((t.msg.snapshot.scene_seq for t in client.truths), default=0)
        sent = time.monotonic()
        client.set_scene(scene)

        def shown() -> Truth | str | None:
            for item in client.truths:
                if item.t <= sent:
                    continue
                snap = item.msg.snapshot
                if snap.scene_seq > seq and snap.scene == scene:
                    return item.msg
                if snap.scene_error:
                    return f'the simulator refused the scene: {snap.scene_error}'
            return None

        found = self.wait(shown, timeout_s)
        if found is None:
            raise CellError(f'the scene never showed in sim/ground_truth within {timeout_s} s')
        if isinstance(found, str):
            raise CellError(found)
        return found  # type: ignore[return-value]

    def wait_frames_after(self, stamp_ns: int, frames: int = 3, timeout_s: float = 10.0) -> None:
        """Wait for ``frames`` camera frames stamped after ``stamp_ns`` (simulator clock).

        The simulator stamps a frame after copying the scene for rendering, under the same
        lock as a scene load, so a frame stamped after the load's ground truth shows the new
        scene. Three frames make it likely that the agent's newest pair is one of them
        (best-effort images can be dropped); proposals carry ``image_stamp`` to check it.
        """
        client = self.client
        if not self.wait(lambda: sum(s > stamp_ns for s in client.camera_stamps) >= frames,
                         timeout_s):  # fmt: skip
            raise CellError(f'no camera frame after the scene load within {timeout_s} s')

    def frame_used(self, run: InstructionRun, wait_s: float = 3.0) -> DebugFrame | None:
        """The annotated frame the agent published for ``run``: its stamp is that of the
        camera frame the agent planned on (none for a stop or a refused text)."""
        if run.status is None or run.status.state in NO_FRAME_STATES:
            return None
        client = self.client
        found = self.wait(
            lambda: next((f for f in client.debug_frames if f.t > run.sent_t), None), wait_s
        )
        return None if found is None else found.msg  # type: ignore[attr-defined]

    def follow_fresh(
        self, text: str, scene_stamp_ns: int, **kwargs: Any
    ) -> tuple[InstructionRun, DebugFrame | None, list[str]]:
        """:func:`follow` ``text``, making sure the agent looked at the current scene.

        A scene load teleports objects, which no real cell does; the agent plans on the
        newest camera pair it holds, and best-effort images can be dropped under load. When
        the frame the agent used is older than the scene load and nothing was approved, the
        instruction is asked once more after a few more frames (noted); an approved plan on
        a stale frame is kept and noted, and judged as it ran.
        """
        notes: list[str] = []
        base_id = kwargs.pop('instruction_id', '')
        for attempt in (1, 2):
            retry_id = f'{base_id}-retry' if base_id and attempt > 1 else base_id
            run = follow(self.client, text, poll=self.poll, instruction_id=retry_id, **kwargs)
            frame = self.frame_used(run)
            stamp = frame.stamp_ns if frame is not None else None
            if stamp is None and run.proposal is not None:
                stamp = run.proposal.image_stamp.to_ns()
            stale = stamp is not None and stamp <= scene_stamp_ns
            if run.status is not None and run.status.detail.startswith(STALE_DETAILS):
                stale = True
            if not stale:
                return run, frame, notes
            approved = run.verdict is not None and run.verdict.approved
            if approved or attempt == 2:
                notes.append('the agent planned on a camera frame from before the scene load')
                return run, frame, notes
            notes.append('the agent used a camera frame from before the scene load: asked again')
            newest = max(self.client.camera_stamps, default=scene_stamp_ns)
            self.wait_frames_after(max(newest, scene_stamp_ns), frames=5)
        raise AssertionError('unreachable')


def readiness(client: CellClient) -> dict[str, str]:
    """What each node still lacks ('' when ready); call with the journal lock held."""
    parts = {}
    supervisor = ''
    if client.safety_ok is None:
        supervisor = 'no safety_ok yet'
    elif not (client.reset_client.service_is_ready() and client.subscribers_matched(
        [client.decision_pub, client.estop_pub]
    )):  # fmt: skip
        supervisor = 'waiting for the reset service'
    parts['supervisor'] = supervisor
    sim = ''
    if not client.camera_stamps:
        sim = 'no camera frame yet'
    elif not client.truths:
        sim = 'no ground truth yet'
    elif not (
        client.truth_client is not None
        and client.truth_client.service_is_ready()
        and client.scene_pub is not None
        and client.subscribers_matched([client.scene_pub])
    ):
        sim = 'waiting for the simulator services'
    parts['sim'] = sim
    agent = client.node_status(AGENT_NODE)
    state = agent.msg['values'].get('state', '') if agent else ''
    if state != 'active':
        parts['agent'] = f'state {state}' if state else 'loading'
    elif not client.subscribers_matched([client.instruction_pub]):
        parts['agent'] = 'waiting for the instruction subscription'
    elif not _has_frames(agent.msg['values'].get('buffered_frames', '')):  # type: ignore[union-attr]
        parts['agent'] = 'waiting for its first camera frames'
    else:
        parts['agent'] = ''
    return parts


def _has_frames(buffered: str) -> bool:
    """The agent's diagnostics value ``'<n> colour, <m> depth, camera_info True'``."""
    match = _BUFFERED.fullmatch(buffered.strip())
    if match is None:
        return True  # an agent that does not report its buffer: nothing to wait for
    return int(match[1]) > 0 and int(match[2]) > 0 and match[3] == 'True'


def agent_failure(client: CellClient) -> str:
    """The agent's configure failure from /diagnostics ('' when none)."""
    agent = client.node_status(AGENT_NODE)
    if agent and agent.msg['level'] >= DIAGNOSTIC_ERROR:
        return str(agent.msg['message'])
    return ''


def wait_ready(
    cell: Cell, timeout_s: float, on_progress: Callable[[dict[str, str]], None] | None = None
) -> None:
    """Wait until :func:`readiness` is empty for every node (see the module docstring)."""
    client = cell.client
    last: dict[str, str] = {}

    def check() -> bool | str:
        nonlocal last
        failure = agent_failure(client)
        if failure:
            return failure
        last = readiness(client)
        return not any(last.values())

    def poll() -> None:
        cell.poll()
        if on_progress is not None:
            with client.journal_lock:
                parts = readiness(client)
            on_progress(parts)

    outcome = client.wait(check, timeout_s, poll)
    if isinstance(outcome, str):
        raise CellError(f'the agent could not start: {outcome}')
    if not outcome:
        waiting = '; '.join(f'{k}: {v}' for k, v in last.items() if v)
        raise CellError(f'the cell was not ready within {timeout_s:.0f} s ({waiting})')


@contextlib.contextmanager
def simulated_cell(
    settings: CellSettings,
    *,
    domain_id: int | None = None,
    ready_timeout_s: float = 180.0,
    debug_images: bool = False,
    on_progress: Callable[[dict[str, str]], None] | None = None,
    on_started: Callable[[Cell], None] | None = None,
) -> Iterator[Cell]:
    """Start the cell, wait until it is ready, yield it; stop everything on the way out.

    ``on_started`` is called once the children run (before the readiness wait), e.g. to
    print where their logs are.
    """
    domain = pick_domain_id() if domain_id is None else domain_id
    # The in-process client must discover exactly what the children do.
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env = node_environment(
        domain, settings.log_dir / 'ros', fastdds_profile=settings.log_dir / 'fastdds.xml'
    )
    with ProcessGroup() as group:
        for spec in cell_specs(settings, env):
            group.start(spec)
        client = CellClient(
            settings.namespace,
            domain_id=domain,
            name='robostral_runner',
            camera_info=True,
            debug_images=debug_images,
            sim=True,
        )
        try:
            cell = Cell(settings, group, client, domain)
            if on_started is not None:
                on_started(cell)
            wait_ready(cell, ready_timeout_s, on_progress)
            yield cell
        finally:
            client.close()
