"""``image_crop`` of a model card: the model sees a region of the frame, boxes map back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_agent_core import NOW, ScriptedBackend, _agent
from test_vlm_backend import synthetic_frame

from robostral_agent.contract import Instruction
from robostral_agent.vlm import tiny
from robostral_agent.vlm.backend import LOC_TOLERANCE_PX, TransformersBackend
from robostral_agent.vlm.model_card import (
    CARD_FILE,
    ModelCard,
    ModelCardError,
    card_from_mapping,
    prepare_image,
)

CROP = (0, 125, 640, 355)


def test_card_reads_and_checks_image_crop() -> None:
    card = card_from_mapping({'output_format': 'robostral_v1', 'image_crop': list(CROP)})
    assert card.image_crop == CROP
    for bad in ([0, 0, 10], [10, 0, 5, 20], [0, 30, 10, 20], [-1, 0, 5, 5], [0, 0, 1.5, 2]):
        with pytest.raises(ModelCardError) as err:
            card_from_mapping({'output_format': 'robostral_v1', 'image_crop': bad})
        assert err.value.key == 'image_crop'


def test_view_size_and_box_mapping() -> None:
    plain = ModelCard('robostral_v1')
    assert plain.view_size(640, 480) == (640, 480)
    assert plain.box_to_frame((0.1, 0.2, 0.3, 0.4), 640, 480) == (0.1, 0.2, 0.3, 0.4)
    cropped = ModelCard('robostral_v1', image_crop=CROP, image_size=(400, 144))
    assert cropped.view_size(640, 480) == (400, 144)
    assert ModelCard('json_v1', image_crop=CROP).view_size(640, 480) == (640, 230)
    # The crop's corners map onto the crop's pixel edges in the frame.
    x0, y0, x1, y1 = cropped.box_to_frame((0.0, 0.0, 1.0, 1.0), 640, 480)
    assert (x0 * 640, y0 * 480, x1 * 640, y1 * 480) == pytest.approx((0, 125, 640, 355))
    mid = cropped.box_to_frame((0.5, 0.5, 0.5, 0.5), 640, 480)
    assert (mid[0] * 640, mid[1] * 480) == pytest.approx((320.0, 240.0))


def test_prepare_image_crops_then_resizes() -> None:
    frame = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out = prepare_image(frame, CROP, (400, 144))
    expected = Image.fromarray(frame[125:355]).resize((400, 144), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(out, np.asarray(expected))
    assert prepare_image(frame, None, None) is frame
    np.testing.assert_array_equal(prepare_image(frame, CROP, None), frame[125:355])
    with pytest.raises(ModelCardError, match='outside the 320x240 frame'):
        prepare_image(frame[:240, :320], CROP, None)


def test_agent_maps_boxes_from_the_crop_to_the_frame() -> None:
    """A box at the crop's centre must ground at the frame pixel under the crop's centre.
    (A bin's box: grounding takes its centre as it is; an object's is searched by depth.)"""
    card = ModelCard('robostral_v1', image_crop=(100, 100, 420, 340))
    # y0 x0 y1 x1 around the crop centre (a 20 px box of the 320x240 crop)
    text = 'place <loc0469><loc0480><loc0555><loc0544> left bin'
    agent = _agent(ScriptedBackend(text, card=card))
    frame = synthetic_frame(0)
    outcome = agent.plan(Instruction('op', 'put it in the left bin', 'bob'), lambda: frame, NOW)
    assert outcome.state == 'proposed', outcome.detail
    u, v = outcome.proposal.steps[0].pixel
    assert u == pytest.approx(100 + 160 - 0.5, abs=0.5)
    assert v == pytest.approx(100 + 120 - 0.5, abs=0.5)


def test_backend_feeds_the_processor_the_cropped_frame(tmp_path: Path) -> None:
    sizes = tiny.TinySizes(image_size=16, image_width=64)  # 2 x 8 = 16 patches, a square
    model = tiny.build_tiny_paligemma(tmp_path / 'crop', sizes=sizes)
    card = yaml.safe_load((model / CARD_FILE).read_text())
    card.update(image_crop=[0, 200, 640, 360], image_size=[64, 16])
    (model / CARD_FILE).write_text(yaml.safe_dump(card))
    backend = TransformersBackend(model, device='cpu', dtype='float32')
    frame = np.random.default_rng(5).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    inputs = backend._inputs(frame, '<image>go home')
    expected = backend.processor(
        images=Image.fromarray(prepare_image(frame, (0, 200, 640, 360), (64, 16))),
        text='<image>go home', return_tensors='pt',
    )  # fmt: skip
    assert inputs['pixel_values'].shape == (1, 3, 16, 64)
    np.testing.assert_array_equal(inputs['pixel_values'].numpy(), expected['pixel_values'])
    generation = backend.generate(frame, '<image>go home', 30.0)
    assert generation.text  # the grammar makes even random weights answer in the format
    # A loc token's confidence tolerance is in camera pixels of the crop (640 x 160 here),
    # not of the frame nor of the model's 64 x 16 input: grid cells (down, across).
    assert backend._loc_tolerance_cells(640, 480) == pytest.approx(
        (LOC_TOLERANCE_PX * 1024 / 160, LOC_TOLERANCE_PX * 1024 / 640)
    )


def test_non_square_patch_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='square number'):
        tiny.build_tiny_paligemma(
            tmp_path / 'bad', sizes=tiny.TinySizes(image_size=16, image_width=48)
        )
