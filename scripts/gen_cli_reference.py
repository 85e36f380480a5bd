"""Write docs/CLI.md from the commands' own help (docstrings and options); a test keeps it current.

    python scripts/gen_cli_reference.py          # rewrite docs/CLI.md
    python scripts/gen_cli_reference.py --check  # exit 1 if docs/CLI.md is stale
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import typer

from echoclip_cli.cli import app

OUT = Path(__file__).resolve().parents[1] / "docs" / "CLI.md"


def _commands(group, prefix: str = "echoclip"):
    for name, command in sorted(group.commands.items(), key=lambda kv: kv[0]):
        if getattr(command, "commands", None):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


def _option_line(param) -> str | None:
    if param.name == "help" or getattr(param, "hidden", False):
        return None  # hidden options are old spellings kept for one release: not documented
    if param.param_type_name == "argument":
        return f"- `{param.name.upper()}`: {getattr(param, 'help', '') or ''}".rstrip()
    names = " / ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    default = param.default
    shown = f" (default: `{default.value if hasattr(default, 'value') else default}`)" if default not in (None, False, [], ()) else ""
    return f"- {names}: {param.help or ''}{shown}"


def render() -> str:
    root = typer.main.get_command(app)
    lines = ["# echoclip command reference", "", "Generated from `--help` by `scripts/gen_cli_reference.py`; do not edit.", ""]
    for name, command in _commands(root):
        lines += [f"## `{name}`", "", inspect.cleandoc(command.help or ""), ""]
        options = [line for p in command.params if (line := _option_line(p))]
        if options:
            lines += ["Options:", "", *options, ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")
