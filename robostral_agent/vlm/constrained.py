"""Grammar-constrained decoding (xgrammar): the model can only write what its format admits.

Each output format becomes an xgrammar grammar compiled once per model against its
tokenizer; every ``generate`` call gets a fresh logits processor (it keeps matcher state),
which masks the logits of every token the grammar forbids at that point. Even a randomly
initialised model then produces text that parses.

* ``robostral_v1`` and ``paligemma_loc`` are built as structural tags from token formats,
  so a box coordinate is exactly one ``<locNNNN>`` token (a plain EBNF grammar works on
  strings and would also admit ``<loc0001>`` spelled out in pieces).
* ``json_v1`` is a JSON schema (fixed key order, ``, `` / ``: `` separators, no free
  whitespace) so its length is bounded.

Box corners come in ``y0 x0 y1 x1`` order and must be ordered (``y1 >= y0``, ``x1 >= x0``). A
regular grammar over 1024 values per coordinate that says so would be enormous, so a small
logits processor, :class:`OrderedCorners`, runs after the grammar's and forbids a far corner
below its near one.

The grammars bound the number of steps (``max_steps`` of the model card). A grammar still
needs enough ``max_new_tokens`` to finish: :func:`worst_case_tokens` gives an upper bound
(every character its own token), and the backend warns at load when the card allows less.
"""

from __future__ import annotations

import json
from typing import Any, Final

from robostral_agent.vlm.formats import BOX_TASKS, LOC_TOKENS, NONE, SEPARATOR
from robostral_agent.vlm.model_card import ModelCard

# When a card declares no closed vocabulary: up to three lower-case words of 16 characters.
OPEN_LABEL_REGEX: Final = r'[a-z][a-z0-9_-]{0,15}( [a-z][a-z0-9_-]{0,15}){0,2}'
OPEN_LABEL_MAX_CHARS: Final = 50


def _label_format(labels: tuple[str, ...]) -> dict[str, Any]:
    if labels:
        return {'type': 'or', 'elements': [{'type': 'const_string', 'value': v} for v in labels]}
    return {'type': 'regex', 'pattern': OPEN_LABEL_REGEX}


def _loc_format() -> dict[str, Any]:
    return {
        'type': 'or',
        'elements': [{'type': 'token', 'token': token} for token in LOC_TOKENS],
    }


def _separated(item: dict[str, Any], max_items: int) -> dict[str, Any]:
    """``item ( ' ; ' item ){0, max_items - 1}``."""
    elements = [item]
    if max_items > 1:
        more = {'type': 'sequence', 'elements': [_const(SEPARATOR), item]}
        elements.append({'type': 'repeat', 'min': 0, 'max': max_items - 1, 'content': more})
    return {'type': 'sequence', 'elements': elements}


def _const(value: str) -> dict[str, Any]:
    return {'type': 'const_string', 'value': value}


def robostral_v1_tag(labels: tuple[str, ...], max_steps: int) -> dict[str, Any]:
    """``none`` | step ( `` ; `` step ){0, max_steps-1} as an xgrammar structural tag."""
    loc, label = _loc_format(), _label_format(labels)
    boxed = [
        {
            'type': 'sequence',
            'elements': [_const(f'{task} '), loc, loc, loc, loc, _const(' '), label],
        }
        for task in BOX_TASKS
    ]
    step = {'type': 'or', 'elements': [*boxed, _const('home')]}
    root = {'type': 'or', 'elements': [_const(NONE), _separated(step, max_steps)]}
    return {'type': 'structural_tag', 'format': root}


def paligemma_loc_tag(labels: tuple[str, ...], max_steps: int) -> dict[str, Any]:
    """Zero to ``max_steps`` detections ``<loc>x4 label`` separated by `` ; ``."""
    loc = _loc_format()
    detection = {
        'type': 'sequence',
        'elements': [loc, loc, loc, loc, _const(' '), _label_format(labels)],
    }
    root = {'type': 'optional', 'content': _separated(detection, max_steps)}
    return {'type': 'structural_tag', 'format': root}


def _box_limits(card: ModelCard) -> list[int]:
    """Largest value of each ``json_v1`` box coordinate ``[x0, y0, x1, y1]``."""
    if card.box_format == 'normalised':
        return [int(card.box_scale)] * 4
    if card.image_size is not None or card.image_crop is not None:
        w, h = card.view_size(8192, 8192)
        return [w, h, w, h]
    return [8192] * 4  # camera size unknown at load: any pixel value up to 8192


def json_v1_schema(card: ModelCard) -> dict[str, Any]:
    """JSON schema of a ``json_v1`` answer under this card's box convention."""
    coordinate = [{'type': 'integer', 'minimum': 0, 'maximum': m} for m in _box_limits(card)]
    label: dict[str, Any] = (
        {'type': 'string', 'enum': list(card.labels)}
        if card.labels
        else {'type': 'string', 'pattern': f'^{OPEN_LABEL_REGEX}$'}
    )
    boxed = {
        'type': 'object',
        'properties': {
            'task': {'type': 'string', 'enum': list(BOX_TASKS)},
            'object': label,
            'bbox': {
                'type': 'array',
                'prefixItems': coordinate,
                'minItems': 4,
                'maxItems': 4,
                'items': False,
            },
        },
        'required': ['task', 'object', 'bbox'],
        'additionalProperties': False,
    }
    home = {
        'type': 'object',
        'properties': {'task': {'type': 'string', 'const': 'home'}},
        'required': ['task'],
        'additionalProperties': False,
    }
    return {'type': 'array', 'items': {'anyOf': [boxed, home]}, 'maxItems': card.max_steps}


def worst_case_tokens(card: ModelCard) -> int:
    """An upper bound on the tokens a constrained answer (and its stop token) can take.

    Assumes the worst tokenisation, one character per token, except that a ``<locNNNN>``
    is always one token; the bound is reached by the longest task and label.
    """
    label = max((len(v) for v in card.labels), default=OPEN_LABEL_MAX_CHARS)
    n = card.max_steps
    if card.output_format == 'robostral_v1':
        step = max(len(t) for t in BOX_TASKS) + 1 + 4 + 1 + label
        return max(len(NONE), n * step + (n - 1) * len(SEPARATOR)) + 1
    if card.output_format == 'paligemma_loc':
        return n * (4 + 1 + label) + (n - 1) * len(SEPARATOR) + 1
    longest = {
        'task': max(BOX_TASKS, key=len),
        'object': 'x' * label,
        'bbox': [max(_box_limits(card))] * 4,
    }
    return len(json.dumps([longest] * n)) + 1


class GrammarConstraint:
    """A format's grammar compiled for one tokenizer; hands out one logits processor per call."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int], card: ModelCard
    ):
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        if card.output_format == 'robostral_v1':
            tag = robostral_v1_tag(card.labels, card.max_steps)
            self._compiled = compiler.compile_structural_tag(json.dumps(tag))
        elif card.output_format == 'paligemma_loc':
            tag = paligemma_loc_tag(card.labels, card.max_steps)
            self._compiled = compiler.compile_structural_tag(json.dumps(tag))
        else:
            self._compiled = compiler.compile_json_schema(
                json.dumps(json_v1_schema(card)),
                any_whitespace=False,
                separators=(', ', ': '),
            )
        self.worst_case_tokens = worst_case_tokens(card)

    def logits_processor(self) -> Any:
        """A fresh processor for one ``generate`` call (xgrammar's matcher keeps state)."""
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self._compiled)


class OrderedCorners:
    """Logits processor: a box's far corner is never before its near one.

    In ``<loc>`` formats a box is ``y0 x0 y1 x1``: the third and fourth loc tokens of a box
    are each compared with the loc token two places before them, and every loc value below it
    is masked (equal is allowed: a one-cell box is ordered). Without it a small model
    sometimes writes ``y1 < y0``, an answer that parses and then fails grounding
    (``BOX_INVALID``). Hand-written: xgrammar has no arithmetic constraints between tokens.
    """

    def __init__(self, loc_ids: Any, grid_of: Any) -> None:
        self.loc_ids = loc_ids  # (LOC_GRID,) token ids in grid order
        self.grid_of = grid_of  # (vocab,) grid index of each token id, -1 for other tokens

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        tail = self.grid_of[input_ids[:, -4:].clamp(max=len(self.grid_of) - 1)]
        for row in range(input_ids.shape[0]):
            run = 0  # loc tokens at the end of this row (at most 4 counted)
            while run < tail.shape[1] and tail[row, -1 - run] >= 0:
                run += 1
            if run in (2, 3):
                near = int(tail[row, -2])
                scores[row, self.loc_ids[:near]] = float('-inf')
        return scores
