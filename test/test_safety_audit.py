"""The hash-chained audit log: durable appends, and every edit, deletion, insertion or
reordering detected; a torn last line reported, recovered without rewriting anything."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from robostral_agent.safety import audit as audit_mod
from robostral_agent.safety.audit import (
    GENESIS,
    AuditError,
    AuditLog,
    canonical_bytes,
    head_path,
    record_hash,
    verify_bytes,
    verify_file,
)

T0 = 1_700_000_000 * 10**9
N = 6


def write_log(path: Path, count: int = N) -> list[dict[str, Any]]:
    log = AuditLog(path, T0)
    records = [
        log.append('decision', T0 + i, {'i': i, 'text': f'record {i} ü'}) for i in range(count)
    ]
    log.close()
    return records


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().split(b'\n')[:-1]


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b''.join(line + b'\n' for line in lines))


# --- Format ------------------------------------------------------------------------------------


def test_records_chain_from_genesis(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    records = write_log(path)
    assert records[0]['prev'] == GENESIS
    for i, record in enumerate(records):
        assert record['seq'] == i
        assert record['hash'] == hashlib.sha256(canonical_bytes(record)).hexdigest()
        if i:
            assert record['prev'] == records[i - 1]['hash']
    on_disk = [json.loads(line) for line in lines_of(path)]
    assert on_disk == records
    # The canonical form is the documented one: sorted keys, no spaces, UTF-8 as is.
    body = {k: v for k, v in records[1].items() if k != 'hash'}
    expected = json.dumps(body, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
    assert canonical_bytes(records[1]) == expected.encode('utf-8')
    assert 'ü'.encode() in lines_of(path)[1]


def test_clean_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    records = write_log(path)
    report = verify_file(path)
    assert report.ok, report.error
    assert report.records == N
    assert report.last_hash == records[-1]['hash']
    assert report.torn_line is None
    assert head_path(path).is_file()


def test_each_append_is_fsynced_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / 'audit.jsonl'
    log = AuditLog(path, T0)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.fstat(fd).st_size)

    monkeypatch.setattr(audit_mod.os, 'fsync', fsync)
    for i in range(3):
        log.append('decision', T0, {'i': i})
        # The record's bytes were on disk (fsynced at the file's current size) on return.
        assert synced and synced[-1] == path.stat().st_size
    assert len(synced) == 3
    log.close()


def test_unencodable_text_is_escaped_not_lost(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    log = AuditLog(path, T0)
    record = log.append('decision', T0, {'proposal': 'bad \ud800 surrogate', 'x': float('nan')})
    log.close()
    assert record['data'] == {'proposal': 'bad \\ud800 surrogate', 'x': 'nan'}
    assert verify_file(path).ok


def test_a_log_in_use_cannot_be_opened_twice(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    first = AuditLog(path, T0)
    with pytest.raises(AuditError, match='in use'):
        AuditLog(path, T0)
    first.close()
    AuditLog(path, T0).close()


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    records = write_log(path, 3)
    log = AuditLog(path, T0)
    assert log.records == 3
    more = log.append('reset', T0, {'success': True})
    log.close()
    assert more['seq'] == 3
    assert more['prev'] == records[-1]['hash']
    assert verify_file(path).records == 4


def test_write_failure_is_an_audit_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = AuditLog(tmp_path / 'audit.jsonl', T0)

    def broken_write(fd: int, data: Any) -> int:
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(audit_mod.os, 'write', broken_write)
    with pytest.raises(AuditError, match='No space left'):
        log.append('decision', T0, {})
    monkeypatch.undo()
    with pytest.raises(AuditError):  # stays broken: the file is in an unknown state
        log.append('decision', T0, {})
    assert log.broken
    log.close()


# --- Tampering -----------------------------------------------------------------------------------


@pytest.mark.parametrize('index', range(N))
def test_editing_any_record_is_detected(tmp_path: Path, index: int) -> None:
    path = tmp_path / 'audit.jsonl'
    write_log(path)
    lines = lines_of(path)
    record = json.loads(lines[index])
    record['data']['i'] = 99
    lines[index] = json.dumps(record, sort_keys=True, separators=(',', ':')).encode()
    write_lines(path, lines)
    report = verify_file(path)
    assert not report.ok
    assert report.error_seq == index
    assert report.error_line == index + 1
    assert 'hash mismatch' in report.error
    assert report.records == index


@pytest.mark.parametrize('index', range(N - 1))
def test_editing_a_record_and_fixing_its_hash_breaks_the_next_link(
    tmp_path: Path, index: int
) -> None:
    path = tmp_path / 'audit.jsonl'
    write_log(path)
    lines = lines_of(path)
    record = json.loads(lines[index])
    record['data']['i'] = 99
    record['hash'] = record_hash(record)
    lines[index] = json.dumps(record, sort_keys=True, separators=(',', ':')).encode()
    write_lines(path, lines)
    report = verify_file(path, use_head=False)
    assert not report.ok
    assert report.error_seq == index + 1
    assert 'prev does not match' in report.error


@pytest.mark.parametrize('index', range(N))
def test_deleting_any_record_is_detected(tmp_path: Path, index: int) -> None:
    path = tmp_path / 'audit.jsonl'
    write_log(path)
    lines = lines_of(path)
    del lines[index]
    write_lines(path, lines)
    report = verify_file(path)
    assert not report.ok, f'deleting record {index} went unnoticed'
    assert report.records == index
    if index == N - 1:
        assert 'deleted from the end' in report.error  # only the head file can tell
    else:
        assert report.error_line == index + 1


def test_deleting_the_last_record_needs_the_head_file(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    write_log(path)
    write_lines(path, lines_of(path)[:-1])
    without = verify_file(path, use_head=False)
    assert without.ok  # a bare chain cannot tell: that is why the head file exists
    head_path(path).unlink()
    report = verify_file(path)
    assert report.ok
    assert any('no head file' in note for note in report.notes)


@pytest.mark.parametrize(('a', 'b'), [(0, 1), (2, 4), (N - 2, N - 1)])
def test_reordering_records_is_detected(tmp_path: Path, a: int, b: int) -> None:
    path = tmp_path / 'audit.jsonl'
    write_log(path)
    lines = lines_of(path)
    lines[a], lines[b] = lines[b], lines[a]
    write_lines(path, lines)
    report = verify_file(path)
    assert not report.ok
    assert report.error_line == a + 1
    assert 'reordered' in report.error


def test_inserting_a_forged_record_is_detected(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    records = write_log(path)
    forged = dict(records[2], data={'i': 'forged'})
    forged['hash'] = record_hash(forged)
    lines = lines_of(path)
    lines.insert(3, json.dumps(forged, sort_keys=True, separators=(',', ':')).encode())
    write_lines(path, lines)
    report = verify_file(path)
    assert not report.ok
    assert report.error_line == 4


@pytest.mark.parametrize(
    'line',
    [
        b'not json',
        b'[]',
        b'{}',
        b'{"data":{},"hash":"x","kind":"k","prev":"y","schema":"robostral.audit/1","seq":0,'
        b'"time":{}}',
    ],
)
def test_garbage_line_is_named(tmp_path: Path, line: bytes) -> None:
    path = tmp_path / 'audit.jsonl'
    write_log(path, 2)
    write_lines(path, [*lines_of(path)[:1], line, *lines_of(path)[1:]])
    report = verify_file(path, use_head=False)
    assert not report.ok
    assert report.error_line == 2
    assert 'not a valid record' in report.error


def test_head_that_does_not_match_is_detected(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    write_log(path)
    head_path(path).write_text(json.dumps({'seq': 2, 'hash': 'f' * 64}))
    report = verify_file(path)
    assert not report.ok
    assert 'head file' in report.error
    head_path(path).write_text('{broken')
    with pytest.raises(AuditError, match='head file'):
        verify_file(path)


def test_missing_file_is_an_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match='cannot read'):
        verify_file(tmp_path / 'nope.jsonl')


def test_empty_log_verifies_with_zero_records() -> None:
    report = verify_bytes(b'')
    assert report.ok
    assert report.records == 0


# --- Torn last line ------------------------------------------------------------------------------


def tear(path: Path, keep: int = 40) -> bytes:
    """Cut the file inside its last record, as a crash mid-write leaves it."""
    data = path.read_bytes()
    start = data.rstrip(b'\n').rfind(b'\n') + 1
    path.write_bytes(data[: start + keep])
    return data[start : start + keep]


def test_torn_last_line_is_reported_and_the_rest_verifies(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    write_log(path)
    torn = tear(path)
    head_path(path).unlink()  # a real crash tears the line before its head is written
    report = verify_file(path)
    assert report.ok
    assert report.records == N - 1
    assert report.torn_line == N
    assert report.torn_bytes == torn


def test_torn_line_whose_head_says_it_was_complete_is_noted(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    write_log(path)
    tear(path)
    report = verify_file(path)
    assert report.ok
    assert report.torn_line == N
    assert any('damaged after it was written' in note for note in report.notes)


def test_reopening_a_torn_log_recovers_without_rewriting(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    records = write_log(path)
    torn = tear(path)
    before = path.read_bytes()
    log = AuditLog(path, T0 + 10)
    assert log.recovered is not None
    after_record = log.append('decision', T0 + 11, {'after': True})
    log.close()
    data = path.read_bytes()
    assert data.startswith(before)  # nothing before was rewritten or truncated
    recovery = log.recovered
    assert recovery['kind'] == 'recovery'
    assert recovery['seq'] == N - 1
    assert recovery['prev'] == records[N - 2]['hash']
    assert recovery['data']['torn_line'] == N
    assert recovery['data']['torn_sha256'] == hashlib.sha256(torn).hexdigest()
    assert after_record['prev'] == recovery['hash']
    report = verify_file(path)
    assert report.ok, report.error
    assert report.recovered == (N,)
    assert report.torn_line is None
    assert report.records == N + 1  # N - 1 good records, the recovery, the new one


def test_a_recovery_record_cannot_excuse_an_edited_line(tmp_path: Path) -> None:
    """Changing the torn bytes after recovery breaks the recovery record's commitment."""
    path = tmp_path / 'audit.jsonl'
    write_log(path)
    tear(path)
    AuditLog(path, T0).close()
    lines = lines_of(path)
    lines[N - 1] = lines[N - 1][:-3] + b'XYZ'
    write_lines(path, lines)
    report = verify_file(path)
    assert not report.ok
    assert report.error_line == N


def test_broken_log_is_not_appended_to(tmp_path: Path) -> None:
    path = tmp_path / 'audit.jsonl'
    write_log(path)
    lines = lines_of(path)
    del lines[2]
    write_lines(path, lines)
    before = path.read_bytes()
    with pytest.raises(AuditError, match='fails verification at record 3'):
        AuditLog(path, T0)
    assert path.read_bytes() == before
