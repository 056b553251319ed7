"""The Supervisor core with a controlled clock: fail-closed decoding, whole-plan decisions,
e-stop latch, approvals, rate limit, replay, and the write-ahead audit trail."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from robostral_agent.contract import MAX_MESSAGE_CHARS, Target, Verdict, decode_verdict
from robostral_agent.paths import config_file
from robostral_agent.safety import examples as ex
from robostral_agent.safety.audit import AuditError, verify_file
from robostral_agent.safety.supervisor import Outcome, Supervisor

T0 = 1_700_000_000 * 10**9
S = 10**9
# A cell is reset at T0 and used from START on, so proposals a few seconds old in tests are
# stale but not older than the reset (which would add ESTOP_LATCHED).
START = T0 + 100 * S
REFERENCE = yaml.safe_load(config_file('safety_policy.yaml').read_text())


class Cell:
    """A supervisor on disk (policy, state, audit log) with a hand-driven clock."""

    def __init__(self, tmp_path: Path, *, reset: bool = True, **policy_changes: Any) -> None:
        self.dir = tmp_path
        self.policy_path = tmp_path / 'policy.yaml'
        self.state_path = tmp_path / 'state.json'
        self.audit_path = tmp_path / 'audit.jsonl'
        document = copy.deepcopy(REFERENCE)
        document.update(policy_changes)
        self.policy_path.write_text(yaml.safe_dump(document))
        self.now = T0
        self.sup = self.open()
        if reset:
            assert self.sup.reset(self.now).success
        self.now = START

    def open(self) -> Supervisor:
        return Supervisor.open(self.policy_path, self.state_path, self.audit_path, self.now)

    def restart(self) -> None:
        self.sup.close(self.now)
        self.advance(0.01)
        self.sup = self.open()

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * S)

    def propose(self, doc: dict[str, Any] | str) -> Outcome:
        return self.sup.propose(doc if isinstance(doc, str) else ex.to_text(doc), self.now)

    def verdict(self, doc: dict[str, Any] | str) -> Verdict:
        outcome = self.propose(doc)
        assert len(outcome.verdicts) == 1
        return outcome.verdicts[0]

    def decide(self, proposal_id: str, approve: bool, operator: str = 'alice') -> Outcome:
        text = json.dumps({'proposal_id': proposal_id, 'approve': approve, 'operator': operator})
        return self.sup.decide(text, self.now)

    def plan(self, **kwargs: Any) -> dict[str, Any]:
        return ex.pick_place(self.now, **kwargs)

    def move_to(self, **kwargs: Any) -> dict[str, Any]:
        return ex.proposal([ex.step('move_to', (0.42, 0.05, 0.12))], self.now, **kwargs)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture
def cell(tmp_path: Path) -> Cell:
    return Cell(tmp_path)


def assert_valid(verdict: Verdict) -> None:
    """A verdict must satisfy its own schema (decode_verdict is strict)."""
    assert decode_verdict(json.dumps(verdict.to_dict())) == verdict


# --- Fail closed ---------------------------------------------------------------------------------


def test_a_good_plan_is_approved_whole_and_unchanged(cell: Cell) -> None:
    text = ex.to_text(cell.plan(proposal_id='good'))
    outcome = cell.propose(text)
    (verdict,) = outcome.verdicts
    assert_valid(verdict)
    assert verdict.state == 'approved'
    assert verdict.reasons == ()
    assert verdict.policy_version == cell.sup.policy_version
    assert len(verdict.policy_version) == 64
    assert verdict.stamp.to_ns() == cell.now
    (plan,) = outcome.approved
    assert plan.text == text  # republished exactly as received
    assert [s.task for s in plan.proposal.steps] == ['pick', 'place']


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    del out[key]
    return out


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _base(**kwargs: Any) -> dict[str, Any]:
    return ex.pick_place(START, proposal_id='p1', instruction_id='op-9', **kwargs)


BASE = _base()
FAULTS = [
    ('not json', '{"schema": ', {'MALFORMED'}, ''),
    ('not an object', '[1, 2]', {'MALFORMED'}, ''),
    ('empty', '', {'MALFORMED'}, ''),
    ('too long', '{"id": "' + 'x' * MAX_MESSAGE_CHARS + '"}', {'MALFORMED'}, ''),
    ('wrong schema', _mutate(BASE, ('schema',), 'robostral.goal_proposal/2'),
     {'UNSUPPORTED_SCHEMA'}, 'p1'),
    ('missing stamp', _without(BASE, 'stamp'), {'MALFORMED'}, 'p1'),
    ('missing steps', _without(BASE, 'steps'), {'MALFORMED'}, 'p1'),
    ('empty steps', _mutate(BASE, ('steps',), []), {'MALFORMED'}, 'p1'),
    ('unknown field', _mutate(BASE, ('priority',), 1), {'MALFORMED'}, 'p1'),
    ('string position', _mutate(BASE, ('steps', 0, 'target', 'position'), 'here'),
     {'MALFORMED'}, 'p1'),
    ('NaN position', _mutate(BASE, ('steps', 0, 'target', 'position', 1), float('nan')),
     {'INVALID_POSE'}, 'p1'),
    ('inf position', _mutate(BASE, ('steps', 1, 'target', 'position', 2), float('inf')),
     {'INVALID_POSE'}, 'p1'),
    ('non-unit quaternion', _mutate(BASE, ('steps', 0, 'target', 'orientation'), [1, 1, 0, 0]),
     {'INVALID_POSE'}, 'p1'),
    ('unknown frame', _mutate(BASE, ('steps', 1, 'target', 'frame_id'), 'world'),
     {'UNKNOWN_FRAME'}, 'p1'),
    ('unknown task', _mutate(BASE, ('steps', 0, 'task'), 'throw'), {'TASK_NOT_ALLOWED'}, 'p1'),
    ('future stamp', _base(age_s=-1.0), {'FUTURE_STAMP'}, 'p1'),
    ('stale proposal', _base(age_s=3.0, image_age_s=3.0),
     {'STALE_PROPOSAL'}, 'p1'),
    ('stale image', _base(image_age_s=6.0), {'STALE_IMAGE'}, 'p1'),
    ('low confidence', _mutate(BASE, ('steps', 1, 'confidence'), 0.2), {'LOW_CONFIDENCE'}, 'p1'),
]  # fmt: skip


@pytest.mark.parametrize(
    ('doc', 'codes', 'proposal_id'), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
def test_fault_is_rejected_with_its_codes_and_the_gate_keeps_working(
    cell: Cell, doc: Any, codes: set[str], proposal_id: str
) -> None:
    outcome = cell.propose(doc)
    (verdict,) = outcome.verdicts
    assert_valid(verdict)
    assert verdict.state == 'rejected'
    assert set(verdict.reasons) == codes
    assert verdict.detail
    assert verdict.proposal_id == proposal_id
    assert outcome.approved == ()
    if proposal_id:
        assert verdict.instruction_id == 'op-9'
    # Recorded, and the next good plan still goes through.
    decisions = [r for r in cell.records() if r['kind'] == 'decision']
    assert decisions[-1]['data']['verdict'] == verdict.to_dict()
    assert cell.verdict(cell.plan()).state == 'approved'


def test_one_bad_step_rejects_the_whole_plan(cell: Cell) -> None:
    doc = cell.plan()
    doc['steps'].append(ex.step('place', ex.FIXTURE_INSIDE))
    outcome = cell.propose(doc)
    assert outcome.verdicts[0].state == 'rejected'
    assert outcome.approved == ()
    assert 'steps[2]' in outcome.verdicts[0].detail


def test_reasons_follow_the_contract_order(cell: Cell) -> None:
    doc = cell.plan(age_s=9.0)
    doc['steps'][0]['confidence'] = 0.1
    doc['steps'][1]['target']['position'] = list(ex.FIXTURE_INSIDE)
    reasons = cell.verdict(doc).reasons
    assert reasons == ('LOW_CONFIDENCE', 'STALE_PROPOSAL', 'IN_KEEPOUT_ZONE',
                       'PATH_CROSSES_KEEPOUT')  # fmt: skip


# --- Replay and rate -----------------------------------------------------------------------------


def test_duplicate_id_is_rejected_even_if_first_was_rejected(cell: Cell) -> None:
    assert cell.verdict(cell.plan(proposal_id='same')).state == 'approved'
    cell.advance(1.0)
    again = cell.verdict(cell.plan(proposal_id='same'))
    assert again.reasons == ('DUPLICATE_ID',)
    bad = cell.plan(proposal_id='twice', age_s=10.0)
    assert cell.verdict(bad).reasons == ('STALE_PROPOSAL',)
    assert 'DUPLICATE_ID' in cell.verdict(cell.plan(proposal_id='twice')).reasons


def test_rate_limit_counts_approved_plans_only(cell: Cell) -> None:
    # max_goal_rate_hz 2.0: a burst of two, then one every 0.5 s.
    assert cell.verdict(cell.plan(age_s=30.0)).state == 'rejected'  # uses no token
    assert cell.verdict(cell.plan()).state == 'approved'
    assert cell.verdict(cell.plan()).state == 'approved'
    limited = cell.verdict(cell.plan())
    assert limited.reasons == ('RATE_LIMITED',)
    assert 'next in 0.50 s' in limited.detail
    cell.advance(0.49)
    assert cell.verdict(cell.plan()).reasons == ('RATE_LIMITED',)
    cell.advance(0.01)
    assert cell.verdict(cell.plan()).state == 'approved'


# --- E-stop, reset, restart ----------------------------------------------------------------------


def test_estop_trips_at_once_and_drops_pending(cell: Cell) -> None:
    held = cell.move_to(proposal_id='held')
    assert cell.verdict(held).state == 'pending_approval'
    outcome = cell.sup.estop(True, cell.now)
    assert not cell.sup.safety_ok
    (dropped,) = outcome.verdicts
    assert dropped.proposal_id == 'held'
    assert dropped.reasons == ('ESTOP_LATCHED',)
    assert 'dropped' in dropped.detail
    assert cell.sup.pending_ids == []
    assert cell.verdict(cell.plan()).reasons == ('ESTOP_LATCHED',)
    # An approval arriving after the trip finds nothing to approve.
    assert cell.decide('held', True).verdicts == ()


def test_reset_is_refused_while_pressed_and_never_releases_earlier_goals(cell: Cell) -> None:
    early = cell.plan(proposal_id='early')  # proposed before the trip
    cell.advance(0.1)
    cell.sup.estop(True, cell.now)
    during = cell.plan(proposal_id='during')
    assert cell.verdict(during).reasons == ('ESTOP_LATCHED',)
    cell.advance(0.1)
    refused = cell.sup.reset(cell.now)
    assert not refused.success
    assert 'still pressed' in refused.message
    assert not cell.sup.safety_ok
    cell.sup.estop(False, cell.now)
    assert not cell.sup.safety_ok  # releasing is not resetting
    cell.advance(0.1)
    assert cell.sup.reset(cell.now).success
    assert cell.sup.safety_ok
    cell.advance(0.1)
    late_early = cell.verdict(early)
    assert late_early.reasons == ('ESTOP_LATCHED',)
    assert 'never releases' in late_early.detail
    assert set(cell.verdict(during).reasons) == {'DUPLICATE_ID', 'ESTOP_LATCHED'}
    assert cell.verdict(cell.plan()).state == 'approved'


def test_a_stale_proposal_from_before_the_reset_fails_both_rules(tmp_path: Path) -> None:
    cell = Cell(tmp_path, reset=False)
    cell.now = T0 + 10 * S
    assert cell.sup.reset(cell.now).success
    cell.advance(0.5)
    # Stamped 5 s ago, i.e. before the reset 0.5 s ago: too old, and from before the reset
    # (a verdict lists every rule that failed, INTERFACES.md section 4).
    assert cell.verdict(cell.plan(age_s=5.0)).reasons == ('STALE_PROPOSAL', 'ESTOP_LATCHED')
    # Stamped 1 s ago: fresh, but still from before the reset.
    assert cell.verdict(cell.plan(age_s=1.0)).reasons == ('ESTOP_LATCHED',)
    assert cell.verdict(cell.plan(age_s=0.4)).state == 'approved'


def test_repeated_estop_messages_are_recorded_once(cell: Cell) -> None:
    for _ in range(5):
        cell.sup.estop(True, cell.now)
    cell.sup.estop(False, cell.now)
    cell.sup.estop(False, cell.now)
    estops = [r['data'] for r in cell.records() if r['kind'] == 'estop']
    assert [(e['pressed'], e['tripped']) for e in estops] == [(True, True), (False, False)]


def test_start_and_restart_latched(tmp_path: Path) -> None:
    cell = Cell(tmp_path, reset=False)
    assert not cell.sup.safety_ok
    assert cell.verdict(cell.plan()).reasons == ('ESTOP_LATCHED',)
    assert cell.sup.reset(cell.now).success
    cell.advance(0.1)
    assert cell.verdict(cell.plan()).state == 'approved'
    cell.restart()
    assert not cell.sup.safety_ok
    assert 'start_latched' in cell.sup.status().reason


def test_restart_without_start_latched_keeps_a_clear_latch(tmp_path: Path) -> None:
    cell = Cell(tmp_path, start_latched=False)
    assert cell.sup.safety_ok
    cell.restart()
    assert cell.sup.safety_ok
    cell.sup.estop(True, cell.now)
    cell.restart()
    assert not cell.sup.safety_ok  # the trip was persisted


@pytest.mark.parametrize('damage', ['delete', 'corrupt'])
def test_missing_or_corrupt_state_file_starts_latched(tmp_path: Path, damage: str) -> None:
    cell = Cell(tmp_path, start_latched=False)
    cell.sup.close(cell.now)
    if damage == 'delete':
        cell.state_path.unlink()
    else:
        cell.state_path.write_text('{"latched": fal')
    cell.sup = cell.open()
    assert not cell.sup.safety_ok
    assert 'reset required' in cell.sup.status().reason


# --- Not ready -----------------------------------------------------------------------------------


@pytest.mark.parametrize('problem', ['missing', 'invalid', 'empty parameter'])
def test_missing_or_invalid_policy_means_not_ready(tmp_path: Path, problem: str) -> None:
    policy = tmp_path / 'policy.yaml'
    if problem == 'invalid':
        policy.write_text(config_file('safety_policy.yaml').read_text() + 'max_step_m: 2.0\n')
    path = '' if problem == 'empty parameter' else policy
    sup = Supervisor.open(path, tmp_path / 's.json', tmp_path / 'a.jsonl', T0)
    status = sup.status()
    assert status.state == 'not_ready'
    assert status.policy_error
    assert status.policy_error in status.reason
    assert not sup.safety_ok
    assert not sup.reset(T0).success
    for text in (ex.to_text(ex.pick_place(T0)), 'garbage'):
        (verdict,) = sup.propose(text, T0).verdicts
        assert verdict.state == 'rejected'
        assert 'NOT_READY' in verdict.reasons
        assert verdict.latched
        assert verdict.policy_version == ''
    sup.close(T0)
    records = [json.loads(x) for x in (tmp_path / 'a.jsonl').read_text().splitlines()]
    load = next(r for r in records if r['kind'] == 'policy_load')
    assert load['data']['ok'] is False


def test_unusable_audit_log_means_not_ready(tmp_path: Path) -> None:
    audit = tmp_path / 'audit.jsonl'
    audit.write_text('this is not an audit log\n')
    sup = Supervisor.open(config_file('safety_policy.yaml'), tmp_path / 's.json', audit, T0)
    assert sup.state == 'not_ready'
    assert 'fails verification' in sup.status().audit_error
    assert not sup.reset(T0).success
    assert sup.propose(ex.to_text(ex.pick_place(T0)), T0).verdicts[0].reasons == ('NOT_READY',)


def test_audit_failure_blocks_approval(cell: Cell, monkeypatch: pytest.MonkeyPatch) -> None:
    audit = cell.sup.audit
    assert audit is not None

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AuditError('disk full')

    monkeypatch.setattr(audit, 'append', fail)
    outcome = cell.propose(cell.plan())
    assert outcome.approved == ()
    assert outcome.verdicts[0].reasons == ('NOT_READY',)
    assert 'audit log unavailable' in outcome.verdicts[0].detail
    assert not cell.sup.safety_ok
    assert cell.sup.state == 'not_ready'


# --- Approvals -----------------------------------------------------------------------------------


def test_held_plan_approved_by_an_operator_after_a_full_recheck(tmp_path: Path) -> None:
    cell = Cell(tmp_path, authorized_operators=['alice', 'bob'])
    text = ex.to_text(cell.move_to(proposal_id='m1', operator='alice'))
    pending = cell.propose(text)
    (verdict,) = pending.verdicts
    assert_valid(verdict)
    assert (verdict.state, verdict.reasons, pending.approved) == ('pending_approval', (), ())
    assert 'move_to' in verdict.detail
    assert cell.sup.pending_ids == ['m1']
    cell.advance(10.0)  # far past max_proposal_age_s: the deadline replaces the age rules
    outcome = cell.decide('m1', True, operator='bob')
    (final,) = outcome.verdicts
    assert final.state == 'approved'
    assert outcome.approved[0].text == text
    assert cell.sup.pending_ids == []
    kinds = [r['kind'] for r in cell.records()][-2:]
    assert kinds == ['operator_decision', 'decision']


def test_operator_rejects(cell: Cell) -> None:
    cell.propose(cell.move_to(proposal_id='m2'))
    (verdict,) = cell.decide('m2', False).verdicts
    assert verdict.reasons == ('OPERATOR_REJECTED',)


def test_approval_deadline(cell: Cell) -> None:
    cell.propose(cell.move_to(proposal_id='m3'))
    cell.propose(cell.move_to(proposal_id='m4'))
    cell.advance(15.0)
    assert cell.sup.tick(cell.now).verdicts == ()  # the deadline itself is still in time
    cell.advance(0.001)
    timed_out = cell.sup.tick(cell.now).verdicts
    assert [v.proposal_id for v in timed_out] == ['m3', 'm4']
    assert all(v.reasons == ('APPROVAL_TIMEOUT',) for v in timed_out)
    assert cell.decide('m3', True).verdicts == ()  # too late: nothing to approve


def test_decision_after_deadline_without_a_tick(cell: Cell) -> None:
    cell.propose(cell.move_to(proposal_id='m5'))
    cell.advance(16.0)
    (verdict,) = cell.decide('m5', True).verdicts
    assert verdict.reasons == ('APPROVAL_TIMEOUT',)


def test_unauthorized_operator_cannot_decide(tmp_path: Path) -> None:
    cell = Cell(tmp_path, authorized_operators=['alice'])
    cell.propose(cell.move_to(proposal_id='m6'))
    (verdict,) = cell.decide('m6', True, operator='mallory').verdicts
    assert verdict.state == 'rejected'
    assert verdict.reasons == ('UNAUTHORIZED_OPERATOR',)
    assert cell.verdict(cell.plan(operator='mallory')).reasons == ('UNAUTHORIZED_OPERATOR',)


def test_approval_rechecks_the_current_tool_pose(cell: Cell) -> None:
    cell.propose(cell.move_to(proposal_id='m7'))
    cell.advance(1.0)
    inside = Target('base_link', (0.57, 0.0, 0.2), ex.TOOL_DOWN)
    assert cell.sup.update_tool_pose(inside, cell.now) == ''
    (verdict,) = cell.decide('m7', True).verdicts
    assert verdict.reasons == ('PATH_CROSSES_KEEPOUT',)


def test_approval_respects_the_rate_limit(cell: Cell) -> None:
    cell.propose(cell.move_to(proposal_id='m8'))
    cell.propose(cell.plan())
    cell.propose(cell.plan())
    (verdict,) = cell.decide('m8', True).verdicts
    assert verdict.reasons == ('RATE_LIMITED',)


def test_decisions_that_match_nothing_are_recorded_not_fatal(cell: Cell) -> None:
    outcome = cell.decide('nobody', True)
    assert outcome.verdicts == ()
    assert 'awaits' in outcome.notes[0]
    bad = cell.sup.decide('{"proposal_id": 3}', cell.now)
    assert bad.verdicts == ()
    assert 'refused' in bad.notes[0]
    records = [r for r in cell.records() if r['kind'] == 'operator_decision']
    assert records[-2]['data']['held'] is False
    assert 'error' in records[-1]['data']


def test_pending_queue_is_bounded(cell: Cell) -> None:
    for i in range(16):
        assert cell.verdict(cell.move_to(proposal_id=f'q{i}')).state == 'pending_approval'
    overflow = cell.verdict(cell.move_to(proposal_id='q16'))
    assert overflow.reasons == ('RATE_LIMITED',)
    assert 'await' in overflow.detail


# --- Tool pose -----------------------------------------------------------------------------------


def test_tool_pose_must_be_usable(cell: Cell) -> None:
    wrong_frame = Target('world', (0.3, 0.0, 0.3), ex.TOOL_DOWN)
    assert 'frame' in cell.sup.update_tool_pose(wrong_frame, cell.now)
    nan = Target('base_link', (float('nan'), 0.0, 0.3), ex.TOOL_DOWN)
    assert 'non-finite' in cell.sup.update_tool_pose(nan, cell.now)
    # Ignored poses change nothing: the plan still starts from home.
    assert cell.verdict(cell.plan()).state == 'approved'


# --- Audit trail ---------------------------------------------------------------------------------


def test_every_event_is_audited_in_order_and_the_chain_verifies(cell: Cell) -> None:
    cell.propose(cell.plan(proposal_id='a1'))
    cell.propose(cell.move_to(proposal_id='a2'))
    cell.decide('a2', False)
    cell.sup.estop(True, cell.now)
    cell.sup.reset(cell.now)
    cell.sup.estop(False, cell.now)
    cell.advance(0.1)
    cell.sup.reset(cell.now)
    cell.sup.close(cell.now)
    records = cell.records()
    kinds = [r['kind'] for r in records]
    assert kinds == [
        'policy_load', 'startup', 'reset',
        'decision', 'decision', 'operator_decision', 'decision',
        'estop', 'reset', 'estop', 'reset', 'shutdown',
    ]  # fmt: skip
    assert records[0]['data']['version'] == cell.sup.policy_version
    decisions = [r['data'] for r in records if r['kind'] == 'decision']
    assert [d['verdict']['proposal_id'] for d in decisions] == ['a1', 'a2', 'a2']
    assert [d['verdict']['state'] for d in decisions] == ['approved', 'pending_approval',
                                                          'rejected']  # fmt: skip
    assert json.loads(decisions[0]['proposal'])['id'] == 'a1'
    assert [r['data']['success'] for r in records if r['kind'] == 'reset'] == [True, False, True]
    report = verify_file(cell.audit_path)
    assert report.ok
    assert report.records == len(records)


def test_status_counts_by_reason(cell: Cell) -> None:
    cell.propose(cell.plan())
    cell.propose('garbage')
    cell.propose(cell.plan(age_s=9.0))
    cell.propose(cell.move_to())
    status = cell.sup.status()
    assert (status.approved, status.rejected, status.pending) == (1, 2, 1)
    assert status.rejected_by_reason == {'MALFORMED': 1, 'STALE_PROPOSAL': 1}
    assert status.audit_records == len(cell.records())
    assert status.ready
