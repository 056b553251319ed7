"""SHA-256 manifest of a model directory (``SHA256SUMS``, the format of ``sha256sum``).

A shipped model is a set of files whose bytes decide what the robot is asked to do, so the
directory carries a manifest and the backend refuses to load a directory whose files do not
match it. ``sha256sum -c SHA256SUMS`` in the directory checks the same thing by hand.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

MANIFEST: Final = 'SHA256SUMS'
_CHUNK: Final = 1 << 20


def files_sha256(paths: list[Path]) -> str:
    """SHA-256 (hex) of the files' bytes read one after the other, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open('rb') as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return files_sha256([path])


def _listed_files(model_dir: Path) -> list[Path]:
    return sorted(
        p for p in model_dir.rglob('*')
        if p.is_file() and p.name != MANIFEST and not p.name.startswith('.')
    )  # fmt: skip


def write_manifest(model_dir: Path) -> Path:
    """Hash every file of ``model_dir`` (sorted, relative paths) into ``SHA256SUMS``."""
    lines = [
        f'{file_sha256(p)}  {p.relative_to(model_dir).as_posix()}'
        for p in _listed_files(model_dir)
    ]
    out = model_dir / MANIFEST
    out.write_text('\n'.join(lines) + '\n')
    return out


def verify_manifest(model_dir: Path) -> list[str]:
    """Every problem found (missing, changed, unlisted files); empty when all match.

    A directory without a manifest yields ``[]``: user models need not carry one.
    """
    manifest = model_dir / MANIFEST
    if not manifest.is_file():
        return []
    problems, listed = [], set()
    for number, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, name = line.partition('  ')
        if not sep or len(digest) != 64:
            problems.append(f'{MANIFEST} line {number} is not "<sha256>  <file>"')
            continue
        listed.add(name)
        path = model_dir / name
        if not path.is_file():
            problems.append(f'{name}: listed but missing')
        elif file_sha256(path) != digest:
            problems.append(f'{name}: SHA-256 differs from {MANIFEST}')
    for path in _listed_files(model_dir):
        if path.relative_to(model_dir).as_posix() not in listed:
            problems.append(f'{path.relative_to(model_dir).as_posix()}: not in {MANIFEST}')
    return problems
