"""Latch state machine and its persistence; token bucket; replay set; pending approvals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from robostral_agent.safety import latch as latch_mod
from robostral_agent.safety.approvals import PendingApproval, PendingApprovals
from robostral_agent.safety.latch import (
    LATCHED,
    NOT_READY,
    READY,
    Latch,
    LatchSnapshot,
    LatchStore,
    StateFileError,
)
from robostral_agent.safety.limits import ReplaySet, TokenBucket

T0 = 1_700_000_000 * 10**9
S = 10**9


def ready_latch(tmp_path: Path) -> Latch:
    store = LatchStore(tmp_path / 'state.json')
    store.save(LatchSnapshot(False, 'reset', T0, T0))
    latch = Latch(store, start_latched=False, now_ns=T0)
    assert latch.state == READY
    return latch


# --- Start-up ------------------------------------------------------------------------------------


def test_missing_state_file_starts_latched_and_creates_it(tmp_path: Path) -> None:
    store = LatchStore(tmp_path / 'sub' / 'state.json')
    latch = Latch(store, start_latched=False, now_ns=T0)
    assert latch.state == LATCHED
    assert 'missing' in latch.reason
    assert store.load().latched is True


@pytest.mark.parametrize(
    'content',
    [
        b'',
        b'{not json',
        b'\xff\xfe',
        b'[]',
        b'{"latched": false}',
        json.dumps(
            {
                'schema': 'robostral.latch_state/1',
                'latched': 'no',
                'reason': '',
                'changed_ns': 0,
                'last_reset_ns': 0,
            }
        ).encode(),
        json.dumps(
            {
                'schema': 'robostral.latch_state/2',
                'latched': False,
                'reason': '',
                'changed_ns': 0,
                'last_reset_ns': 0,
            }
        ).encode(),
        json.dumps(
            {
                'schema': 'robostral.latch_state/1',
                'latched': False,
                'reason': '',
                'changed_ns': -1,
                'last_reset_ns': 0,
            }
        ).encode(),
    ],
)
def test_corrupt_state_file_starts_latched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / 'state.json'
    path.write_bytes(content)
    with pytest.raises(StateFileError):
        LatchStore(path).load()
    latch = Latch(LatchStore(path), start_latched=False, now_ns=T0)
    assert latch.state == LATCHED
    assert 'reset required' in latch.reason


def test_start_latched_policy_latches_even_a_clear_state(tmp_path: Path) -> None:
    store = LatchStore(tmp_path / 'state.json')
    store.save(LatchSnapshot(False, 'reset', T0, T0))
    assert Latch(store, start_latched=True, now_ns=T0).state == LATCHED
    store.save(LatchSnapshot(False, 'reset', T0, T0))
    assert Latch(store, start_latched=False, now_ns=T0).state == READY


def test_a_trip_survives_a_restart(tmp_path: Path) -> None:
    latch = ready_latch(tmp_path)
    assert latch.estop_input(True, T0 + S) is True
    restarted = Latch(LatchStore(tmp_path / 'state.json'), start_latched=False, now_ns=T0 + 2 * S)
    assert restarted.state == LATCHED
    assert 'e-stop pressed' in restarted.reason
    assert restarted.last_reset_ns == T0


def test_fault_means_not_ready_and_no_reset(tmp_path: Path) -> None:
    latch = Latch(LatchStore(tmp_path / 's.json'), start_latched=False, now_ns=T0, fault='bad')
    assert latch.state == NOT_READY
    assert latch.latched
    ok, message = latch.reset(T0 + S)
    assert not ok
    assert 'not ready' in message
    assert latch.estop_input(True, T0) is False
    assert latch.state == NOT_READY


# --- Trip and reset ------------------------------------------------------------------------------


def test_estop_trips_and_reset_needs_release(tmp_path: Path) -> None:
    latch = ready_latch(tmp_path)
    assert latch.estop_input(True, T0 + S) is True
    assert latch.estop_input(True, T0 + S) is False  # already latched
    assert latch.state == LATCHED
    ok, message = latch.reset(T0 + 2 * S)
    assert not ok
    assert 'still pressed' in message
    assert latch.state == LATCHED
    latch.estop_input(False, T0 + 3 * S)
    assert latch.state == LATCHED  # releasing the button does not clear the latch
    ok, _ = latch.reset(T0 + 4 * S)
    assert ok
    assert latch.state == READY
    assert latch.last_reset_ns == T0 + 4 * S
    assert LatchStore(tmp_path / 'state.json').load() == LatchSnapshot(
        False, 'reset', T0 + 4 * S, T0 + 4 * S
    )


def test_reset_without_any_estop_source(tmp_path: Path) -> None:
    latch = Latch(LatchStore(tmp_path / 's.json'), start_latched=True, now_ns=T0)
    assert latch.estop_pressed is None
    ok, message = latch.reset(T0 + S)
    assert ok
    assert 'latch cleared' in message
    assert latch.state == READY


def test_reset_when_ready_changes_nothing(tmp_path: Path) -> None:
    latch = ready_latch(tmp_path)
    ok, message = latch.reset(T0 + 5 * S)
    assert ok
    assert 'nothing to clear' in message
    assert latch.last_reset_ns == T0


def test_reset_is_refused_when_it_cannot_be_persisted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    latch = Latch(LatchStore(tmp_path / 's.json'), start_latched=True, now_ns=T0)

    def fail(*args: object) -> None:
        raise OSError(30, 'Read-only file system')

    monkeypatch.setattr(latch_mod.os, 'replace', fail)
    ok, message = latch.reset(T0 + S)
    assert not ok
    assert 'Read-only' in message
    assert latch.state == LATCHED


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between write and rename leaves the old state intact, no temp file behind."""
    store = LatchStore(tmp_path / 'state.json')
    store.save(LatchSnapshot(True, 'e-stop pressed', T0, 0))
    fsynced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(latch_mod.os, 'fsync', lambda fd: (fsynced.append(fd), real_fsync(fd)))

    def crash(*args: object) -> None:
        raise OSError(5, 'Input/output error')

    monkeypatch.setattr(latch_mod.os, 'replace', crash)
    with pytest.raises(OSError, match='Input/output'):
        store.save(LatchSnapshot(False, 'reset', T0 + S, T0 + S))
    assert fsynced  # the new content was fsynced before the rename was attempted
    assert store.load() == LatchSnapshot(True, 'e-stop pressed', T0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['state.json']


# --- Token bucket and replay set -----------------------------------------------------------------


def test_token_bucket_burst_and_refill() -> None:
    bucket = TokenBucket(2.0, T0)
    assert bucket.capacity == 2.0
    assert bucket.take(T0)
    assert bucket.take(T0)
    assert not bucket.take(T0)
    assert bucket.wait_s(T0) == pytest.approx(0.5)
    assert not bucket.available(T0 + S // 2 - 1)
    assert bucket.take(T0 + S // 2)  # 2 Hz: one token per 0.5 s
    assert not bucket.available(T0 + S // 2)
    assert bucket.available(T0 + 10 * S)
    assert bucket.take(T0 + 10 * S)
    assert bucket.take(T0 + 10 * S)
    assert not bucket.take(T0 + 10 * S)  # capped at the burst size


def test_token_bucket_slow_rates_still_allow_one() -> None:
    bucket = TokenBucket(0.2, T0)
    assert bucket.capacity == 1.0
    assert bucket.take(T0)
    assert not bucket.take(T0 + 4 * S)
    assert bucket.take(T0 + 5 * S)


def test_token_bucket_ignores_a_clock_that_steps_back() -> None:
    bucket = TokenBucket(1.0, T0)
    assert bucket.take(T0)
    assert not bucket.take(T0 - 100 * S)
    assert not bucket.take(T0 + S // 2)
    assert bucket.take(T0 + S)


def test_token_bucket_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match='rate_hz'):
        TokenBucket(0.0, T0)


def test_replay_set_is_bounded_and_forgets_the_oldest() -> None:
    seen = ReplaySet(capacity=3)
    assert seen.add('a')
    assert not seen.add('a')
    seen.add('b')
    seen.add('c')
    seen.add('d')
    assert len(seen) == 3
    assert 'a' not in seen
    assert 'b' in seen
    assert 'd' in seen


# --- Pending approvals ---------------------------------------------------------------------------


def _pending(proposal_id: str, deadline_ns: int) -> PendingApproval:
    from robostral_agent.contract import decode_goal_proposal
    from robostral_agent.safety import examples as ex

    doc = ex.pick_place(T0, proposal_id=proposal_id)
    return PendingApproval(decode_goal_proposal(ex.to_text(doc)), ex.to_text(doc), T0, deadline_ns)


def test_pending_approvals_expire_drain_and_cap() -> None:
    pending = PendingApprovals(capacity=2)
    pending.add(_pending('a', T0 + S))
    pending.add(_pending('b', T0 + 3 * S))
    assert pending.full
    with pytest.raises(OverflowError):
        pending.add(_pending('c', T0))
    assert [p.proposal.id for p in pending.expired(T0 + S)] == []  # deadline inclusive
    assert [p.proposal.id for p in pending.expired(T0 + S + 1)] == ['a']
    assert 'a' not in pending
    assert 'b' in pending
    assert pending.pop('zzz') is None
    assert [p.proposal.id for p in pending.drain()] == ['b']
    assert len(pending) == 0
