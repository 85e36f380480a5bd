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


def test_an_interrupted_build_leaves_no_staging_folder_forever(tmp_path):
    """Issue 30, class 9: a killed build or export left its hidden staging folder for good; the next
    staging of the same kind deletes leftovers older than a few hours (a running one is younger)."""
    import os
    import time

    target = tmp_path / "visual.pt2"
    old = files.staging_dir(target, ".build")
    (old / "part").write_text("x")
    young = files.staging_dir(target, ".build")
    other = files.staging_dir(target, ".export")
    stale = time.time() - files.STALE_STAGING_SECONDS - 60
    for folder in (old, other):
        os.utime(folder, (stale, stale))
    fresh = files.staging_dir(target, ".build")
    assert not old.exists() and young.is_dir() and fresh.is_dir()
    assert other.is_dir()  # another kind of staging is left to its own kind
