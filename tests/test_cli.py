"""CLI conventions: every command documents itself with examples; the reference stays current."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from echoclip_cli.cli import app
from tests.cli_helpers import run_cli
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import gen_cli_reference  # noqa: E402


def _leaf_commands():
    root = typer.main.get_command(app)
    return list(gen_cli_reference._commands(root))


@pytest.mark.parametrize("name, command", _leaf_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_has_help_with_examples(name, command):
    args = name.split()[1:] + ["--help"]
    result = run_cli(*args)
    assert result.exit_code == 0
    assert "Examples:" in (command.help or ""), f"{name} --help has no examples"
    first = (command.help or "").strip().splitlines()[0]
    assert first.endswith(".") and first[0].isupper(), f"{name}: help should open with one imperative sentence"


def test_cli_reference_is_current():
    expected = gen_cli_reference.render()
    assert (REPO_ROOT / "docs" / "CLI.md").read_text() == expected, "run scripts/gen_cli_reference.py"


def test_readme_lists_every_command():
    readme = (REPO_ROOT / "README.md").read_text()
    for name, _ in _leaf_commands():
        assert f"`{name}" in readme, f"README.md does not mention {name}"


def test_usage_error_exits_2():
    result = run_cli("predict-ef", "--aggregation", "median", "x.dcm")
    assert result.exit_code == 2


def test_python_dash_m_runs_and_help_is_fast():
    out = subprocess.run([sys.executable, "-m", "echoclip_cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "predict-ef" in out.stdout
    probe = subprocess.run([sys.executable, "-c", "import sys, echoclip_cli.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False", "building --help must not import torch"


def test_terminal_tables_print_a_long_shared_folder_once(capsys):
    from echoclip_cli.cli.common import OutputFormat, emit_records

    folder = "/data/pacs/export/2026/cardiology"
    records = [{"source": f"{folder}/study{i}/echo{i}.dcm", "ef": 50.0 + i} for i in range(3)]
    emit_records(records, OutputFormat.table, columns=["source", "ef"])
    shown = capsys.readouterr().out
    assert f"source under {folder}" in shown and "study1/echo1.dcm" in shown
    assert shown.count("/data/pacs") == 1
    emit_records(records, OutputFormat.csv, columns=["source", "ef"])
    assert capsys.readouterr().out.count(folder) == 3  # machine-readable output keeps whole paths


USAGE_MISTAKES = [
    ("detect-devices",),
    ("predict-ef", "missing.dcm"),
    ("predict-ef", "--dir", "nodir/"),
    ("predict-ef", "{clip}", "--mask", "sectr"),
    ("predict-ef", "{clip}", "--aggregation", "mean"),
    ("predict-ef", "{clip}", "--prompts", "nofile.toml"),
    ("predict-ef", "--store", "nostore"),
    ("predict-ef", "{clip}", "--store", "{here}"),
    ("detect-devices", "{clip}", "-d", "nope"),
    ("detect-devices", "{clip}", "--thresholds", "nofile.json"),
    ("zero-shot", "--task", "nope", "{clip}"),
    ("match-patients",),
    ("match-patients", "--store", "nostore"),
    ("search", "severe MR", "--index", "nostore"),
    ("search", "severe MR", "--index", "{clip}"),
    ("embed",),
    ("embed", "{clip}", "--backend", "tpu"),
    ("predict-ef", "{clip}", "--backend", "torch", "--precision", "int8"),
    ("detect-devices", "{clip}", "--backend", "onnx", "--precision", "bf16"),
    ("embed", "--text", "LV EJECTION FRACTION IS 50%.", "--out", "x.store"),
]


@pytest.mark.parametrize("args", USAGE_MISTAKES, ids=lambda a: " ".join(a))
def test_usage_mistakes_exit_2_before_any_model_loads(tmp_path, args):
    """With no weights installed, each mistake is named at once: no model load, no hub attempt, no torch."""
    clip = tmp_path / "clip.avi"
    clip.write_bytes(b"not read: the mistake is found first")
    argv = [a.format(clip=clip, here=tmp_path) for a in args]
    probe = ("import sys, runpy; sys.argv = ['echoclip', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('echoclip_cli', run_name='__main__')\n"
             "finally:\n    sys.stderr.write('torch loaded: %s\\n' % ('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert "torch loaded: False" in out.stderr
    assert "hub" not in out.stderr.lower()


def test_version():
    out = subprocess.run([sys.executable, "-m", "echoclip_cli", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("echoclip ") and out.stdout.split()[1][0].isdigit()
    assert run_cli("-V").stdout == out.stdout


def test_help_shows_no_type_after_a_flag():
    """Typer 0.29 printed `<bool>` after every flag (as if `--quiet` took a value); options that
    take one still show their type."""
    from typer.main import get_command

    from echoclip_cli.cli import app

    def paths(command, prefix=()):
        yield prefix
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                yield from paths(sub, (*prefix, name))

    for path in paths(get_command(app)):
        shown = run_cli(*path, "--help")
        assert shown.exit_code == 0 and "--help" in shown.stdout, path
        assert "<bool>" not in shown.stdout, path
    assert "<int" in run_cli("embed", "--help").stdout  # --batch-size still says what it takes
