"""The instruction grammar of robostral-tiny's training data, with held-out splits.

Instructions are generated from templates so that every one has an exact meaning (a
:class:`Command`) and therefore an exact target plan. Breadth matters more than realism: many
verbs, word orders, politeness wrappers, synonyms for shapes and bins, and references by
colour or shape alone when that is unambiguous in the scene. A fixed set of phrasings and of
colour-shape combinations is held out: training never sees them, the evaluation reports them
separately, so the figures say how far the model generalises beyond what it memorised.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from robostral_agent.contract import BINS, COLORS, SHAPES, SceneObject

KINDS: Final = ('pick_place', 'pick', 'inspect', 'move_to', 'home')

# Colour-shape combinations that never appear in training scenes or instructions.
HELDOUT_COMBOS: Final = frozenset({('green', 'cylinder'), ('yellow', 'ball')})

SHAPE_WORDS: Final = {
    'cube': ('cube', 'block', 'box'),
    'ball': ('ball', 'sphere'),
    'cylinder': ('cylinder', 'can', 'puck'),
}
BIN_WORDS: Final = (
    '{side} bin',
    'bin on the {side}',
    '{side} container',
    '{side}-hand bin',
    '{side} tray',
)

# Template id -> format string. {obj} is an object phrase, {bin} a bin phrase. The held-out
# phrasings recombine known words in new frames and word orders (a model trained from
# scratch on templates cannot know what a verb it never saw means, but it should cope with
# "into the left bin, put the red cube" having seen "put the red cube in the left bin").
TEMPLATES: Final[dict[str, dict[str, str]]] = {
    'pick_place': {
        'pp_put': 'put the {obj} in the {bin}',
        'pp_place_into': 'place the {obj} into the {bin}',
        'pp_move_to': 'move the {obj} to the {bin}',
        'pp_drop_into': 'drop the {obj} into the {bin}',
        'pp_grab_put': 'grab the {obj} and put it in the {bin}',
        'pp_pick_drop': 'pick up the {obj} and drop it in the {bin}',
        'pp_sort': 'sort the {obj} into the {bin}',
        'pp_bare': '{obj} to the {bin}',
        'pp_transfer': 'transfer the {obj} to the {bin}',
        'pp_take_place': 'take the {obj} and place it in the {bin}',
        'pp_throw': 'throw the {obj} in the {bin}',
        # held out
        'pp_fronted': 'into the {bin}, put the {obj}',
        'pp_goes': 'the {obj} goes in the {bin}',
        'pp_grab_drop': 'grab the {obj} and drop it into the {bin}',
    },
    'pick': {
        'pk_pick_up': 'pick up the {obj}',
        'pk_grab': 'grab the {obj}',
        'pk_pick': 'pick the {obj}',
        'pk_lift': 'lift the {obj}',
        'pk_take': 'take the {obj}',
        'pk_grasp': 'grasp the {obj}',
        'pk_pick_obj_up': 'pick the {obj} up',
        # held out
        'pk_lift_up': 'lift up the {obj}',
        'pk_fronted': 'the {obj}, grab it',
    },
    'inspect': {
        'in_inspect': 'inspect the {obj}',
        'in_look_at': 'look at the {obj}',
        'in_move_above': 'move above the {obj}',
        'in_hover': 'hover over the {obj}',
        'in_check': 'check the {obj}',
        'in_closer_look': 'take a closer look at the {obj}',
        # held out
        'in_look_closely': 'look closely at the {obj}',
        'in_hover_above': 'hover above the {obj}',
    },
    'move_to': {
        'mv_move_to': 'move to the {obj}',
        'mv_go_to': 'go to the {obj}',
        'mv_approach': 'approach the {obj}',
        'mv_position_at': 'position the tool at the {obj}',
        # held out
        'mv_go_over_to': 'go over to the {obj}',
    },
    'home': {
        'hm_go_home': 'go home',
        'hm_return_home': 'return home',
        'hm_home_position': 'move to the home position',
        'hm_back_to_home': 'go back to home',
        'hm_home': 'home',
        # held out
        'hm_go_back_home': 'go back home',
        'hm_return_to_home': 'return to the home position',
    },
}
HELDOUT_TEMPLATES: Final = frozenset(
    {
        'pp_fronted', 'pp_goes', 'pp_grab_drop', 'pk_lift_up', 'pk_fronted',
        'in_look_closely', 'in_hover_above', 'mv_go_over_to', 'hm_go_back_home',
        'hm_return_to_home',
    }
)  # fmt: skip

WRAPPERS: Final = {
    'w_plain': '{x}',
    'w_please': 'please {x}',
    'w_could': 'could you {x}',
    'w_can': 'can you {x}?',
    'w_please_end': '{x}, please',
    'w_need': 'I need you to {x}',
    'w_robot': 'robot, {x}',
    # held out
    'w_would': 'would you kindly {x}',
    'w_now': '{x} now',
}
HELDOUT_WRAPPERS: Final = frozenset({'w_would', 'w_now'})


@dataclass(frozen=True, slots=True)
class Command:
    """What an instruction means: the task, its object and (for pick_place) the bin."""

    kind: str
    color: str = ''
    shape: str = ''
    bin: str = ''

    @property
    def label(self) -> str:
        return f'{self.color} {self.shape}' if self.shape else ''


@dataclass(frozen=True, slots=True)
class Utterance:
    text: str
    command: Command
    template: str
    wrapper: str

    @property
    def heldout_phrasing(self) -> bool:
        return self.template in HELDOUT_TEMPLATES or self.wrapper in HELDOUT_WRAPPERS


def all_combos(split: str) -> list[tuple[str, str]]:
    """Colour-shape pairs of a split: ``train`` (not held out), ``heldout`` or ``all``."""
    combos = [(c, s) for c in COLORS for s in SHAPES]
    if split == 'train':
        return [p for p in combos if p not in HELDOUT_COMBOS]
    if split == 'heldout':
        return sorted(HELDOUT_COMBOS)
    return combos


def templates_for(kind: str, phrasing: str) -> list[str]:
    """Template ids of a kind for ``seen`` (training) or ``heldout`` phrasings, or ``all``."""
    ids = list(TEMPLATES[kind])
    if phrasing == 'seen':
        return [t for t in ids if t not in HELDOUT_TEMPLATES]
    if phrasing == 'heldout':
        return [t for t in ids if t in HELDOUT_TEMPLATES]
    return ids


def object_phrase(target: tuple[str, str], scene: Sequence[SceneObject], rng: random.Random):
    """A way to name ``target`` that is unambiguous in ``scene``.

    Colour and shape together always work; colour alone or shape alone only when no other
    object in the scene shares it (an absent target is always named in full).
    """
    color, shape = target
    present = [(o.color, o.shape) for o in scene]
    options = [f'{color} {word}' for word in SHAPE_WORDS[shape]]
    if target in present:
        if sum(1 for c, _ in present if c == color) == 1:
            options += [f'{color} one', f'{color} object', f'{color} thing']
        if sum(1 for _, s in present if s == shape) == 1:
            options += list(SHAPE_WORDS[shape])
    return rng.choice(options)


def bin_phrase(side: str, rng: random.Random) -> str:
    return rng.choice(BIN_WORDS).format(side=side)


def surface_form(text: str, rng: random.Random) -> str:
    """Capitalisation and end punctuation vary; the meaning does not."""
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    if not text.endswith('?') and rng.random() < 0.25:
        text += rng.choice(('.', '!'))
    return text


def make_utterance(
    command: Command,
    scene: Sequence[SceneObject],
    rng: random.Random,
    phrasing: str = 'seen',
) -> Utterance:
    """Phrase ``command`` with a template and wrapper from the given phrasing split."""
    template = rng.choice(templates_for(command.kind, phrasing))
    wrappers = [
        w
        for w in WRAPPERS
        if phrasing == 'all' or (w in HELDOUT_WRAPPERS) == (phrasing == 'heldout')
    ]
    # Held-out phrasings: a held-out template, or a seen template in a held-out wrapper.
    if phrasing == 'heldout' and rng.random() < 0.3:
        template = rng.choice(templates_for(command.kind, 'seen'))
    elif phrasing == 'heldout':
        wrappers = list(WRAPPERS)
    wrapper = rng.choice(wrappers)
    fields = {}
    if command.shape:
        fields['obj'] = object_phrase((command.color, command.shape), scene, rng)
    if command.bin:
        fields['bin'] = bin_phrase(command.bin, rng)
    core = TEMPLATES[command.kind][template].format(**fields)
    text = surface_form(WRAPPERS[wrapper].format(x=core), rng)
    return Utterance(text, command, template, wrapper)


def random_command(
    scene: Sequence[SceneObject],
    rng: random.Random,
    combos: Sequence[tuple[str, str]],
    absent_rate: float = 0.12,
    weights: dict[str, float] | None = None,
) -> tuple[Command, bool]:
    """A command about ``scene``; ``True`` in the result when it names an absent object."""
    weights = weights or {'pick_place': 0.45, 'pick': 0.15, 'inspect': 0.15, 'move_to': 0.1,
                          'home': 0.15}  # fmt: skip
    kind = rng.choices(list(weights), weights=list(weights.values()))[0]
    if kind == 'home':
        return Command('home'), False
    present = {(o.color, o.shape) for o in scene}
    absent = [p for p in combos if p not in present]
    if absent and (not present or rng.random() < absent_rate):
        color, shape = rng.choice(absent)
        is_absent = True
    else:
        color, shape = rng.choice(sorted(present))
        is_absent = False
    side = rng.choice(BINS) if kind == 'pick_place' else ''
    return Command(kind, color, shape, side), is_absent
