"""Release a trained candidate as the embedded model: copy the files, write the manifest.

    python -m robostral_agent.training.release data/runs/candidate [--to models/robostral-tiny]

Only the files the backend needs are shipped (weights, configs, tokenizer, robostral.yaml)
plus the hand-written model card (README.md) already in the destination, which the
manifest then covers. Release a candidate only when its evaluation beats the shipped one:
every weights commit stays in the repository's history.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from robostral_agent.paths import models_dir
from robostral_agent.vlm.manifest import write_manifest

SHIPPED = (
    'config.json',
    'generation_config.json',
    'model.safetensors',
    'processor_config.json',
    'tokenizer.json',
    'tokenizer_config.json',
    'robostral.yaml',
    'training.json',
)


def release(candidate: Path, destination: Path) -> Path:
    missing = [name for name in SHIPPED if not (candidate / name).is_file()]
    if missing:
        raise FileNotFoundError(f'{candidate} lacks {", ".join(missing)}')
    destination.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        shutil.copy2(candidate / name, destination / name)
    return write_manifest(destination)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('candidate', type=Path, help='trained model directory')
    parser.add_argument('--to', type=Path, default=models_dir() / 'robostral-tiny')
    args = parser.parse_args(argv)
    manifest = release(args.candidate, args.to)
    print(f'released {args.candidate} -> {args.to} ({manifest.name} written)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
