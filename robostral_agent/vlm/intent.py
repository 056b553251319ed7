"""Stop intent, and the task skeleton of an instruction for detection-only models.

Stop intent is decided here, without any model: "stop", "halt", "freeze" or "emergency" as a
whole word, in any case, anywhere in the text. Stopping is always allowed, so this is
deliberately broad ("don't stop" stops too).

Models that speak ``paligemma_loc`` only detect; they cannot say what to do. For them the
agent reads the tasks from the instruction with the small rule set below (verbs and the
labels of the closed vocabulary, in the order they appear) and asks the model only where the
named things are. Models that write plans (``robostral_v1``, ``json_v1``) never use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

STOP_WORDS: Final = ('stop', 'halt', 'freeze', 'emergency')
_STOP_RE: Final = re.compile(r'\b(?:' + '|'.join(STOP_WORDS) + r')\b', re.IGNORECASE)

_PLACE_VERBS: Final = r'put|place|drop|move|bring|transfer|sort|throw|toss|stash|carry'
_PICK_VERBS: Final = r'pick|grab|take|lift|grasp|get|fetch|collect'
_INSPECT_VERBS: Final = r'inspect|look|check|examine|view|show'
_MOVE_TO_PHRASES: Final = r'move (?:above|over|to)|go (?:above|over|to)|hover|approach|point'
_HOME_RE: Final = re.compile(r'\b(?:home|rest|park)\b')


def is_stop_intent(text: str) -> bool:
    """Whether the text asks the cell to stop (see the module docstring)."""
    return _STOP_RE.search(text) is not None


@dataclass(frozen=True, slots=True)
class IntentStep:
    task: str
    label: str  # '' for home


def _mentions(text: str, labels: Sequence[str]) -> list[str]:
    """Labels named in the text, in order of appearance (longest label wins at a position)."""
    found: list[tuple[int, int, str]] = []
    for label in labels:
        for match in re.finditer(r'\b' + re.escape(label) + r'\b', text):
            found.append((match.start(), -len(label), label))
    out: list[str] = []
    end = -1
    for start, neg_len, label in sorted(found):
        if start >= end:
            out.append(label)
            end = start - neg_len
    return out


def interpret(text: str, labels: Sequence[str]) -> tuple[IntentStep, ...]:
    """The task skeleton of an instruction; ``()`` when the rules do not understand it."""
    words = re.sub(r'[^a-z0-9_ -]+', ' ', text.lower())
    words = ' '.join(words.split())
    mentioned = _mentions(words, labels)
    objects = [m for m in mentioned if not m.endswith(' bin')]
    bins = [m for m in mentioned if m.endswith(' bin')]

    def has(verbs: str) -> bool:
        return re.search(rf'\b(?:{verbs})\b', words) is not None

    if objects and bins and has(_PLACE_VERBS):
        return (IntentStep('pick', objects[0]), IntentStep('place', bins[0]))
    if mentioned and has(_MOVE_TO_PHRASES):
        return (IntentStep('move_to', mentioned[0]),)
    if mentioned and has(_INSPECT_VERBS):
        return (IntentStep('inspect', mentioned[0]),)
    if objects and has(_PICK_VERBS):
        return (IntentStep('pick', objects[0]),)
    if not mentioned and _HOME_RE.search(words):
        return (IntentStep('home', ''),)
    return ()
