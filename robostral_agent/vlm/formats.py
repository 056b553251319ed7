"""The three output formats a model may speak, and their strict parsers.

Every parser turns model text into one :class:`ParsedPlan` or raises :class:`FormatError`
(and nothing else, whatever the text: a hypothesis test holds them to that). Boxes come out
as fractions of the image the model saw, ``(x0, y0, x1, y1)``, so grounding never needs to
know which format produced them. Each step also carries the character spans of its box and
label in the text: the backend's per-token probabilities over exactly those characters give
the step's confidence.

* ``robostral_v1`` (DESIGN.md): ``none`` | step (`` ; `` step)*, step = task, four
  ``<locNNNN>`` tokens (``y0 x0 y1 x1`` on a 0..1023 grid, value/1024 of the image size,
  PaliGemma's convention) and a label; ``home`` alone takes no box.
* ``json_v1``: a JSON list of ``{"task", "object", "bbox": [x0, y0, x1, y1]}`` (``home``:
  ``{"task": "home"}``), optionally inside a Markdown code fence as chat models write it;
  ``[]`` means nothing found. Qwen's own key names ``label`` and ``bbox_2d`` are accepted.
* ``paligemma_loc``: PaliGemma ``detect`` answers, detections separated by `` ; ``, each four
  ``<locNNNN>`` and a label; the empty answer means nothing found. They carry no task: the
  agent takes the tasks from the instruction (see :mod:`robostral_agent.vlm.intent`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from robostral_agent.contract import MAX_STEPS, TASKS

LOC_GRID: Final = 1024
LOC_TOKENS: Final = tuple(f'<loc{i:04d}>' for i in range(LOC_GRID))  # in grid order
BOX_TASKS: Final = tuple(t for t in TASKS if t != 'home')
SEPARATOR: Final = ' ; '
NONE: Final = 'none'
DETECT: Final = 'detect'

Box = tuple[float, float, float, float]
Span = tuple[int, int]

_LABEL = r'[a-z][a-z0-9_-]*(?: [a-z][a-z0-9_-]*)*'
_LOCS = r'<loc(\d{4})><loc(\d{4})><loc(\d{4})><loc(\d{4})>'
_STEP_RE: Final = re.compile(
    rf'(?P<task>{"|".join(BOX_TASKS)}) (?P<box>{_LOCS}) (?P<label>{_LABEL})'
)
_DETECTION_RE: Final = re.compile(rf'(?P<box>{_LOCS}) (?P<label>{_LABEL})')
_FENCE_RE: Final = re.compile(r'\A\s*```(?:json)?[ \t]*\n(?P<body>.*?)\n?```\s*\Z', re.DOTALL)
_MAX_TEXT: Final = 16384


class FormatError(ValueError):
    """Model output does not follow its declared format; the message says where and why."""


@dataclass(frozen=True, slots=True)
class ParsedStep:
    """One step as the model wrote it: task, label, box as image fractions, text spans."""

    task: str
    label: str
    box: Box | None
    spans: tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class ParsedPlan:
    """The whole answer; no steps means the model found nothing (``none``, ``[]``, empty)."""

    steps: tuple[ParsedStep, ...]

    @property
    def found(self) -> bool:
        return bool(self.steps)


def _bounded(text: str) -> None:
    if not isinstance(text, str):
        raise FormatError(f'expected text, got {type(text).__name__}')
    if len(text) > _MAX_TEXT:
        raise FormatError(f'output longer than {_MAX_TEXT} characters')


def _check_label(label: str, labels: Sequence[str]) -> None:
    if labels and label not in labels:
        raise FormatError(f'unknown label {label!r}')


def _loc_box(match: re.Match[str], group: str) -> Box:
    """``y0 x0 y1 x1`` loc values -> ``(x0, y0, x1, y1)`` fractions (value / 1024)."""
    start = match.start(group)
    values = [int(v) for v in re.findall(r'\d{4}', match.group(group))]
    for i, v in enumerate(values):
        if v >= LOC_GRID:
            raise FormatError(f'<loc{v:04d}> at {start + 9 * i} is beyond the 0..1023 grid')
    y0, x0, y1, x1 = (v / LOC_GRID for v in values)
    return (x0, y0, x1, y1)


def _pieces(text: str) -> list[tuple[str, int]]:
    """Split on `` ; `` keeping each piece's offset in ``text``."""
    out, start = [], 0
    while True:
        end = text.find(SEPARATOR, start)
        if end < 0:
            out.append((text[start:], start))
            return out
        out.append((text[start:end], start))
        start = end + len(SEPARATOR)


def _stripped(text: str) -> tuple[str, int]:
    body = text.strip()
    return body, (text.find(body) if body else 0)


def _loc_step(match: re.Match[str], at: int, task: str, labels: Sequence[str]) -> ParsedStep:
    """A step from a ``<loc>x4 label`` match at offset ``at``; spans: the box and the label."""
    label = match.group('label')
    _check_label(label, labels)
    spans = (
        (at + match.start('box'), at + match.end('box')),
        (at + match.start('label'), at + match.end('label')),
    )
    return ParsedStep(task, label, _loc_box(match, 'box'), spans)


def _plan(steps: list[ParsedStep]) -> ParsedPlan:
    if len(steps) > MAX_STEPS:
        raise FormatError(f'{len(steps)} steps, at most {MAX_STEPS} allowed')
    return ParsedPlan(tuple(steps))


def parse_robostral_v1(text: str, labels: Sequence[str] = ()) -> ParsedPlan:
    """Strict ``robostral_v1``; ``labels`` (if given) is the closed vocabulary."""
    _bounded(text)
    body, offset = _stripped(text)
    if body == NONE:
        return ParsedPlan(())
    if not body:
        raise FormatError('empty output')
    steps = []
    for piece, start in _pieces(body):
        at = offset + start
        if piece == 'home':
            steps.append(ParsedStep('home', '', None, ((at, at + len(piece)),)))
            continue
        match = _STEP_RE.fullmatch(piece)
        if match is None:
            raise FormatError(f'step at {at} is not "task <loc>x4 label" or "home": {piece!r}')
        steps.append(_loc_step(match, at, match.group('task'), labels))
    return _plan(steps)


def parse_paligemma_loc(text: str, labels: Sequence[str] = ()) -> ParsedPlan:
    """PaliGemma ``detect`` output: detections as steps with task ``detect``."""
    _bounded(text)
    body, offset = _stripped(text)
    if not body:
        return ParsedPlan(())
    detections = []
    for piece, start in _pieces(body):
        at = offset + start
        match = _DETECTION_RE.fullmatch(piece)
        if match is None:
            raise FormatError(f'detection at {at} is not "<loc>x4 label": {piece!r}')
        detections.append(_loc_step(match, at, DETECT, labels))
    return _plan(detections)


# --- json_v1 -----------------------------------------------------------------------------------


def _array_elements(text: str, start: int) -> tuple[list[tuple[Any, int, int]], int]:
    """The elements of the JSON list opening at ``text[start]``, with spans, and its end.

    ``json`` gives no positions, so the list is walked here element by element with
    ``raw_decode`` (which does the real JSON parsing); only ``[``, ``,`` and ``]`` and
    whitespace are read by hand.
    """
    decoder = json.JSONDecoder()
    out: list[tuple[Any, int, int]] = []
    i = _skip_ws(text, start + 1)
    if text.startswith(']', i):
        return out, i + 1
    while True:
        try:
            value, end = decoder.raw_decode(text, i)
        except (ValueError, RecursionError) as exc:
            raise FormatError(f'invalid JSON at {i}: {exc}') from exc
        out.append((value, i, end))
        i = _skip_ws(text, end)
        if i >= len(text):
            raise FormatError('unterminated JSON list')
        if text[i] == ']':
            return out, i + 1
        if text[i] != ',':
            raise FormatError(f'expected "," or "]" at {i}, got {text[i]!r}')
        i = _skip_ws(text, i + 1)


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in ' \t\n\r':
        i += 1
    return i


def _json_box(
    raw: Any, box_format: str, box_scale: float, image_size: tuple[int, int] | None
) -> Box:
    if not isinstance(raw, list) or len(raw) != 4:
        raise FormatError(f'bbox must be 4 numbers, got {raw!r:.60}')
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
        raise FormatError('bbox values must be numbers')
    values = [float(v) for v in raw]
    if not all(math.isfinite(v) for v in values):
        raise FormatError('bbox values must be finite')
    if box_format == 'absolute':
        if image_size is None:
            raise FormatError('absolute boxes need the image size')
        w, h = image_size
        return (values[0] / w, values[1] / h, values[2] / w, values[3] / h)
    return tuple(v / box_scale for v in values)  # type: ignore[return-value]


def parse_json_v1(
    text: str,
    labels: Sequence[str] = (),
    *,
    box_format: str = 'normalised',
    box_scale: float = 1000.0,
    image_size: tuple[int, int] | None = None,
) -> ParsedPlan:
    """Strict ``json_v1``; ``image_size`` (width, height) is needed for absolute boxes."""
    _bounded(text)
    fence = _FENCE_RE.match(text)
    body_start = fence.start('body') if fence else 0
    body_end = fence.end('body') if fence else len(text)
    i = _skip_ws(text[:body_end], body_start)
    if not text.startswith('[', i) or i >= body_end:
        raise FormatError('expected a JSON list of steps')
    elements, close = _array_elements(text[:body_end], i)
    if text[close:body_end].strip():
        raise FormatError(f'unexpected text after the JSON list at {close}')
    if len(elements) > MAX_STEPS:  # before the per-step work
        raise FormatError(f'{len(elements)} steps, at most {MAX_STEPS} allowed')
    return _plan(
        [
            _json_step(item, n, (start, end), labels, box_format, box_scale, image_size)
            for n, (item, start, end) in enumerate(elements)
        ]
    )


def _json_step(
    item: Any,
    n: int,
    span: Span,
    labels: Sequence[str],
    box_format: str,
    box_scale: float,
    image_size: tuple[int, int] | None,
) -> ParsedStep:
    if not isinstance(item, dict):
        raise FormatError(f'step {n} is not an object')
    aliases = {'label': 'object', 'bbox_2d': 'bbox'}
    step: dict[str, Any] = {}
    for key, value in item.items():
        name = aliases.get(key, key)
        if name not in ('task', 'object', 'bbox') or name in step:
            raise FormatError(f'step {n}: unexpected or repeated key {key!r:.40}')
        step[name] = value
    task = step.get('task')
    if task not in TASKS:
        raise FormatError(f'step {n}: task {task!r:.40} is not one of {", ".join(TASKS)}')
    if task == 'home':
        if 'bbox' in step:
            raise FormatError(f'step {n}: home takes no bbox')
        return ParsedStep('home', '', None, (span,))
    label = step.get('object')
    if not isinstance(label, str) or not re.fullmatch(_LABEL, label):
        raise FormatError(f'step {n}: object must be a lower-case label, got {label!r:.40}')
    _check_label(label, labels)
    if 'bbox' not in step:
        raise FormatError(f'step {n}: missing bbox')
    return ParsedStep(
        task, label, _json_box(step['bbox'], box_format, box_scale, image_size), (span,)
    )
