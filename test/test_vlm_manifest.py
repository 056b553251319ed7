"""The SHA-256 manifest of a model directory, and the backend's refusal of a tampered one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_vlm_backend import tiny_model

from robostral_agent.vlm.backend import BackendError, TransformersBackend
from robostral_agent.vlm.manifest import MANIFEST, verify_manifest, write_manifest


def _tree(root: Path) -> Path:
    (root / 'sub').mkdir(parents=True)
    (root / 'a.bin').write_bytes(b'weights')
    (root / 'sub' / 'b.json').write_text('{}')
    return root


def test_manifest_is_sha256sum_format_and_verifies(tmp_path: Path) -> None:
    root = _tree(tmp_path / 'm')
    write_manifest(root)
    lines = (root / MANIFEST).read_text().splitlines()
    assert lines == [
        f'{hashlib.sha256(b"weights").hexdigest()}  a.bin',
        f'{hashlib.sha256(b"{}").hexdigest()}  sub/b.json',
    ]
    assert verify_manifest(root) == []


@pytest.mark.parametrize(
    ('tamper', 'message'),
    [
        (lambda r: (r / 'a.bin').write_bytes(b'weightz'), 'a.bin: SHA-256 differs'),
        (lambda r: (r / 'sub' / 'b.json').unlink(), 'sub/b.json: listed but missing'),
        (lambda r: (r / 'extra.txt').write_text('x'), 'extra.txt: not in SHA256SUMS'),
        (lambda r: (r / MANIFEST).write_text('nonsense\n'), 'line 1 is not'),
    ],
)
def test_manifest_finds_every_change(tmp_path: Path, tamper, message: str) -> None:
    root = _tree(tmp_path / 'm')
    write_manifest(root)
    tamper(root)
    assert any(message in p for p in verify_manifest(root)), verify_manifest(root)


def test_no_manifest_is_no_problem(tmp_path: Path) -> None:
    assert verify_manifest(_tree(tmp_path / 'm')) == []


def test_backend_refuses_a_directory_that_does_not_match(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    import shutil

    model = tmp_path / 'model'
    shutil.copytree(tiny_model(tmp_path_factory, 'paligemma'), model)
    write_manifest(model)
    TransformersBackend(model, device='cpu', warmup=False)  # matches: loads
    weights = model / 'model.safetensors'
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BackendError, match='does not match its SHA256SUMS'):
        TransformersBackend(model, device='cpu', warmup=False)
