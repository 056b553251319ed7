"""VLM backends: one interface, one real implementation on Hugging Face ``transformers``.

:class:`TransformersBackend` loads a model directory from local disk only
(``local_files_only=True``, ``HF_HUB_OFFLINE`` defaulted to 1 before transformers is
imported, ``trust_remote_code`` off unless asked), picks device and dtype, reads the
``robostral.yaml`` sidecar, hashes the weights, optionally compiles the output grammar, and
warms up once. :meth:`generate` returns the answer text with, per generated token, its
character span and its probability under the final (possibly grammar-masked) distribution,
so that callers can score any part of the answer.

The weights' SHA-256: of ``model.safetensors`` when it is the only weights file (it equals
``sha256sum model.safetensors``); for sharded checkpoints, of the concatenated bytes of all
``*.safetensors`` files in sorted name order (``*.bin`` when there is no safetensors file).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from robostral_agent.vlm.manifest import MANIFEST, files_sha256, verify_manifest
from robostral_agent.vlm.model_card import ModelCard, ModelCardError, load_model_card

DEVICES = ('auto', 'cpu', 'cuda')
# A <locNNNN> token's probability is read as the mass of the values within this many camera
# pixels of it: a grid cell is 1/1024 of the model's view (well under a pixel), so the
# probability of the exact cell says nothing about how sure the model is of where the box is,
# and a model that spreads its mass over neighbouring cells (as robostral-tiny learned to)
# would look unsure of every box. In pixels, not cells, so that both axes mean the same
# distance on a view that is not square. The right distance is what grounding needs: it finds
# the object by depth inside the box grown by a quarter per side, so an edge may be off by
# up to about half the object's width and still land on it. The reference cell's 4 cm
# objects are 23-35 px wide in its camera (~1.6 mm per pixel); 10 px (~16 mm) stays under
# half the narrowest. Measured on robostral-tiny (500 held-out scenes): as a test of "right
# plan, object within 1.5 cm", AUC 0.72 at 10 px against 0.68 at 5 px (what box-centre
# grounding needed). Agent parameter `loc_tolerance_px`; scale it with the camera's pixels
# per object.
LOC_TOLERANCE_PX = 10.0
DTYPES = ('auto', 'float32', 'bfloat16', 'float16')


class BackendError(RuntimeError):
    """The model cannot be loaded or run; the message says what to fix."""


@dataclass(frozen=True)
class Generation:
    """One answer: text, per-token probabilities and character spans, and stage timings."""

    text: str
    token_ids: tuple[int, ...]
    token_probs: tuple[float, ...]
    token_spans: tuple[tuple[int, int], ...]
    preprocess_ms: float
    generate_ms: float
    decode_ms: float  # token probabilities, text and spans from the raw output
    finished: bool  # the model stopped by itself (stop token), not at max_new_tokens/time
    timed_out: bool

    def confidence(self, spans: tuple[tuple[int, int], ...]) -> float:
        """Geometric mean of the probabilities of the tokens that overlap ``spans``.

        The geometric mean is the per-token likelihood of the whole box-and-label string: one
        unlikely token pulls it down, forced tokens (probability 1 under a grammar) do not
        dilute it. No overlapping token (cannot happen for parsed text) gives 0.
        """
        logs = [
            math.log(max(p, 1e-12))
            for p, (a, b) in zip(self.token_probs, self.token_spans, strict=True)
            if any(a < end and start < b for start, end in spans)
        ]
        return math.exp(sum(logs) / len(logs)) if logs else 0.0


class Backend(Protocol):
    """What the agent needs from a model: identity, its card, and one call."""

    name: str
    sha256: str
    device: str
    dtype: str
    card: ModelCard
    warnings: tuple[str, ...]

    def generate(self, image: np.ndarray, prompt: str, timeout_s: float) -> Generation:
        """Answer ``prompt`` about ``image`` (``(H, W, 3)`` uint8 RGB) within ``timeout_s``."""
        ...


def weights_sha256(model_dir: Path) -> str:
    """SHA-256 (hex) of the weights, as the module docstring defines it."""
    files = sorted(Path(model_dir).glob('*.safetensors')) or sorted(Path(model_dir).glob('*.bin'))
    if not files:
        raise BackendError(f'no weights (*.safetensors or *.bin) in {model_dir}')
    return files_sha256(files)


def choose_device(device: str, dtype: str) -> tuple[str, str]:
    """``auto``: CUDA with bf16 (fp16 where bf16 is unsupported) when available, else CPU fp32."""
    import torch

    if device not in DEVICES:
        raise BackendError(f'device {device!r} is not one of {", ".join(DEVICES)}')
    if dtype not in DTYPES:
        raise BackendError(f'dtype {dtype!r} is not one of {", ".join(DTYPES)}')
    cuda = torch.cuda.is_available()
    if device == 'cuda' and not cuda:
        raise BackendError('device cuda was asked for, but torch sees no CUDA device')
    chosen = 'cuda' if device == 'cuda' or (device == 'auto' and cuda) else 'cpu'
    if dtype == 'auto':
        if chosen == 'cuda':
            dtype = 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        else:
            dtype = 'float32'
    return chosen, dtype


class TransformersBackend:
    """A local ``AutoModelForImageTextToText`` + ``AutoProcessor`` behind :class:`Backend`."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = 'auto',
        dtype: str = 'auto',
        trust_remote_code: bool = False,
        constrained: bool | None = None,
        threads: int = 0,
        warmup: bool = True,
        loc_tolerance_px: float = LOC_TOLERANCE_PX,
    ) -> None:
        """Load ``model_dir`` (see the module docstring); raises :class:`BackendError`.

        ``constrained`` overrides the card's setting; ``threads`` > 0 sets torch's CPU
        intra-op threads for the whole process (tiny models on a busy CPU run ~10x faster
        with 1 thread than with threads competing for cores); 0 leaves torch's default.
        ``loc_tolerance_px``: see :data:`LOC_TOLERANCE_PX`.
        """
        if not (math.isfinite(loc_tolerance_px) and loc_tolerance_px > 0):
            raise BackendError(
                f'loc_tolerance_px must be a positive number, not {loc_tolerance_px}'
            )
        self.loc_tolerance_px = float(loc_tolerance_px)
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise BackendError(f'model directory {path} does not exist')
        try:
            self.card = load_model_card(path)
        except ModelCardError as exc:
            raise BackendError(str(exc)) from exc
        if constrained is not None:
            self.card = replace(self.card, constrained=constrained)
        self.path = path
        self.name = self.card.name
        problems = verify_manifest(path)
        if problems:
            raise BackendError(f'{path} does not match its {MANIFEST}: ' + '; '.join(problems))
        self.sha256 = weights_sha256(path)
        self.device, self.dtype = choose_device(device, dtype)
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        self._load(trust_remote_code)
        self.warnings = self._check_limits()
        self.calls = 0
        if warmup:
            self._warm_up()

    def _load(self, trust_remote_code: bool) -> None:
        os.environ.setdefault('HF_HUB_OFFLINE', '1')  # effective when transformers is new here
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self._torch = torch
        options = {'local_files_only': True, 'trust_remote_code': trust_remote_code}
        try:
            self.processor = AutoProcessor.from_pretrained(self.path, **options)
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.path, dtype=getattr(torch, self.dtype), **options
            )
        except Exception as exc:  # third-party loaders raise anything on a bad directory
            raise BackendError(f'cannot load {self.path}: {type(exc).__name__}: {exc}') from exc
        self.model.to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.stop_token_ids = [eos] if isinstance(eos, int) else list(eos)
        pad = self.model.generation_config.pad_token_id
        self._drop_ids = {*self.stop_token_ids, *([pad] if pad is not None else [])}
        vocab = self.model.get_output_embeddings().weight.shape[0]
        self._loc_ids = self._find_loc_ids()
        torch = self._torch
        self._grid_of = torch.full((vocab,), -1, dtype=torch.long, device=self.device)
        if self._loc_ids is not None:
            self._grid_of[self._loc_ids] = torch.arange(len(self._loc_ids), device=self.device)
        self.constraint = None
        self._ordered_corners = None
        if self.card.constrained:
            from robostral_agent.vlm.constrained import GrammarConstraint, OrderedCorners

            if self._loc_ids is not None and self.card.output_format != 'json_v1':
                self._ordered_corners = OrderedCorners(self._loc_ids, self._grid_of)
            try:
                self.constraint = GrammarConstraint(
                    self.tokenizer, vocab, self.stop_token_ids, self.card
                )
            except Exception as exc:  # xgrammar reports bad grammars with several types
                raise BackendError(f'cannot build the output grammar: {exc}') from exc

    def _find_loc_ids(self) -> Any:
        """Token ids of ``<loc0000>`` .. ``<loc1023>`` in grid order, or None without them."""
        from robostral_agent.vlm.formats import LOC_TOKENS

        ids = self.tokenizer.convert_tokens_to_ids(list(LOC_TOKENS))
        unknown = self.tokenizer.unk_token_id
        if any(i is None or i == unknown for i in ids):
            return None
        return self._torch.tensor(ids, device=self.device)

    def _loc_tolerance_cells(self, frame_width: int, frame_height: int) -> tuple[float, float]:
        """The loc tolerance (camera pixels) in grid cells, ``(down, across)``, for a frame."""
        from robostral_agent.vlm.formats import LOC_GRID

        width, height = frame_width, frame_height
        if (crop := self.card.image_crop) is not None:
            width, height = crop[2] - crop[0], crop[3] - crop[1]
        tolerance = self.loc_tolerance_px
        return (tolerance * LOC_GRID / height, tolerance * LOC_GRID / width)

    def _token_probs(
        self, scores: Any, ids: list[int], tolerance_cells: tuple[float, float]
    ) -> list[float]:
        """Each chosen token's probability under the (grammar-masked) scores; for a loc
        token, the mass within ``tolerance_cells`` (down, across) of it. A box's loc tokens
        alternate ``y0 x0 y1 x1``: even places in a run of locs are rows, odd ones columns."""
        torch = self._torch
        probs = torch.softmax(scores, dim=-1)
        chosen = torch.tensor(ids, device=scores.device)
        out = probs.gather(1, chosen[:, None])[:, 0]
        if self._loc_ids is None:
            return out.tolist()
        cell = self._grid_of[chosen]  # grid index of each chosen token, -1 if not a loc
        tolerance, run = [], 0
        for value in cell.tolist():
            run = run + 1 if value >= 0 else 0
            if value >= 0:
                tolerance.append(tolerance_cells[(run - 1) % 2])
        if tolerance:
            is_loc = cell >= 0
            cells = torch.arange(len(self._loc_ids), device=scores.device)
            limit = torch.tensor(tolerance, device=scores.device)[:, None]
            near = (cells[None, :] - cell[is_loc][:, None]).abs() <= limit
            out[is_loc] = (probs[is_loc][:, self._loc_ids] * near).sum(dim=1)
        return out.tolist()

    def _check_limits(self) -> tuple[str, ...]:
        if self.constraint and self.card.max_new_tokens < self.constraint.worst_case_tokens:
            return (
                f'max_new_tokens={self.card.max_new_tokens} may cut a constrained answer short '
                f'(worst case {self.constraint.worst_case_tokens} tokens): raise it in '
                'robostral.yaml or lower max_steps',
            )
        return ()

    def _warm_up(self) -> None:
        """One short generation so the first instruction does not pay for lazy init."""
        crop = self.card.image_crop
        size = (crop[2], crop[3]) if crop else self.card.image_size or (64, 48)
        image = np.full((size[1], size[0], 3), 127, np.uint8)
        try:
            self._generate(image, self.card.prompt('home', ('left bin',)), 60.0, max_new_tokens=2)
        except Exception as exc:  # e.g. a prompt without the model's image token
            raise BackendError(f'warm-up failed: {type(exc).__name__}: {exc}') from exc

    def _inputs(self, image: np.ndarray, prompt: str) -> Any:
        from PIL import Image

        image = self.card.prepare_image(image)
        picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
        if self.card.prompt_style == 'chat':
            turn = [{'type': 'image'}, {'type': 'text', 'text': prompt}]
            prompt = self.processor.apply_chat_template(
                [{'role': 'user', 'content': turn}], add_generation_prompt=True, tokenize=False
            )
        inputs = self.processor(images=picture, text=prompt, return_tensors='pt')
        inputs.pop('labels', None)  # PaliGemma adds training labels; generate must not see them
        inputs = inputs.to(self.device)
        if 'pixel_values' in inputs:
            inputs['pixel_values'] = inputs['pixel_values'].to(self.model.dtype)
        return inputs

    def generate(self, image: np.ndarray, prompt: str, timeout_s: float) -> Generation:
        """See :class:`Backend`; ``timeout_s`` bounds generation through ``max_time``."""
        self.calls += 1
        return self._generate(image, prompt, timeout_s)

    def _generate(
        self, image: np.ndarray, prompt: str, timeout_s: float, max_new_tokens: int | None = None
    ) -> Generation:
        t0 = time.perf_counter()
        inputs = self._inputs(image, prompt)
        t1 = time.perf_counter()
        processors = [self.constraint.logits_processor()] if self.constraint else []
        if self._ordered_corners is not None:
            processors.append(self._ordered_corners)
        with self._torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens or self.card.max_new_tokens,
                min_new_tokens=0 if max_new_tokens else self.card.min_new_tokens,
                do_sample=False,
                num_beams=1,
                logits_processor=processors,
                output_scores=True,
                return_dict_in_generate=True,
                max_time=max(timeout_s - (t1 - t0), 1e-3),
            )
        t2 = time.perf_counter()
        torch = self._torch
        steps = len(out.scores)
        ids = out.sequences[0, out.sequences.shape[1] - steps :].tolist()
        if steps:
            scores = torch.stack([score[0] for score in out.scores]).float()
            tolerance = self._loc_tolerance_cells(image.shape[1], image.shape[0])
            probs = self._token_probs(scores, ids, tolerance)
        else:
            probs = []
        finished = bool(ids) and ids[-1] in self.stop_token_ids
        while ids and ids[-1] in self._drop_ids:
            ids.pop()
            probs.pop()
        text, spans = self._decode(ids)
        return Generation(
            text=text,
            token_ids=tuple(ids),
            token_probs=tuple(probs),
            token_spans=spans,
            preprocess_ms=(t1 - t0) * 1e3,
            generate_ms=(t2 - t1) * 1e3,
            decode_ms=(time.perf_counter() - t2) * 1e3,
            finished=finished,
            timed_out=(t2 - t0) >= timeout_s,
        )

    def _decode(self, ids: list[int]) -> tuple[str, tuple[tuple[int, int], ...]]:
        """The text and each token's character span in it.

        Usually the tokens' own decodings concatenate to the text, and the spans follow in
        one pass. Byte-level tokens can split a multi-byte character (or a decoder can merge
        pieces); then growing prefixes are decoded instead, and a token that completes a
        character gets the span that ends where the character does.
        """
        options = {'skip_special_tokens': False, 'clean_up_tokenization_spaces': False}
        text = self.tokenizer.decode(ids, **options)
        pieces = self.tokenizer.batch_decode([[i] for i in ids], **options)
        if ''.join(pieces) == text and '\ufffd' not in text:
            spans, end = [], 0
            for piece in pieces:
                spans.append((end, end + len(piece)))
                end += len(piece)
            return text, tuple(spans)
        spans, end = [], 0
        for i in range(len(ids)):
            prefix = self.tokenizer.decode(ids[: i + 1], **options)
            start = end
            if text.startswith(prefix):
                end = len(prefix)
            spans.append((start, end))
        return text, tuple(spans)
