"""The real TransformersBackend on tiny random checkpoints of real VLM families.

Each family is built once per session (a few hundred kB, seconds in total) with a tokenizer
trained here, loaded from disk through ``AutoProcessor`` + ``AutoModelForImageTextToText``
and run end to end through the agent on synthetic RGB-D frames. Random weights write junk:
what is asserted is that junk becomes either a proposal that passes the contract's strict
decoder or a clean status with a reason, and that constrained decoding makes it parse.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_grounding import Scene

from robostral_agent.cell import reference_camera
from robostral_agent.contract import Instruction, Stamp, decode_goal_proposal, encode
from robostral_agent.vlm import agent as agent_mod
from robostral_agent.vlm import grounding, tiny
from robostral_agent.vlm.agent import Agent, AgentConfig, Outcome
from robostral_agent.vlm.backend import (
    LOC_TOLERANCE_PX,
    BackendError,
    TransformersBackend,
    choose_device,
    weights_sha256,
)
from robostral_agent.vlm.formats import LOC_GRID, FormatError, parse_json_v1, parse_robostral_v1
from robostral_agent.vlm.frames import Frame, make_frame
from robostral_agent.vlm.grounding import GroundingConfig
from robostral_agent.vlm.model_card import (
    CARD_FILE,
    ModelCardError,
    card_from_mapping,
    load_model_card,
    reference_labels,
)

# PaliGemma's processor calls np.array(copy=False) on a list (transformers, not us).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
CAMERA = reference_camera()
INSTRUCTIONS = (
    'put the red cube in the left bin',
    'pick up the blue ball',
    'inspect the green cylinder',
    'move above the right bin',
    'go home',
    'grab the yellow cube and drop it into the right bin',
)
# Every reason an instruction may end with once it reached the model.
OUTCOME_REASONS = {
    agent_mod.NOT_FOUND,
    agent_mod.UNPARSABLE_OUTPUT,
    agent_mod.MODEL_TIMEOUT,
    grounding.NO_DEPTH,
    grounding.NO_OBJECT,
    grounding.BOX_INVALID,
    grounding.BOX_OUTSIDE_IMAGE,
}
THREE_FAMILIES = ('paligemma', 'idefics3', 'florence2')


def tiny_model(
    factory: pytest.TempPathFactory, family: str, name: str = '', **kwargs: object
) -> Path:
    """Build a tiny checkpoint once per test session (shared by every test module)."""
    root = factory.getbasetemp() / 'tiny-models' / (name or family)
    if not (root / CARD_FILE).is_file():
        builder, _ = tiny.FAMILIES[family]
        builder(root, **kwargs)
    return root


TABLE_DEPTH = Scene().image()
STAMP = Stamp(100, 0)


def synthetic_frame(seed: int, stamp: Stamp = STAMP) -> Frame:
    """A random colour image over the ray-cast table, as the reference camera sees it."""
    color = np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return make_frame(color, 'rgb8', TABLE_DEPTH, '32FC1', CAMERA.intrinsics, stamp, 'cam')


def make_agent(backend: TransformersBackend, **kwargs: object) -> Agent:
    config = AgentConfig(GroundingConfig(camera_pose=tuple(CAMERA.pose7)), **kwargs)
    return Agent(backend, config)


def run(agent: Agent, text: str, seed: int) -> Outcome:
    frame = synthetic_frame(seed)
    return agent.plan(Instruction(f'op-{seed}', text, 'alice'), lambda: frame, Stamp(100, 5))


def check_outcome(outcome: Outcome, backend: TransformersBackend) -> None:
    """A proposal that passes the strict decoder, or a clean status with a known reason."""
    if outcome.state == 'proposed':
        assert outcome.proposal is not None
        decoded = decode_goal_proposal(encode(outcome.proposal))
        assert decoded.model.sha256 == backend.sha256
        assert decoded.model.name == backend.name
        assert decoded.operator == 'alice'
        assert decoded.instruction_id == outcome.proposal.instruction_id
        assert all(0.0 < s.confidence <= 1.0 for s in decoded.steps)
    else:
        assert outcome.proposal is None
        assert outcome.state in ('not_found', 'error'), outcome.detail
        assert outcome.reason in OUTCOME_REASONS, outcome.detail
        assert outcome.detail.startswith(outcome.reason + ': ')


@pytest.fixture(scope='module', params=THREE_FAMILIES)
def family_backends(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, TransformersBackend, TransformersBackend]:
    path = tiny_model(tmp_path_factory, request.param)
    return (
        request.param,
        TransformersBackend(path, constrained=True, threads=1),
        TransformersBackend(path, constrained=False, threads=1),
    )


def test_three_families_load_and_run_end_to_end(
    family_backends: tuple[str, TransformersBackend, TransformersBackend],
) -> None:
    family, constrained, free = family_backends
    weights = constrained.path / 'model.safetensors'
    assert constrained.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (constrained.device, constrained.dtype) == ('cpu', 'float32')
    assert constrained.model.config.model_type == family
    states = set()
    for backend in (constrained, free):
        agent = make_agent(backend)
        for seed, text in enumerate(INSTRUCTIONS[:4]):
            outcome = run(agent, text, seed)
            check_outcome(outcome, backend)
            states.add(outcome.state)
            assert outcome.timings_ms['generate'] > 0
        agent.close()
    assert states <= {'proposed', 'not_found', 'error'}


@pytest.mark.slow
def test_constrained_random_paligemma_always_parses(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = tiny_model(tmp_path_factory, 'paligemma')
    backend = TransformersBackend(path, constrained=True, threads=1)
    free = TransformersBackend(path, constrained=False, threads=1)
    assert backend.warnings == ()  # 96 tokens cover the worst constrained answer
    texts, free_parsed, boxes = set(), 0, 0
    for seed in range(12):
        image = synthetic_frame(seed).color
        prompt = backend.card.prompt(INSTRUCTIONS[seed % len(INSTRUCTIONS)])
        generation = backend.generate(image, prompt, 30.0)
        plan = parse_robostral_v1(generation.text, backend.card.labels)  # never raises
        assert generation.finished, generation.text
        texts.add(generation.text)
        for step in plan.steps:
            assert 0.0 < generation.confidence(step.spans) <= 1.0
            if step.box is not None:  # OrderedCorners: random weights still order corners
                x0, y0, x1, y1 = step.box
                boxes += 1
                assert x0 <= x1 and y0 <= y1, generation.text
        try:
            parse_robostral_v1(free.generate(image, prompt, 30.0).text, free.card.labels)
            free_parsed += 1
        except FormatError:
            pass
    assert len(texts) > 3  # the answers depend on the input: not one canned string
    assert boxes >= 6  # the corner rule was exercised
    assert free_parsed < 12  # without the grammar, random weights do not write the format


def test_constrained_json_v1_always_parses(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tiny_model(tmp_path_factory, 'idefics3', 'idefics3-json', card={'max_new_tokens': 260})
    backend = TransformersBackend(path, constrained=True, threads=1)
    assert backend.warnings == ()
    for seed in range(3):
        prompt = backend.card.prompt('pick the red cube')
        generation = backend.generate(synthetic_frame(seed).color, prompt, 30.0)
        parse_json_v1(generation.text, backend.card.labels, box_scale=backend.card.box_scale)
        assert generation.finished


def test_paligemma_loc_takes_tasks_from_the_instruction(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = tiny_model(
        tmp_path_factory, 'paligemma', 'paligemma-loc', output_format='paligemma_loc'
    )
    backend = TransformersBackend(path)
    assert backend.card.prompt('x', ('red cube', 'left bin')) == (
        '<image>detect red cube ; left bin'
    )
    agent = make_agent(backend)
    for seed in range(4):
        outcome = run(agent, INSTRUCTIONS[0], seed)
        check_outcome(outcome, backend)
        if outcome.proposal is not None:
            steps = outcome.proposal.steps
            assert [(s.task, s.object) for s in steps] == [
                ('pick', 'red cube'),
                ('place', 'left bin'),
            ]
    calls = backend.calls
    home = run(agent, 'go home', 9)  # nothing to detect: the model is not asked
    assert home.state == 'proposed' and backend.calls == calls
    assert home.proposal.steps[0].target.position == (0.30, 0.0, 0.35)
    unknown = run(agent, 'sing a song', 9)
    assert (unknown.state, unknown.reason) == ('rejected_input', agent_mod.NOT_UNDERSTOOD)
    agent.close()


def test_ordered_corners_masks_far_corners_below_near_ones() -> None:
    import torch

    from robostral_agent.vlm.constrained import OrderedCorners

    vocab, grid = 20, 8
    loc_ids = torch.arange(10, 10 + grid)  # token 10 + v is <loc v>
    grid_of = torch.full((vocab,), -1)
    grid_of[loc_ids] = torch.arange(grid)
    rule = OrderedCorners(loc_ids, grid_of)
    rows = torch.tensor(
        [
            [1, 2, 3, 15],  # one loc (y0 = 5): x0 is free
            [1, 2, 15, 13],  # y0 = 5, x0 = 3: y1 >= 5
            [1, 15, 13, 16],  # y0, x0 = 3, y1: x1 >= 3
            [15, 13, 16, 14],  # a whole box: the grammar, not this rule, says what follows
            [3, 4, 5, 6],  # no loc at all
        ]
    )
    scores = rule(rows, torch.zeros((5, vocab)))
    masked = torch.isinf(scores)
    assert not masked[[0, 3, 4]].any()
    assert masked[1].nonzero().flatten().tolist() == [10, 11, 12, 13, 14]  # <loc0>..<loc4>
    assert masked[2].nonzero().flatten().tolist() == [10, 11, 12]  # <loc0>..<loc2>
    assert not masked[:, :10].any()  # other tokens are the grammar's business


@pytest.mark.parametrize('tolerance', [LOC_TOLERANCE_PX, 2.5])
def test_token_probabilities_are_the_models_own(
    tmp_path_factory: pytest.TempPathFactory, tolerance: float
) -> None:
    """Recompute each generated token's probability with a separate forward pass."""
    import torch

    backend = TransformersBackend(
        tiny_model(tmp_path_factory, 'paligemma'), constrained=False, loc_tolerance_px=tolerance
    )
    image = synthetic_frame(5).color
    prompt = backend.card.prompt('pick the red cube')
    generation = backend.generate(image, prompt, 30.0)
    assert len(generation.token_ids) >= 8
    inputs = backend._inputs(image, prompt)
    prompt_len = inputs['input_ids'].shape[1]
    ids = torch.tensor([list(generation.token_ids)])
    full = dict(inputs)
    full['input_ids'] = torch.cat([inputs['input_ids'], ids], dim=1)
    full['attention_mask'] = torch.ones_like(full['input_ids'])
    if 'token_type_ids' in inputs:
        full['token_type_ids'] = torch.cat([inputs['token_type_ids'], torch.ones_like(ids)], dim=1)
    with torch.inference_mode():
        logits = backend.model(**full).logits[0]
    probs = torch.softmax(logits[prompt_len - 1 : -1].float(), dim=-1)
    expected = probs[torch.arange(ids.shape[1]), ids[0]].tolist()
    # A loc token's probability is the mass of the loc tokens within the backend's
    # loc_tolerance_px camera pixels of it: rows (y0, y1) and columns (x0, x1) of this
    # uncropped frame in turn.
    assert backend.card.image_crop is None
    height, width = image.shape[:2]
    tokenizer = backend.tokenizer
    loc_of = {tokenizer.convert_tokens_to_ids(f'<loc{v:04d}>'): v for v in range(LOC_GRID)}
    run = 0
    for t, token in enumerate(ids[0].tolist()):
        run = run + 1 if token in loc_of else 0
        if token in loc_of:
            size = height if run % 2 else width
            near = [i for i, v in loc_of.items()
                    if size / LOC_GRID * abs(v - loc_of[token]) <= tolerance]  # fmt: skip
            expected[t] = float(probs[t, near].sum())
    assert any(token in loc_of for token in ids[0].tolist())  # the loc rule was exercised
    assert generation.token_probs == pytest.approx(expected, abs=1e-4)
    assert len({round(p, 6) for p in generation.token_probs}) > 1  # not a constant
    # The confidence of a text span is the geometric mean over the tokens that overlap it.
    spans = generation.token_spans
    chosen = [i for i, (a, b) in enumerate(spans) if b > a][:3]
    assert len(chosen) == 3
    region = (spans[chosen[0]][0], spans[chosen[-1]][1])
    inside = [i for i, (a, b) in enumerate(spans) if a < region[1] and region[0] < b]
    manual = math.exp(sum(math.log(expected[i]) for i in inside) / len(inside))
    assert generation.confidence((region,)) == pytest.approx(manual, abs=1e-4)


def test_weights_hash_single_and_sharded(tmp_path: Path) -> None:
    (tmp_path / 'model-00002-of-00002.safetensors').write_bytes(b'second')
    (tmp_path / 'model-00001-of-00002.safetensors').write_bytes(b'first')
    assert weights_sha256(tmp_path) == hashlib.sha256(b'firstsecond').hexdigest()
    single = tmp_path / 'single'
    single.mkdir()
    (single / 'model.safetensors').write_bytes(b'weights')
    assert weights_sha256(single) == hashlib.sha256(b'weights').hexdigest()
    with pytest.raises(BackendError, match='no weights'):
        weights_sha256(tmp_path / 'missing')


def test_device_choice_on_this_machine() -> None:
    import torch

    if torch.cuda.is_available():
        assert choose_device('auto', 'auto')[0] == 'cuda'
    else:
        assert choose_device('auto', 'auto') == ('cpu', 'float32')
        with pytest.raises(BackendError, match='no CUDA'):
            choose_device('cuda', 'auto')
    assert choose_device('cpu', 'bfloat16') == ('cpu', 'bfloat16')
    with pytest.raises(BackendError, match='device'):
        choose_device('tpu', 'auto')
    with pytest.raises(BackendError, match='dtype'):
        choose_device('cpu', 'int8')


def test_load_failures_are_clear_backend_errors(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with pytest.raises(BackendError, match='does not exist'):
        TransformersBackend(tmp_path / 'nowhere')
    with pytest.raises(BackendError, match='does not exist'):
        TransformersBackend('google/paligemma-3b-pt-224')  # a hub name is never fetched
    with pytest.raises(BackendError, match=r'robostral\.yaml'):
        TransformersBackend(tmp_path)
    (tmp_path / CARD_FILE).write_text('output_format: robostral_v1\n')
    with pytest.raises(BackendError, match='no weights'):
        TransformersBackend(tmp_path)
    (tmp_path / 'model.safetensors').write_bytes(b'not a checkpoint')
    with pytest.raises(BackendError, match='cannot load'):
        TransformersBackend(tmp_path)
    good = tiny_model(tmp_path_factory, 'paligemma')
    with pytest.raises(BackendError, match='dtype'):
        TransformersBackend(good, dtype='int4')
    for tolerance in (0.0, -1.0, float('nan'), float('inf')):
        with pytest.raises(BackendError, match='loc_tolerance_px'):
            TransformersBackend(good, loc_tolerance_px=tolerance)
    # A prompt without the model's image token fails at warm-up, not at the first instruction.
    broken = tmp_path / 'no-image-token'
    shutil.copytree(tiny_model(tmp_path_factory, 'idefics3'), broken)
    card = yaml.safe_load((broken / CARD_FILE).read_text())
    (broken / CARD_FILE).write_text(yaml.safe_dump({**card, 'prompt_template': '{instruction}'}))
    with pytest.raises(BackendError, match='warm-up failed'):
        TransformersBackend(broken)


def test_model_card_is_strict(tmp_path: Path) -> None:
    card = card_from_mapping({'output_format': 'json_v1', 'image_size': [640, 480]})
    assert card.image_size == (640, 480)
    assert card.prompt('go home') == 'go home'
    for data, key in (
        ({}, 'output_format'),
        ({'output_format': 'xml'}, 'output_format'),
        ({'output_format': 'json_v1', 'colour': 1}, 'colour'),
        ({'output_format': 'json_v1', 'max_new_tokens': '64'}, 'max_new_tokens'),
        ({'output_format': 'json_v1', 'max_new_tokens': True}, 'max_new_tokens'),
        ({'output_format': 'json_v1', 'prompt_template': 'no placeholder'}, 'prompt_template'),
        ({'output_format': 'json_v1', 'prompt_template': '{instruction} {x}'}, 'prompt_template'),
        ({'output_format': 'json_v1', 'image_size': [640]}, 'image_size'),
        ({'output_format': 'json_v1', 'labels': ['red  cube']}, 'labels'),
        ({'output_format': 'json_v1', 'max_steps': 0}, 'max_steps'),
    ):
        with pytest.raises(ModelCardError) as err:
            card_from_mapping(data)
        assert err.value.key == key, data
    model = tmp_path / 'my-model'
    model.mkdir()
    (model / CARD_FILE).write_text(yaml.safe_dump({'output_format': 'robostral_v1'}))
    assert load_model_card(model).name == 'my-model'
    (model / CARD_FILE).write_text('output_format: [unclosed')
    with pytest.raises(ModelCardError, match='not valid YAML'):
        load_model_card(model)


def test_reference_labels_are_the_cell_vocabulary() -> None:
    labels = reference_labels()
    assert len(labels) == 4 * 3 + 2
    assert {'red cube', 'yellow cylinder', 'blue ball', 'left bin', 'right bin'} <= set(labels)


@pytest.mark.parametrize('family', ['qwen2_vl', 'mistral3'])
def test_torchvision_families(family: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    available, why = tiny.torchvision_available()
    if not available:
        pytest.skip(f'{family} needs torchvision for its processor: {why}')
    path = tiny_model(tmp_path_factory, family)
    for constrained in (True, False):
        backend = TransformersBackend(path, constrained=constrained)
        agent = make_agent(backend)
        for seed in range(2):
            check_outcome(run(agent, INSTRUCTIONS[seed], seed), backend)
        agent.close()
