"""Offline evaluation of a robostral_v1 model on freshly rendered, held-out scenes.

    python -m robostral_agent.training.evaluate --model models/robostral-tiny --scenes 500

Scenes come from seeds training never uses, rendered exactly as the simulator node renders
them (reference camera and lighting), and may hold the colour-shape pairs that training
never saw. Each scene gets one instruction in a seen phrasing and one in a held-out
phrasing. Every instruction goes through the agent's own core (the transformers backend,
the parser, the grounding), once with constrained decoding and once without, and is scored
per phrasing split: parse rate, correct task, correct object, correct plan (tasks, objects
and bins), box IoU, 3D target error after grounding, ``none`` accuracy for absent objects,
and CPU latency per instruction. It also says how often a plan's lowest step confidence clears
the shipped safety policy's ``min_confidence``, for right plans and for wrong ones: the share
of right plans the supervisor would let through and of wrong ones it would not stop.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from robostral_agent import cell, paths
from robostral_agent.contract import Instruction, Stamp
from robostral_agent.evaluation.report import wilson_interval
from robostral_agent.safety.policy import load_policy
from robostral_agent.sim import WorkCell, random_scene
from robostral_agent.training import data as datamod
from robostral_agent.training import language
from robostral_agent.vlm.agent import NOT_FOUND, Agent, AgentConfig, Outcome
from robostral_agent.vlm.backend import TransformersBackend
from robostral_agent.vlm.frames import Frame
from robostral_agent.vlm.grounding import GroundingConfig

EVAL_SEED_BASE = 1_000_000_000  # training scene seeds stay far below this


@dataclass
class Case:
    scene_index: int
    phrasing: str
    utterance: language.Utterance
    absent: bool
    expected_text: str
    heldout_combo: bool


def expected_steps(command: language.Command, absent: bool) -> list[tuple[str, str]]:
    """``[(task, label)]`` of the correct plan (empty for ``none``)."""
    if command.kind == 'home':
        return [('home', '')]
    if absent:
        return []
    if command.kind == 'pick_place':
        return [('pick', command.label), ('place', f'{command.bin} bin')]
    return [(command.kind, command.label)]


def error_kind(expected: list[tuple[str, str]], got: list[tuple[str, str]] | None) -> str:
    """What a plan got wrong, first difference first ('' when it is right): unparsed,
    absent_planned (a plan for an absent object), answered_none, wrong_task, then by the
    first wrong label: same_colour (the shape misread), same_shape, other_object, wrong_bin."""
    if got is None:
        return 'unparsed'
    if got == expected:
        return ''
    if not expected:
        return 'absent_planned'
    if not got:
        return 'answered_none'
    if [t for t, _ in got] != [t for t, _ in expected]:
        return 'wrong_task'
    want, have = next((w, h) for (_, w), (_, h) in zip(expected, got, strict=True) if w != h)
    if want.endswith(' bin'):
        return 'wrong_bin'
    colour, shape = want.split()
    if have.startswith(colour + ' '):
        return 'same_colour'
    return 'same_shape' if have.endswith(' ' + shape) else 'other_object'


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two inclusive pixel boxes ``(u0, v0, u1, v1)``."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area - inter)


def true_target(task: str, label: str, view: datamod.View, cfg: GroundingConfig):
    """Where the target of a step should be, from the scene's ground truth."""
    if task == 'home':
        return np.asarray(cfg.home_pose[:3])
    if label.endswith(' bin'):
        x, y = cell.BIN_CENTERS[label.split()[0]]
        height = cfg.place_height_m if task == 'place' else cfg.move_to_height_m
        return np.array([x, y, cfg.table_z + height])
    obj = next(o for o in view.scene.objects if o.label == label)
    centre = np.array([*obj.xy, cell.object_grasp_height(obj.shape)])
    lift = {'inspect': cfg.inspect_height_m, 'move_to': cfg.move_to_height_m}.get(task, 0.0)
    return centre + np.array([0.0, 0.0, lift])


def score(case: Case, outcome: Outcome, view: datamod.View, cfg: GroundingConfig) -> dict:
    expected = expected_steps(case.utterance.command, case.absent)
    parsed = outcome.parsed
    got = [(s.task, s.label) for s in parsed.steps] if parsed is not None else None
    record: dict[str, Any] = {
        'instruction': case.utterance.text, 'phrasing': case.phrasing, 'absent': case.absent,
        'heldout_combo': case.heldout_combo, 'kind': case.utterance.command.kind,
        'expected': case.expected_text, 'output': outcome.text, 'state': outcome.state,
        'reason': outcome.reason, 'parsed': got is not None,
        'correct_task': got is not None and [t for t, _ in got] == [t for t, _ in expected],
        'correct_object': got is not None and [lb for _, lb in got] == [lb for _, lb in expected],
        'latency_ms': sum(outcome.timings_ms.values()),
        # The lowest step confidence: what the supervisor's min_confidence rule reads.
        'confidence': min(outcome.confidences) if outcome.confidences else None,
        'ious': [], 'errors_m': [],
    }  # fmt: skip
    record['correct_plan'] = record['correct_task'] and record['correct_object']
    record['error'] = error_kind(expected, got)
    if record['correct_plan'] and outcome.grounded:
        for (task, label), found in zip(expected, outcome.grounded, strict=True):
            if label and found.bbox is not None and label in view.boxes:
                u0, v0, u1, v1 = found.bbox  # pixel-centre coordinates, edges at +-0.5
                box = (u0 + 0.5, v0 + 0.5, u1 - 0.5, v1 - 0.5)
                record['ious'].append(iou(box, view.boxes[label]))
            truth = true_target(task, label, view, cfg)
            error = float(np.linalg.norm(np.asarray(found.target.position) - truth))
            record['errors_m'].append(error)
    return record


def good_target(record: dict) -> bool:
    """A right plan whose object target lies within 1.5 cm of the truth."""
    return bool(record['correct_plan'] and record['errors_m'] and record['errors_m'][0] <= 0.015)


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """Area under the ROC curve of a score: P(positive > negative), ties counting half."""
    if not positives or not negatives:
        return None
    u = mannwhitneyu(positives, negatives).statistic  # pairs won, ties counting half
    return round(float(u) / (len(positives) * len(negatives)), 4)


def make_cases(scenes: int, seed: int) -> list[tuple[Any, list[Case]]]:
    rng = random.Random(seed)
    out = []
    all_combos = language.all_combos('all')
    for i in range(scenes):
        scene = random_scene(EVAL_SEED_BASE + seed * 100_003 + i)
        cases = []
        for phrasing in ('seen', 'heldout'):
            command, absent = language.random_command(scene.objects, rng, all_combos)
            utterance = language.make_utterance(command, scene.objects, rng, phrasing)
            combo = (command.color, command.shape) in language.HELDOUT_COMBOS
            cases.append(Case(i, phrasing, utterance, absent, '', combo))
        out.append((scene, cases))
    return out


def summarise(records: list[dict], min_confidence: float) -> dict[str, Any]:
    def rate(test: Callable[[dict], Any], rows: list[dict]) -> float | None:
        """Share of ``rows`` that pass ``test``."""
        return round(sum(bool(test(r)) for r in rows) / len(rows), 4) if rows else None

    def share(values: list[float], limit: float, above: bool) -> float | None:
        if not values:
            return None
        hits = sum((v >= limit) if above else (v <= limit) for v in values)
        return round(hits / len(values), 4)

    def confident(rows: list[dict]) -> float | None:
        """Share of ``rows`` whose plan clears the policy's min_confidence."""
        return share([r['confidence'] for r in rows], min_confidence, above=True)

    # Plans with a model-read box (home is certain): does the confidence tell right from wrong?
    read = [r for r in records if r['confidence'] is not None and r['kind'] != 'home']

    ious = [v for r in records for v in r['ious']]
    errors = [v for r in records for v in r['errors_m']]
    # The first step's target is the object (pick, inspect, move_to); a bin's box is large and
    # easy, so the object's figures are reported on their own as well.
    boxed = [r for r in records if r['kind'] != 'home' and r['errors_m']]
    object_ious = [r['ious'][0] for r in boxed if r['ious']]
    object_errors = [r['errors_m'][0] for r in boxed]
    absent = [r for r in records if r['absent']]
    right = [r for r in records if r['correct_plan'] and r['kind'] != 'home' and not r['absent']]
    latencies = sorted(r['latency_ms'] for r in records)
    return {
        'instructions': len(records),
        'parse_rate': rate(itemgetter('parsed'), records),
        'correct_task': rate(itemgetter('correct_task'), records),
        'correct_object': rate(itemgetter('correct_object'), records),
        'correct_plan': rate(itemgetter('correct_plan'), records),
        # 95% Wilson interval: 1000 instructions pin the share down to about +-2.4 points,
        # so two candidates closer than that are not told apart by one evaluation.
        'correct_plan_95': wilson_interval(sum(r['correct_plan'] for r in records), len(records)),
        'box_iou_ge_0_5': share(ious, 0.5, above=True),
        'box_iou_median': round(statistics.median(ious), 4) if ious else None,
        'target_error_median_m': round(statistics.median(errors), 4) if errors else None,
        'target_error_p95_m': round(float(np.percentile(errors, 95)), 4) if errors else None,
        # The model's own `none`; grounding may also end an absent case not_found (a box on
        # bare table: NO_OBJECT), which the next figure counts.
        'none_accuracy': rate(lambda r: r['reason'] == NOT_FOUND, absent),
        'absent_not_found': rate(lambda r: r['state'] == 'not_found', absent),
        # Right words, but grounding gave no target (NO_OBJECT, NO_DEPTH): their boxes are in
        # neither the IoU nor the error figures.
        'right_plans_not_grounded': rate(lambda r: r['state'] != 'proposed', right),
        'object_iou_ge_0_5': share(object_ious, 0.5, above=True),
        'object_error_median_m': round(statistics.median(object_errors), 4)
        if object_errors
        else None,
        'object_error_le_1_5_cm': share(object_errors, 0.015, above=False),
        'correct_plans_confident': confident([r for r in read if r['correct_plan']]),
        'wrong_plans_confident': confident([r for r in read if not r['correct_plan']]),
        # How well the confidence ranks a usable plan (right words, object within 1.5 cm)
        # above the rest: the chance that a random usable plan scores higher (0.5: no better
        # than a coin).
        'confidence_auc': auc(
            [r['confidence'] for r in read if good_target(r)],
            [r['confidence'] for r in read if not good_target(r)],
        ),
        # Wrong plans by what they got wrong (error_kind), most frequent first.
        'wrong_plans_by_kind': dict(
            Counter(r['error'] for r in records if r.get('error')).most_common()
        ),
        'latency_p50_ms': round(statistics.median(latencies), 1) if latencies else None,
        'latency_p95_ms': round(float(np.percentile(latencies, 95)), 1) if latencies else None,
    }


def evaluate(model_dir: Path, scenes: int, seed: int, threads: int, progress: bool = True):
    min_confidence = load_policy(paths.config_file('safety_policy.yaml')).policy.min_confidence
    cfg = GroundingConfig(camera_pose=tuple(cell.reference_camera().pose7))
    plans = make_cases(scenes, seed)
    agents = {
        mode: Agent(
            TransformersBackend(model_dir, device='cpu', dtype='float32', threads=threads,
                                constrained=mode == 'constrained'),
            AgentConfig(grounding=cfg, max_frame_age_s=1e9, inference_timeout_s=30.0),
        )
        for mode in ('constrained', 'unconstrained')
    }  # fmt: skip
    records: dict[str, list[dict]] = defaultdict(list)
    rng = np.random.default_rng(seed)
    items = plans
    if progress:
        from tqdm import tqdm

        items = tqdm(plans, desc='evaluating', unit='scene', mininterval=5.0)
    with WorkCell() as wc:
        for scene, cases in items:
            view = datamod.render_view(wc, scene, rng, datamod.NO_RANDOMIZATION)
            frame = Frame(view.rgb, view.depth, view.camera.intrinsics, Stamp(1, 0), 'camera')
            for case in cases:
                case.expected_text = datamod.target_text(case.utterance.command, view.boxes)
                instruction = Instruction('eval', case.utterance.text, 'eval')
                for mode, agent in agents.items():
                    outcome = agent.plan(instruction, lambda f=frame: f, Stamp(1, 0))
                    records[mode].append(score(case, outcome, view, cfg))
    for agent in agents.values():
        agent.close()
    report = make_report(records, str(model_dir), scenes, seed, min_confidence)
    return report, records


def make_report(
    records: dict[str, list[dict]], model: str, scenes: int, seed: int, min_confidence: float
) -> dict[str, Any]:
    """The summary of every decoding mode's records: all, per phrasing split, and apart
    those that name a colour-shape pair training saw or one it never saw."""
    report: dict[str, Any] = {
        'model': model, 'scenes': scenes, 'seed': seed, 'min_confidence': min_confidence,
    }  # fmt: skip
    for mode, rows in records.items():
        splits = {
            'all': rows,
            'seen_phrasing': [r for r in rows if r['phrasing'] == 'seen'],
            'heldout_phrasing': [r for r in rows if r['phrasing'] == 'heldout'],
            'seen_combo': [r for r in rows if not r['heldout_combo']],
            'heldout_combo': [r for r in rows if r['heldout_combo']],
        }
        report[mode] = {name: summarise(part, min_confidence) for name, part in splits.items()}
    return report


def print_table(report: dict[str, Any]) -> None:
    keys = ['instructions', 'parse_rate', 'correct_task', 'correct_object', 'correct_plan',
            'correct_plan_95',
            'box_iou_ge_0_5', 'target_error_median_m', 'object_iou_ge_0_5',
            'object_error_median_m', 'object_error_le_1_5_cm', 'right_plans_not_grounded',
            'none_accuracy', 'absent_not_found',
            'correct_plans_confident', 'wrong_plans_confident', 'confidence_auc',
            'latency_p50_ms',
            'latency_p95_ms']  # fmt: skip
    for mode in ('constrained', 'unconstrained'):
        print(f'\n{mode} decoding')
        splits = ['all', 'seen_phrasing', 'heldout_phrasing', 'seen_combo', 'heldout_combo']
        print(f'{"metric":24}' + ''.join(f'{s:>18}' for s in splits))
        for key in keys:
            cells = [report[mode][s].get(key) for s in splits]
            shown = ['-' if c is None else '-'.join(map(str, c)) if isinstance(c, list) else str(c)
                     for c in cells]  # fmt: skip
            print(f'{key:24}' + ''.join(f'{c:>18}' for c in shown))
        kinds = report[mode]['all'].get('wrong_plans_by_kind') or {}
        print('wrong plans by kind: ' + (', '.join(f'{k} {n}' for k, n in kinds.items()) or '-'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', type=Path, required=True, help='model directory')
    parser.add_argument('--scenes', type=int, default=500, help='held-out scenes to render')
    parser.add_argument('--seed', type=int, default=0, help='seed of scenes and phrasings')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--json', type=Path, help='write the report (and every record) here')
    args = parser.parse_args(argv)
    start = time.monotonic()
    report, records = evaluate(args.model, args.scenes, args.seed, args.threads)
    report['wall_s'] = round(time.monotonic() - start, 1)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps({**report, 'records': records}, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
