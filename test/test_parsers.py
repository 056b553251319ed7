"""Output-format parsers: known strings -> exact steps; any string -> a plan or FormatError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robostral_agent.vlm.formats import (
    FormatError,
    ParsedPlan,
    parse_json_v1,
    parse_paligemma_loc,
    parse_robostral_v1,
)
from robostral_agent.vlm.model_card import reference_labels

LABELS = tuple(reference_labels())
DESIGN_EXAMPLE = (
    'pick <loc0312><loc0500><loc0380><loc0570> red cube ; '
    'place <loc0100><loc0800><loc0300><loc0990> left bin'
)


def _boxes(plan: ParsedPlan) -> list[tuple[float, ...] | None]:
    return [s.box for s in plan.steps]


# --- robostral_v1 ------------------------------------------------------------------------------


def test_robostral_v1_design_example_gives_exact_steps() -> None:
    plan = parse_robostral_v1(DESIGN_EXAMPLE, LABELS)
    assert [(s.task, s.label) for s in plan.steps] == [('pick', 'red cube'), ('place', 'left bin')]
    # y0 x0 y1 x1 on the 1024 grid -> (x0, y0, x1, y1) fractions
    assert _boxes(plan) == [
        (500 / 1024, 312 / 1024, 570 / 1024, 380 / 1024),
        (800 / 1024, 100 / 1024, 990 / 1024, 300 / 1024),
    ]


def test_robostral_v1_spans_cover_box_and_label_only() -> None:
    plan = parse_robostral_v1(DESIGN_EXAMPLE)
    first = plan.steps[0]
    assert [DESIGN_EXAMPLE[a:b] for a, b in first.spans] == [
        '<loc0312><loc0500><loc0380><loc0570>',
        'red cube',
    ]
    second = plan.steps[1]
    assert DESIGN_EXAMPLE[second.spans[1][0] : second.spans[1][1]] == 'left bin'


def test_robostral_v1_none_home_and_surrounding_whitespace() -> None:
    assert parse_robostral_v1('none') == ParsedPlan(())
    assert not parse_robostral_v1('  none\n').found
    plan = parse_robostral_v1(' home ; inspect <loc0000><loc0000><loc1023><loc1023> blue ball\n')
    assert [(s.task, s.label, s.box) for s in plan.steps] == [
        ('home', '', None),
        ('inspect', 'blue ball', (0.0, 0.0, 1023 / 1024, 1023 / 1024)),
    ]
    text = ' home ; x'
    with pytest.raises(FormatError):
        parse_robostral_v1(text)
    home = parse_robostral_v1('\thome').steps[0]
    assert '\thome'[home.spans[0][0] : home.spans[0][1]] == 'home'


@pytest.mark.parametrize(
    'text',
    [
        '',
        'None',
        'none ; home',
        'pick <loc0312><loc0500><loc0380> red cube',  # three locs
        'pick <loc0312><loc0500><loc0380><loc0570>red cube',  # no space
        'pick <loc1024><loc0500><loc0380><loc0570> red cube',  # off the grid
        'pick <loc312><loc0500><loc0380><loc0570> red cube',  # three digits
        'grab <loc0312><loc0500><loc0380><loc0570> red cube',  # unknown task
        'home <loc0312><loc0500><loc0380><loc0570> red cube',  # home takes no box
        'pick <loc0312><loc0500><loc0380><loc0570> red cube;home',  # separator
        'pick <loc0312><loc0500><loc0380><loc0570> red cube ; ',  # dangling separator
        'pick <loc0312><loc0500><loc0380><loc0570> Red Cube',  # case
        'pick <loc0312><loc0500><loc0380><loc0570>  red cube',  # double space
    ],
)
def test_robostral_v1_refuses_malformed(text: str) -> None:
    with pytest.raises(FormatError):
        parse_robostral_v1(text, LABELS)


def test_robostral_v1_closed_vocabulary() -> None:
    text = 'pick <loc0312><loc0500><loc0380><loc0570> purple cube'
    assert parse_robostral_v1(text).steps[0].label == 'purple cube'  # open vocabulary
    with pytest.raises(FormatError, match='unknown label'):
        parse_robostral_v1(text, LABELS)


def test_robostral_v1_step_limit() -> None:
    text = ' ; '.join(['home'] * 33)
    with pytest.raises(FormatError, match='at most 32'):
        parse_robostral_v1(text)
    assert len(parse_robostral_v1(' ; '.join(['home'] * 32)).steps) == 32


# --- paligemma_loc -----------------------------------------------------------------------------


def test_paligemma_loc_detections() -> None:
    text = (
        '<loc0100><loc0200><loc0300><loc0400> red cube ; '
        '<loc0000><loc0512><loc0512><loc1023> left bin'
    )
    plan = parse_paligemma_loc(text, LABELS)
    assert [(s.task, s.label, s.box) for s in plan.steps] == [
        ('detect', 'red cube', (200 / 1024, 100 / 1024, 400 / 1024, 300 / 1024)),
        ('detect', 'left bin', (512 / 1024, 0.0, 1023 / 1024, 512 / 1024)),
    ]
    assert not parse_paligemma_loc('').found
    assert not parse_paligemma_loc(' \n').found
    for bad in ('red cube', '<loc0100><loc0200><loc0300><loc0400>', 'none', 'pick ' + text):
        with pytest.raises(FormatError):
            parse_paligemma_loc(bad, LABELS)


# --- json_v1 -----------------------------------------------------------------------------------


def test_json_v1_normalised_and_absolute() -> None:
    text = (
        '[{"task": "pick", "object": "red cube", "bbox": [100, 200, 300, 400]}, {"task": "home"}]'
    )
    plan = parse_json_v1(text, LABELS, box_format='normalised', box_scale=1000.0)
    assert [(s.task, s.label, s.box) for s in plan.steps] == [
        ('pick', 'red cube', (0.1, 0.2, 0.3, 0.4)),
        ('home', '', None),
    ]
    absolute = parse_json_v1(text, LABELS, box_format='absolute', image_size=(640, 480))
    assert absolute.steps[0].box == (100 / 640, 200 / 480, 300 / 640, 400 / 480)
    first, second = absolute.steps
    assert text[first.spans[0][0] : first.spans[0][1]].startswith('{"task": "pick"')
    assert text[second.spans[0][0] : second.spans[0][1]] == '{"task": "home"}'


def test_json_v1_fence_empty_list_and_qwen_keys() -> None:
    assert not parse_json_v1('[]').found
    assert not parse_json_v1(' [ ] ').found
    fenced = '```json\n[{"task": "inspect", "label": "blue ball", "bbox_2d": [1, 2, 3, 4]}]\n```'
    step = parse_json_v1(fenced, LABELS, box_scale=10.0).steps[0]
    assert (step.task, step.label, step.box) == ('inspect', 'blue ball', (0.1, 0.2, 0.3, 0.4))
    assert fenced[step.spans[0][0]] == '{'


@pytest.mark.parametrize(
    'text',
    [
        '',
        '{}',
        '[',
        '[{"task": "pick", "object": "red cube", "bbox": [1, 2, 3]}]',
        '[{"task": "pick", "object": "red cube", "bbox": [1, 2, 3, true]}]',
        '[{"task": "pick", "object": "red cube", "bbox": [1, 2, 3, NaN]}]',
        '[{"task": "pick", "object": "red cube"}]',
        '[{"task": "fly", "object": "red cube", "bbox": [1, 2, 3, 4]}]',
        '[{"task": "pick", "object": "red cube", "bbox": [1, 2, 3, 4], "x": 1}]',
        '[{"task": "pick", "object": "red cube", "label": "red cube", "bbox": [1, 2, 3, 4]}]',
        '[{"task": "home", "bbox": [1, 2, 3, 4]}]',
        '[{"task": "pick", "object": "Red Cube", "bbox": [1, 2, 3, 4]}]',
        '[{"task": "pick", "object": "pink cube", "bbox": [1, 2, 3, 4]}]',
        '[1] trailing',
        '[1, 2',
        '["home"]',
    ],
)
def test_json_v1_refuses_malformed(text: str) -> None:
    with pytest.raises(FormatError):
        parse_json_v1(text, LABELS)


def test_json_v1_absolute_needs_image_size() -> None:
    with pytest.raises(FormatError, match='image size'):
        parse_json_v1('[{"task": "pick", "object": "red cube", "bbox": [1, 2, 3, 4]}]',
                      box_format='absolute')  # fmt: skip


# --- any string: a plan or FormatError, never another exception ---------------------------------

PIECES = st.sampled_from(
    [
        'pick', 'place', 'move_to', 'inspect', 'home', 'none', ' ', ' ; ', ';', '<loc', '>',
        '<loc0000>', '<loc1023>', '<loc9999>', '<loc12>', 'red cube', 'left bin', '[', ']', '{',
        '}', '"task"', ': ', ', ', '"object"', '"bbox"', '"pick"', '"home"', '1e999', '-0',
        '```json\n', '\n```', 'NaN', 'null', '"red cube"', '[1, 2, 3, 4]', '\x00', '\ud800',
    ]
)  # fmt: skip
TEXTS = st.one_of(st.text(max_size=300), st.lists(PIECES, max_size=40).map(''.join))
PARSERS = [
    lambda t: parse_robostral_v1(t, LABELS),
    lambda t: parse_paligemma_loc(t, LABELS),
    lambda t: parse_json_v1(t, LABELS),
    lambda t: parse_json_v1(t, box_format='absolute', image_size=(64, 48)),
]


@pytest.mark.parametrize('parser', PARSERS, ids=['robostral_v1', 'paligemma_loc', 'json', 'abs'])
@given(text=TEXTS)
def test_any_string_parses_or_raises_format_error(parser: object, text: str) -> None:
    try:
        plan = parser(text)  # type: ignore[operator]
    except FormatError:
        return
    assert isinstance(plan, ParsedPlan)
    for step in plan.steps:
        assert step.spans and all(0 <= a <= b <= len(text) for a, b in step.spans)
        if step.box is not None:
            assert len(step.box) == 4


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(['pick', 'place', 'move_to', 'inspect']),
            st.lists(st.integers(0, 1023), min_size=4, max_size=4),
            st.sampled_from(LABELS),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_robostral_v1_round_trips_generated_plans(
    steps: list[tuple[str, list[int], str]],
) -> None:
    text = ' ; '.join(f'{t} ' + ''.join(f'<loc{v:04d}>' for v in box) + f' {label}'
                      for t, box, label in steps)  # fmt: skip
    plan = parse_robostral_v1(text, LABELS)
    assert [(s.task, s.label) for s in plan.steps] == [(t, label) for t, _, label in steps]
    for step, (_, (y0, x0, y1, x1), _) in zip(plan.steps, steps, strict=True):
        assert step.box == (x0 / 1024, y0 / 1024, x1 / 1024, y1 / 1024)
