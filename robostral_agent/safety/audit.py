"""The hash-chained, append-only JSON-lines audit log and its verifier.

Record format (one JSON object per line, keys sorted, no spaces)::

    {"data": {...}, "hash": "<hex>", "kind": "decision", "prev": "<hex>",
     "schema": "robostral.audit/1", "seq": 12, "time": {"sec": 1, "nanosec": 2}}

* ``hash`` = SHA-256 (hex) of the canonical JSON of the record without ``hash``: canonical is
  ``json.dumps(sort_keys=True, separators=(',', ':'), ensure_ascii=False)`` encoded as UTF-8.
* ``prev`` = the previous record's ``hash``; :data:`GENESIS` (64 zeros) for record 0.
* ``seq`` counts records from 0, so a deletion, insertion or reordering breaks both the
  sequence and the ``prev`` link, and an edit breaks the record's own hash.
* ``kind``: ``policy_load``, ``startup``, ``decision``, ``estop``, ``reset``,
  ``operator_decision``, ``recovery``, ``shutdown``.

Durability (write-ahead): :meth:`AuditLog.append` writes the whole line with one ``write``
and ``fsync``s before it returns, so a verdict is published only after its record is on disk.
Per-record fsync costs about 0.2 ms on this project's machines (bench/bench_safety.py), well
inside the 100 ms batch budget, so no batching is needed.

Deleting the LAST records cannot break a chain. After each append the writer therefore
overwrites a small head file, ``<log>.head`` (``{"seq": n, "hash": h}`` padded with spaces to
a fixed :data:`HEAD_SIZE` bytes, one ``pwrite`` at offset 0, not fsynced: a few microseconds),
and the verifier refuses a log that ends before its head. The head may lag the log by the
record being written when the process died; that is tolerated.

A torn last line (a crash in the middle of a write: the file does not end with a newline) is
not part of the chain. The verifier reports it and verifies everything before it. When the
writer reopens such a log it never rewrites or truncates it: it ends the torn line with a
newline and appends a ``recovery`` record that chains to the last good record and commits to
the torn line (``data.torn_line``, its 1-based line number, and ``data.torn_sha256`` of its
bytes). The verifier skips exactly the lines a following ``recovery`` record accounts for.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

AUDIT_SCHEMA: Final = 'robostral.audit/1'
GENESIS: Final = '0' * 64
HEAD_SUFFIX: Final = '.head'
HEAD_SIZE: Final = 128  # bytes: {"seq": n, "hash": 64 hex} padded with spaces, then a newline
RECORD_KEYS: Final = frozenset({'data', 'hash', 'kind', 'prev', 'schema', 'seq', 'time'})
_HEX: Final = frozenset('0123456789abcdef')


class AuditError(RuntimeError):
    """The audit log cannot be opened, verified or written."""


def _dumps(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(',', ':'), ensure_ascii=False, allow_nan=False
    )


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: its canonical JSON without ``hash``."""
    return _dumps({k: v for k, v in record.items() if k != 'hash'}).encode('utf-8')


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def _clean(value: Any) -> Any:
    """Make a value representable: lone surrogates escaped, non-finite floats as strings."""
    if isinstance(value, str):
        return value.encode('utf-8', 'backslashreplace').decode('utf-8')
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, Mapping):
        return {str(_clean(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def head_path(path: str | Path) -> Path:
    return Path(f'{path}{HEAD_SUFFIX}')


# --- Verification --------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_bytes` found. ``error`` is empty exactly when the chain holds."""

    records: int = 0
    last_seq: int = -1
    last_hash: str = GENESIS
    torn_line: int | None = None  # 1-based line number of a torn final line
    torn_bytes: bytes = b''
    recovered: tuple[int, ...] = ()  # torn lines accounted for by recovery records
    error: str = ''
    error_line: int | None = None
    error_seq: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.error


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f'duplicate key {key!r}')
        out[key] = value
    return out


def _parse(raw: bytes) -> dict[str, Any]:
    """One line -> a structurally valid record, or ValueError saying what is wrong."""
    try:
        record = json.loads(raw.decode('utf-8'), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f'not valid JSON ({exc})') from exc
    if not isinstance(record, dict):
        raise ValueError('not a JSON object')
    if set(record) != RECORD_KEYS:
        missing, extra = RECORD_KEYS - set(record), set(record) - RECORD_KEYS
        raise ValueError(f'wrong keys (missing {sorted(missing)}, unexpected {sorted(extra)})')
    if record['schema'] != AUDIT_SCHEMA:
        raise ValueError(f'unsupported schema {record["schema"]!r}')
    seq = record['seq']
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f'seq {seq!r} is not a non-negative integer')
    for key in ('hash', 'prev'):
        value = record[key]
        if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX:
            raise ValueError(f'{key} is not a SHA-256 hex digest')
    if not isinstance(record['kind'], str) or not isinstance(record['data'], dict):
        raise ValueError('kind must be a string and data an object')
    return record


def _recovers(candidate: dict[str, Any] | Exception, raw: bytes, line_no: int) -> bool:
    """Whether ``candidate`` (the next line) is a recovery record for the torn line ``raw``."""
    if not isinstance(candidate, dict) or candidate.get('kind') != 'recovery':
        return False
    data = candidate['data']
    return (
        data.get('torn_line') == line_no
        and data.get('torn_sha256') == hashlib.sha256(raw).hexdigest()
    )


def verify_bytes(data: bytes, head: tuple[int, str] | None = None) -> VerifyReport:
    """Verify a whole log; ``head`` is the head file's ``(seq, hash)`` when there is one."""
    lines = data.split(b'\n')
    tail = lines.pop()  # what follows the last newline: empty unless the last line is torn
    parsed: list[dict[str, Any] | Exception] = []
    for raw in lines:
        try:
            parsed.append(_parse(raw))
        except ValueError as exc:
            parsed.append(exc)
    hashes: list[str] = []
    recovered: list[int] = []
    prev, expected = GENESIS, 0
    error, error_line, error_seq = '', None, None
    index = 0
    while index < len(lines):
        line_no = index + 1
        if index + 1 < len(lines) and _recovers(parsed[index + 1], lines[index], line_no):
            recovered.append(line_no)
            index += 1
            continue
        record = parsed[index]
        error_line = line_no
        if isinstance(record, Exception):
            error_seq = expected
            error = f'not a valid record: {record}'
            break
        error_seq = record['seq']
        if record['hash'] != record_hash(record):
            error = 'hash mismatch: the record was altered after it was written'
            break
        if record['seq'] != expected:
            error = (
                f'sequence number {record["seq"]} where {expected} was expected: records were '
                'deleted, inserted or reordered'
            )
            break
        if record['prev'] != prev:
            error = (
                'prev does not match the hash of the record before it: records were deleted, '
                'inserted, reordered or rewritten'
            )
            break
        prev, expected = record['hash'], expected + 1
        hashes.append(prev)
        index += 1
    else:
        error_line = error_seq = None
    torn_line = len(lines) + 1 if tail else None
    notes: list[str] = []
    if not error and head is not None:
        head_seq, head_hash = head
        if head_seq >= len(hashes):
            if torn_line is not None and head_seq == len(hashes):
                notes.append(
                    f'the head file says record {head_seq} had been completely written, yet '
                    'the last line is torn: the file was damaged after it was written'
                )
            else:
                error_seq, error_line = head_seq, None
                error = (
                    f'the log ends at record {len(hashes) - 1} but its head file says record '
                    f'{head_seq} was written: records were deleted from the end'
                )
        elif hashes[head_seq] != head_hash:
            error_seq, error_line = head_seq, None
            error = f'record {head_seq} does not match the hash in the head file'
    return VerifyReport(
        records=len(hashes),
        last_seq=len(hashes) - 1,
        last_hash=prev,
        torn_line=torn_line,
        torn_bytes=tail,
        recovered=tuple(recovered),
        error=error,
        error_line=error_line,
        error_seq=error_seq,
        notes=tuple(notes),
    )


def read_head(path: str | Path) -> tuple[int, str] | None:
    """The head file of a log as ``(seq, hash)``; None when absent; AuditError if broken."""
    hp = head_path(path)
    try:
        text = hp.read_text(encoding='utf-8')
        if not text:
            return None  # created, never written: a crash before the first head update
        data = json.loads(text)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AuditError(f'head file {str(hp)!r} is unreadable: {exc}') from exc
    if (
        not isinstance(data, dict)
        or set(data) != {'seq', 'hash'}
        or isinstance(data['seq'], bool)
        or not isinstance(data['seq'], int)
        or data['seq'] < 0
        or not isinstance(data['hash'], str)
    ):
        raise AuditError(f'head file {str(hp)!r} does not hold {{"seq", "hash"}}')
    return data['seq'], data['hash']


def verify_file(path: str | Path, *, use_head: bool = True) -> VerifyReport:
    """Verify a log file (and its head file, unless ``use_head`` is False).

    Raises :class:`AuditError` when the file (or its head file) cannot be read at all.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AuditError(f'cannot read {str(path)!r}: {exc.strerror or exc}') from exc
    head = read_head(path) if use_head else None
    report = verify_bytes(data, head)
    if use_head and head is None:
        note = 'no head file: deleting the final records cannot be detected'
        report = replace(report, notes=(*report.notes, note))
    return report


# --- Writing -------------------------------------------------------------------------------


class AuditLog:
    """Appends records to a log that verified when it was opened (exclusive ``flock``).

    Opening an existing log verifies it first: a broken chain is an :class:`AuditError` (the
    supervisor then refuses to approve anything until someone moves the log aside), a torn
    last line is recovered as the module docstring describes.
    """

    def __init__(self, path: str | Path, now_ns: int, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._broken = ''
        self._head_fd = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            raise AuditError(f'cannot open audit log {str(self.path)!r}: {exc}') from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            raise AuditError(f'audit log {str(self.path)!r} is in use by another process') from exc
        try:
            self._open_existing(now_ns)
        except BaseException:
            self.close()
            raise

    def _open_existing(self, now_ns: int) -> None:
        with open(self.path, 'rb') as handle:
            data = handle.read()
        report = verify_bytes(data, read_head(self.path))
        if not report.ok:
            where = f'record {report.error_seq}' + (
                f' (line {report.error_line})' if report.error_line else ''
            )
            raise AuditError(
                f'existing audit log {str(self.path)!r} fails verification at {where}: '
                f'{report.error}; move it aside to start a new log'
            )
        self.seq = report.last_seq + 1
        self.prev = report.last_hash
        self.recovered: dict[str, Any] | None = None
        if report.torn_line is not None:
            self._write(b'\n')
            self.recovered = self.append(
                'recovery',
                now_ns,
                {
                    'torn_line': report.torn_line,
                    'torn_bytes': len(report.torn_bytes),
                    'torn_sha256': hashlib.sha256(report.torn_bytes).hexdigest(),
                    'note': 'a write was cut short (crash); the torn line is not a record',
                },
            )

    @property
    def records(self) -> int:
        return self.seq

    @property
    def broken(self) -> str:
        """Why the log stopped accepting records ('' while it works)."""
        return self._broken

    def _write(self, payload: bytes) -> None:
        view = memoryview(payload)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self._fsync:
            os.fsync(self._fd)

    def append(self, kind: str, time_ns: int, data: Mapping[str, Any]) -> dict[str, Any]:
        """Write one record durably and return it; AuditError if it could not be written."""
        if self._broken:
            raise AuditError(self._broken)
        record: dict[str, Any] = {
            'schema': AUDIT_SCHEMA,
            'seq': self.seq,
            'time': {'sec': time_ns // 1_000_000_000, 'nanosec': time_ns % 1_000_000_000},
            'kind': kind,
            'data': dict(data),
            'prev': self.prev,
        }
        try:
            body = canonical_bytes(record)
        except (UnicodeEncodeError, ValueError):
            record['data'] = _clean(record['data'])
            body = canonical_bytes(record)
        record['hash'] = hashlib.sha256(body).hexdigest()
        line = _dumps(record).encode('utf-8') + b'\n'
        try:
            self._write(line)
        except OSError as exc:
            self._broken = f'audit log write failed: {exc}'
            raise AuditError(self._broken) from exc
        self.seq += 1
        self.prev = record['hash']
        self._write_head()
        return record

    def _write_head(self) -> None:
        if self._head_fd < 0:
            try:
                self._head_fd = os.open(head_path(self.path), os.O_WRONLY | os.O_CREAT, 0o640)
            except OSError:
                return  # without a head file the log still works; verify says so
        text = json.dumps({'seq': self.seq - 1, 'hash': self.prev}, separators=(',', ':'))
        payload = text.ljust(HEAD_SIZE - 1).encode('ascii') + b'\n'
        with contextlib.suppress(OSError):  # the head is a tripwire; the log is the record
            os.pwrite(self._head_fd, payload, 0)

    def close(self) -> None:
        if self._head_fd >= 0:
            os.close(self._head_fd)
            self._head_fd = -1
        if self._fd >= 0:
            os.close(self._fd)  # also releases the flock
            self._fd = -1
