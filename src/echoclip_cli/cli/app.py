"""The ``echoclip`` command: one Typer app, one error boundary.

Exit codes: 0 all good; 1 a runtime failure (including one bad input among many, reported after
the others are done); 2 a usage error. ``ECHOCLIP_DEBUG=1`` shows tracebacks (never with locals:
DICOM headers hold patient data).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import EchoclipError, EchoclipWarning
from .common import err_console, safe_text


def debug_enabled() -> bool:
    return os.environ.get("ECHOCLIP_DEBUG", "") not in ("", "0")


def _is_write_failure(exc: BaseException) -> bool:
    """OSError, or safetensors' own error type for a failed write (it is not an OSError)."""
    return isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError"


def _quiet_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                   line: Any = None) -> None:
    """Every warning passes here: third-party ones (pydicom, PyAV, Pillow …) often quote header
    values (a UID, a name), so only their category and module are shown; ECHOCLIP_DEBUG=1 shows
    them whole. echoclip's own (:class:`~echoclip_cli.errors.EchoclipWarning`) quote none and are
    shown whole."""
    if issubclass(category, EchoclipWarning):
        err_console.print(f"warning: {safe_text(str(message))}", markup=False, highlight=False)
        return
    if debug_enabled():
        err_console.print(f"warning: {category.__name__}: {safe_text(str(message))}", markup=False)
        return
    module = Path(filename).parent.name if "site-packages" in filename else Path(filename).stem
    err_console.print(f"warning: {category.__name__} from {safe_text(module)} (details hidden: they may quote "
                      "header values; ECHOCLIP_DEBUG=1 shows them)", markup=False, highlight=False)


def report_error(exc: BaseException) -> int:
    """Print one line (and a hint line) on stderr for ``exc``; return the exit code."""
    if isinstance(exc, EchoclipError):
        err_console.print(f"[red]error:[/red] {escape(safe_text(exc.message))}")
        if exc.hint:
            err_console.print(f"[dim]hint:[/dim] {escape(safe_text(exc.hint))}")
        return exc.exit_code
    if _is_write_failure(exc):  # a full disk, a read-only folder: the user's to fix, not a bug
        err_console.print(f"[red]error:[/red] cannot write: {escape(safe_text(str(exc)[:200]))}")
        err_console.print("[dim]hint:[/dim] what was finished before is kept; free space or choose another folder")
        return 1
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    err_console.print(f"[red]error:[/red] internal error: {type(exc).__name__}: {escape(first[:200])}")
    err_console.print("[dim]hint:[/dim] run again with ECHOCLIP_DEBUG=1 for a traceback, and report it")
    return 1


class EchoclipGroup(TyperGroup):
    """Top-level group whose ``invoke`` is the single error boundary for every command."""

    _flags_plain = False  # per command tree (Typer builds a new one for each run)

    def get_params(self, ctx: Any) -> Any:
        if not self._flags_plain:  # once, before any help is shown (the root parses first)
            self._flags_plain = True
            _plain_flags(self, ctx)
        return super().get_params(ctx)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/red]")
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `echoclip ... | head`: the reader left; stop quietly like other tools
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(141) from None
        except Exception as exc:  # the boundary: everything else becomes one line and an exit code
            if debug_enabled():
                raise
            raise typer.Exit(report_error(exc)) from None


def _plain_flags(command: Any, ctx: Any) -> None:
    """Typer 0.29 shows ``<bool>`` after every flag in ``--help``, as if the flag took a value: give
    each flag (``--help`` included) of ``command`` and of every command under it an empty metavar,
    which the help shows in the type column instead."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for name in command.list_commands(ctx) if isinstance(command, TyperGroup) else ():
        _plain_flags(command.get_command(ctx, name), ctx)


app = typer.Typer(
    name="echoclip",
    cls=EchoclipGroup,
    help="EchoCLIP echocardiography foundation models at the command line: embed echo videos, predict "
    "ejection fraction, detect devices, match patients and search reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("echoclip")
        except PackageNotFoundError:  # run from a source tree without installing
            from .. import __version__ as installed
        sys.stdout.write(f"echoclip {installed}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
) -> None:
    """EchoCLIP echocardiography foundation models at the command line: embed echo videos, predict ejection
    fraction, detect devices, match patients and search reports."""


def _register() -> None:
    from . import (cache_cmd, embed_cmd, evaluate_cmd, explain_cmd, fit_cmd, index_cmd, labels_cmd, report_cmd, info_cmd,
                   patients_cmd, preprocess_cmd, search_cmd, store_cmd, tokenize_cmd, weights_cmd, zeroshot_cmd)

    app.command("preprocess")(preprocess_cmd.preprocess)
    app.command("embed")(embed_cmd.embed)
    app.command("predict-ef")(zeroshot_cmd.predict_ef)
    app.command("detect-devices")(zeroshot_cmd.detect_devices)
    app.command("zero-shot")(zeroshot_cmd.zero_shot)
    app.command("match-patients")(patients_cmd.match_patients)
    app.command("report")(report_cmd.report)
    app.command("explain")(explain_cmd.explain)
    app.command("search")(search_cmd.search)
    app.command("search-reports", hidden=True)(search_cmd.search)  # the original design's name
    app.command("calibrate")(evaluate_cmd.calibrate)
    app.command("evaluate")(evaluate_cmd.evaluate)
    app.command("labels")(labels_cmd.labels)
    app.command("fit")(fit_cmd.fit)
    app.command("tokenize")(tokenize_cmd.tokenize)
    app.add_typer(store_cmd.app, name="store")
    app.add_typer(index_cmd.app, name="index")
    app.add_typer(cache_cmd.app, name="cache")
    app.add_typer(weights_cmd.app, name="weights")
    app.command("info")(info_cmd.info)


_register()


def main() -> None:
    """Console-script entry point."""
    warnings.showwarning = _quiet_warning
    # tokenizers' worker threads warn after a fork (decode workers); echoclip batches itself.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(app(prog_name="echoclip", standalone_mode=True))
