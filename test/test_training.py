"""robostral-tiny's pipeline: instruction grammar, dataset labels, and training end to end."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from robostral_agent import cell
from robostral_agent.contract import Scene, SceneObject
from robostral_agent.training import data, language
from robostral_agent.training.train import (
    DENSE_CLASSES,
    FIRST_WORDS,
    REFERENT_CLASSES,
    SECOND_WORDS,
    LabelLoss,
    ModelSizes,
    TrainConfig,
    train,
)
from robostral_agent.vlm.backend import TransformersBackend
from robostral_agent.vlm.formats import parse_robostral_v1

SCENE = Scene(
    (
        SceneObject('cube', 'red', (0.40, 0.10), 0.3),
        SceneObject('ball', 'blue', (0.50, -0.12)),
        SceneObject('cylinder', 'red', (0.35, -0.15)),
    )
)


def test_utterances_name_objects_unambiguously() -> None:
    rng = random.Random(0)
    for _ in range(300):
        command, absent = language.random_command(SCENE.objects, rng, language.all_combos('all'))
        text = language.make_utterance(command, SCENE.objects, rng, 'seen').text
        assert 'stop' not in text.lower().split()
        if command.kind == 'home':
            continue
        # "red one" would be ambiguous here (two red objects): never generated.
        if command.color == 'red':
            assert 'red one' not in text and 'red object' not in text
        if absent:
            assert command.color in text  # absent objects are named in full


def test_heldout_phrasings_and_combos_are_disjoint_from_training() -> None:
    rng = random.Random(1)
    for kind in language.KINDS:
        seen = set(language.templates_for(kind, 'seen'))
        held = set(language.templates_for(kind, 'heldout'))
        assert held
        assert not seen & held
    for _ in range(200):
        command = language.Command('pick', 'red', 'cube')
        assert not language.make_utterance(command, SCENE.objects, rng, 'seen').heldout_phrasing
        assert language.make_utterance(command, SCENE.objects, rng, 'heldout').heldout_phrasing
    assert not set(language.all_combos('train')) & language.HELDOUT_COMBOS
    for seed in range(30):
        scene = data.training_scene(seed, language.all_combos('train'))
        assert scene.objects
        assert not {(o.color, o.shape) for o in scene.objects} & language.HELDOUT_COMBOS


def test_target_text_boxes_follow_the_loc_convention() -> None:
    boxes = {'red cube': (100, 150, 119, 169), 'left bin': (0, 125, 639, 354)}
    text = data.target_text(language.Command('pick_place', 'red', 'cube', 'left'), boxes)
    plan = parse_robostral_v1(text)
    assert [(s.task, s.label) for s in plan.steps] == [('pick', 'red cube'), ('place', 'left bin')]
    # The whole crop maps to the whole loc grid; fractions are of the crop.
    assert plan.steps[1].box == pytest.approx((0.0, 0.0, 1023 / 1024, 1023 / 1024))
    x0, y0, x1, y1 = plan.steps[0].box
    edges = (x0 * 640, y0 * 230 + 125, x1 * 640, y1 * 230 + 125)
    assert edges == pytest.approx((100, 150, 120, 170), abs=1.0)  # pixel edges, end exclusive
    assert data.target_text(language.Command('home'), boxes) == 'home'
    assert data.target_text(language.Command('pick', 'blue', 'ball'), boxes) == 'none'


@pytest.mark.slow
def test_dataset_labels_match_the_rendered_objects(tmp_path: Path) -> None:
    from robostral_agent.sim import WorkCell

    with WorkCell() as wc:
        view = data.render_view(wc, SCENE, np.random.default_rng(0), data.NO_RANDOMIZATION)
    assert view.image.shape == (data.MODEL_INPUT[1], data.MODEL_INPUT[0], 3)
    camera = cell.reference_camera()
    to_camera = camera.transform.inverse()
    for obj in SCENE.objects:
        centre = (*obj.xy, cell.object_grasp_height(obj.shape))
        u, v = camera.intrinsics.project(to_camera.apply(centre))
        u0, v0, u1, v1 = view.boxes[obj.label]
        assert u0 <= u <= u1
        assert v0 <= v <= v1
        assert 8 <= u1 - u0 <= 40
    for side, (x, y) in cell.BIN_CENTERS.items():
        u, v = camera.intrinsics.project(to_camera.apply((x, y, 0.0)))
        u0, v0, u1, v1 = view.boxes[f'{side} bin']
        assert u0 <= u <= u1
        assert v0 <= v <= v1


def test_referent_targets_name_the_object_the_patch_and_the_task() -> None:
    from robostral_agent.training.train import DenseTargets, referent_targets

    box = (300, 200, 330, 230)  # frame pixels
    dense = DenseTargets({0: {'red cube': box}}, 16)

    def sample(kind: str, target: str) -> data.Sample:
        return data.Sample(0, 'x', target, kind, 'red cube' if kind != 'home' else '',
                           '', target == 'none', 't', 'w', False)  # fmt: skip

    batch = [sample('move_to', 'move_to ...'), sample('inspect', 'none'), sample('home', 'home')]
    classes, patches, kinds = referent_targets(batch, dense)
    assert [REFERENT_CLASSES[c] for c in classes.tolist()] == ['red cube', 'none', 'home']
    assert patches.tolist() == [dense.patch_of(box), -100, -100]
    assert [language.KINDS[k] for k in kinds.tolist()] == ['move_to', 'inspect', 'home']


def test_label_loss_whole_or_factored_into_words() -> None:
    ce = torch.nn.functional.cross_entropy
    classes = torch.tensor([REFERENT_CLASSES.index(c) for c in
                            ('yellow ball', 'left bin', 'none', 'home')])  # fmt: skip
    whole = LabelLoss(REFERENT_CLASSES, factored=False, device='cpu')
    logits = torch.randn(4, whole.outputs)
    assert whole.outputs == len(REFERENT_CLASSES)
    assert torch.isclose(whole(logits, classes), ce(logits, classes))

    factored = LabelLoss(REFERENT_CLASSES, factored=True, device='cpu')
    assert factored.outputs == len(FIRST_WORDS) + len(SECOND_WORDS)
    words = [('yellow', 'ball'), ('left', 'bin'), ('none', 'none'), ('home', 'home')]
    first = torch.tensor([FIRST_WORDS.index(a) for a, _ in words])
    second = torch.tensor([SECOND_WORDS.index(b) for _, b in words])
    logits = torch.randn(4, factored.outputs)
    a, b = logits[:, : len(FIRST_WORDS)], logits[:, len(FIRST_WORDS) :]
    assert torch.isclose(factored(logits, classes), ce(a, first) + ce(b, second))
    # Any leading shape (per patch); the empty patch (``none``) weighs 0.1 in both words.
    dense = LabelLoss(DENSE_CLASSES, factored=True, device='cpu', none_weight=0.1)
    patches = torch.tensor([[0, DENSE_CLASSES.index('red cube'), 0]])
    logits = torch.randn(1, 3, dense.outputs).reshape(3, -1)
    wa, wb = torch.ones(len(FIRST_WORDS)), torch.ones(len(SECOND_WORDS))
    wa[FIRST_WORDS.index('none')] = wb[SECOND_WORDS.index('none')] = 0.1
    first = torch.tensor([FIRST_WORDS.index(w) for w in ('none', 'red', 'none')])
    second = torch.tensor([SECOND_WORDS.index(w) for w in ('none', 'cube', 'none')])
    a, b = logits[:, : len(FIRST_WORDS)], logits[:, len(FIRST_WORDS) :]
    want = ce(a, first, wa) + ce(b, second, wb)
    assert torch.isclose(dense(logits.reshape(1, 3, -1), patches), want)


@pytest.mark.slow
def test_training_runs_end_to_end_on_a_tiny_dataset(tmp_path: Path) -> None:
    meta = data.generate(tmp_path / 'data', scenes=4, seed=3, per_scene=4, progress=False)
    assert sum(meta['counts'].values()) == 16
    lines = (tmp_path / 'data' / 'samples.jsonl').read_text().splitlines()
    assert all(re.search(r'"target": "', line) for line in lines)
    sizes = ModelSizes(
        hidden=32, intermediate=64, layers=1, heads=2, vision_hidden=32,
        vision_intermediate=64, vision_layers=1, vision_heads=2, vocab_size=300,
    )  # fmt: skip
    config = TrainConfig(steps=3, batch=4, per_image=2, warmup=1, log_every=1, val_every=3,
                         val_samples=1)  # fmt: skip
    report = train(tmp_path / 'data', tmp_path / 'model', config, sizes)
    losses = [h['loss'] for h in report['history']]
    assert len(losses) == 3
    assert all(np.isfinite(losses))
    backend = TransformersBackend(tmp_path / 'model', device='cpu', dtype='float32')
    assert backend.card.image_crop == data.IMAGE_CROP
    generation = backend.generate(np.zeros((480, 640, 3), np.uint8), '<image>go home', 30.0)
    parse_robostral_v1(generation.text, backend.card.labels)  # constrained: always parses

    # A second run continues from the first one's weights: with a zero learning rate it
    # saves exactly what it loaded. Stopped before the end of its schedule, it saves float32
    # (to be continued); a finished run saves float16. Its label heads are factored (they
    # are training-only) and its forward pass runs under bfloat16 autocast: the saved model
    # is still float32 and the same.
    again = replace(config, steps=5, stop_at=1, val_every=1, lr=0.0, cell_head=False,
                    task_head=0.0, factored=True, autocast='bfloat16',
                    init_from=str(tmp_path / 'model'))  # fmt: skip
    report = train(tmp_path / 'data', tmp_path / 'model2', again, sizes)
    assert [h['step'] for h in report['history']] == [1]
    before = load_file(tmp_path / 'model' / 'model.safetensors')
    after = load_file(tmp_path / 'model2' / 'model.safetensors')
    assert before.keys() == after.keys()
    assert {t.dtype for t in before.values()} == {torch.float16}
    assert {t.dtype for t in after.values()} == {torch.float32}
    assert all(torch.equal(before[k].float(), after[k]) for k in before)


def test_error_kind_names_the_first_thing_a_plan_got_wrong() -> None:
    from robostral_agent.training.evaluate import error_kind

    pick_place = [('pick', 'yellow ball'), ('place', 'left bin')]
    assert error_kind(pick_place, pick_place) == ''
    assert error_kind(pick_place, None) == 'unparsed'
    assert error_kind([], [('pick', 'red cube')]) == 'absent_planned'
    assert error_kind(pick_place, []) == 'answered_none'
    assert error_kind(pick_place, [('pick', 'yellow ball')]) == 'wrong_task'
    assert (
        error_kind(pick_place, [('pick', 'yellow cube'), ('place', 'left bin')]) == 'same_colour'
    )
    assert error_kind(pick_place, [('pick', 'blue ball'), ('place', 'left bin')]) == 'same_shape'
    assert error_kind(pick_place, [('pick', 'red cube'), ('place', 'left bin')]) == 'other_object'
    assert error_kind(pick_place, [('pick', 'yellow ball'), ('place', 'right bin')]) == 'wrong_bin'
    assert error_kind([('home', '')], [('home', '')]) == ''


def test_train_config_refuses_an_unknown_autocast_dtype() -> None:
    with pytest.raises(ValueError, match='autocast'):
        TrainConfig(autocast='float8')


def test_evaluation_summary_separates_objects_and_confidence() -> None:
    from robostral_agent.training.evaluate import summarise

    def record(
        kind: str,
        right: bool,
        confidence: float | None,
        ious,
        errors,
        state: str = 'proposed',
        reason: str = '',
        absent: bool = False,
    ) -> dict:
        return {'kind': kind, 'parsed': True, 'correct_task': right, 'correct_object': right,
                'correct_plan': right, 'absent': absent, 'state': state, 'reason': reason,
                'latency_ms': 50.0, 'confidence': confidence, 'ious': ious,
                'errors_m': errors}  # fmt: skip

    rows = [
        record('pick_place', True, 0.7, [0.6, 0.9], [0.01, 0.005]),  # object, then its bin
        record('pick', True, 0.5, [0.2], [0.03]),
        record('inspect', False, 0.65, [], []),  # a wrong plan is not scored for boxes
        record('home', True, 1.0, [], [0.001]),  # no object, certain
    ]
    rows[2]['error'] = 'wrong_task'
    summary = summarise(rows, min_confidence=0.6)
    assert summary['wrong_plans_by_kind'] == {'wrong_task': 1}
    assert summary['box_iou_ge_0_5'] == round(2 / 3, 4)  # objects and bins
    assert summary['object_iou_ge_0_5'] == 0.5  # the object boxes alone: 0.6, 0.2
    assert summary['object_error_median_m'] == pytest.approx(0.02)  # 0.01, 0.03
    assert summary['object_error_le_1_5_cm'] == 0.5
    assert summary['correct_plans_confident'] == 0.5  # 0.7 and 0.5; home not counted
    assert summary['wrong_plans_confident'] == 1.0
    assert summary['correct_plan_95'] == pytest.approx([0.3006, 0.9544], abs=1e-4)  # 3 of 4
    # Usable (right, object within 1.5 cm): only the 0.7; it outranks 0.5 and 0.65.
    assert summary['confidence_auc'] == 1.0
    assert summary['right_plans_not_grounded'] == 0.0

    # Absent objects: the model's `none` apart from a box that grounding found empty.
    rows += [
        record('pick', True, None, [], [], 'not_found', 'NOT_FOUND', absent=True),
        record('pick', False, 0.7, [], [], 'not_found', 'NO_OBJECT', absent=True),
        record('pick', False, 0.7, [], [], 'proposed', '', absent=True),
        record('inspect', True, 0.8, [], [], 'not_found', 'NO_OBJECT'),  # right words, no target
    ]
    summary = summarise(rows, min_confidence=0.6)
    assert summary['none_accuracy'] == round(1 / 3, 4)
    assert summary['absent_not_found'] == round(2 / 3, 4)
    assert summary['right_plans_not_grounded'] == round(1 / 3, 4)  # right, boxed, present
    # 0.7 against 0.5, 0.65, 0.7, 0.7, 0.8: two wins, two ties, one loss.
    assert summary['confidence_auc'] == 0.6
