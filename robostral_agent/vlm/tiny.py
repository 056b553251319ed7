"""Tiny, randomly initialised checkpoints of real VLM families, built from configs offline.

No model can be downloaded here, yet the backend must be shown to load and run the real
architectures users put on disk. These builders make a few-hundred-kilobyte checkpoint of a
family (PaliGemma, Idefics3/SmolVLM, Florence2, Qwen2-VL, Mistral3) with a byte-level BPE
tokenizer trained locally, save it with its processor in the layout ``from_pretrained``
expects, and write the ``robostral.yaml`` sidecar. Tests and benchmarks use them; the
robostral-tiny training reuses :func:`build_tiny_paligemma` with its own tokenizer and sizes.

Random weights produce junk text, which is the point: the agent must turn junk into a clean
``not_found``/``error`` status, and constrained decoding must still make it parseable.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from robostral_agent.contract import TASKS
from robostral_agent.vlm.model_card import CARD_FILE, reference_labels

BOS, EOS, PAD, UNK = '<bos>', '<eos>', '<pad>', '<unk>'
IDEFICS3_TOKENS = (
    '<fake_token_around_image>',
    '<image>',
    '<end_of_utterance>',
    '<global-img>',
    *(f'<row_{r}_col_{c}>' for r in range(1, 7) for c in range(1, 7)),
)


@dataclass(frozen=True)
class TinySizes:
    """Dimensions of a tiny model (defaults: about 1e5 parameters, ~10 ms per token on CPU).

    ``initializer_range`` is larger than the usual 0.02 so that random outputs depend on the
    image and the prompt (with 0.02 a tiny model emits the same string for every input).
    ``image_size`` is the input height; ``image_width`` (PaliGemma only) makes the input
    non-square, and ``vision_intermediate`` / ``vision_heads`` size the vision tower apart
    from the decoder (``None``: the same as ``intermediate`` / ``heads``).
    """

    hidden: int = 32
    intermediate: int = 64
    layers: int = 1
    heads: int = 2
    vision_hidden: int = 32
    vision_layers: int = 1
    image_size: int = 32
    patch_size: int = 8
    initializer_range: float = 0.5
    image_width: int | None = None
    vision_intermediate: int | None = None
    vision_heads: int | None = None


def reference_corpus() -> list[str]:
    """Text a tokenizer for the reference cell should encode compactly.

    Instructions, the three output formats and the prompts, so that task words, labels and
    JSON punctuation become single tokens; everything else still encodes byte by byte.
    """
    labels = reference_labels()
    lines = []
    for label in labels:
        lines += [
            f'pick the {label}',
            f'put the {label} in the left bin',
            f'move the {label} to the right bin',
            f'inspect the {label}',
            f'detect {label}',
            f'pick <loc0100><loc0200><loc0300><loc0400> {label}',
            f'[{{"task": "pick", "object": "{label}", "bbox": [10, 20, 30, 40]}}]',
        ]
    lines += [f'{task} ; none ; go home ; stop' for task in TASKS]
    lines += ['User: Assistant: Answer with JSON steps.', '```json\n[]\n```']
    return lines * 4


def train_tokenizer(
    corpus: Iterable[str] | None = None,
    *,
    vocab_size: int = 384,
    special_tokens: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> Any:
    """A byte-level BPE trained here (``tokenizers``), as a ``PreTrainedTokenizerFast``.

    ``special_tokens`` are added after ``<pad> <eos> <bos> <unk>`` (ids 0..3); ``extra`` is
    passed to the wrapper (e.g. ``extra_special_tokens`` for processors that look them up).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, BOS, UNK, *special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus or reference_corpus()), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        **(extra or {}),
    )


def _round_up(n: int, multiple: int = 64) -> int:
    return (n + multiple - 1) // multiple * multiple


def _special_ids(tokenizer: Any) -> dict[str, int]:
    return {
        'bos_token_id': tokenizer.bos_token_id,
        'eos_token_id': tokenizer.eos_token_id,
        'pad_token_id': tokenizer.pad_token_id,
    }


def _decoder(sizes: TinySizes, tokenizer: Any, **family: Any) -> dict[str, Any]:
    """The language model's settings that every decoder-only family names alike: the
    tokenizer's vocabulary (rounded up) and special ids, one key/value head; ``family`` adds
    the family's own keys or overrides these."""
    return {
        'vocab_size': _round_up(len(tokenizer)),
        'hidden_size': sizes.hidden,
        'intermediate_size': sizes.intermediate,
        'num_hidden_layers': sizes.layers,
        'num_attention_heads': sizes.heads,
        'num_key_value_heads': 1,
        'initializer_range': sizes.initializer_range,
        **_special_ids(tokenizer),
        **family,
    }


def _vision(sizes: TinySizes, **family: Any) -> dict[str, Any]:
    """The vision tower's settings that the ViT-style families (SigLIP, Idefics3, Pixtral)
    name alike; ``family`` adds the family's own keys or overrides these."""
    return {
        'hidden_size': sizes.vision_hidden,
        'intermediate_size': sizes.intermediate,
        'num_hidden_layers': sizes.vision_layers,
        'num_attention_heads': sizes.heads,
        'image_size': sizes.image_size,
        'patch_size': sizes.patch_size,
        **family,
    }


def _build(
    out_dir: Path,
    model_class: Any,
    config: Any,
    seed: int,
    processor: Any,
    tokenizer: Any,
    card: dict[str, Any],
    **generation: Any,
) -> Path:
    """Initialise the model from ``seed`` and save it, its processor and the sidecar.

    The generation config's bos/eos/pad ids must be the tokenizer's, or generation keeps a
    default stop token outside the tiny vocabulary; ``generation`` sets further fields.
    """
    import torch

    torch.manual_seed(seed)
    model = model_class(config).eval()
    for key, value in {**_special_ids(tokenizer), **generation}.items():
        setattr(model.generation_config, key, value)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / CARD_FILE).write_text(yaml.safe_dump(card, sort_keys=False))
    return out_dir


def _card(
    name: str,
    prompt: str,
    output_format: str,
    sizes: TinySizes,
    overrides: dict[str, Any] | None,
    **defaults: Any,
) -> dict[str, Any]:
    """The sidecar; the frame is shrunk to the vision tower's input size first.

    ``defaults`` are the family's, ``overrides`` the caller's (applied last).
    """
    return {
        'name': name,
        'prompt_template': prompt,
        'output_format': output_format,
        'image_size': [sizes.image_size, sizes.image_size],
        'max_new_tokens': 96,
        'constrained': True,
        'labels': reference_labels(),
        **defaults,
        **(overrides or {}),
    }


def build_tiny_paligemma(
    out_dir: Path,
    *,
    tokenizer: Any = None,
    sizes: TinySizes = TinySizes(),
    seed: int = 0,
    name: str = 'tiny-paligemma',
    output_format: str = 'robostral_v1',
    card: dict[str, Any] | None = None,
) -> Path:
    """PaliGemma (SigLIP vision tower + Gemma decoder), speaking ``robostral_v1`` by default.

    Pass ``tokenizer`` (a ``PreTrainedTokenizerFast`` with bos/eos/pad) and ``sizes`` to make
    a trainable starting point; the processor adds ``<image>``, the 1024 ``<locNNNN>`` and
    the 128 ``<segNNN>`` tokens, and the vocabulary is rounded up after that.
    """
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = tokenizer if tokenizer is not None else train_tokenizer()
    height, width = sizes.image_size, sizes.image_width or sizes.image_size
    seq_len = (height // sizes.patch_size) * (width // sizes.patch_size)
    # SigLIP learns a square table of patch positions, (image_size / patch)^2 entries, and
    # adds it to the patches in row-major order: a non-square input works when its patch
    # count is a square number (e.g. 25 x 9 = 15^2).
    side = math.isqrt(seq_len)
    if side * side != seq_len:
        raise ValueError(
            f'{width}x{height} px in {sizes.patch_size} px patches gives {seq_len} patches, '
            'not a square number, which SigLIP position embeddings need'
        )
    image_processor = SiglipImageProcessorPil(
        size={'height': height, 'width': width}, image_seq_length=seq_len
    )
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    ids = _special_ids(tokenizer)
    vision = SiglipVisionConfig(
        **_vision(
            sizes,
            intermediate_size=sizes.vision_intermediate or sizes.intermediate,
            num_attention_heads=sizes.vision_heads or sizes.heads,
            image_size=side * sizes.patch_size,
            vision_use_head=False,
        )
    )
    text = GemmaConfig(**_decoder(sizes, tokenizer, head_dim=sizes.hidden // sizes.heads))
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        projection_dim=sizes.hidden,
        hidden_size=sizes.hidden,
        image_token_index=processor.image_token_id,
        initializer_range=sizes.initializer_range,
        **ids,
    )
    prompt = (
        '<image>detect {labels}' if output_format == 'paligemma_loc' else '<image>{instruction}'
    )
    sidecar = _card(name, prompt, output_format, sizes, card)
    return _build(
        out_dir, PaliGemmaForConditionalGeneration, config, seed, processor, tokenizer, sidecar
    )


def build_tiny_idefics3(
    out_dir: Path,
    *,
    tokenizer: Any = None,
    sizes: TinySizes = TinySizes(),
    seed: int = 0,
    name: str = 'tiny-idefics3',
    output_format: str = 'json_v1',
    card: dict[str, Any] | None = None,
) -> Path:
    """Idefics3 (the SmolVLM architecture): SigLIP-style vision, pixel shuffle, Llama decoder."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    tokenizer = tokenizer or train_tokenizer(special_tokens=IDEFICS3_TOKENS)
    scale = 2
    image_processor = Idefics3ImageProcessorPil(
        size={'longest_edge': sizes.image_size},
        max_image_size={'longest_edge': sizes.image_size},
        do_image_splitting=False,
    )
    seq_len = (sizes.image_size // sizes.patch_size) ** 2 // scale**2
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq_len
    )
    ids = _special_ids(tokenizer)
    vision = Idefics3VisionConfig(**_vision(sizes))
    text = LlamaConfig(**_decoder(sizes, tokenizer))
    config = Idefics3Config(
        vision_config=vision,
        text_config=text,
        scale_factor=scale,
        image_token_id=processor.image_token_id,
        initializer_range=sizes.initializer_range,
        **ids,
    )
    prompt = 'User:<image>{instruction}<end_of_utterance>\nAssistant:'
    sidecar = _card(name, prompt, output_format, sizes, card, box_format='normalised')
    return _build(
        out_dir, Idefics3ForConditionalGeneration, config, seed, processor, tokenizer, sidecar
    )


def build_tiny_florence2(
    out_dir: Path,
    *,
    tokenizer: Any = None,
    sizes: TinySizes = TinySizes(),
    seed: int = 0,
    name: str = 'tiny-florence2',
    output_format: str = 'json_v1',
    card: dict[str, Any] | None = None,
) -> Path:
    """Florence2 (DaViT vision encoder + BART encoder-decoder); absolute pixel boxes."""
    from transformers import (
        BartConfig,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = tokenizer or train_tokenizer(
        special_tokens=('<image>',), extra={'extra_special_tokens': {'image_token': '<image>'}}
    )
    # DaViT with one stage: stride 4, so a 32 px image becomes 8x8 = 64 patch tokens, and
    # the projector adds one pooled token.
    stride = 4
    seq_len = (sizes.image_size // stride) ** 2 + 1
    image_processor = CLIPImageProcessorPil(
        size={'height': sizes.image_size, 'width': sizes.image_size},
        crop_size={'height': sizes.image_size, 'width': sizes.image_size},
        image_seq_length=seq_len,
    )
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    ids = _special_ids(tokenizer)
    vision = Florence2VisionConfig(
        depths=[1],
        patch_size=[7],
        patch_stride=[stride],
        patch_padding=[3],
        patch_prenorm=[False],
        embed_dim=[sizes.vision_hidden],
        num_heads=[sizes.heads],
        num_groups=[sizes.heads],
        window_size=4,
        projection_dim=sizes.hidden,
        drop_path_rate=0.0,
        initializer_range=sizes.initializer_range,
    )
    text = BartConfig(
        vocab_size=_round_up(len(tokenizer)),
        d_model=sizes.hidden,
        encoder_layers=sizes.layers,
        decoder_layers=sizes.layers,
        encoder_attention_heads=sizes.heads,
        decoder_attention_heads=sizes.heads,
        encoder_ffn_dim=sizes.intermediate,
        decoder_ffn_dim=sizes.intermediate,
        max_position_embeddings=256,
        init_std=sizes.initializer_range,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=None,
        **ids,
    )
    config = Florence2Config(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids('<image>'),
        **ids,
    )
    sidecar = _card(name, '{instruction}', output_format, sizes, card, box_format='absolute')
    return _build(
        out_dir, Florence2ForConditionalGeneration, config, seed, processor, tokenizer, sidecar,
        decoder_start_token_id=tokenizer.eos_token_id,
    )  # fmt: skip


def torchvision_available() -> tuple[bool, str]:
    """Whether torchvision imports (Qwen2-VL and Mistral3 processors need it), and why not."""
    if importlib.util.find_spec('torchvision') is None:
        return False, 'torchvision is not installed (no CPU build matches torch here)'
    try:
        importlib.import_module('torchvision')  # optional: probed, never required
    except Exception as exc:  # a broken CUDA-only wheel raises RuntimeError, OSError, ...
        return False, f'torchvision does not import: {exc}'
    return True, ''


def build_tiny_qwen2_vl(
    out_dir: Path,
    *,
    tokenizer: Any = None,
    sizes: TinySizes = TinySizes(),
    seed: int = 0,
    name: str = 'tiny-qwen2-vl',
    output_format: str = 'json_v1',
    card: dict[str, Any] | None = None,
) -> Path:
    """Qwen2-VL (needs torchvision for its video processor); Qwen's 0..1000 boxes."""
    from transformers import (
        AutoProcessor,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    specials = ('<|vision_start|>', '<|vision_end|>', '<|image_pad|>', '<|video_pad|>')
    tokenizer = tokenizer or train_tokenizer(special_tokens=specials)
    patch, merge = 14, 2
    side = patch * merge * 2
    pixels = {'shortest_edge': side * side, 'longest_edge': side * side}
    image_processor = Qwen2VLImageProcessorPil(size=pixels, patch_size=patch, merge_size=merge)
    video_processor = Qwen2VLVideoProcessor(size=pixels, patch_size=patch, merge_size=merge)
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor
    )
    ids = _special_ids(tokenizer)
    config = Qwen2VLConfig(
        vision_config={
            'depth': sizes.vision_layers,
            'embed_dim': sizes.vision_hidden,
            'hidden_size': sizes.hidden,
            'num_heads': sizes.heads,
            'patch_size': patch,
            'spatial_merge_size': merge,
            'initializer_range': sizes.initializer_range,
        },
        text_config=_decoder(
            sizes, tokenizer, rope_parameters={'rope_type': 'default', 'mrope_section': [2, 3, 3]}
        ),
        image_token_id=tokenizer.convert_tokens_to_ids('<|image_pad|>'),
        video_token_id=tokenizer.convert_tokens_to_ids('<|video_pad|>'),
        vision_start_token_id=tokenizer.convert_tokens_to_ids('<|vision_start|>'),
        vision_end_token_id=tokenizer.convert_tokens_to_ids('<|vision_end|>'),
        **ids,
    )
    prompt = '<|vision_start|><|image_pad|><|vision_end|>{instruction}'
    # Qwen's patches are 14 px, merged 2x2: the frame is shrunk to `side`, not to sizes.
    sidecar = _card(
        name, prompt, output_format, sizes, card, box_format='normalised', image_size=[side] * 2
    )
    path = _build(
        out_dir, Qwen2VLForConditionalGeneration, config, seed, processor, tokenizer, sidecar
    )
    AutoProcessor.from_pretrained(path, local_files_only=True)  # fail here, not in a test
    return path


def build_tiny_mistral3(
    out_dir: Path,
    *,
    tokenizer: Any = None,
    sizes: TinySizes = TinySizes(),
    seed: int = 0,
    name: str = 'tiny-mistral3',
    output_format: str = 'json_v1',
    card: dict[str, Any] | None = None,
) -> Path:
    """Mistral3 (Pixtral vision + Mistral decoder); its processor needs torchvision."""
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        PixtralImageProcessor,
        PixtralProcessor,
    )

    specials = ('[IMG]', '[IMG_BREAK]', '[IMG_END]')
    tokenizer = tokenizer or train_tokenizer(special_tokens=specials)
    patch = 8
    image_processor = PixtralImageProcessor(
        size={'longest_edge': sizes.image_size}, patch_size={'height': patch, 'width': patch}
    )
    processor = PixtralProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        spatial_merge_size=2,
    )  # fmt: skip
    ids = _special_ids(tokenizer)
    config = Mistral3Config(
        vision_config=_vision(
            sizes,
            model_type='pixtral',
            patch_size=patch,
            head_dim=sizes.vision_hidden // sizes.heads,
        ),
        text_config=_decoder(
            sizes, tokenizer, model_type='mistral', head_dim=sizes.hidden // sizes.heads
        ),
        image_token_index=tokenizer.convert_tokens_to_ids('[IMG]'),
        spatial_merge_size=2,
        **ids,
    )
    sidecar = _card(name, '[IMG]{instruction}', output_format, sizes, card, box_format='absolute')
    return _build(
        out_dir, Mistral3ForConditionalGeneration, config, seed, processor, tokenizer, sidecar
    )


Builder = Callable[..., Path]

# family -> (builder, needs torchvision)
FAMILIES: dict[str, tuple[Builder, bool]] = {
    'paligemma': (build_tiny_paligemma, False),
    'idefics3': (build_tiny_idefics3, False),
    'florence2': (build_tiny_florence2, False),
    'qwen2_vl': (build_tiny_qwen2_vl, True),
    'mistral3': (build_tiny_mistral3, True),
}
