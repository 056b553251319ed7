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
from robostral_agent.vlm.formats import LOC_GRID

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
    log_every: int = 50
    val_every: int = 400
    val_samples: int = 64


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
        'max_new_tokens': 40,
        'max_steps': 2,
        'constrained': True,
    }
    return tiny.build_tiny_paligemma(
        out_dir, tokenizer=tokenizer, sizes=tiny_sizes, seed=seed, name='robostral-tiny',
        card=card,
    )  # fmt: skip


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


def predicted_logits(model: Any, inputs: Any, labels: Any, per_image: int) -> tuple[Any, Any]:
    """Logits of the positions that predict a label, and those labels.

    Two savings over ``model(**inputs).logits``, both exact: the vision tower runs once per
    distinct image (a batch holds ``per_image`` instructions about each image, consecutive,
    and the features are repeated), and the output head runs only where a label follows
    (a few of the ~250 positions of a prefix of image tokens).
    """
    pixel_values = inputs.pop('pixel_values')[::per_image]
    image = model.get_image_features(pixel_values)
    image.pooler_output = image.pooler_output.repeat_interleave(per_image, dim=0)
    hidden = model.model(**inputs, mm_encoder_outputs={'image': image}).last_hidden_state
    follows = labels[:, 1:] != -100
    return model.lm_head(hidden[:, :-1][follows]), labels[:, 1:][follows]


def greedy_exact_match(model: Any, processor: Any, images, samples, prompt: str, device) -> float:
    """Fraction of answers reproduced exactly (unconstrained greedy decoding)."""
    import torch
    from PIL import Image

    hits = 0
    for s in samples:
        inputs = processor(
            text=prompt.format(instruction=s.instruction),
            images=Image.fromarray(np.asarray(images[s.image])), return_tensors='pt',
        ).to(device)  # fmt: skip
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        text = processor.tokenizer.decode(
            out[0, inputs['input_ids'].shape[1] :], skip_special_tokens=True
        )
        hits += text.strip() == s.target
    return hits / max(1, len(samples))


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
    model.to(cfg.device).train()
    prompt = '<image>{instruction}'
    tokenizer = processor.tokenizer
    loc_ids = tokenizer.convert_tokens_to_ids([f'<loc{i:04d}>' for i in range(LOC_GRID)])
    vocab = model.get_output_embeddings().weight.shape[0]
    loss_fn = LocSmoothedLoss(loc_ids, vocab, cfg.loc_sigma, cfg.device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and 'embed' not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and 'embed' not in n)]
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

    history = []
    cursor = len(train_images)
    start = time.monotonic()
    running = 0.0
    for step in range(cfg.steps):
        if cursor + images_per_batch > len(train_images):
            rng.shuffle(train_images)
            cursor = 0
        batch = []
        for image_id in train_images[cursor : cursor + images_per_batch]:
            batch += rng.sample(by_image[image_id], cfg.per_image)
        cursor += images_per_batch
        inputs = _batch(processor, images, batch, prompt).to(cfg.device)
        labels = inputs.pop('labels')
        for group in optimizer.param_groups:
            group['lr'] = lr_at(step)
        loss = loss_fn(*predicted_logits(model, inputs, labels, cfg.per_image))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        running += float(loss.detach())
        if (step + 1) % cfg.log_every == 0:
            elapsed = time.monotonic() - start
            record = {'step': step + 1, 'loss': running / cfg.log_every, 'lr': lr_at(step),
                      'elapsed_s': round(elapsed, 1)}  # fmt: skip
            running = 0.0
            if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
                model.eval()
                record['val_exact'] = greedy_exact_match(
                    model, processor, images, val, prompt, cfg.device
                )
                model.train()
            history.append(record)
            print(json.dumps(record), flush=True)
    model.eval()
    # float16 halves the checkpoint; the backend loads it in float32 on CPU.
    model.to(torch.float16).save_pretrained(out_dir)
    report = {
        'train_config': asdict(cfg), 'sizes': asdict(sizes), 'samples': len(samples),
        'parameters': sum(p.numel() for p in model.parameters()),
        'train_seconds': round(time.monotonic() - start, 1), 'history': history,
    }  # fmt: skip
    (out_dir / 'training.json').write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', type=Path, required=True, help='dataset directory')
    parser.add_argument('--out', type=Path, required=True, help='model directory to write')
    for name, value in asdict(TrainConfig()).items():
        parser.add_argument(f'--{name.replace("_", "-")}', type=type(value), default=value)
    args = parser.parse_args(argv)
    fields = {k: getattr(args, k) for k in asdict(TrainConfig())}
    report = train(args.data, args.out, TrainConfig(**fields), ModelSizes())
    print(json.dumps({k: v for k, v in report.items() if k != 'history'}))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
