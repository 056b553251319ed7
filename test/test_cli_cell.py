"""The operator commands against a running simulated cell (embedded model): exit codes,
what they print, and what the cell did (simulator ground truth)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from robostral_agent.cli_ops import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_REJECTED
from robostral_agent.demo import SCENE_FIXTURE, SCENE_TABLE
from robostral_agent.launcher import CellSettings
from robostral_agent.paths import config_file
from robostral_agent.ros.cell_runner import Cell, simulated_cell
from robostral_agent.sim.ground_truth import object_in_bin, tool_at

HOME_POSITION = (0.30, 0.0, 0.35)  # config/safety_policy.yaml

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cell]:
    run = tmp_path_factory.mktemp('cli_cell')
    # The shipped policy, but 'home' is also held for approval: the approval test then does
    # not hang on how well the embedded model boxes an object (it plans 'go home' right).
    shipped = config_file('safety_policy.yaml').read_text()
    held = 'require_approval_for: [move_to]'
    assert held in shipped
    policy = run / 'policy.yaml'
    policy.write_text(shipped.replace(held, 'require_approval_for: [move_to, home]'))
    settings = CellSettings(
        namespace=f'/clitest_{uuid.uuid4().hex[:8]}',
        run_dir=run,
        audit_log=run / 'audit.jsonl',
        policy_file=policy,
    )
    with simulated_cell(settings, ready_timeout_s=240.0) as running:
        running.reset_latch()
        yield running


def robostral(cell: Cell, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    env = {**os.environ, 'ROS_DOMAIN_ID': str(cell.domain_id),
           'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}  # fmt: skip
    return subprocess.run(
        [sys.executable, '-m', 'robostral_agent.cli', *args, '--namespace',
         cell.settings.namespace],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )  # fmt: skip


def _load(cell: Cell, scene: object) -> None:
    truth = cell.load_scene(scene)  # type: ignore[arg-type]
    cell.wait_frames_after(truth.stamp_ns, frames=5)


def test_instruct_exits_0_when_the_cube_is_in_the_bin(cell: Cell) -> None:
    """Exit 0 once the plan was approved, executed and the cube is in the bin (ground truth).
    The demo's table scene is one the embedded model answers right (test_demo checks it
    under a few pixels of jitter); every other exit code's mapping is test_cli_ops'."""
    _load(cell, SCENE_TABLE)
    done = robostral(cell, 'instruct', 'put the red cube in the left bin', '--operator',
                     'tester', '--json')  # fmt: skip
    out = done.stdout
    run = json.loads(out.strip().splitlines()[-1])
    assert done.returncode == EXIT_OK, out + done.stderr
    assert run['exit_code'] == done.returncode
    assert run['instruction']['operator'] == 'tester'
    assert 'agent: proposed' in out and '1. pick red cube' in out and 'confidence' in out
    assert 'verdict: APPROVED' in out and 'execution: SUCCEEDED' in out
    assert [s['task'] for s in run['plan']] == ['pick', 'place']
    snapshot = cell.client.get_truth().snapshot
    cube = snapshot.find('cube', 'red')
    assert cube is not None and object_in_bin(snapshot, cube, 'left')


def test_instruct_exits_4_for_an_absent_object_and_3_for_a_refused_plan(cell: Cell) -> None:
    _load(cell, SCENE_TABLE)
    done = robostral(cell, 'instruct', 'pick up the green cube')
    assert done.returncode == EXIT_NOT_FOUND, done.stdout + done.stderr
    assert 'agent: not_found' in done.stdout
    _load(cell, SCENE_FIXTURE)
    before = cell.client.get_truth().snapshot.executions  # counted over the simulator's life
    done = robostral(cell, 'instruct', 'pick up the blue cylinder')
    assert done.returncode == EXIT_REJECTED, done.stdout + done.stderr
    assert re.search(r'verdict: REJECTED .*(IN_KEEPOUT_ZONE|PATH_CROSSES_KEEPOUT)', done.stdout)
    assert cell.client.get_truth().snapshot.executions == before  # the refusal moved nothing


def test_a_held_plan_waits_for_robostral_approve(cell: Cell) -> None:
    _load(cell, SCENE_TABLE)
    env = {**os.environ, 'ROS_DOMAIN_ID': str(cell.domain_id), 'PYTHONUNBUFFERED': '1'}
    proc = subprocess.Popen(
        [sys.executable, '-m', 'robostral_agent.cli', 'instruct', 'go home',
         '--wait', '90', '--namespace', cell.settings.namespace],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    proposal_id = ''
    for line in proc.stdout:  # instruct's own --wait bounds this
        seen.append(line)
        match = re.search(r'robostral approve (\w+)', line)
        if match:
            proposal_id = match[1]
            break
    assert proposal_id, ''.join(seen)
    approved = robostral(cell, 'approve', proposal_id, '--operator', 'tester')
    assert approved.returncode == EXIT_OK, approved.stdout + approved.stderr
    assert 'verdict: APPROVED' in approved.stdout
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_OK, ''.join(seen) + rest
    assert 'execution: SUCCEEDED' in rest
    snapshot = cell.client.get_truth().snapshot
    assert tool_at(snapshot, HOME_POSITION), snapshot
    again = robostral(cell, 'reject', proposal_id, '--wait', '15')
    assert again.returncode == EXIT_FAILED and 'not held for approval' in again.stdout


def test_estop_latches_until_released_and_reset(cell: Cell) -> None:
    _load(cell, SCENE_TABLE)
    done = robostral(cell, 'estop')
    assert done.returncode == EXIT_OK and 'E-STOP pressed' in done.stdout, done.stdout
    status = robostral(cell, 'status')
    assert status.returncode == EXIT_OK, status.stdout
    assert 'safety_ok: false' in status.stdout and 'LATCHED' in status.stdout
    assert re.search(r'policy: version [0-9a-f]{16}', status.stdout)
    # 'go home' is planned whatever the model makes of the scene's objects: the supervisor,
    # not the model, must be what refuses it.
    refused = robostral(cell, 'instruct', 'go home')
    assert refused.returncode == EXIT_REJECTED and 'ESTOP_LATCHED' in refused.stdout, refused
    early = robostral(cell, 'reset')
    assert early.returncode == EXIT_FAILED and 'estop --release' in early.stdout
    assert robostral(cell, 'estop', '--release').returncode == EXIT_OK
    reset = robostral(cell, 'reset')
    assert reset.returncode == EXIT_OK and 'latch cleared' in reset.stdout, reset.stdout
    status = robostral(cell, 'status')
    assert 'safety_ok: true' in status.stdout and 'not latched' in status.stdout
    assert 'ESTOP_LATCHED' in status.stdout  # the last verdicts, from the audit log
