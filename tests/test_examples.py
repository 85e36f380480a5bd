"""The shell pipelines in examples/ run end to end (tiny random-weight models) so they cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from echoclip_cli.weights import import_openclip
from tests.conftest import REPO_ROOT, write_openclip_checkpoint

EXAMPLES = REPO_ROOT / "examples"
# A stand-in for EchoCLIP-R's vocabulary (the real one is never in the repository).
PHRASES = "THERE IS <#> MITRAL REGURGITATION. \nLV EJECTION FRACTION IS <#>%. \nNORMAL LEFT VENTRICULAR SIZE. \n"


@pytest.fixture()
def example_env(tiny_checkpoint, tmp_path, _hermetic_home):
    import_openclip(tiny_checkpoint, "tiny")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(PHRASES)
    import_openclip(write_openclip_checkpoint(tmp_path / "ck"), "tiny-r", tokenizer="template", template_vocab=vocab)
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "WORKDIR": str(tmp_path / "work"),
            "ECHOCLIP_WEIGHTS": "tiny", "ECHOCLIP_WEIGHTS_R": "tiny-r", "ECHOCLIP_HOME": str(_hermetic_home)}


def run_example(name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    Path(env["WORKDIR"]).mkdir(exist_ok=True)
    return subprocess.run(["bash", str(EXAMPLES / name)], env=env, capture_output=True, text=True, timeout=600)


def test_predict_ef_to_csv(example_env):
    result = run_example("predict_ef_to_csv.sh", example_env)
    assert result.returncode == 0, result.stderr
    csv = (Path(example_env["WORKDIR"]) / "ef.csv").read_text().splitlines()
    assert csv[0].startswith("level,source,study,ef") and len(csv) == 1 + 4 + 4  # header, videos, studies


def test_preprocess_then_embed(example_env):
    result = run_example("preprocess_then_embed.sh", example_env)
    assert result.returncode == 0, result.stderr
    assert "4 videos, 32-d, weights tiny" in result.stdout
    assert "4 inputs already in" in result.stderr  # the second embed resumed and did nothing


def test_index_and_search(example_env):
    result = run_example("index_and_search.sh", example_env)
    assert result.returncode == 0, result.stderr
    assert "embedded: THERE IS SEVERE MITRAL REGURGITATION." in result.stderr + result.stdout
    assert result.stdout.splitlines()[0].startswith("level,rank,score,source")


def test_match_patients(example_env):
    result = run_example("match_patients.sh", example_env)
    assert result.returncode == 0, result.stderr
    assert "'neighbour':" in result.stdout and "'timeline': 6" in result.stdout


def test_readme_python_section_runs(tmp_path, tiny_checkpoint, monkeypatch):
    """The README's Python section, run as written, on synthetic echo files and a tiny model
    installed as echo-clip (random weights: the numbers mean nothing, the calls must work)."""
    from echoclip_cli.weights import import_openclip
    from tests.media_factory import echo_frames, make_dicom, make_video

    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Python"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 3)]
    import_openclip(tiny_checkpoint, "echo-clip")
    study = tmp_path / "study"
    study.mkdir()
    make_dicom(study / "a.dcm", echo_frames(24, 48, 64, seed=1), "jpeg", seed=3)
    make_video(study / "a4c.avi", echo_frames(12, 48, 64, seed=2))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md (Python section)", "exec"), namespace)  # noqa: S102 - our own documentation
    assert {r.level for r in namespace["devices"]} == {"study"}
    assert any(r.level == "video" and r.ef is not None for r in namespace["ef_from_store"])
    assert namespace["first"].level == "video" and namespace["first"].n_frames == 24
    assert namespace["hits"].records and namespace["matches"].warnings  # tiny is not EchoCLIP-R
    everywhere = namespace["everywhere"]  # the store embed wrote, and the videos predict_ef cached: each once
    assert {r.store for r in everywhere.records if r.level == "video"} == {str((tmp_path / "archive.store").resolve())}
    assert len([r for r in everywhere.records if r.level == "video"]) == 2 and "searched" in everywhere.notes[0]
    assert (tmp_path / "report" / "index.html").is_file() and namespace["report"]
    assert sorted(p.name for p in (tmp_path / "maps").glob("*.png")) == ["frame_0.png", "frame_10.png"]
