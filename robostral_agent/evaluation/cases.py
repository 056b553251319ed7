"""Evaluation cases: generated from a seed, or read from a JSON-lines file (INTERFACES.md s. 7).

Generated cases are a fixed mix (:data:`MIX`) of what an operator asks in the reference cell:

* ``success``: ``pick_place``, ``pick``, ``inspect`` of an object in the scene, or ``home``.
  Every object of these scenes lies at least :data:`ZONE_MARGIN_M` outside every keep-out
  zone, so a correct plan is feasible and safe, and a refusal is a false one.
* ``not_found``: the instruction names a colour-shape pair that is not in the scene.
* ``refused``: the named object stands inside a keep-out zone (for the shipped policy: the
  ``fixture``), at least :data:`INSIDE_MARGIN_M` from its walls, so that the correct target
  (at the object, or above it below the zone's top) lies in the zone and a correct
  supervisor must reject the plan. The other objects keep the margin.

Instructions are phrased with the robostral-tiny instruction grammar
(:mod:`robostral_agent.training.language`): many verbs, word orders, wrappers and synonyms,
object references by colour or shape alone when unambiguous. ``phrasing`` selects the
templates training saw (``seen``), the held-out ones (``heldout``) or both (``all``).

Everything is drawn from ``random.Random`` / numpy generators seeded by ``(seed, index)``, so
a seed gives the same cases on every machine, and case ``i`` does not depend on ``N``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from robostral_agent import cell
from robostral_agent.contract import (
    COLORS,
    SHAPES,
    ContractError,
    EvalCase,
    EvalExpect,
    ObjectRef,
    Scene,
    SceneObject,
    decode_eval_case,
)
from robostral_agent.safety.policy import BoxZone, CylinderZone, Policy
from robostral_agent.sim import plans
from robostral_agent.sim.scene import MAX_RANDOM_OBJECTS, random_scene, validate_scene
from robostral_agent.training import language

# (expected outcome, task) -> weight. About 70 % successes, the rest split between objects
# that are absent and objects the supervisor must refuse.
MIX: Final = {
    ('success', 'pick_place'): 0.34,
    ('success', 'pick'): 0.12,
    ('success', 'inspect'): 0.12,
    ('success', 'home'): 0.12,
    ('not_found', 'pick_place'): 0.06,
    ('not_found', 'pick'): 0.05,
    ('not_found', 'inspect'): 0.04,
    ('refused', 'pick_place'): 0.07,
    ('refused', 'pick'): 0.04,
    ('refused', 'inspect'): 0.04,
}
ZONE_MARGIN_M: Final = 0.05  # objects of success and not_found cases keep this far from zones
INSIDE_MARGIN_M: Final = 0.02  # a refused case's object is this far inside its zone's walls
PHRASINGS: Final = ('seen', 'heldout', 'all')


class CaseFileError(ValueError):
    """A case file cannot be read; the message names the line and the field."""


def load_cases(path: str | Path) -> list[EvalCase]:
    """Read one case per non-blank line (``contract.decode_eval_case``, strict).

    Cases without an ``id`` get ``line<N>``; a bad line raises :class:`CaseFileError` naming
    it, so a long run never starts on a file it would fail on halfway.
    """
    try:
        text = Path(path).read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseFileError(f'{path}: cannot read: {exc}') from exc
    cases: list[EvalCase] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            case = decode_eval_case(line)
        except ContractError as exc:
            raise CaseFileError(f'{path}:{number}: {exc}') from exc
        if not case.id:
            case = EvalCase(case.scene, case.instruction, case.expect, f'line{number}')
        cases.append(case)
    if not cases:
        raise CaseFileError(f'{path}: no cases (one JSON object per line expected)')
    ids = [c.id for c in cases]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise CaseFileError(f'{path}: case id {duplicate!r} appears more than once')
    return cases


def write_cases(cases: Sequence[EvalCase], path: str | Path) -> None:
    """The JSON-lines form :func:`load_cases` reads (``robostral eval --cases``)."""
    from robostral_agent.contract import encode

    Path(path).write_text(''.join(encode(c) + '\n' for c in cases), encoding='utf-8')


# --- Zones on the table ----------------------------------------------------------------------


def _table_zones(policy: Policy) -> list[BoxZone | CylinderZone]:
    """Keep-out zones that reach down to objects standing on the table."""
    top = cell.TABLE_TOP_Z + max(cell.OBJECT_HEIGHT.values())
    zones: list[BoxZone | CylinderZone] = []
    for zone in policy.keepout_zones:
        low, high = (zone.min[2], zone.max[2]) if isinstance(zone, BoxZone) else (
            zone.z_min, zone.z_max
        )  # fmt: skip
        if low <= top and high >= cell.TABLE_TOP_Z:
            zones.append(zone)
    return zones


def near_zone(x: float, y: float, zone: BoxZone | CylinderZone, margin: float) -> bool:
    """Whether (x, y) lies within ``margin`` of the zone's footprint (or inside it)."""
    if isinstance(zone, BoxZone):
        dx = max(zone.min[0] - x, 0.0, x - zone.max[0])
        dy = max(zone.min[1] - y, 0.0, y - zone.max[1])
        return math.hypot(dx, dy) <= margin
    return math.dist((x, y), zone.center) <= zone.radius + margin


def target_heights(task: str) -> tuple[float, float]:
    """Lowest and highest target height of a task over the reference shapes (the agent's
    conventions: pick at the object centre, inspect :data:`plans.INSPECT_HEIGHT` above it)."""
    centres = [cell.object_grasp_height(s) for s in SHAPES]
    lift = plans.INSPECT_HEIGHT if task == 'inspect' else 0.0
    return min(centres) + lift, max(centres) + lift


def refusal_zones(policy: Policy, task: str) -> list[BoxZone]:
    """Box zones that hold ``task``'s target for an object standing inside them, with room
    for the object :data:`INSIDE_MARGIN_M` inside their walls, in the free placement area
    (where the camera and the model know the table)."""
    low, high = target_heights(task)
    found = []
    for zone in _table_zones(policy):
        if not isinstance(zone, BoxZone) or not zone.min[2] <= low <= high <= zone.max[2]:
            continue
        (x0, x1), (y0, y1) = _inner_area(zone)
        if x0 < x1 and y0 < y1:
            found.append(zone)
    return found


def _inner_area(zone: BoxZone) -> tuple[tuple[float, float], tuple[float, float]]:
    """The part of a zone's footprint in the free area, :data:`INSIDE_MARGIN_M` inside."""
    (fx0, fx1), (fy0, fy1) = cell.FREE_AREA
    m = INSIDE_MARGIN_M
    return (
        (max(zone.min[0], fx0) + m, min(zone.max[0], fx1) - m),
        (max(zone.min[1], fy0) + m, min(zone.max[1], fy1) - m),
    )


# --- Generation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseGenerator:
    """Cases for one policy (its zones decide what is safe and what must be refused)."""

    policy: Policy
    phrasing: str = 'all'
    combos: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)

    def __post_init__(self) -> None:
        if self.phrasing not in PHRASINGS:
            raise ValueError(f'phrasing must be one of {", ".join(PHRASINGS)}')

    def generate(self, count: int, seed: int) -> list[EvalCase]:
        return [self.case(seed, i) for i in range(count)]

    def iterate(self, count: int, seed: int) -> Iterator[EvalCase]:
        return (self.case(seed, i) for i in range(count))

    def case(self, seed: int, index: int) -> EvalCase:
        """Case ``index`` of ``seed`` (independent of how many cases are drawn)."""
        rng = random.Random(f'robostral-eval/{seed}/{index}')
        kinds = list(MIX)
        outcome, task = rng.choices(kinds, weights=[MIX[k] for k in kinds])[0]
        zones = refusal_zones(self.policy, task) if outcome == 'refused' else []
        if outcome == 'refused' and not zones:
            outcome = 'not_found'  # no zone this target could stand in: nothing to refuse
        scene_seed = rng.randrange(2**31)
        if outcome == 'refused':
            scene, target = self._refused_scene(rng, scene_seed, rng.choice(zones))
        else:
            scene = random_scene(scene_seed, avoid=self._avoid(()), max_tries=50_000)
            target = self._target(rng, scene, outcome, task)
        bin_name = rng.choice(cell_bins()) if task == 'pick_place' else ''
        command = language.Command(
            task if task != 'home' else 'home',
            *(target or ('', '')),
            bin_name,
        )
        utterance = language.make_utterance(command, scene.objects, rng, self._phrasing(rng))
        expect = EvalExpect(
            outcome,
            task,
            None if target is None else ObjectRef(shape=target[1], color=target[0]),
            bin_name or None,
        )
        case_id = f's{seed}-{index:04d}-{outcome}-{task}'
        return EvalCase(scene, utterance.text, expect, case_id)

    def _phrasing(self, rng: random.Random) -> str:
        if self.phrasing != 'all':
            return self.phrasing
        return 'heldout' if rng.random() < 0.2 else 'seen'

    def _avoid(self, extra: Sequence[tuple[float, float]]) -> Callable[[float, float], bool]:
        zones = _table_zones(self.policy)

        def avoid(x: float, y: float) -> bool:
            if any(near_zone(x, y, z, ZONE_MARGIN_M) for z in zones):
                return True
            return any(math.dist((x, y), p) < cell.MIN_OBJECT_SPACING for p in extra)

        return avoid

    def _target(
        self, rng: random.Random, scene: Scene, outcome: str, task: str
    ) -> tuple[str, str] | None:
        """``(colour, shape)`` the instruction names."""
        if task == 'home':
            return None
        present = sorted((o.color, o.shape) for o in scene.objects)
        if outcome == 'success':
            return rng.choice(present)
        absent = [c for c in self.combos if c not in present]
        return rng.choice(absent)

    def _refused_scene(
        self, rng: random.Random, scene_seed: int, zone: BoxZone
    ) -> tuple[Scene, tuple[str, str]]:
        (x0, x1), (y0, y1) = _inner_area(zone)
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        xy = (round(x, 4), round(y, 4))
        others = rng.randrange(0, MAX_RANDOM_OBJECTS)
        rest = random_scene(
            scene_seed, n_objects=others, avoid=self._avoid([xy]), max_tries=50_000
        )
        present = {(o.color, o.shape) for o in rest.objects}
        color, shape = rng.choice([c for c in self.combos if c not in present])
        yaw = round(rng.uniform(-math.pi / 4, math.pi / 4), 3) if shape == 'cube' else 0.0
        objects = list(rest.objects)
        objects.insert(rng.randrange(len(objects) + 1), SceneObject(shape, color, xy, yaw))
        scene = Scene(tuple(objects))
        validate_scene(scene)
        return scene, (color, shape)


def cell_bins() -> tuple[str, ...]:
    return tuple(cell.BIN_CENTERS)
