"""The ``robostral.yaml`` sidecar of a model directory: how to prompt a model and read it.

A model directory holds what ``transformers`` saves (config, weights, processor) plus this
file, which says what the agent cannot guess: the prompt, the output format, how boxes are
written, the image size the model expects and the generation limits. Loading is strict:
an unknown key or a wrong type is refused with the key's name, because a typo here would
otherwise silently change how every answer is read.

Example (PaliGemma 2 fine-tuned for the reference cell)::

    name: robostral-tiny
    prompt_template: '<image>{instruction}'
    output_format: robostral_v1
    max_new_tokens: 96
    constrained: true

Example (Qwen2.5-VL, absolute pixel boxes on a 640x480 frame)::

    prompt_style: chat
    prompt_template: 'Plan robot steps for: {instruction}. Answer with a JSON list ...'
    output_format: json_v1
    box_format: absolute
    image_size: [640, 480]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

from robostral_agent.contract import BINS, COLORS, MAX_STEPS, SHAPES

Box = tuple[float, float, float, float]

CARD_FILE: Final = 'robostral.yaml'
OUTPUT_FORMATS: Final = ('robostral_v1', 'json_v1', 'paligemma_loc')
BOX_FORMATS: Final = ('absolute', 'normalised')
PROMPT_STYLES: Final = ('raw', 'chat')
PLACEHOLDERS: Final = ('{instruction}', '{labels}')


def reference_labels() -> list[str]:
    """Every label of the reference cell: ``<color> <shape>`` and the two bins."""
    return [f'{c} {s}' for c in COLORS for s in SHAPES] + [f'{b} bin' for b in BINS]


class ModelCardError(ValueError):
    """``robostral.yaml`` is missing, unreadable or invalid; ``key`` names the culprit."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f'{CARD_FILE}: {key}: {message}' if key else f'{CARD_FILE}: {message}')


@dataclass(frozen=True)
class ModelCard:
    """What ``robostral.yaml`` declares; every field has a default except the format.

    * ``prompt_template``: ``{instruction}`` is the operator's text, ``{labels}`` the objects
      named in it joined by `` ; `` (PaliGemma ``detect`` prompts).
    * ``prompt_style``: ``raw`` feeds the template to the processor as is (write the
      model's image token yourself, e.g. ``<image>``); ``chat`` wraps it with the
      processor's chat template as one user turn holding the image and the text.
    * ``box_format`` / ``box_scale`` (``json_v1`` only): ``absolute`` boxes are pixels of the
      image the model saw, ``normalised`` boxes are on a ``0..box_scale`` grid (Qwen2-VL:
      1000). ``json_v1`` boxes are ``[x0, y0, x1, y1]``.
    * ``image_crop``: ``[u0, v0, u1, v1]``, the region of the colour frame (pixels, end
      exclusive) the model looks at, e.g. the work area of a fixed camera; boxes refer to it
      and are mapped back to the frame. ``None``: the whole frame.
    * ``image_size``: ``[width, height]`` the (cropped) frame is resized to before the
      processor (absolute boxes then refer to it); ``None`` keeps its size.
    * ``constrained``: decode with a grammar of the output format (xgrammar), so that the
      output always parses; ``max_steps`` bounds the plan length that grammar admits.
    * ``labels``: the closed vocabulary of object and bin names; an answer naming anything
      else is refused.
    """

    output_format: str
    name: str = ''
    prompt_template: str = '{instruction}'
    prompt_style: str = 'raw'
    box_format: str = 'normalised'
    box_scale: float = 1000.0
    image_size: tuple[int, int] | None = None
    image_crop: tuple[int, int, int, int] | None = None
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    constrained: bool = False
    max_steps: int = 3
    labels: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise ModelCardError(
                'output_format',
                f'{self.output_format!r} is not one of {", ".join(OUTPUT_FORMATS)}',
            )
        if self.box_format not in BOX_FORMATS:
            raise ModelCardError('box_format', f'must be one of {", ".join(BOX_FORMATS)}')
        if self.prompt_style not in PROMPT_STYLES:
            raise ModelCardError('prompt_style', f'must be one of {", ".join(PROMPT_STYLES)}')
        if not any(p in self.prompt_template for p in PLACEHOLDERS):
            raise ModelCardError('prompt_template', 'must contain {instruction} or {labels}')
        try:
            self.prompt_template.format(instruction='', labels='')
        except (KeyError, IndexError, ValueError) as exc:
            raise ModelCardError(
                'prompt_template', f'only {{instruction}} and {{labels}} may appear: {exc}'
            ) from exc
        if not self.box_scale > 0:
            raise ModelCardError('box_scale', 'must be positive')
        if self.image_size is not None and (
            len(self.image_size) != 2 or min(self.image_size) <= 0
        ):
            raise ModelCardError('image_size', 'must be [width, height] with positive values')
        if self.image_crop is not None:
            u0, v0, u1, v1 = self.image_crop
            if not (0 <= u0 < u1 and 0 <= v0 < v1):
                raise ModelCardError('image_crop', 'need [u0, v0, u1, v1], u0 < u1, v0 < v1')
        if not 1 <= self.max_new_tokens <= 4096:
            raise ModelCardError('max_new_tokens', 'must be in [1, 4096]')
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ModelCardError('min_new_tokens', 'must be in [0, max_new_tokens]')
        if not 1 <= self.max_steps <= MAX_STEPS:
            raise ModelCardError('max_steps', f'must be in [1, {MAX_STEPS}]')
        for label in self.labels:
            if not label or label != label.strip() or '  ' in label or ';' in label:
                raise ModelCardError('labels', f'{label!r} is not a clean label')

    def prompt(self, instruction: str, labels: tuple[str, ...] = ()) -> str:
        return self.prompt_template.format(instruction=instruction, labels=' ; '.join(labels))

    def view_size(self, frame_width: int, frame_height: int) -> tuple[int, int]:
        """``(width, height)`` of the image the model sees for a frame of this size."""
        if self.image_size is not None:
            return self.image_size
        if self.image_crop is not None:
            u0, v0, u1, v1 = self.image_crop
            return (u1 - u0, v1 - v0)
        return (frame_width, frame_height)

    def box_to_frame(self, box: Box, frame_width: int, frame_height: int) -> Box:
        """A box as fractions of the model's view -> fractions of the whole frame."""
        if self.image_crop is None:
            return box
        u0, v0, u1, v1 = self.image_crop
        x0, y0, x1, y1 = box
        w, h = u1 - u0, v1 - v0
        return (
            (u0 + x0 * w) / frame_width, (v0 + y0 * h) / frame_height,
            (u0 + x1 * w) / frame_width, (v0 + y1 * h) / frame_height,
        )  # fmt: skip

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """The frame as the model sees it (see :func:`prepare_image`)."""
        return prepare_image(image, self.image_crop, self.image_size)


def prepare_image(
    image: np.ndarray,
    crop: tuple[int, int, int, int] | None,
    size: tuple[int, int] | None,
) -> np.ndarray:
    """Crop, then resize (PIL bilinear, antialiased when shrinking) to ``size``.

    One function for the backend and the training-data renderer, so a model sees at run
    time exactly the pixels it was trained on.
    """
    from PIL import Image

    if crop is not None:
        u0, v0, u1, v1 = crop
        height, width = image.shape[:2]
        if u1 > width or v1 > height:
            raise ModelCardError(
                'image_crop', f'{list(crop)} reaches outside the {width}x{height} frame'
            )
        image = image[v0:v1, u0:u1]
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return image
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return np.asarray(picture.resize(tuple(size), Image.Resampling.BILINEAR))


_TYPES: Final[dict[str, type | tuple[type, ...]]] = {
    'output_format': str,
    'name': str,
    'prompt_template': str,
    'prompt_style': str,
    'box_format': str,
    'box_scale': (int, float),
    'image_size': (list, type(None)),
    'image_crop': (list, type(None)),
    'max_new_tokens': int,
    'min_new_tokens': int,
    'constrained': bool,
    'max_steps': int,
    'labels': list,
}
assert set(_TYPES) == {f.name for f in fields(ModelCard)}


def card_from_mapping(data: Mapping[str, Any]) -> ModelCard:
    """Validate a parsed sidecar (unknown keys and wrong types are refused by name)."""
    if not isinstance(data, Mapping):
        raise ModelCardError('', f'expected a mapping, got {type(data).__name__}')
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _TYPES:
            raise ModelCardError(str(key), f'unknown key (known: {", ".join(_TYPES)})')
        expected = _TYPES[key]
        if isinstance(value, bool) and expected is not bool:
            raise ModelCardError(key, 'expected a number or text, got true/false')
        if not isinstance(value, expected):
            raise ModelCardError(key, f'wrong type {type(value).__name__}')
        values[key] = value
    if 'output_format' not in values:
        raise ModelCardError('output_format', 'missing')
    if values.get('image_size') is not None:
        size = values['image_size']
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
            raise ModelCardError('image_size', 'must be two integers')
        values['image_size'] = tuple(size)
    if values.get('image_crop') is not None:
        crop = values['image_crop']
        if len(crop) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in crop):
            raise ModelCardError('image_crop', 'must be four integers [u0, v0, u1, v1]')
        values['image_crop'] = tuple(crop)
    if 'labels' in values:
        if not all(isinstance(v, str) for v in values['labels']):
            raise ModelCardError('labels', 'must be a list of strings')
        values['labels'] = tuple(values['labels'])
    if 'box_scale' in values:
        values['box_scale'] = float(values['box_scale'])
    return ModelCard(**values)


def load_model_card(model_dir: Path) -> ModelCard:
    """Read ``model_dir/robostral.yaml``; the model name defaults to the directory name."""
    path = Path(model_dir) / CARD_FILE
    try:
        text = path.read_text(encoding='utf-8')
    except OSError as exc:
        raise ModelCardError('', f'cannot read {path}: {exc.strerror or exc}') from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelCardError('', f'{path} is not valid YAML: {exc}') from exc
    card = card_from_mapping(data if data is not None else {})
    if not card.name:
        card = replace(card, name=Path(model_dir).resolve().name)
    return card
