"""The shipped robostral-tiny model: integrity, size, and plans on fresh scenes.

The model runs through the agent's own core (transformers backend, constrained decoding,
parser, grounding) on freshly rendered scenes.
"""

from __future__ import annotations

import pytest

from robostral_agent.paths import models_dir
from robostral_agent.training import evaluate
from robostral_agent.vlm.backend import weights_sha256
from robostral_agent.vlm.manifest import MANIFEST, verify_manifest

MODEL = models_dir() / 'robostral-tiny'
MAX_BYTES = 25 * 1024 * 1024


def test_shipped_files_match_the_manifest() -> None:
    assert (MODEL / MANIFEST).is_file()
    assert verify_manifest(MODEL) == []
    listed = (MODEL / MANIFEST).read_text()
    assert f'{weights_sha256(MODEL)}  model.safetensors' in listed


def test_shipped_model_is_small_and_documented() -> None:
    size = sum(p.stat().st_size for p in MODEL.rglob('*') if p.is_file())
    assert size < MAX_BYTES, f'{size / 1e6:.1f} MB'
    card = (MODEL / 'README.md').read_text()
    for section in ('Architecture', 'Data', 'Training', 'Results', 'Limits'):
        assert f'## {section}' in card


# Floors well under the model card's measured figures (500 scenes), so that a broken or
# regressed model fails while a 20-scene sample's noise does not. They are not the issue's
# targets, which robostral-tiny does not reach yet (see the model card).
FLOORS = {'correct_plan': 0.7, 'correct_object': 0.7, 'none_accuracy': 0.5}
MAX_MEDIAN_ERROR_M = 0.04


@pytest.mark.slow
def test_plans_on_fresh_scenes_reach_the_floors() -> None:
    """Fresh scenes (a seed the card's evaluation does not use, far from every training
    seed), rendered as the simulator node renders them, through the agent's own core."""
    report, records = evaluate.evaluate(MODEL, scenes=20, seed=7, threads=1, progress=False)
    constrained = report['constrained']['all']
    assert constrained['parse_rate'] == 1.0  # the grammar makes every answer parse
    pairs = [
        report['constrained'][split]['instructions'] for split in ('seen_combo', 'heldout_combo')
    ]
    assert sum(pairs) == constrained['instructions'] and all(pairs)
    for key, floor in FLOORS.items():
        assert constrained[key] >= floor, (key, constrained)
    assert constrained['target_error_median_m'] <= MAX_MEDIAN_ERROR_M, constrained
    # home has no object: a model that reads instructions at all gets it right every time
    homes = [r for r in records['constrained'] if r['kind'] == 'home']
    assert homes and all(r['correct_plan'] for r in homes), homes
