"""`robostral audit verify FILE`: exit codes and messages for intact, tampered and torn logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from robostral_agent.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from robostral_agent.paths import config_file
from robostral_agent.safety import examples as ex
from robostral_agent.safety.audit import AuditLog
from robostral_agent.safety.supervisor import Supervisor

T0 = 1_700_000_000 * 10**9


def make_log(path: Path, count: int = 5) -> None:
    log = AuditLog(path, T0)
    for i in range(count):
        log.append('decision', T0 + i, {'i': i})
    log.close()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def rewrite(path: Path, edit: object) -> None:
    lines = path.read_text().splitlines()
    edit(lines)  # type: ignore[operator]
    path.write_text(''.join(line + '\n' for line in lines))


def test_intact_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / 'audit.jsonl'
    make_log(path)
    code, out = run(['audit', 'verify', str(path)], capsys)
    assert code == EXIT_OK
    assert 'OK' in out
    assert '5 records' in out
    assert 'hash chain intact' in out


def test_log_written_by_the_supervisor_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / 'audit.jsonl'
    sup = Supervisor.open(config_file('safety_policy.yaml'), tmp_path / 's.json', path, T0)
    sup.reset(T0)
    for i in range(3):
        sup.propose(ex.to_text(ex.pick_place(T0 + 10**9)), T0 + 10**9 + i)
    sup.estop(True, T0 + 2 * 10**9)
    sup.close(T0 + 3 * 10**9)
    code, out = run(['audit', 'verify', str(path)], capsys)
    assert code == EXIT_OK
    # policy_load, startup, reset, three decisions, estop, shutdown
    assert '8 records' in out
    kinds = [json.loads(line)['kind'] for line in path.read_text().splitlines()]
    assert kinds == ['policy_load', 'startup', 'reset', *['decision'] * 3, 'estop', 'shutdown']


def _edit_third(lines: list[str]) -> None:
    record = json.loads(lines[2])
    record['data']['i'] = 42
    lines[2] = json.dumps(record, sort_keys=True, separators=(',', ':'))


@pytest.mark.parametrize(
    ('edit', 'named'),
    [
        (_edit_third, 'record 2 (line 3): hash mismatch'),
        (lambda lines: lines.pop(1), 'record 2 (line 2): sequence number 2 where 1'),
        (lambda lines: lines.insert(3, lines.pop(1)), 'record 2 (line 2)'),
        (lambda lines: lines.pop(), 'record 4: the log ends at record 3'),
        (lambda lines: lines.__setitem__(0, '{"oops": 1}'), 'record 0 (line 1): not a valid'),
    ],
    ids=['edited', 'deleted', 'reordered', 'last deleted', 'replaced'],
)
def test_tampering_exits_1_naming_the_first_broken_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: object, named: str
) -> None:
    path = tmp_path / 'audit.jsonl'
    make_log(path)
    rewrite(path, edit)
    code, out = run(['audit', 'verify', str(path)], capsys)
    assert code == EXIT_FAILED
    assert 'BROKEN' in out
    assert named in out


def test_torn_last_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / 'audit.jsonl'
    make_log(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 30])  # cut inside the last record
    path.with_name('audit.jsonl.head').unlink()  # as a crash mid-write leaves it
    code, out = run(['audit', 'verify', str(path)], capsys)
    assert code == EXIT_OK
    assert 'line 5 is a torn last line' in out
    assert 'the 4 records before it verify' in out
    assert 'OK' in out
    strict, _ = run(['audit', 'verify', '--strict', str(path)], capsys)
    assert strict == EXIT_FAILED
    # Reopening the log (a restarted supervisor) recovers it; verify then says so.
    AuditLog(path, T0).close()
    code, out = run(['audit', 'verify', '--strict', str(path)], capsys)
    assert code == EXIT_OK
    assert 'line 5 was torn by a crash' in out
    assert '5 records' in out  # four before the torn line and the recovery record


def test_no_head_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / 'audit.jsonl'
    make_log(path)
    rewrite(path, lambda lines: lines.pop())
    assert run(['audit', 'verify', str(path)], capsys)[0] == EXIT_FAILED
    code, out = run(['audit', 'verify', '--no-head', str(path)], capsys)
    assert code == EXIT_OK
    assert '4 records' in out


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(['audit', 'verify', str(tmp_path / 'none.jsonl')], capsys)
    assert code == EXIT_FAILED
    assert 'ERROR: cannot read' in out


@pytest.mark.parametrize('argv', [[], ['audit'], ['audit', 'verify'], ['fly']])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_USAGE
    assert 'usage: robostral' in capsys.readouterr().err


@pytest.mark.parametrize(
    ('argv', 'mentions'),
    [
        (['--help'], 'audit'),
        (['audit', '--help'], 'verify'),
        (['audit', 'verify', '-h'], '--strict'),
    ],
)
def test_help_everywhere(
    argv: list[str], mentions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert 'usage: robostral' in out
    assert mentions in out


def test_as_a_separate_process(tmp_path: Path) -> None:
    """What an operator runs: the module entry point, exit status and output."""
    path = tmp_path / 'audit.jsonl'
    make_log(path, 3)
    command = [sys.executable, '-m', 'robostral_agent.cli', 'audit', 'verify', str(path)]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert '3 records' in ok.stdout
    rewrite(path, _edit_third)
    broken = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert broken.returncode == 1
    assert 'record 2 (line 3)' in broken.stdout
