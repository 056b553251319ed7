"""The agent core: instruction + RGB-D frame -> goal proposal, or a status that says why not.

Pure Python (no rclpy): the node converts messages, calls :func:`screen` in its
callback (cheap: validation and stop intent, never the model) and :meth:`Agent.plan` on its
worker thread, and publishes what comes back. Every way an instruction can fail ends in an
:class:`Outcome` with a status state of ``robostral.instruction_status/1`` and a reason code
that starts the status ``detail``:

=========================  ================  =============================================
reason                     state             when
=========================  ================  =============================================
``STOP_INTENT``            stopped           stop word in the text (no model involved)
``MALFORMED_INSTRUCTION``  rejected_input    JSON instruction that does not decode
``EMPTY_INSTRUCTION``      rejected_input    empty or blank text
``INSTRUCTION_TOO_LONG``   rejected_input    longer than the limit (500 by default)
``NON_PRINTABLE``          rejected_input    control or other non-printable characters
``NOT_UNDERSTOOD``         rejected_input    detection-only model and no task recognised
``NO_FRAME`` ...           error             frame reasons of :mod:`.frames`
``MODEL_ERROR``            error             the model raised
``MODEL_TIMEOUT``          error             the model ran past ``inference_timeout_s``
``UNPARSABLE_OUTPUT``      error             the answer does not follow the format
``BOX_INVALID`` ...        error             box reasons of :mod:`.grounding`
``INVALID_PLAN``           error             the plan cannot be encoded (non-finite values)
``NOT_FOUND``              not_found         the model found nothing matching
``NO_DEPTH``               not_found         too little valid depth at a target
``NO_OBJECT``              not_found         nothing stands in an object's box (by depth)
=========================  ================  =============================================
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from robostral_agent.contract import (
    ContractError,
    GoalProposal,
    Instruction,
    ModelInfo,
    Stamp,
    Step,
    encode,
    new_id,
    parse_instruction,
    peek_ids,
)
from robostral_agent.vlm import grounding
from robostral_agent.vlm.backend import Backend, Generation
from robostral_agent.vlm.errors import ReasonError
from robostral_agent.vlm.formats import (
    FormatError,
    ParsedPlan,
    ParsedStep,
    parse_json_v1,
    parse_paligemma_loc,
    parse_robostral_v1,
)
from robostral_agent.vlm.frames import Frame, FrameError, check_age
from robostral_agent.vlm.grounding import Grounded, GroundingConfig, GroundingError
from robostral_agent.vlm.intent import IntentStep, interpret, is_stop_intent
from robostral_agent.vlm.model_card import reference_labels

STOP_INTENT: Final = 'STOP_INTENT'
MALFORMED_INSTRUCTION: Final = 'MALFORMED_INSTRUCTION'
EMPTY_INSTRUCTION: Final = 'EMPTY_INSTRUCTION'
INSTRUCTION_TOO_LONG: Final = 'INSTRUCTION_TOO_LONG'
NON_PRINTABLE: Final = 'NON_PRINTABLE'
NOT_UNDERSTOOD: Final = 'NOT_UNDERSTOOD'
MODEL_ERROR: Final = 'MODEL_ERROR'
MODEL_TIMEOUT: Final = 'MODEL_TIMEOUT'
UNPARSABLE_OUTPUT: Final = 'UNPARSABLE_OUTPUT'
INVALID_PLAN: Final = 'INVALID_PLAN'
NOT_FOUND: Final = 'NOT_FOUND'

_NOT_FOUND_CODES: Final = (NOT_FOUND, grounding.NO_DEPTH, grounding.NO_OBJECT)


@dataclass(frozen=True)
class AgentConfig:
    """The core's settings (the node's parameters of the same names)."""

    grounding: GroundingConfig
    max_frame_age_s: float = 2.0
    inference_timeout_s: float = 10.0


@dataclass(frozen=True)
class Screened:
    """The callback's verdict on a raw instruction: ``accepted``, ``stopped`` or rejected."""

    instruction_id: str
    state: str  # 'accepted' | 'stopped' | 'rejected_input'
    instruction: Instruction | None = None
    reason: str = ''
    message: str = ''

    @property
    def detail(self) -> str:
        return f'{self.reason}: {self.message}' if self.reason else ''


@dataclass
class Outcome:
    """What one instruction came to; ``detail`` opens with the reason code, if any."""

    state: str  # 'proposed' | 'not_found' | 'error' | 'rejected_input'
    reason: str = ''
    message: str = ''
    proposal: GoalProposal | None = None
    parsed: ParsedPlan | None = None
    grounded: tuple[Grounded, ...] = ()
    confidences: tuple[float, ...] = ()
    text: str = ''
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def detail(self) -> str:
        if self.reason:
            return f'{self.reason}: {self.message}'
        return self.message


class _PlanFailedError(ReasonError):
    """Internal: ends :meth:`Agent.plan` early with a status state and a reason."""

    def __init__(self, state: str, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.state = state


def _fail_from(exc: ReasonError) -> _PlanFailedError:
    state = 'not_found' if exc.code in _NOT_FOUND_CODES else 'error'
    return _PlanFailedError(state, exc.code, exc.message)


def screen(raw: str, max_chars: int, make_id: Callable[[], str] = new_id) -> Screened:
    """Decode, check stop intent first (always allowed), then validate the text.

    Cheap and model-free, so the node runs it in its subscription callback in every
    lifecycle state: a stop must work even while the model is loading.
    """
    try:
        instruction = parse_instruction(raw, make_id)
    except ContractError as exc:
        instruction_id = peek_ids(raw)[0]
        if is_stop_intent(raw):
            return Screened(instruction_id, 'stopped', None, STOP_INTENT, 'stop requested')
        return Screened(instruction_id, 'rejected_input', None, MALFORMED_INSTRUCTION, str(exc))
    text = instruction.text
    if is_stop_intent(text):
        return Screened(instruction.id, 'stopped', instruction, STOP_INTENT, 'stop requested')
    reason, message = '', ''
    if not text.strip():
        reason, message = EMPTY_INSTRUCTION, 'the instruction is empty'
    elif len(text) > max_chars:
        reason, message = INSTRUCTION_TOO_LONG, f'{len(text)} characters, at most {max_chars}'
    elif not text.isprintable():
        bad = next(c for c in text if not c.isprintable())
        reason, message = NON_PRINTABLE, f'non-printable character U+{ord(bad):04X}'
    if reason:
        return Screened(instruction.id, 'rejected_input', instruction, reason, message)
    return Screened(instruction.id, 'accepted', instruction)


def format_timings(timings_ms: dict[str, float]) -> str:
    """``timings_ms: convert=0.4 preprocess=3.1 ...`` (stable order, one decimal)."""
    return 'timings_ms: ' + ' '.join(f'{k}={v:.1f}' for k, v in timings_ms.items())


class Agent:
    """Holds the backend and the settings; one instruction at a time (the node serialises)."""

    def __init__(self, backend: Backend, config: AgentConfig) -> None:
        self.backend = backend
        self.config = config
        self.labels = backend.card.labels or tuple(reference_labels())
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='vlm')
        self._running: concurrent.futures.Future[Generation] | None = None

    @property
    def model(self) -> ModelInfo:
        return ModelInfo(self.backend.name, self.backend.sha256)

    def close(self) -> None:
        """Release the inference thread (a generation still running finishes on its own)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- on the worker thread ------------------------------------------------------------------

    def plan(
        self, instruction: Instruction, get_frame: Callable[[], Frame], now: Stamp
    ) -> Outcome:
        """Run the whole chain for one accepted instruction; never raises for bad input."""
        outcome = Outcome('error')
        timings = outcome.timings_ms
        try:
            t0 = time.perf_counter()
            try:
                frame = get_frame()
                check_age(frame.stamp, now, self.config.max_frame_age_s)
            except FrameError as exc:
                raise _fail_from(exc) from exc
            timings['convert'] = (time.perf_counter() - t0) * 1e3
            self._run(instruction, frame, now, outcome)
        except _PlanFailedError as failed:
            outcome.state, outcome.reason, outcome.message = (
                failed.state,
                failed.code,
                failed.message,
            )
        return outcome

    def _run(self, instruction: Instruction, frame: Frame, now: Stamp, outcome: Outcome) -> None:
        card = self.backend.card
        skeleton: tuple[IntentStep, ...] = ()
        if card.output_format == 'paligemma_loc':
            skeleton = interpret(instruction.text, self.labels)
            if not skeleton:
                raise _PlanFailedError(
                    'rejected_input', NOT_UNDERSTOOD, 'no task recognised for a detection model'
                )
        targets = tuple(dict.fromkeys(s.label for s in skeleton if s.label))
        generation = None
        if card.output_format != 'paligemma_loc' or targets:
            generation = self._generate(frame, card.prompt(instruction.text, targets), outcome)
            outcome.text = generation.text
        t0 = time.perf_counter()
        plan = self._parse(generation, skeleton, frame)
        outcome.timings_ms['parse'] = (time.perf_counter() - t0) * 1e3
        outcome.parsed = plan
        if not plan.found:
            raise _PlanFailedError('not_found', NOT_FOUND, 'the model found nothing matching')
        t0 = time.perf_counter()
        steps = []
        height, width = frame.color.shape[:2]
        for parsed in plan.steps:
            box = None if parsed.box is None else card.box_to_frame(parsed.box, width, height)
            try:
                found = grounding.ground(
                    parsed.task,
                    parsed.label,
                    box,
                    frame.depth,
                    frame.intrinsics,
                    self.config.grounding,
                )
            except GroundingError as exc:
                raise _fail_from(exc) from exc
            # Steps read from the operator's own words (a detection model's `home`) are certain.
            spans = parsed.spans
            confidence = generation.confidence(spans) if generation and spans else 1.0
            outcome.grounded += (found,)
            outcome.confidences += (confidence,)
            steps.append(
                Step(parsed.task, parsed.label, confidence, found.target, found.pixel, found.bbox)
            )
        outcome.timings_ms['ground'] = (time.perf_counter() - t0) * 1e3
        proposal = GoalProposal(
            id=new_id(),
            instruction_id=instruction.id,
            operator=instruction.operator,
            stamp=now,
            image_stamp=frame.stamp,
            model=self.model,
            steps=tuple(steps),
        )
        try:
            encode(proposal)
        except ContractError as exc:
            raise _PlanFailedError('error', INVALID_PLAN, str(exc)) from exc
        outcome.state, outcome.proposal = 'proposed', proposal
        outcome.message = ', '.join(f'{s.task} {s.object}'.strip() for s in steps)

    def _generate(self, frame: Frame, prompt: str, outcome: Outcome) -> Generation:
        """The backend call on its own thread, bounded by ``inference_timeout_s``.

        The backend gets the same deadline (``max_time``) and normally returns by itself; the
        hard bound here covers a backend that hangs. A call still running is never stacked
        on: the next instruction is answered ``MODEL_TIMEOUT`` until it ends.
        """
        timeout = self.config.inference_timeout_s
        if self._running is not None and not self._running.done():
            raise _PlanFailedError(
                'error', MODEL_TIMEOUT, 'the model is still busy with a timed-out call'
            )
        self._running = self._pool.submit(self.backend.generate, frame.color, prompt, timeout)
        try:
            generation = self._running.result(timeout=timeout + 1.0)
        except concurrent.futures.TimeoutError as exc:
            raise _PlanFailedError(
                'error', MODEL_TIMEOUT, f'no answer within {timeout} s'
            ) from exc
        except Exception as exc:  # any failure of a model is an error status, never a crash
            raise _PlanFailedError('error', MODEL_ERROR, f'{type(exc).__name__}: {exc}') from exc
        outcome.timings_ms['preprocess'] = generation.preprocess_ms
        outcome.timings_ms['generate'] = generation.generate_ms
        outcome.timings_ms['decode'] = generation.decode_ms
        if generation.timed_out:
            raise _PlanFailedError('error', MODEL_TIMEOUT, f'generation ran past {timeout} s')
        return generation

    def _parse(
        self,
        generation: Generation | None,
        skeleton: tuple[IntentStep, ...],
        frame: Frame,
    ) -> ParsedPlan:
        card = self.backend.card
        if generation is None:  # a detection model asked only to go home: nothing to detect
            return ParsedPlan(tuple(ParsedStep(s.task, s.label, None, ()) for s in skeleton))
        text = generation.text
        try:
            if card.output_format == 'robostral_v1':
                return parse_robostral_v1(text, card.labels)
            if card.output_format == 'json_v1':
                height, width = frame.color.shape[:2]
                return parse_json_v1(
                    text,
                    card.labels,
                    box_format=card.box_format,
                    box_scale=card.box_scale,
                    image_size=card.view_size(width, height),
                )
            detections = parse_paligemma_loc(text, card.labels)
        except FormatError as exc:
            cut = '' if generation.finished else ' (cut at max_new_tokens or the time limit)'
            raise _PlanFailedError(
                'error', UNPARSABLE_OUTPUT, f'{exc}{cut}; output {text!r:.120}'
            ) from exc
        return _with_detections(skeleton, detections, generation)


def _with_detections(
    skeleton: tuple[IntentStep, ...], detections: ParsedPlan, generation: Generation
) -> ParsedPlan:
    """Give each skeleton step the most confident detection of its label."""
    steps = []
    for step in skeleton:
        if not step.label:
            steps.append(ParsedStep(step.task, '', None, ()))
            continue
        candidates = [d for d in detections.steps if d.label == step.label]
        if not candidates:
            raise _PlanFailedError('not_found', NOT_FOUND, f'no {step.label!r} detected')
        best = max(candidates, key=lambda d: generation.confidence(d.spans))
        steps.append(ParsedStep(step.task, step.label, best.box, best.spans))
    return ParsedPlan(tuple(steps))
