"""Train robostral-tiny: a PaliGemma-architecture model that speaks ``robostral_v1``.

    python -m robostral_agent.training.train --data data/tiny --out models/robostral-tiny

Runs unchanged on CPU (this project's 2-core machine: about 80 minutes with the defaults)
and CUDA (``--device cuda``), seeded and reproducible for a given device and thread count.
The tokenizer is trained here from the dataset's own text; the model is a tiny SigLIP vision
tower + Gemma decoder built from configs (:func:`robostral_agent.vlm.tiny.
build_tiny_paligemma`), trained from scratch, and saved with its processor, its
``robostral.yaml`` and a SHA-256 manifest so that the agent's transformers backend loads it
like any real checkpoint.

One departure from plain next-token cross-entropy, for sample efficiency: a ``<locNNNN>``
target is smoothed over its neighbouring grid cells (a Gaussian of ``--loc-sigma`` cells),
so a box that is off by one cell is almost as good as an exact one, as it is for grounding.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robostral_agent.contract import BINS, COLORS, SHAPES, TASKS
from robostral_agent.training import data as datamod
from robostral_agent.training import language
from robostral_agent.vlm.formats import LOC_GRID, LOC_TOKENS

LOC_RE = re.compile(r'<loc\d{4}>')


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2400
    batch: int = 32
    per_image: int = 4  # instructions per image in a batch: one vision pass serves them all
    lr: float = 1.2e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    loc_sigma: float = 1.5
    seed: int = 0
    threads: int = 2
    device: str = 'cpu'
    structured_init: bool = True
    aux_weight: float = 1.0  # dense auxiliary loss on the vision tower; 0 disables it
    init_from: str = ''  # a trained model directory to continue from (same data, same tokenizer)
    stop_at: int = 0  # end after this many steps of the schedule (0: all), saved in float32
    cell_head: bool = True  # the box-cell head of box_cell_loss
    task_head: float = 1.0  # weight of the task-kind head of referent_loss (0: no head)
    factored: bool = False  # label heads ask for a label's two words apart (LabelLoss)
    autocast: str = ''  # '' (float32), bfloat16 or float16: the forward under torch.autocast
    log_every: int = 50
    val_every: int = 400
    val_samples: int = 64

    def __post_init__(self) -> None:
        if self.autocast not in ('', 'bfloat16', 'float16'):
            raise ValueError(f'autocast must be empty, bfloat16 or float16, not {self.autocast!r}')


@dataclass(frozen=True)
class ModelSizes:
    """Defaults: about 4.6 M parameters (9 MB in float16).

    The decoder reads 225 image tokens per instruction, so its width dominates the cost of
    training and of each plan; 192 wide and 4 deep trains in about 80 minutes on 2 cores.
    """

    hidden: int = 192
    intermediate: int = 768
    layers: int = 4
    heads: int = 3
    vision_hidden: int = 192
    vision_intermediate: int = 768
    vision_layers: int = 4
    vision_heads: int = 3
    patch_size: int = 16
    vocab_size: int = 480


def corpus_lines(samples: list[datamod.Sample]) -> list[str]:
    """Training text for the tokenizer: instructions and answers without their loc tokens."""
    words = [*TASKS, *COLORS, *SHAPES, *(f'{b} bin' for b in BINS), 'none']
    lines = [s.instruction for s in samples] + [LOC_RE.sub('', s.target) for s in samples]
    # Every phrasing word, held-out ones included, so no word is split into unseen bytes.
    for kind in language.TEMPLATES.values():
        lines += [
            t.replace('{obj}', 'red cube').replace('{bin}', 'left bin') for t in kind.values()
        ]
    lines += [w.replace('{x}', 'go home') for w in language.WRAPPERS.values()]
    return lines + [' '.join(words)] * 50


def build_model(out_dir: Path, samples: list[datamod.Sample], sizes: ModelSizes, seed: int):
    """A fresh robostral-tiny directory: tokenizer trained here, random weights."""
    from robostral_agent.vlm import tiny

    tokenizer = tiny.train_tokenizer(corpus_lines(samples), vocab_size=sizes.vocab_size)
    tiny_sizes = tiny.TinySizes(
        hidden=sizes.hidden, intermediate=sizes.intermediate, layers=sizes.layers,
        heads=sizes.heads, vision_hidden=sizes.vision_hidden,
        vision_intermediate=sizes.vision_intermediate, vision_layers=sizes.vision_layers,
        vision_heads=sizes.vision_heads, image_size=datamod.MODEL_INPUT[1],
        image_width=datamod.MODEL_INPUT[0], patch_size=sizes.patch_size,
        initializer_range=0.02,
    )  # fmt: skip
    card = {
        'image_crop': list(datamod.IMAGE_CROP),
        'image_size': list(datamod.MODEL_INPUT),
        'max_new_tokens': 64,  # the grammar's worst case is 60 (every character a token)
        'max_steps': 2,
        'constrained': True,
    }
    return tiny.build_tiny_paligemma(
        out_dir, tokenizer=tokenizer, sizes=tiny_sizes, seed=seed, name='robostral-tiny',
        card=card,
    )  # fmt: skip


def sincos(positions: np.ndarray, dims: int, longest: float, shortest: float) -> np.ndarray:
    """``(n, dims)`` sines and cosines of ``positions`` at geometric wavelengths."""
    wavelengths = np.geomspace(longest, shortest, dims // 2)
    angles = 2 * np.pi * positions[:, None] / wavelengths[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def structured_init(model: Any, loc_ids: list[int], grid: tuple[int, int]) -> None:
    """Start position-carrying weights smooth instead of random (an initialisation only).

    * SigLIP's patch-position table gets 2D sine-cosine codes of each patch's row and column
      (as MAE's fixed embeddings; here they stay trainable), laid out for the actual
      ``rows x cols`` patch grid of the non-square input.
    * The ``<locNNNN>`` embeddings (tied to the output head) get sine-cosine codes of their
      grid value in half their dimensions, so that neighbouring cells start similar and the
      decoder can read a position out of the image with a near-linear map.
    Both only change where training starts; the architecture is PaliGemma's.
    """
    import torch

    rows, cols = grid
    table = model.model.vision_tower.embeddings.position_embedding.weight
    width = table.shape[1]
    r, c = np.divmod(np.arange(rows * cols), cols)
    half = width // 2
    codes = np.concatenate(
        [
            sincos(r.astype(float), half, 4.0 * rows, 1.5),
            sincos(c.astype(float), half, 4.0 * cols, 1.5),
        ],
        axis=1,
    )
    embed = model.get_input_embeddings().weight
    loc = sincos(np.arange(len(loc_ids), dtype=float), embed.shape[1] // 2, 2048.0, 6.0)
    with torch.no_grad():
        table[: rows * cols] = torch.as_tensor(codes, dtype=table.dtype)
        scale = float(embed.std())
        rows_ = torch.as_tensor(loc_ids)
        embed[rows_, : loc.shape[1]] = torch.as_tensor(loc * scale * 1.4, dtype=embed.dtype)


class LocSmoothedLoss:
    """Cross-entropy whose ``<loc>`` targets are spread over neighbouring grid cells."""

    def __init__(self, loc_ids: list[int], vocab: int, sigma: float, device: Any) -> None:
        import torch

        self.torch = torch
        self.loc_ids = torch.tensor(loc_ids, device=device)
        self.is_loc = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.is_loc[self.loc_ids] = True
        self.loc_index = torch.full((vocab,), -1, dtype=torch.long, device=device)
        self.loc_index[self.loc_ids] = torch.arange(LOC_GRID, device=device)
        grid = torch.arange(LOC_GRID, device=device, dtype=torch.float32)
        kernel = torch.exp(-0.5 * ((grid[:, None] - grid[None, :]) / max(sigma, 1e-6)) ** 2)
        self.kernel = kernel / kernel.sum(dim=1, keepdim=True)  # row i: soft target of cell i

    def __call__(self, logits: Any, target: Any) -> Any:
        """Mean loss of ``logits`` ``(N, vocab)`` against ``target`` token ids ``(N,)``."""
        torch = self.torch
        logp = torch.log_softmax(logits.float(), dim=-1)
        loss = -logp.gather(1, target[:, None]).squeeze(1)
        loc = self.is_loc[target]
        if loc.any():
            soft = self.kernel[self.loc_index[target[loc]]]
            loss[loc] = -(soft * logp[loc][:, self.loc_ids]).sum(dim=1)
        return loss.mean()


def _batch(processor: Any, images: np.ndarray, samples: list[datamod.Sample], prompt: str):
    from PIL import Image

    pictures = [Image.fromarray(np.asarray(images[s.image])) for s in samples]
    texts = [prompt.format(instruction=s.instruction) for s in samples]
    return processor(
        text=texts, images=pictures, suffix=[s.target for s in samples],
        return_tensors='pt', padding='longest',
    )  # fmt: skip


@dataclass
class Forward:
    logits: Any  # (N, vocab) at the positions that predict a label
    targets: Any  # (N,) those labels
    vision: Any  # (images, patches, vision width): the tower's output
    prompt_end: Any  # (batch, text width): the decoder at the prompt's last token
    patches_first: Any  # (batch, patches, text width): image tokens after the first layer
    patches_mid: Any  # (batch, patches, text width): image tokens after the middle layer
    answer_late: Any  # (N, text width): the positions of ``logits`` before the last layer


def predicted_logits(model: Any, inputs: Any, labels: Any, per_image: int) -> Forward:
    """Logits of the positions that predict a label, those labels, and the features the
    auxiliary losses read.

    Two savings over ``model(**inputs).logits``, both exact: the vision tower runs once per
    distinct image (a batch holds ``per_image`` instructions about each image, consecutive,
    and the features are repeated), and the output head runs only where a label follows
    (a few of the ~250 positions of a prefix of image tokens).
    """
    pixel_values = inputs.pop('pixel_values')[::per_image]
    image = model.get_image_features(pixel_values)
    image.pooler_output = image.pooler_output.repeat_interleave(per_image, dim=0)
    out = model.model(**inputs, mm_encoder_outputs={'image': image}, output_hidden_states=True)
    hidden = out.last_hidden_state
    is_image = inputs['input_ids'] == model.config.image_token_id

    def image_tokens(layer: int) -> Any:
        return out.hidden_states[layer][is_image].view(hidden.shape[0], -1, hidden.shape[-1])

    follows = labels[:, 1:] != -100
    logits = model.lm_head(hidden[:, :-1][follows])
    # The answer starts at the first suffix token (type 1); the prompt ends just before it.
    end = (inputs['token_type_ids'] == 1).int().argmax(dim=1) - 1
    prompt_end = hidden[range(hidden.shape[0]), end]
    return Forward(
        logits, labels[:, 1:][follows], image.last_hidden_state, prompt_end,
        image_tokens(1), image_tokens(len(out.hidden_states) // 2),
        out.hidden_states[-2][:, :-1][follows],
    )  # fmt: skip


AUX_LABELS = [f'{c} {s}' for c in COLORS for s in SHAPES] + [f'{b} bin' for b in BINS]


class DenseTargets:
    """Per-patch targets of the auxiliary loss, from every object's box in an image.

    The patch that holds a box's centre is labelled with the box's label (class 1..14,
    0 = nothing) and regresses the centre's offset in the patch and the box's size. A
    training-only head on the vision tower learns them; it is not part of the shipped model.
    It gives the tower a dense, direct signal of what is where, which the language loss
    alone (a few loc tokens per image) provides slowly.
    """

    def __init__(self, boxes: dict[int, dict[str, tuple[int, int, int, int]]], patch: int):
        import torch

        self.torch = torch
        self.patch = patch
        self.cols = datamod.MODEL_INPUT[0] // patch
        self.rows = datamod.MODEL_INPUT[1] // patch
        self.boxes = boxes

    def __call__(self, image_ids: list[int]) -> tuple[Any, Any, Any]:
        torch, p, cols, rows = self.torch, self.patch, self.cols, self.rows
        n = len(image_ids)
        classes = torch.zeros((n, rows * cols), dtype=torch.long)
        regress = torch.zeros((n, rows * cols, 4))
        for i, image_id in enumerate(image_ids):
            for label, box in self.boxes[image_id].items():
                x0, y0, x1, y1 = datamod.to_model_pixels(box)
                k = self.patch_of(box)
                row, col = divmod(k, cols)
                classes[i, k] = DENSE_CLASSES.index(label)
                regress[i, k] = torch.tensor(
                    [(x0 + x1) / 2 / p - col, (y0 + y1) / 2 / p - row,
                     (x1 - x0) / p / 4, (y1 - y0) / p / 4]
                )  # fmt: skip
        return classes, regress, classes > 0

    def patch_of(self, box: tuple[int, int, int, int]) -> int:
        """Index (row-major) of the patch that holds a frame-pixel box's centre."""
        x0, y0, x1, y1 = datamod.to_model_pixels(box)
        col = min(int((x0 + x1) / 2 / self.patch), self.cols - 1)
        row = min(int((y0 + y1) / 2 / self.patch), self.rows - 1)
        return row * self.cols + col


REFERENT_CLASSES = [*AUX_LABELS, 'none', 'home']
DENSE_CLASSES = ['none', *AUX_LABELS]  # DenseTargets' classes: 0 is an empty patch
FIRST_WORDS = [*COLORS, *BINS, 'none', 'home']
SECOND_WORDS = [*SHAPES, 'bin', 'none', 'home']


class LabelLoss:
    """Cross-entropy of a label head: one class per label, or (``factored``) a label's two
    words apart, each its own softmax (``'red cube'`` -> red of the colours and bin sides,
    cube of the shapes and ``bin``; ``none`` and ``home`` are both words).

    Whole labels give each colour-shape pair its own direction, and a pair that training
    never shows (the held-out ones) none: the model answered a held-out pair with a seen
    pair of the same colour or shape, or with ``none``, in 72% of such instructions.
    Factored heads ask for the colour and the shape as separate features, which a pair
    never seen could still combine. Measured as stage 5 from stage 4 (500 held-out scenes):
    held-out pairs 27.9% -> 18.6% right, all plans 83.1% -> 78.6%; not used by ``make model``.
    ``none_weight`` scales the ``none`` class(es).
    """

    def __init__(self, labels: list[str], factored: bool, device: Any, none_weight: float = 1.0):
        import torch

        self.torch = torch
        self.factored = factored
        if factored:
            rows = []
            for label in labels:
                first, _, second = label.partition(' ')  # 'none' and 'home': both words
                rows.append([FIRST_WORDS.index(first), SECOND_WORDS.index(second or first)])
            self.table = torch.tensor(rows, device=device)
            vocabularies = [FIRST_WORDS, SECOND_WORDS]
        else:
            vocabularies = [labels]
        self.sizes = [len(v) for v in vocabularies]
        self.weights = []
        for vocabulary in vocabularies:
            weight = torch.ones(len(vocabulary), device=device)
            weight[vocabulary.index('none')] = none_weight
            self.weights.append(weight)

    @property
    def outputs(self) -> int:
        """The head's output width."""
        return sum(self.sizes)

    def __call__(self, logits: Any, classes: Any) -> Any:
        """Mean loss of ``logits`` ``(..., outputs)`` against label indices ``(...)``."""
        ce = self.torch.nn.functional.cross_entropy
        logits, classes = logits.reshape(-1, logits.shape[-1]), classes.reshape(-1)
        if not self.factored:
            return ce(logits, classes, self.weights[0])
        words = self.table[classes]
        parts = logits.split(self.sizes, dim=-1)
        return sum(
            ce(part, words[:, i], w)
            for i, (part, w) in enumerate(zip(parts, self.weights, strict=True))
        )


def referent_targets(batch: list[datamod.Sample], dense: DenseTargets) -> tuple[Any, Any, Any]:
    """What each instruction is about (a label, ``none`` or ``home``), the patch holding
    that object's centre (-100 where there is none), and the kind of task it asks for."""
    torch = dense.torch
    classes, patches = [], []
    kinds = [language.KINDS.index(s.kind) for s in batch]
    for s in batch:
        if s.kind == 'home':
            classes.append(REFERENT_CLASSES.index('home'))
        elif s.target == 'none':
            classes.append(REFERENT_CLASSES.index('none'))
        else:
            classes.append(REFERENT_CLASSES.index(s.label))
        box = dense.boxes[s.image].get(s.label) if s.kind != 'home' else None
        if box is None or s.target == 'none':
            patches.append(-100)
            continue
        patches.append(dense.patch_of(box))
    return torch.tensor(classes), torch.tensor(patches), torch.tensor(kinds)


def referent_loss(
    heads: Any,
    forward: Forward,
    targets: tuple[Any, Any, Any],
    labels: LabelLoss,
    task_weight: float = 1.0,
) -> tuple[Any, Any]:
    """Training-only heads on the decoder that ask, directly, for the steps of grounding:

    * after the first layer, every image token says what the instruction names (the prefix
      attends bidirectionally, so an image token can read the colour and shape words);
    * after the middle layer, a score per image token, softmaxed over the patches, says which
      patch holds it (the image token compares what it shows with what it read);
    * at the prompt's end, the decoder says what the instruction names and (with a ``task``
      head) which kind of task it asks for.

    The answer's tokens then only have to attend to the patch that said "me" and copy its
    position. With the language loss alone (and with the last two heads alone) training sat
    on a plateau where the model found the objects but not which one was meant: each half of
    the comparison is useless without the other, so neither started; asking for the first
    half directly breaks the tie. The task head came later: the answer's first token alone
    (one of some fifteen the language loss averages over) left ``move_to`` and ``inspect``
    at their prior (0.4 / 0.6 whatever the verb), and asking for the kind per instruction
    separates them. Returns (what, where) losses.
    """
    import torch

    classes, patches, kinds = targets
    ce = torch.nn.functional.cross_entropy
    which = labels(heads['referent'](forward.prompt_end), classes)
    if 'task' in heads:
        which = which + task_weight * ce(heads['task'](forward.prompt_end), kinds)
    read = heads['query'](forward.patches_first)  # (batch, patches, classes)
    which = which + labels(read, classes[:, None].expand(read.shape[:2]))
    where = torch.zeros((), device=which.device)
    if (patches >= 0).any():
        scores = heads['match'](forward.patches_mid).squeeze(-1)  # (batch, patches)
        where = ce(scores, patches, ignore_index=-100)
    return which, where


def box_cell_loss(head: Any, forward: Forward, loss_fn: LocSmoothedLoss, grid: tuple[int, int]):
    """Training-only head before the last layer, at every position that predicts a loc
    token: the patch row and column of that box's centre.

    A coarse, direct question (9 + 25 classes) for the step the answer's tokens take after
    the patches have said which one is meant: attend to it and carry its position. The
    language loss asks for it only through 1024-way loc tokens smoothed over a cell or two,
    whose gradient is faint while the guess is still patches away.
    """
    import torch

    rows, cols = grid
    is_loc = loss_fn.is_loc[forward.targets]
    if not is_loc.any():
        return torch.zeros((), device=forward.targets.device)
    # A box's four loc tokens (y0 x0 y1 x1) are consecutive in the flattened answers.
    values = loss_fn.loc_index[forward.targets[is_loc]].view(-1, 4).float()
    centre = (values[:, :2] + values[:, 2:]) / 2 / LOC_GRID  # (boxes, [y, x]) in 0..1
    row = (centre[:, 0] * rows).long().clamp(0, rows - 1).repeat_interleave(4)
    col = (centre[:, 1] * cols).long().clamp(0, cols - 1).repeat_interleave(4)
    out = head(forward.answer_late[is_loc])
    ce = torch.nn.functional.cross_entropy
    return ce(out[:, :rows], row) + ce(out[:, rows:], col)


def aux_loss(head: Any, features: Any, targets: tuple[Any, Any, Any], labels: LabelLoss) -> Any:
    """``labels`` over :data:`DENSE_CLASSES` (its ``none``, an empty patch, weighs 0.1: most
    patches are empty table)."""
    import torch

    classes, regress, positive = targets
    out = head(features)
    logits, pred = out[..., : labels.outputs], out[..., labels.outputs :]
    loss = labels(logits, classes)
    if positive.any():
        loss = loss + 2.0 * torch.nn.functional.l1_loss(pred[positive], regress[positive])
    return loss


def validate(model: Any, processor: Any, images, samples, prompt: str, device) -> dict:
    """Greedy (unconstrained) answers on held-back images: exact answers, and how far the
    loc values are from the truth when the plan's words are right."""
    import torch
    from PIL import Image

    hits, structure, errors = 0, 0, []
    for s in samples:
        inputs = processor(
            text=prompt.format(instruction=s.instruction),
            images=Image.fromarray(np.asarray(images[s.image])), return_tensors='pt',
        ).to(device)  # fmt: skip
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        text = processor.tokenizer.decode(
            out[0, inputs['input_ids'].shape[1] :], skip_special_tokens=True
        ).strip()
        hits += text == s.target
        if LOC_RE.sub('<loc>', text) == LOC_RE.sub('<loc>', s.target):
            structure += 1
            got = [int(v) for v in re.findall(r'<loc(\d{4})>', text)]
            want = [int(v) for v in re.findall(r'<loc(\d{4})>', s.target)]
            errors += [abs(a - b) for a, b in zip(got, want, strict=True)]
    n = max(1, len(samples))
    return {
        'val_exact': hits / n,
        'val_words': structure / n,
        'val_loc_mae': float(np.mean(errors)) if errors else None,
    }


def continue_from(model: Any, out_dir: Path, previous: Path) -> None:
    """Start from ``previous``'s weights (a longer schedule in two runs). Its tokenizer must
    be the one just trained from the same data, or its token ids would mean other words."""
    from transformers import PaliGemmaForConditionalGeneration

    if (previous / 'tokenizer.json').read_bytes() != (out_dir / 'tokenizer.json').read_bytes():
        raise ValueError(f'{previous} was trained with another tokenizer (other data?)')
    trained = PaliGemmaForConditionalGeneration.from_pretrained(previous, local_files_only=True)
    model.load_state_dict(trained.float().state_dict())  # strict: same sizes, same names


def train(data_dir: Path, out_dir: Path, cfg: TrainConfig, sizes: ModelSizes) -> dict[str, Any]:
    import torch
    from transformers import AutoProcessor, PaliGemmaForConditionalGeneration

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    images, samples = datamod.load_samples(data_dir)
    rng = random.Random(cfg.seed)
    by_image: dict[int, list[datamod.Sample]] = {}
    for sample in samples:
        by_image.setdefault(sample.image, []).append(sample)
    image_ids = sorted(by_image)
    rng.shuffle(image_ids)
    # Validation images are never trained on.
    val = [by_image[i][0] for i in image_ids[: cfg.val_samples]]
    train_images = image_ids[cfg.val_samples :]
    images_per_batch = cfg.batch // cfg.per_image

    build_model(out_dir, samples, sizes, cfg.seed)
    processor = AutoProcessor.from_pretrained(out_dir, local_files_only=True)
    model = PaliGemmaForConditionalGeneration.from_pretrained(out_dir, local_files_only=True)
    if cfg.init_from:
        continue_from(model, out_dir, Path(cfg.init_from))
    model.to(cfg.device).train()
    prompt = '<image>{instruction}'
    tokenizer = processor.tokenizer
    loc_ids = tokenizer.convert_tokens_to_ids(list(LOC_TOKENS))
    grid = (datamod.MODEL_INPUT[1] // sizes.patch_size, datamod.MODEL_INPUT[0] // sizes.patch_size)
    if cfg.structured_init and not cfg.init_from:
        structured_init(model, loc_ids, grid)
    vocab = model.get_output_embeddings().weight.shape[0]
    loss_fn = LocSmoothedLoss(loc_ids, vocab, cfg.loc_sigma, cfg.device)
    vision_width = model.config.vision_config.hidden_size
    dense_labels = LabelLoss(DENSE_CLASSES, cfg.factored, cfg.device, none_weight=0.1)
    referent_labels = LabelLoss(REFERENT_CLASSES, cfg.factored, cfg.device)
    head = torch.nn.Linear(vision_width, dense_labels.outputs + 4).to(cfg.device)
    dense = (
        DenseTargets(datamod.load_boxes(data_dir), sizes.patch_size) if cfg.aux_weight else None
    )
    heads = torch.nn.ModuleDict({
        'dense': head,
        'referent': torch.nn.Linear(sizes.hidden, referent_labels.outputs),
        'query': torch.nn.Linear(sizes.hidden, referent_labels.outputs),
        'match': torch.nn.Linear(sizes.hidden, 1),
        'cell': torch.nn.Linear(sizes.hidden, grid[0] + grid[1]),
    })  # fmt: skip
    if cfg.task_head:  # created last: runs without it draw the same initial weights as before
        heads['task'] = torch.nn.Linear(sizes.hidden, len(language.KINDS))
    heads.to(cfg.device)
    params = list(model.named_parameters()) + [
        (f'aux.{n}', p) for n, p in heads.named_parameters()
    ]
    decay = [p for n, p in params if p.ndim >= 2 and 'embed' not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and 'embed' not in n)]
    optimizer = torch.optim.AdamW(
        [{'params': decay, 'weight_decay': cfg.weight_decay},
         {'params': no_decay, 'weight_decay': 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )  # fmt: skip

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (
            cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        )

    def precision() -> Any:
        """The forward pass's precision: float32, or bfloat16 autocast (``--autocast
        bfloat16``: 1.4x the steps per second on this machine's AVX-512 BF16 CPU; the
        weights, the optimizer and the losses' softmax stay float32)."""
        if not cfg.autocast:
            return contextlib.nullcontext()
        device_type = torch.device(cfg.device).type
        return torch.autocast(device_type, dtype=getattr(torch, cfg.autocast))

    history = []
    cursor = len(train_images)
    start = time.monotonic()
    running = running_aux = running_match = running_cell = 0.0
    for step in range(cfg.stop_at or cfg.steps):
        if cursor + images_per_batch > len(train_images):
            rng.shuffle(train_images)
            cursor = 0
        batch = []
        batch_images = train_images[cursor : cursor + images_per_batch]
        for image_id in batch_images:
            batch += rng.sample(by_image[image_id], cfg.per_image)
        cursor += images_per_batch
        inputs = _batch(processor, images, batch, prompt).to(cfg.device)
        labels = inputs.pop('labels')
        for group in optimizer.param_groups:
            group['lr'] = lr_at(step)
        with precision():
            forward = predicted_logits(model, inputs, labels, cfg.per_image)
            loss = loss_fn(forward.logits, forward.targets)
            if dense is not None:
                dense_targets = [t.to(cfg.device) for t in dense(batch_images)]
                extra = aux_loss(head, forward.vision, dense_targets, dense_labels)
                ref_targets = [t.to(cfg.device) for t in referent_targets(batch, dense)]
                which, where = referent_loss(
                    heads, forward, ref_targets, referent_labels, cfg.task_head
                )
                cell = box_cell_loss(heads['cell'], forward, loss_fn, grid) * cfg.cell_head
                extra = extra + which + where + cell
                running_cell += float(cell.detach())
                loss = loss + cfg.aux_weight * extra
                running_aux += float(extra.detach())
                running_match += float(where.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        running += float(loss.detach())
        if (step + 1) % cfg.log_every == 0:
            elapsed = time.monotonic() - start
            record = {'step': step + 1, 'loss': (running - cfg.aux_weight * running_aux)
                      / cfg.log_every, 'aux_loss': running_aux / cfg.log_every,
                      'match_loss': running_match / cfg.log_every,
                      'cell_loss': running_cell / cfg.log_every,
                      'lr': lr_at(step), 'elapsed_s': round(elapsed, 1)}  # fmt: skip
            running = running_aux = running_match = running_cell = 0.0
            if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
                model.eval()
                record.update(validate(model, processor, images, val, prompt, cfg.device))
                model.save_pretrained(out_dir)  # a checkpoint to inspect while training runs
                model.train()
            history.append(record)
            print(json.dumps(record), flush=True)
    model.eval()
    if not cfg.stop_at:
        # float16 halves the checkpoint; the backend loads it in float32 on CPU.
        model.to(torch.float16).save_pretrained(out_dir)
    else:
        model.save_pretrained(out_dir)  # to continue from, as it is
    report = {
        'train_config': asdict(cfg), 'sizes': asdict(sizes), 'samples': len(samples),
        'parameters': sum(p.numel() for p in model.parameters()),
        'train_seconds': round(time.monotonic() - start, 1), 'history': history,
    }  # fmt: skip
    (out_dir / 'training.json').write_text(json.dumps(report, indent=1))
    return report


def _flag(text: str) -> bool:
    if text.lower() in ('1', 'true', 'yes', 'on'):
        return True
    if text.lower() in ('0', 'false', 'no', 'off'):
        return False
    raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', type=Path, required=True, help='dataset directory')
    parser.add_argument('--out', type=Path, required=True, help='model directory to write')
    for name, value in asdict(TrainConfig()).items():
        kind = _flag if isinstance(value, bool) else type(value)
        parser.add_argument(f'--{name.replace("_", "-")}', type=kind, default=value)
    args = parser.parse_args(argv)
    fields = {k: getattr(args, k) for k in asdict(TrainConfig())}
    report = train(args.data, args.out, TrainConfig(**fields), ModelSizes())
    print(json.dumps({k: v for k, v in report.items() if k != 'history'}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
