"""Round-trip, rejection and fuzz tests for every schema of the contract."""

from __future__ import annotations

import contextlib
import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robostral_agent import contract as c

# --- Builders of valid documents -------------------------------------------------------------


def proposal_dict() -> dict[str, Any]:
    return {
        'schema': 'robostral.goal_proposal/1',
        'id': '9f0c1d2e',
        'instruction_id': 'op-42',
        'operator': 'alice',
        'stamp': {'sec': 100, 'nanosec': 5},
        'image_stamp': {'sec': 99, 'nanosec': 900_000_000},
        'model': {'name': 'robostral-tiny', 'sha256': 'ab' * 32},
        'steps': [
            {
                'task': 'pick',
                'object': 'red cube',
                'confidence': 0.97,
                'target': {
                    'frame_id': 'base_link',
                    'position': [0.42, 0.05, 0.02],
                    'orientation': [1.0, 0.0, 0.0, 0.0],
                },
                'pixel': [312, 240],
                'bbox': [296, 224, 328, 256],
            },
            {
                'task': 'place',
                'object': 'left bin',
                'confidence': 0.95,
                'target': {
                    'frame_id': 'base_link',
                    'position': [0.45, 0.40, 0.10],
                    'orientation': [1.0, 0.0, 0.0, 0.0],
                },
            },
        ],
    }


def verdict_dict() -> dict[str, Any]:
    return {
        'schema': 'robostral.verdict/1',
        'proposal_id': '9f0c',
        'instruction_id': 'op-42',
        'state': 'rejected',
        'approved': False,
        'reasons': ['IN_KEEPOUT_ZONE', 'LOW_CONFIDENCE'],
        'detail': 'step 0 in zone fixture',
        'policy_version': 'cd' * 32,
        'latched': False,
        'stamp': {'sec': 1, 'nanosec': 2},
    }


def status_dict() -> dict[str, Any]:
    return {
        'schema': 'robostral.instruction_status/1',
        'instruction_id': 'op-42',
        'state': 'proposed',
        'proposal_id': '9f0c',
        'detail': '',
        'latency_ms': 84.2,
    }


def scene_dict() -> dict[str, Any]:
    return {
        'objects': [
            {'shape': 'cube', 'color': 'red', 'xy': [0.40, 0.10], 'yaw': 0.3},
            {'shape': 'ball', 'color': 'blue', 'xy': [0.50, -0.12]},
        ]
    }


def eval_case_dict() -> dict[str, Any]:
    return {
        'scene': scene_dict(),
        'instruction': 'put the red cube in the left bin',
        'expect': {
            'outcome': 'success',
            'task': 'pick_place',
            'object': {'shape': 'cube', 'color': 'red'},
            'bin': 'left',
        },
    }


DECODERS = {
    'proposal': (c.decode_goal_proposal, proposal_dict),
    'verdict': (c.decode_verdict, verdict_dict),
    'status': (c.decode_instruction_status, status_dict),
    'execution': (
        c.decode_execution_result,
        lambda: {'proposal_id': 'p1', 'status': 'aborted', 'detail': 'safety_ok dropped'},
    ),
    'decision': (
        c.decode_operator_decision,
        lambda: {'proposal_id': 'p1', 'approve': True, 'operator': 'bob'},
    ),
    'instruction': (
        c.decode_instruction,
        lambda: {'id': 'op-1', 'text': 'pick the red cube', 'operator': 'alice'},
    ),
    'scene': (c.decode_scene, scene_dict),
    'eval_case': (c.decode_eval_case, eval_case_dict),
}


# --- Round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize('name', DECODERS)
def test_round_trip_through_json(name: str) -> None:
    decode, build = DECODERS[name]
    message = decode(json.dumps(build()))
    again = decode(c.encode(message))
    assert again == message
    assert c.encode(again) == c.encode(message)


def test_proposal_fields_decoded_exactly() -> None:
    p = c.decode_goal_proposal(json.dumps(proposal_dict()))
    assert p.id == '9f0c1d2e' and p.operator == 'alice'
    assert p.stamp == c.Stamp(100, 5)
    assert p.steps[0].target.position == (0.42, 0.05, 0.02)
    assert p.steps[0].bbox == (296, 224, 328, 256)
    assert p.steps[1].pixel is None and p.steps[1].bbox is None
    assert 'pixel' not in c.encode(p).split('"place"')[1]


def test_built_messages_encode_to_the_documented_keys() -> None:
    v = c.Verdict('p', 'i', 'approved', policy_version='x', stamp=c.Stamp(3, 4))
    d = json.loads(c.encode(v))
    assert set(d) == {
        'schema', 'proposal_id', 'instruction_id', 'state', 'approved', 'reasons',
        'detail', 'policy_version', 'latched', 'stamp',
    }  # fmt: skip
    assert d['approved'] is True and d['reasons'] == []
    r = json.loads(c.encode(c.ExecutionResult('p', 'succeeded', 'ok')))
    assert r == {'proposal_id': 'p', 'status': 'succeeded', 'detail': 'ok'}
    s = json.loads(c.encode(c.InstructionStatus('i', 'busy', detail='queue full')))
    assert s['schema'] == 'robostral.instruction_status/1' and s['state'] == 'busy'


def test_stamp_conversions() -> None:
    s = c.Stamp.from_ns(12_345_678_901)
    assert s == c.Stamp(12, 345_678_901)
    assert s.to_ns() == 12_345_678_901
    assert c.Stamp.from_seconds(1.5) == c.Stamp(1, 500_000_000)
    assert math.isclose(s.to_seconds(), 12.345678901)


def test_plain_and_json_instructions() -> None:
    plain = c.parse_instruction('pick the red cube', make_id=lambda: 'gen-1')
    assert plain == c.Instruction('gen-1', 'pick the red cube', '')
    js = c.parse_instruction('  {"id": "op-7", "text": "go home", "operator": "bob"}')
    assert js == c.Instruction('op-7', 'go home', 'bob')
    with pytest.raises(c.ContractError, match='id'):
        c.parse_instruction('{"text": "go home"}')


def test_encode_refuses_non_finite() -> None:
    step = c.Step('pick', 'x', 0.9, c.Target('base_link', (math.nan, 0.0, 0.0)))
    p = c.GoalProposal('a', 'b', '', c.Stamp(), c.Stamp(), c.ModelInfo('m', 's'), (step,))
    with pytest.raises(c.ContractError):
        c.encode(p)


# --- Rejections, each naming the field -------------------------------------------------------


def _mutate(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


_DELETE = object()

PROPOSAL_REJECTIONS = [
    (['schema'], 'robostral.goal_proposal/2', 'schema', 'UNSUPPORTED_SCHEMA'),
    (['schema'], _DELETE, 'schema', 'MALFORMED'),
    (['id'], '', 'id', 'MALFORMED'),
    (['id'], 7, 'id', 'MALFORMED'),
    (['operator'], None, 'operator', 'MALFORMED'),
    (['stamp', 'nanosec'], 1_000_000_000, 'stamp.nanosec', 'MALFORMED'),
    (['stamp', 'sec'], 1.5, 'stamp.sec', 'MALFORMED'),
    (['stamp', 'sec'], True, 'stamp.sec', 'MALFORMED'),
    (['image_stamp'], _DELETE, 'image_stamp', 'MALFORMED'),
    (['model', 'sha256'], _DELETE, 'model.sha256', 'MALFORMED'),
    (['steps'], [], 'steps', 'MALFORMED'),
    (['steps'], {}, 'steps', 'MALFORMED'),
    (['steps', 0, 'task'], 'dance', 'steps[0].task', 'TASK_NOT_ALLOWED'),
    (['steps', 0, 'confidence'], 1.5, 'steps[0].confidence', 'MALFORMED'),
    (['steps', 0, 'confidence'], '0.9', 'steps[0].confidence', 'MALFORMED'),
    (['steps', 0, 'target', 'position'], [0.4, 0.0], 'steps[0].target.position', 'MALFORMED'),
    (['steps', 0, 'target', 'position', 1], math.inf, 'steps[0].target.position[1]',
     'INVALID_POSE'),
    (['steps', 1, 'target', 'orientation'], [0.0, 0.0, 0.0, 2.0],
     'steps[1].target.orientation', 'INVALID_POSE'),
    (['steps', 1, 'target', 'orientation', 3], math.nan, 'steps[1].target.orientation[3]',
     'INVALID_POSE'),
    (['steps', 0, 'bbox'], [328, 224, 296, 256], 'steps[0].bbox', 'MALFORMED'),
    (['steps', 0, 'target', 'frame'], 'x', 'steps[0].target.frame', 'MALFORMED'),
    (['extra'], 1, 'extra', 'MALFORMED'),
]  # fmt: skip


@pytest.mark.parametrize(('path', 'value', 'field', 'code'), PROPOSAL_REJECTIONS)
def test_proposal_rejections_name_the_field(
    path: list[Any], value: Any, field: str, code: str
) -> None:
    doc = _mutate(proposal_dict(), path, value)
    with pytest.raises(c.ContractError) as err:
        c.decode_goal_proposal(json.dumps(doc))
    assert err.value.field == field
    assert err.value.code == code


def test_lenient_proposal_decoding_keeps_values_for_the_policy() -> None:
    doc = _mutate(proposal_dict(), ['steps', 0, 'task'], 'dance')
    doc['steps'][1]['target']['orientation'] = [0.0, 0.0, 0.0, 2.0]
    doc['steps'][0]['target']['position'][0] = math.nan
    p = c.decode_goal_proposal(json.dumps(doc), check_values=False)
    assert p.steps[0].task == 'dance'
    assert math.isnan(p.steps[0].target.position[0])
    # Structure is still enforced in lenient mode.
    with pytest.raises(c.ContractError, match='steps'):
        c.decode_goal_proposal(json.dumps(_mutate(doc, ['steps'], 'x')), check_values=False)


@pytest.mark.parametrize(
    'text',
    [
        '',
        'null',
        '[1, 2]',
        '{"schema": "robostral.goal_proposal/1", "schema": "x"}',
        '{' * 100_000,
        b'\xff\xfe',
        'x' * (c.MAX_MESSAGE_CHARS + 1),
    ],
)
def test_garbage_is_malformed(text: str | bytes) -> None:
    with pytest.raises(c.ContractError) as err:
        c.decode_goal_proposal(text)
    assert err.value.code == 'MALFORMED'


def test_too_many_steps() -> None:
    doc = proposal_dict()
    doc['steps'] = doc['steps'][:1] * (c.MAX_STEPS + 1)
    with pytest.raises(c.ContractError, match='steps'):
        c.decode_goal_proposal(json.dumps(doc))


@pytest.mark.parametrize(
    ('mutation', 'field'),
    [
        ({'state': 'maybe'}, 'state'),
        ({'approved': True}, 'approved'),
        ({'reasons': []}, 'reasons'),
        ({'reasons': ['BAD_CODE']}, 'reasons[0]'),
        ({'reasons': ['MALFORMED', 'MALFORMED']}, 'reasons'),
        ({'latched': 0}, 'latched'),
        ({'schema': 'robostral.verdict/2'}, 'schema'),
    ],
)
def test_verdict_rejections(mutation: dict[str, Any], field: str) -> None:
    with pytest.raises(c.ContractError) as err:
        c.decode_verdict({**verdict_dict(), **mutation})
    assert err.value.field == field


def test_approved_verdict_must_not_carry_reasons() -> None:
    doc = {**verdict_dict(), 'state': 'approved', 'approved': True}
    with pytest.raises(c.ContractError, match='reasons'):
        c.decode_verdict(doc)


@pytest.mark.parametrize(
    ('mutation', 'field'),
    [
        ({'state': 'thinking'}, 'state'),
        ({'latency_ms': -1.0}, 'latency_ms'),
        ({'latency_ms': 'fast'}, 'latency_ms'),
        ({'proposal_id': None}, 'proposal_id'),
    ],
)
def test_status_rejections(mutation: dict[str, Any], field: str) -> None:
    with pytest.raises(c.ContractError) as err:
        c.decode_instruction_status({**status_dict(), **mutation})
    assert err.value.field == field


def test_execution_decision_instruction_rejections() -> None:
    with pytest.raises(c.ContractError, match='status'):
        c.decode_execution_result({'proposal_id': 'p', 'status': 'done', 'detail': ''})
    with pytest.raises(c.ContractError, match='approve'):
        c.decode_operator_decision({'proposal_id': 'p', 'approve': 'yes', 'operator': 'a'})
    with pytest.raises(c.ContractError, match='proposal_id'):
        c.decode_operator_decision({'proposal_id': '', 'approve': True})
    with pytest.raises(c.ContractError, match='text'):
        c.decode_instruction({'id': 'x', 'text': 3})


@pytest.mark.parametrize(
    ('path', 'value', 'field'),
    [
        (['objects', 0, 'shape'], 'pyramid', 'objects[0].shape'),
        (['objects', 1, 'color'], 'purple', 'objects[1].color'),
        (['objects', 0, 'xy'], [0.4], 'objects[0].xy'),
        (['objects', 0, 'yaw'], math.nan, 'objects[0].yaw'),
        (['objects'], None, 'objects'),
    ],
)
def test_scene_rejections(path: list[Any], value: Any, field: str) -> None:
    with pytest.raises(c.ContractError) as err:
        c.decode_scene(_mutate(scene_dict(), path, value))
    assert err.value.field == field


@pytest.mark.parametrize(
    ('path', 'value', 'field'),
    [
        (['expect', 'outcome'], 'great', 'expect.outcome'),
        (['expect', 'task'], 'juggle', 'expect.task'),
        (['expect', 'bin'], _DELETE, 'expect.bin'),
        (['expect', 'bin'], 'middle', 'expect.bin'),
        (['expect', 'object'], _DELETE, 'expect.object'),
        (['instruction'], '', 'instruction'),
        (['scene', 'objects', 0, 'shape'], 'cone', 'scene.objects[0].shape'),
    ],
)
def test_eval_case_rejections(path: list[Any], value: Any, field: str) -> None:
    with pytest.raises(c.ContractError) as err:
        c.decode_eval_case(_mutate(eval_case_dict(), path, value))
    assert err.value.field == field


@pytest.mark.parametrize('outcome', ['not_found', 'refused'])
def test_a_pick_place_case_that_must_not_move_needs_no_bin(outcome: str) -> None:
    doc = eval_case_dict()
    del doc['expect']['bin']
    doc['expect']['outcome'] = outcome
    case = c.decode_eval_case(doc)
    assert case.expect.bin is None and case.expect.to_dict() == doc['expect']


def test_home_eval_case_needs_no_object() -> None:
    case = c.decode_eval_case(
        {'scene': {'objects': []}, 'instruction': 'go home',
         'expect': {'outcome': 'success', 'task': 'home'}}
    )  # fmt: skip
    assert case.expect.object is None and case.expect.bin is None


def test_peek_ids_never_raises() -> None:
    assert c.peek_ids('not json') == ('', '')
    assert c.peek_ids('{"id": 5, "instruction_id": "op"}') == ('', 'op')
    assert c.peek_ids(json.dumps(proposal_dict())) == ('9f0c1d2e', 'op-42')


# --- Fuzzing: the decoders raise nothing but ContractError -----------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)


def _mutated_documents() -> st.SearchStrategy[Any]:
    """Valid documents with one subtree replaced by arbitrary JSON: near misses."""

    def replace(doc: Any, data: st.DataObject) -> Any:
        doc = copy.deepcopy(doc)
        node = doc
        while isinstance(node, dict | list) and node and data.draw(st.booleans()):
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            key = data.draw(st.sampled_from(keys))
            if not isinstance(node[key], dict | list) or data.draw(st.booleans()):
                node[key] = data.draw(json_values)
                return doc
            node = node[key]
        return doc

    builders = [build for _decode, build in DECODERS.values()]
    return st.tuples(st.sampled_from(builders), st.data()).map(
        lambda pair: replace(pair[0](), pair[1])
    )


ALL_DECODERS = [decode for decode, _build in DECODERS.values()]


@given(st.one_of(json_values, _mutated_documents()), st.sampled_from(ALL_DECODERS))
def test_decoders_raise_only_contract_error_on_json(doc: Any, decode: Any) -> None:
    text = json.dumps(doc)
    try:
        decoded = decode(text)
    except c.ContractError as err:
        assert isinstance(err.field, str) and err.code in c.REASON_CODES
    else:
        # Whatever is accepted must survive a round trip unchanged.
        assert decode(c.encode(decoded)) == decoded


@given(st.one_of(st.text(), st.binary()), st.sampled_from(ALL_DECODERS))
def test_decoders_raise_only_contract_error_on_raw_input(raw: Any, decode: Any) -> None:
    with contextlib.suppress(c.ContractError):
        decode(raw)


@given(st.one_of(st.text(), st.binary(), json_values))
def test_lenient_decoder_raises_only_contract_error(raw: Any) -> None:
    document = json.dumps(raw) if isinstance(raw, dict) else raw
    with contextlib.suppress(c.ContractError):
        c.decode_goal_proposal(document, check_values=False)
