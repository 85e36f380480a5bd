"""The ground floor: where the echoclip home is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from echoclip_cli import files, weights


def test_home_is_the_env_var_else_the_xdg_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ECHOCLIP_HOME", "~/echo-home")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert files.home() == tmp_path / "echo-home"
    monkeypatch.delenv("ECHOCLIP_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert files.home() == tmp_path / "xdg" / "echoclip"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert files.home() == tmp_path / ".cache" / "echoclip"
    assert weights.weights_home() == files.home()  # one home for weights and caches


def test_the_frame_cache_finds_its_folder_without_torch(tmp_path):
    """`cache info` and `cache clear` need no model stack (importing torch takes seconds)."""
    code = ("import sys; from echoclip_cli import frame_cache; frame_cache.info(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = {"ECHOCLIP_HOME": str(tmp_path), "PYTHONPATH": str(Path(files.__file__).parents[1]), "PATH": ""}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
