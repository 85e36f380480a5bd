"""Input identity: stat key without reading, else content sha256 (of the original, for ours)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import torch

from echoclip_cli import identity
from echoclip_cli.files import sha256_file, stat_key


def test_unchanged_files_by_stat_key_others_by_content(tmp_path, monkeypatch):
    same, touched, copy, new = (tmp_path / n for n in ("same.dcm", "touched.dcm", "copy.dcm", "new.dcm"))
    for path, text in ((same, "a"), (touched, "b"), (copy, "b"), (new, "c")):
        path.write_text(text)
    stats, contents = {stat_key(same)}, {sha256_file(touched)}
    os.utime(touched, ns=(0, 10**9))
    hashed = []
    real = identity.input_key
    monkeypatch.setattr(identity, "input_key", lambda path: hashed.append(path) or real(path))
    found = identity.recognise([same, touched, copy, new, tmp_path / "gone.dcm"], stats, contents)
    assert found == {same: stat_key(same), touched: sha256_file(touched), copy: sha256_file(copy)}
    assert sorted(hashed) == sorted([touched, copy, new])  # the unchanged file was not read


def test_our_preprocessed_file_is_known_by_its_original(tmp_path):
    from echoclip_cli.media.store_file import write_clip_file

    ours = write_clip_file(tmp_path / "clip.safetensors", torch.zeros((2, 3, 4, 4), dtype=torch.uint8),
                           {"source_sha256": "f" * 64})
    assert identity.input_key(ours) == "f" * 64
    unrecorded = write_clip_file(tmp_path / "other.safetensors", torch.zeros((1, 3, 4, 4), dtype=torch.uint8), {})
    assert identity.input_key(unrecorded) == sha256_file(unrecorded)


def test_files_is_the_ground_floor():
    """files.py imports nothing of the package, so any module may import it without a cycle."""
    source = Path(identity.__file__).with_name("files.py").read_text()
    imports = [node for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Import, ast.ImportFrom))]
    ours = [node for node in imports if getattr(node, "level", 0) or "echoclip_cli" in ast.unparse(node)]
    assert imports and not ours
