"""Run the ``echoclip`` command in-process and read stdout, stderr and the exit code apart."""

from __future__ import annotations

from typer.testing import CliRunner

from echoclip_cli.cli import app


def run_cli(*args: str, input: str | None = None):
    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    return result


def one_error_line(result) -> str:
    """The error line on stderr; asserts there is exactly one (plus an optional hint) and no traceback."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert all(ln.startswith(("error:", "hint:")) for ln in lines), result.stderr
    return errors[0]
