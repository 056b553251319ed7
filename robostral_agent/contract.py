"""The public message contract (INTERFACES.md sections 2, 3 and 7), pure Python.

Every JSON document that crosses a process boundary is built, encoded and decoded here, so
the agent, the supervisor, the simulator and the tools cannot drift apart. Decoding is
strict: unknown keys, duplicate keys, wrong types and out-of-range values are refused with
one exception type, :class:`ContractError`, that names the offending field (``steps[1].
target.orientation``) and carries the reason code a supervisor would answer with.

Two levels of strictness exist for goal proposals. ``check_values=True`` (the default) also
refuses non-finite numbers, non-unit quaternions and unknown tasks; the safety supervisor
decodes with ``check_values=False`` so that such values reach its rule engine, which then
reports *every* failed rule (INVALID_POSE, TASK_NOT_ALLOWED, ...) rather than the first.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from robostral_agent.geometry import quaternion_is_unit

# --- Schema names and closed vocabularies -------------------------------------------------

SCHEMA_GOAL_PROPOSAL: Final = 'robostral.goal_proposal/1'
SCHEMA_VERDICT: Final = 'robostral.verdict/1'
SCHEMA_INSTRUCTION_STATUS: Final = 'robostral.instruction_status/1'

TASKS: Final = ('pick', 'place', 'move_to', 'inspect', 'home')
VERDICT_STATES: Final = ('approved', 'rejected', 'pending_approval')
STATUS_STATES: Final = (
    'received',
    'proposed',
    'not_found',
    'rejected_input',
    'busy',
    'error',
    'stopped',
)
EXECUTION_STATUSES: Final = ('succeeded', 'failed', 'aborted')

REASON_CODES: Final = (
    'MALFORMED',
    'UNSUPPORTED_SCHEMA',
    'INVALID_POSE',
    'UNKNOWN_FRAME',
    'TASK_NOT_ALLOWED',
    'LOW_CONFIDENCE',
    'STALE_PROPOSAL',
    'STALE_IMAGE',
    'FUTURE_STAMP',
    'OUT_OF_WORKSPACE',
    'IN_KEEPOUT_ZONE',
    'PATH_CROSSES_KEEPOUT',
    'STEP_TOO_LARGE',
    'TOOL_POSE_UNKNOWN',
    'ORIENTATION_LIMIT',
    'RATE_LIMITED',
    'DUPLICATE_ID',
    'UNAUTHORIZED_OPERATOR',
    'ESTOP_LATCHED',
    'APPROVAL_TIMEOUT',
    'OPERATOR_REJECTED',
    'NOT_READY',
)

# Reference-cell vocabulary (INTERFACES.md section 6).
SHAPES: Final = ('cube', 'ball', 'cylinder')
COLORS: Final = ('red', 'green', 'blue', 'yellow')
BINS: Final = ('left', 'right')
EVAL_OUTCOMES: Final = ('success', 'not_found', 'refused')
EVAL_TASKS: Final = ('pick_place', 'pick', 'inspect', 'home')

# Bounds that keep a hostile message from costing the decoder more than a few milliseconds.
MAX_MESSAGE_CHARS: Final = 65536
MAX_STEPS: Final = 32
MAX_SCENE_OBJECTS: Final = 64
MAX_TEXT_CHARS: Final = 4096


class ContractError(ValueError):
    """A message does not satisfy the contract.

    ``field`` is a path into the document (empty for the document itself); ``code`` is the
    verdict reason code that best describes the fault (``MALFORMED`` unless more specific).
    """

    def __init__(self, field: str, message: str, code: str = 'MALFORMED') -> None:
        self.field = field
        self.message = message
        self.code = code
        super().__init__(f'{field}: {message}' if field else message)


# --- Value types ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stamp:
    """ROS time as the contract writes it: ``{"sec": int, "nanosec": int}``."""

    sec: int = 0
    nanosec: int = 0

    @classmethod
    def from_ns(cls, ns: int) -> Stamp:
        return cls(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    @classmethod
    def from_seconds(cls, seconds: float) -> Stamp:
        return cls.from_ns(round(seconds * 1e9))

    def to_ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec

    def to_seconds(self) -> float:
        return self.sec + self.nanosec * 1e-9

    def to_dict(self) -> dict[str, int]:
        return {'sec': self.sec, 'nanosec': self.nanosec}


@dataclass(frozen=True, slots=True)
class Target:
    """Pose of the tool centre point in ``frame_id``; orientation is ``[x, y, z, w]``."""

    frame_id: str
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            'frame_id': self.frame_id,
            'position': list(self.position),
            'orientation': list(self.orientation),
        }


@dataclass(frozen=True, slots=True)
class Step:
    """One goal of a plan. ``pixel`` and ``bbox`` (``[u0, v0, u1, v1]``) are optional."""

    task: str
    object: str
    confidence: float
    target: Target
    pixel: tuple[float, float] | None = None
    bbox: tuple[float, float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            'task': self.task,
            'object': self.object,
            'confidence': self.confidence,
            'target': self.target.to_dict(),
        }
        if self.pixel is not None:
            out['pixel'] = list(self.pixel)
        if self.bbox is not None:
            out['bbox'] = list(self.bbox)
        return out


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {'name': self.name, 'sha256': self.sha256}


@dataclass(frozen=True, slots=True)
class GoalProposal:
    """``robostral.goal_proposal/1``: one instruction's whole plan."""

    id: str
    instruction_id: str
    operator: str
    stamp: Stamp
    image_stamp: Stamp
    model: ModelInfo
    steps: tuple[Step, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            'schema': SCHEMA_GOAL_PROPOSAL,
            'id': self.id,
            'instruction_id': self.instruction_id,
            'operator': self.operator,
            'stamp': self.stamp.to_dict(),
            'image_stamp': self.image_stamp.to_dict(),
            'model': self.model.to_dict(),
            'steps': [s.to_dict() for s in self.steps],
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """``robostral.verdict/1``: the supervisor's decision on one proposal."""

    proposal_id: str
    instruction_id: str
    state: str
    reasons: tuple[str, ...] = ()
    detail: str = ''
    policy_version: str = ''
    latched: bool = False
    stamp: Stamp = field(default_factory=Stamp)

    @property
    def approved(self) -> bool:
        return self.state == 'approved'

    def to_dict(self) -> dict[str, Any]:
        return {
            'schema': SCHEMA_VERDICT,
            'proposal_id': self.proposal_id,
            'instruction_id': self.instruction_id,
            'state': self.state,
            'approved': self.approved,
            'reasons': list(self.reasons),
            'detail': self.detail,
            'policy_version': self.policy_version,
            'latched': self.latched,
            'stamp': self.stamp.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class InstructionStatus:
    """``robostral.instruction_status/1``: the agent's progress on one instruction."""

    instruction_id: str
    state: str
    proposal_id: str = ''
    detail: str = ''
    latency_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            'schema': SCHEMA_INSTRUCTION_STATUS,
            'instruction_id': self.instruction_id,
            'state': self.state,
            'proposal_id': self.proposal_id,
            'detail': self.detail,
            'latency_ms': self.latency_ms,
        }


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What the executor reports after running (or refusing to finish) an approved plan."""

    proposal_id: str
    status: str
    detail: str = ''

    def to_dict(self) -> dict[str, str]:
        return {'proposal_id': self.proposal_id, 'status': self.status, 'detail': self.detail}


@dataclass(frozen=True, slots=True)
class Instruction:
    """An operator instruction; plain text on the topic becomes one with a fresh id."""

    id: str
    text: str
    operator: str = ''

    def to_dict(self) -> dict[str, str]:
        return {'id': self.id, 'text': self.text, 'operator': self.operator}


@dataclass(frozen=True, slots=True)
class OperatorDecision:
    """An operator's answer to a proposal held for approval."""

    proposal_id: str
    approve: bool
    operator: str = ''

    def to_dict(self) -> dict[str, Any]:
        return {
            'proposal_id': self.proposal_id,
            'approve': self.approve,
            'operator': self.operator,
        }


@dataclass(frozen=True, slots=True)
class SceneObject:
    shape: str
    color: str
    xy: tuple[float, float]
    yaw: float = 0.0

    @property
    def label(self) -> str:
        return f'{self.color} {self.shape}'

    def to_dict(self) -> dict[str, Any]:
        return {'shape': self.shape, 'color': self.color, 'xy': list(self.xy), 'yaw': self.yaw}


@dataclass(frozen=True, slots=True)
class Scene:
    objects: tuple[SceneObject, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {'objects': [o.to_dict() for o in self.objects]}


@dataclass(frozen=True, slots=True)
class ObjectRef:
    shape: str
    color: str

    def to_dict(self) -> dict[str, str]:
        return {'shape': self.shape, 'color': self.color}


@dataclass(frozen=True, slots=True)
class EvalExpect:
    outcome: str
    task: str
    object: ObjectRef | None = None
    bin: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {'outcome': self.outcome, 'task': self.task}
        if self.object is not None:
            out['object'] = self.object.to_dict()
        if self.bin is not None:
            out['bin'] = self.bin
        return out


@dataclass(frozen=True, slots=True)
class EvalCase:
    """One closed-loop evaluation case (INTERFACES.md section 7); ``id`` is optional."""

    scene: Scene
    instruction: str
    expect: EvalExpect
    id: str = ''

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            'scene': self.scene.to_dict(),
            'instruction': self.instruction,
            'expect': self.expect.to_dict(),
        }
        if self.id:
            out['id'] = self.id
        return out


Message = (
    GoalProposal
    | Verdict
    | InstructionStatus
    | ExecutionResult
    | Instruction
    | OperatorDecision
    | Scene
    | EvalCase
)


def new_id() -> str:
    """A fresh unique id (uuid4 hex), as proposals and plain-text instructions use."""
    return uuid.uuid4().hex


def encode(message: Message) -> str:
    """Compact JSON for a topic. Non-finite numbers cannot be encoded (JSON has none)."""
    try:
        return json.dumps(message.to_dict(), separators=(',', ':'), allow_nan=False)
    except ValueError as exc:
        raise ContractError('', f'cannot encode: {exc}', 'INVALID_POSE') from exc


# --- Strict decoding -------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ContractError(key, 'duplicate key')
        out[key] = value
    return out


def load_json(data: str | bytes | bytearray | Mapping[str, Any]) -> dict[str, Any]:
    """Parse one JSON object strictly (size-bounded, no duplicate keys); dicts pass through."""
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode('utf-8')
        except UnicodeDecodeError as exc:
            raise ContractError('', f'not UTF-8: {exc.reason}') from exc
    if not isinstance(data, str):
        raise ContractError('', f'expected a JSON string, got {type(data).__name__}')
    if len(data) > MAX_MESSAGE_CHARS:
        raise ContractError('', f'message longer than {MAX_MESSAGE_CHARS} characters')
    try:
        obj = json.loads(data, object_pairs_hook=_reject_duplicates)
    except ContractError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ContractError('', f'not valid JSON: {exc}') from exc
    if not isinstance(obj, dict):
        raise ContractError('', f'expected a JSON object, got {type(obj).__name__}')
    return obj


class _Fields:
    """Reads one JSON object field by field, tracking the path, then refuses leftovers."""

    __slots__ = ('_data', '_path', '_seen')

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ContractError(path, f'expected an object, got {_kind(data)}')
        self._data = data
        self._path = path
        self._seen: set[str] = set()

    def sub(self, key: str) -> str:
        return f'{self._path}.{key}' if self._path else key

    def has(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str, convert: Callable[[Any, str], Any], default: Any = ...) -> Any:
        self._seen.add(key)
        if key not in self._data:
            if default is ...:
                raise ContractError(self.sub(key), 'missing')
            return default
        return convert(self._data[key], self.sub(key))

    def done(self) -> None:
        extra = sorted(set(self._data) - self._seen)
        if extra:
            raise ContractError(self.sub(str(extra[0])), 'unknown field')


def _kind(value: Any) -> str:
    return 'null' if value is None else type(value).__name__


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ContractError(path, f'expected a string, got {_kind(value)}')
    if len(value) > MAX_TEXT_CHARS:
        raise ContractError(path, f'longer than {MAX_TEXT_CHARS} characters')
    return value


def _nonempty_str(value: Any, path: str) -> str:
    text = _str(value, path)
    if not text:
        raise ContractError(path, 'must not be empty')
    return text


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ContractError(path, f'expected true or false, got {_kind(value)}')
    return value


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(path, f'expected an integer, got {_kind(value)}')
    return value


def _number(value: Any, path: str) -> float:
    """Any JSON number (NaN/inf included: the value checks or the policy judge those)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(path, f'expected a number, got {_kind(value)}')
    try:
        return float(value)
    except OverflowError as exc:
        raise ContractError(path, 'number out of range', 'INVALID_POSE') from exc


def _finite(value: Any, path: str) -> float:
    number = _number(value, path)
    if not math.isfinite(number):
        raise ContractError(path, 'must be finite', 'INVALID_POSE')
    return number


def _numbers(value: Any, path: str, length: int, convert: Callable[[Any, str], float]) -> tuple:
    if not isinstance(value, list):
        raise ContractError(path, f'expected a list of {length} numbers, got {_kind(value)}')
    if len(value) != length:
        raise ContractError(path, f'expected {length} numbers, got {len(value)}')
    return tuple(convert(v, f'{path}[{i}]') for i, v in enumerate(value))


def _one_of(options: Sequence[str], code: str = 'MALFORMED') -> Callable[[Any, str], str]:
    def convert(value: Any, path: str) -> str:
        text = _str(value, path)
        if text not in options:
            raise ContractError(path, f'{text!r} is not one of {", ".join(options)}', code)
        return text

    return convert


def _stamp(value: Any, path: str) -> Stamp:
    f = _Fields(value, path)
    sec = f.get('sec', _int)
    nanosec = f.get('nanosec', _int)
    f.done()
    if sec < 0 or sec >= 2**63 // 1_000_000_000:
        raise ContractError(f.sub('sec'), 'out of range')
    if not 0 <= nanosec < 1_000_000_000:
        raise ContractError(f.sub('nanosec'), 'must be in [0, 1e9)')
    return Stamp(sec, nanosec)


def _schema(f: _Fields, expected: str) -> None:
    schema = f.get('schema', _str)
    if schema != expected:
        raise ContractError(
            f.sub('schema'), f'unsupported schema {schema!r}, expected {expected!r}',
            'UNSUPPORTED_SCHEMA',
        )  # fmt: skip


def _target(value: Any, path: str, check_values: bool) -> Target:
    f = _Fields(value, path)
    frame_id = f.get('frame_id', _str)
    num = _finite if check_values else _number
    position = f.get('position', lambda v, p: _numbers(v, p, 3, num))
    orientation = f.get('orientation', lambda v, p: _numbers(v, p, 4, num))
    f.done()
    if check_values and not quaternion_is_unit(orientation):
        raise ContractError(f.sub('orientation'), 'not a unit quaternion', 'INVALID_POSE')
    return Target(frame_id, position, orientation)


def _step(value: Any, path: str, check_values: bool) -> Step:
    f = _Fields(value, path)
    task = f.get('task', _one_of(TASKS, 'TASK_NOT_ALLOWED') if check_values else _str)
    obj = f.get('object', _str)
    confidence = f.get('confidence', _finite if check_values else _number)
    if check_values and not 0.0 <= confidence <= 1.0:
        raise ContractError(f.sub('confidence'), 'must be in [0, 1]')
    target = f.get('target', lambda v, p: _target(v, p, check_values))
    num = _finite if check_values else _number
    pixel = f.get('pixel', lambda v, p: _numbers(v, p, 2, num), None)
    bbox = f.get('bbox', lambda v, p: _numbers(v, p, 4, num), None)
    f.done()
    if check_values and bbox is not None and (bbox[0] > bbox[2] or bbox[1] > bbox[3]):
        raise ContractError(f.sub('bbox'), 'must be [u0, v0, u1, v1] with u0 <= u1, v0 <= v1')
    return Step(task, obj, confidence, target, pixel, bbox)


def _model(value: Any, path: str) -> ModelInfo:
    f = _Fields(value, path)
    info = ModelInfo(f.get('name', _str), f.get('sha256', _str))
    f.done()
    return info


def decode_goal_proposal(
    data: str | bytes | Mapping[str, Any], *, check_values: bool = True
) -> GoalProposal:
    """Strictly decode ``robostral.goal_proposal/1`` (see the module docstring)."""
    f = _Fields(load_json(data), '')
    _schema(f, SCHEMA_GOAL_PROPOSAL)
    proposal_id = f.get('id', _nonempty_str)
    instruction_id = f.get('instruction_id', _str)
    operator = f.get('operator', _str)
    stamp = f.get('stamp', _stamp)
    image_stamp = f.get('image_stamp', _stamp)
    model = f.get('model', _model)
    raw_steps = f.get('steps', lambda v, p: v)
    f.done()
    if not isinstance(raw_steps, list):
        raise ContractError('steps', f'expected a list, got {_kind(raw_steps)}')
    if not 1 <= len(raw_steps) <= MAX_STEPS:
        raise ContractError('steps', f'must hold 1 to {MAX_STEPS} steps, got {len(raw_steps)}')
    steps = tuple(_step(s, f'steps[{i}]', check_values) for i, s in enumerate(raw_steps))
    return GoalProposal(proposal_id, instruction_id, operator, stamp, image_stamp, model, steps)


def peek_ids(data: str | bytes | Mapping[str, Any]) -> tuple[str, str]:
    """Best-effort ``(id, instruction_id)`` of a document that failed to decode.

    A malformed proposal still gets a verdict; this recovers whatever ids can be read
    (``""`` otherwise) without ever raising.
    """
    try:
        obj = load_json(data)
    except ContractError:
        return '', ''

    def readable(key: str) -> str:
        value = obj.get(key, '')
        return value if isinstance(value, str) and len(value) <= 256 else ''

    return readable('id'), readable('instruction_id')


def decode_verdict(data: str | bytes | Mapping[str, Any]) -> Verdict:
    f = _Fields(load_json(data), '')
    _schema(f, SCHEMA_VERDICT)
    verdict = Verdict(
        proposal_id=f.get('proposal_id', _str),
        instruction_id=f.get('instruction_id', _str),
        state=f.get('state', _one_of(VERDICT_STATES)),
        reasons=f.get('reasons', _reasons),
        detail=f.get('detail', _str),
        policy_version=f.get('policy_version', _str),
        latched=f.get('latched', _bool),
        stamp=f.get('stamp', _stamp),
    )
    approved = f.get('approved', _bool)
    f.done()
    if approved != verdict.approved:
        raise ContractError(
            'approved', f'must be {verdict.approved} when state is {verdict.state}'
        )
    if verdict.state == 'rejected' and not verdict.reasons:
        raise ContractError('reasons', 'a rejection must carry at least one reason code')
    if verdict.state == 'approved' and verdict.reasons:
        raise ContractError('reasons', 'an approval carries no reason codes')
    return verdict


def _reasons(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ContractError(path, f'expected a list, got {_kind(value)}')
    codes = tuple(_one_of(REASON_CODES)(v, f'{path}[{i}]') for i, v in enumerate(value))
    if len(set(codes)) != len(codes):
        raise ContractError(path, 'repeated reason code')
    return codes


def decode_instruction_status(data: str | bytes | Mapping[str, Any]) -> InstructionStatus:
    f = _Fields(load_json(data), '')
    _schema(f, SCHEMA_INSTRUCTION_STATUS)
    status = InstructionStatus(
        instruction_id=f.get('instruction_id', _str),
        state=f.get('state', _one_of(STATUS_STATES)),
        proposal_id=f.get('proposal_id', _str),
        detail=f.get('detail', _str),
        latency_ms=f.get('latency_ms', _finite),
    )
    f.done()
    if status.latency_ms < 0:
        raise ContractError('latency_ms', 'must not be negative')
    return status


def decode_execution_result(data: str | bytes | Mapping[str, Any]) -> ExecutionResult:
    f = _Fields(load_json(data), '')
    result = ExecutionResult(
        proposal_id=f.get('proposal_id', _str),
        status=f.get('status', _one_of(EXECUTION_STATUSES)),
        detail=f.get('detail', _str),
    )
    f.done()
    return result


def decode_operator_decision(data: str | bytes | Mapping[str, Any]) -> OperatorDecision:
    f = _Fields(load_json(data), '')
    decision = OperatorDecision(
        proposal_id=f.get('proposal_id', _nonempty_str),
        approve=f.get('approve', _bool),
        operator=f.get('operator', _str, ''),
    )
    f.done()
    return decision


def decode_instruction(data: str | bytes | Mapping[str, Any]) -> Instruction:
    """Decode the JSON form ``{"id", "text", "operator"}`` (``operator`` optional)."""
    f = _Fields(load_json(data), '')
    instruction = Instruction(
        id=f.get('id', _nonempty_str),
        text=f.get('text', _str),
        operator=f.get('operator', _str, ''),
    )
    f.done()
    return instruction


def parse_instruction(raw: str, make_id: Callable[[], str] = new_id) -> Instruction:
    """The instruction topic carries plain text or JSON; text that opens with ``{`` is JSON."""
    if raw.lstrip().startswith('{'):
        return decode_instruction(raw)
    return Instruction(id=make_id(), text=raw, operator='')


def _scene_object(value: Any, path: str) -> SceneObject:
    f = _Fields(value, path)
    obj = SceneObject(
        shape=f.get('shape', _one_of(SHAPES)),
        color=f.get('color', _one_of(COLORS)),
        xy=f.get('xy', lambda v, p: _numbers(v, p, 2, _finite)),
        yaw=f.get('yaw', _finite, 0.0),
    )
    f.done()
    return obj


def decode_scene(data: str | bytes | Mapping[str, Any]) -> Scene:
    """Decode a scene description (``{"objects": [...]}``) of the reference vocabulary."""
    return _scene_at(load_json(data), '')


def _scene_at(value: Any, path: str) -> Scene:
    f = _Fields(value, path)
    raw = f.get('objects', lambda v, p: v)
    f.done()
    where = f.sub('objects')
    if not isinstance(raw, list):
        raise ContractError(where, f'expected a list, got {_kind(raw)}')
    if len(raw) > MAX_SCENE_OBJECTS:
        raise ContractError(where, f'more than {MAX_SCENE_OBJECTS} objects')
    return Scene(tuple(_scene_object(o, f'{where}[{i}]') for i, o in enumerate(raw)))


def _object_ref(value: Any, path: str) -> ObjectRef:
    f = _Fields(value, path)
    ref = ObjectRef(shape=f.get('shape', _one_of(SHAPES)), color=f.get('color', _one_of(COLORS)))
    f.done()
    return ref


def _expect(value: Any, path: str) -> EvalExpect:
    f = _Fields(value, path)
    expect = EvalExpect(
        outcome=f.get('outcome', _one_of(EVAL_OUTCOMES)),
        task=f.get('task', _one_of(EVAL_TASKS)),
        object=f.get('object', _object_ref, None),
        bin=f.get('bin', _one_of(BINS), None),
    )
    f.done()
    if expect.task != 'home' and expect.object is None:
        raise ContractError(f.sub('object'), f'required for task {expect.task!r}')
    # The bin says where success puts the object; a case that must end not_found or
    # refused moves nothing, so its bin may be left out.
    if expect.task == 'pick_place' and expect.outcome == 'success' and expect.bin is None:
        raise ContractError(f.sub('bin'), "required for a 'pick_place' success")
    return expect


def decode_eval_case(data: str | bytes | Mapping[str, Any]) -> EvalCase:
    f = _Fields(load_json(data), '')
    case = EvalCase(
        scene=f.get('scene', _scene_at),
        instruction=f.get('instruction', _nonempty_str),
        expect=f.get('expect', _expect),
        id=f.get('id', _str, ''),
    )
    f.done()
    return case
