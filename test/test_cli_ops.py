"""robostral operator commands without a cell: help, usage errors, exit-code mapping, and clear
timeouts when nothing answers (the commands run as the user runs them, in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from robostral_agent import cli
from robostral_agent.cli_ops import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_TIMEOUT,
    audit_verdicts,
    instruct_exit_code,
    plan_lines,
    verdict_line,
)
from robostral_agent.cli_run import PHRASINGS
from robostral_agent.contract import (
    ExecutionResult,
    Instruction,
    InstructionStatus,
    Verdict,
    encode,
)
from robostral_agent.evaluation import cases
from robostral_agent.paths import config_file
from robostral_agent.ros.instruction_runner import InstructionRun
from robostral_agent.safety.audit import AuditLog
from robostral_agent.safety.policy import Policy, load_policy
from robostral_agent.sim import plans

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ('instruct', 'estop', 'reset', 'status', 'approve', 'reject', 'demo', 'eval')


def robostral(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-m', 'robostral_agent.cli', *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, 'ROBOSTRAL_NAMESPACE': ''},
    )  # fmt: skip


@pytest.mark.parametrize('command', COMMANDS)
def test_every_command_has_help_with_its_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, '--help'])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert f'usage: robostral {command}' in text and 'exit codes' in text
    assert '--namespace' in text


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(['--help'])
    text = capsys.readouterr().out
    assert all(command in text for command in COMMANDS)


@pytest.mark.parametrize(
    'argv',
    [
        ['instruct'],  # TEXT missing
        ['instruct', 'go home', '--wait', '0'],
        ['instruct', 'go home', '--wait', 'soon'],
        ['approve'],
        ['reject', 'a', 'b'],
        ['estop', '--pressed'],
        ['eval', '--episodes', '0'],
        ['eval', '--episodes', '3', '--cases', 'x.jsonl'],
        ['eval', '--phrasing', 'odd'],
        ['demo', '--ready-timeout', '-1'],
        ['launch'],
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2


def test_phrasing_choices_match_the_case_generator() -> None:
    assert PHRASINGS == cases.PHRASINGS


def test_the_help_and_audit_commands_do_not_load_ros() -> None:
    code = (
        'import sys\nfrom robostral_agent import cli\ncli.build_parser()\n'
        "assert not [m for m in sys.modules if m.startswith(('rclpy', 'torch', 'cv2'))]"
    )
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


# --- exit codes of instruct ------------------------------------------------------------------


def _run(text: str = 'put the red cube in the left bin', **parts: object) -> InstructionRun:
    return InstructionRun(Instruction('i1', text), 0.0, **parts)  # type: ignore[arg-type]


PROPOSED = InstructionStatus('i1', 'proposed', 'p1')
APPROVED = Verdict('p1', 'i1', 'approved')
REJECTED = Verdict('p1', 'i1', 'rejected', ('IN_KEEPOUT_ZONE',), 'steps[0] in fixture')


@pytest.mark.parametrize(
    ('run', 'code'),
    [
        (_run(status=PROPOSED, verdict=APPROVED,
              result=ExecutionResult('p1', 'succeeded')), EXIT_OK),
        (_run(status=PROPOSED, verdict=APPROVED, result=ExecutionResult('p1', 'aborted')),
         EXIT_FAILED),
        (_run(status=PROPOSED, verdict=APPROVED, result=ExecutionResult('p1', 'failed')),
         EXIT_FAILED),
        (_run(status=PROPOSED, verdict=REJECTED), EXIT_REJECTED),
        (_run(status=InstructionStatus('i1', 'rejected_input', detail='EMPTY_INSTRUCTION')),
         EXIT_REJECTED),
        (_run(status=InstructionStatus('i1', 'not_found')), EXIT_NOT_FOUND),
        (_run(status=InstructionStatus('i1', 'error')), EXIT_FAILED),
        (_run(status=InstructionStatus('i1', 'busy')), EXIT_FAILED),
        (_run('stop', status=InstructionStatus('i1', 'stopped')), EXIT_OK),
        (_run(status=InstructionStatus('i1', 'stopped')), EXIT_FAILED),
        (_run(waiting_for='status'), EXIT_TIMEOUT),
        (_run(status=PROPOSED, waiting_for='verdict'), EXIT_TIMEOUT),
        (_run(status=PROPOSED, verdict=APPROVED, waiting_for='result'), EXIT_TIMEOUT),
    ],
)  # fmt: skip
def test_instruct_exit_codes(run: InstructionRun, code: int) -> None:
    assert instruct_exit_code(run) == code


def test_plan_and_verdict_lines_say_what_an_operator_needs() -> None:
    from robostral_agent.contract import SceneObject

    plan = plans.pick_place(SceneObject('cube', 'red', (0.4, 0.1)), 'left')
    lines = plan_lines(plan)
    assert lines[1].startswith('  1. pick red cube  target (0.400, 0.100, 0.020)')
    assert 'confidence 1.00' in lines[1] and lines[2].startswith('  2. place left bin')
    held = Verdict('p9', 'i1', 'pending_approval', detail='move_to needs approval')
    assert 'robostral approve p9' in verdict_line(held)
    assert verdict_line(REJECTED).startswith('verdict: REJECTED IN_KEEPOUT_ZONE')


def test_last_verdicts_come_from_the_audit_log(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / 'audit.jsonl', 0, fsync=False)
    for i in range(7):
        verdict = Verdict(f'p{i}', f'i{i}', 'approved' if i % 2 else 'rejected',
                          () if i % 2 else ('LOW_CONFIDENCE',))  # fmt: skip
        log.append('decision', i, {'verdict': verdict.to_dict()})
    log.append('reset', 8, {'success': True})
    log.close()
    found = audit_verdicts(str(tmp_path / 'audit.jsonl'))
    assert [v.proposal_id for v in found] == ['p2', 'p3', 'p4', 'p5', 'p6']
    assert audit_verdicts(str(tmp_path / 'missing.jsonl')) == []


# --- nothing answers ------------------------------------------------------------------------


@pytest.mark.ros
@pytest.mark.slow
def test_commands_time_out_clearly_when_no_cell_answers() -> None:
    """An empty namespace: instruct exits 5 naming what is missing; the others exit 1."""
    ns = f'/nobody{uuid.uuid4().hex[:8]}'
    done = robostral('instruct', 'go home', '--wait', '1.5', '--namespace', ns)
    assert done.returncode == EXIT_TIMEOUT, done.stdout + done.stderr
    assert 'TIMED OUT' in done.stdout and 'no agent subscribes' in done.stdout
    for argv, expected in (
        (['estop', '--wait', '1'], 'nobody subscribes to robostral/estop'),
        (['reset', '--wait', '1'], 'robostral/reset is not available'),
        (['status', '--wait', '1'], 'no supervisor heard'),
        (['approve', 'p1', '--wait', '1'], 'no supervisor'),
    ):
        done = robostral(*argv, '--namespace', ns)
        assert done.returncode == EXIT_FAILED, (argv, done.stdout, done.stderr)
        assert expected in done.stdout, (argv, done.stdout)


def test_eval_refuses_a_bad_case_file_before_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / 'cases.jsonl'
    bad.write_text(encode(cases.CaseGenerator(_policy()).case(1, 0)) + '\n{"scene": 1}\n')
    done = robostral('eval', '--cases', str(bad))
    assert done.returncode == EXIT_FAILED
    assert f'{bad}:2: scene: expected an object' in done.stdout


def test_demo_and_eval_refuse_a_missing_model(tmp_path: Path) -> None:
    for command in ('demo', 'eval'):
        done = robostral(command, '--model', str(tmp_path / 'nothing'))
        assert done.returncode == EXIT_FAILED
        assert 'does not exist' in done.stdout


def _policy() -> Policy:
    return load_policy(config_file('safety_policy.yaml')).policy
