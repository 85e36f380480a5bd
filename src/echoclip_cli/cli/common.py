"""What every command shares: consoles, option aliases, and record output (table / JSONL / CSV)."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import Enum
from typing import Annotated, Any, Callable, Iterable, Optional, Sequence

import typer
from rich.console import Console
from rich.markup import escape

from . import table
from .table import cell_text, safe_text

# stdout carries data only; progress, logs and warnings go to stderr.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
live_bar: Any = None  # the progress bar drawn on stderr now (cli/progress.py), if any
_ERASE_LINE = "\r\x1b[2K"


def write_stdout(text: str) -> None:
    """Write records to stdout and flush. A live bar on the same terminal is erased first and
    drawn again after, so a record line never merges with it (and never goes to stderr)."""
    if live_bar is not None and sys.stdout.isatty():
        err_console.file.write(_ERASE_LINE)
        err_console.file.flush()
        sys.stdout.write(text)
        sys.stdout.flush()
        live_bar.refresh()
        return
    sys.stdout.write(text)
    sys.stdout.flush()


def out_console() -> Console:
    """A console on the *current* stdout (so test runners that swap stdout see the output)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


class OutputFormat(str, Enum):
    auto = "auto"
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


def weights_option(default: str, store: str = "--store") -> Any:
    """``--weights`` for a model command: a name or path; by default the store's own weights when a
    store is read, else ``default`` (one declaration, one help text pattern, for every command)."""
    where = f"the {store} store's weights, else " if store else ""
    return Annotated[Optional[str], typer.Option(
        "--weights", "-w", show_default=False,
        help=f"Installed weights name or a bundle/OpenCLIP path (default: {where}{default}).")]


DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="auto (bf16 on CUDA and AMX CPUs, else fp32), fp32, bf16, fp16, or int8 (--backend onnx).")]
BackendOpt = Annotated[str, typer.Option(
    "--backend",
    help="Image tower on the CPU: torch (eager), compiled (fp32, built for this CPU once: see `weights optimise`), "
         "onnx (pip install 'echoclip[cpu-fast]'; fp32 or int8, checked against torch on first use) or auto (the "
         "fastest exact path already built and measured on this CPU, else torch; $ECHOCLIP_BACKEND when set).")]
DeterministicOpt = Annotated[bool, typer.Option("--deterministic", help="Use deterministic kernels (slower on GPU).")]
FormatOpt = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="Output on stdout: table when a terminal, else JSONL; or force table/jsonl/csv."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Write JSON on stdout instead of a table.")]


def resolve_format(fmt: OutputFormat) -> OutputFormat:
    if fmt is OutputFormat.auto:
        return OutputFormat.table if sys.stdout.isatty() else OutputFormat.jsonl
    return fmt


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text: a string starting like a formula (``=``, ``+``,
    ``-``, ``@``, tab, CR: a file name or a DICOM header value can) gets a leading apostrophe, as
    spreadsheet-safe CSV writers do; numbers stay numbers; control characters are escaped."""
    text = safe_text(cell_text(value))
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def json_line(record: dict[str, Any]) -> str:
    """One JSONL line, valid UTF-8 whatever the record holds: a file name that is not UTF-8 (its
    bytes kept as surrogates) is written with JSON escapes instead of as invalid bytes."""
    try:
        line = json.dumps(record, ensure_ascii=False)
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, ensure_ascii=True)
    return line + "\n"


def emit_records(
    records: Sequence[dict[str, Any]],
    fmt: OutputFormat,
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> None:
    """Write records to stdout: tables for a person (cli/table.py: the columns that matter), one
    JSON object per line, or CSV with a header (every field)."""
    fmt = resolve_format(fmt)
    if fmt is OutputFormat.jsonl:
        write_stdout("".join(json_line(record) for record in records))
        return
    cols = list(columns or _all_keys(records))
    if fmt is OutputFormat.csv:
        cols = csv_header(cols, records)  # every field JSONL has: CSV loses nothing
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(cols)
        for record in records:
            writer.writerow([_csv_cell(record.get(c)) for c in cols])
        write_stdout(buffer.getvalue())
        return
    table.render(out_console(), records, cols, title, caption)


EXTRA = "extra"


def csv_header(columns: Sequence[str], records: Iterable[dict[str, Any]], fields: Sequence[str] = ()) -> list[str]:
    """CSV columns: the table's columns first, then every other field of ``records`` and
    ``fields`` in first-seen order. CSV carries the fields JSONL has; nested values (lists,
    objects) are JSON text in their cell."""
    return list(dict.fromkeys([*columns, *fields, *_all_keys(records)]))


# A terminal table's shape for a command's records: (rows, columns, caption).
TableView = Callable[[list[dict[str, Any]]], tuple[list[dict[str, Any]], Sequence[str], Optional[str]]]


class RecordSink:
    """Writes records as they come (JSONL, CSV), or as one table when the run ends (terminal).

    A run over thousands of files shows its results while it goes and holds none of them; a
    killed run has written every record finished before it died. A streamed CSV's header is made
    from the columns, the command's ``fields`` and the first record; a field first seen later goes,
    as JSON, into the last column, ``extra``, so nothing JSONL has is lost. ``view`` reshapes the
    records for the terminal table only (``records -> (rows, columns, caption)``), e.g. one row per
    video with its tasks side by side.
    """

    def __init__(self, fmt: OutputFormat, *, columns: Sequence[str] | None = None, title: str | None = None,
                 fields: Sequence[str] = (), view: TableView | None = None) -> None:
        self.fmt = resolve_format(fmt)
        self.fields = list(fields)
        self.columns = list(columns) if columns else None
        self.title = title
        self.view = view
        self._table: list[dict[str, Any]] = []
        self._header_written = False
        self._csv_columns: list[str] = []

    def write(self, record: dict[str, Any]) -> None:
        if self.fmt is OutputFormat.jsonl:
            write_stdout(json_line(record))
        elif self.fmt is OutputFormat.csv:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            if not self._header_written:
                self._csv_columns = [c for c in csv_header(self.columns or (), [record], self.fields) if c != EXTRA]
                self._header_written = True
                writer.writerow([*self._csv_columns, EXTRA])
            extra = {k: v for k, v in record.items() if k not in self._csv_columns}
            writer.writerow([*(_csv_cell(record.get(c)) for c in self._csv_columns), _csv_cell(extra) if extra else ""])
            write_stdout(buffer.getvalue())
        else:
            self._table.append(record)

    def close(self) -> None:
        if self.fmt is OutputFormat.table and self._table:
            rows, columns, caption = (self.view(self._table) if self.view is not None
                                      else (self._table, self.columns, None))
            emit_records(rows, OutputFormat.table, columns=columns, title=self.title, caption=caption)
        self._table = []

    def __enter__(self) -> "RecordSink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _all_keys(records: Iterable[dict[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    return list(keys)


def report_failure(message: str) -> None:
    """One input's failure, as one line on stderr (its record carries the same text)."""
    err_console.print(f"[red]error:[/red] {escape(safe_text(message))}", markup=True, highlight=False)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(safe_text(message))}", markup=True, highlight=False)


def hint(message: str) -> None:
    """A pointer to what to do next, on stderr (as the error boundary's hint lines)."""
    err_console.print(f"[dim]hint:[/dim] {escape(safe_text(message))}", markup=True, highlight=False)


def info(message: str) -> None:
    err_console.print(safe_text(message), markup=False, highlight=False)
