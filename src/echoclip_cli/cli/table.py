"""Terminal tables: the columns that matter to a person, one line per record where the width allows.

JSONL and CSV carry every field; a table is only for reading at a terminal. So a table leaves out
the columns every row leaves empty, says once in the caption what every row shares (clip type,
weights, preprocessing), shows each ``level`` (video, study, neighbour, ...) as a table
of its own with the columns that level has, uses short headers, and never breaks a number, a
flag or a header: only long text (paths, messages) wraps or folds to fit an 80-column terminal.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Short headers for the table only (records keep their field names).
HEADERS = {"n_frames": "frames", "n_videos": "videos", "clip_type": "type", "study_date": "date",
           "same_patient": "same", "calibrated": "calib", "threshold": "thresh", "size_mb": "MB"}
_PLURAL = {"study": "studies", "timeline": "timeline", "match": "matches"}
_PATH_COLUMNS = ("source", "output")
# Columns that say how a result was made: when every row of a table agrees, said once in the caption.
_SHARED = ("clip_type", "weights", "preprocess", "backend", "precision")
_SHORT = 12  # cells up to this long, without spaces, are kept whole (numbers, flags, names)
_LONG_UID = re.compile(r"[0-9]+(\.[0-9]+){4,}")
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}  # C0, DEL and C1 (0x9b is CSI)


def safe_text(text: str) -> str:
    """``text`` with control characters escaped: a file name holding a newline or an escape
    sequence cannot forge a line on stderr or repaint the terminal."""
    return str(text).translate(_CONTROL)


def cell_text(value: Any) -> str:
    """A value as one cell of text (tables and CSV): floats to 4 significant digits, lists and
    objects as JSON, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def render(console: Console, records: Sequence[dict[str, Any]], columns: Sequence[str],
           title: str | None = None, caption: str | None = None) -> None:
    """Print ``records`` as one table per level (in the order levels first appear), each with the
    columns of ``columns`` that hold a value in at least one of its rows."""
    groups = _by_level(records) if "level" in columns else {None: list(records)}
    for level, rows in groups.items():
        shown = [c for c in columns if c != "level" or level is None]
        heading = _plural(level) if level is not None and len(groups) > 1 else None
        if title:
            heading = f"{title}: {heading}" if heading else title
        console.print(_table(rows, shown, heading, caption if level == list(groups)[-1] else None))


def _by_level(records: Sequence[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record.get("level"), []).append(record)
    return groups


def _plural(level: Any) -> str:
    word = str(level)
    return _PLURAL.get(word, word if word.endswith("s") else word + "s")


def _table(rows: list[dict[str, Any]], columns: Sequence[str], title: str | None, caption: str | None) -> Table:
    columns = [c for c in columns if any(_present(row.get(c)) for row in rows)] or list(columns[:1])
    shared = {c: rows[0].get(c) for c in _SHARED if c in columns and len(rows) > 1
              and len({cell_text(row.get(c)) for row in rows}) == 1}
    columns = [c for c in columns if c not in shared] or list(columns[:1])
    prefixes = {c: _shared_folder([row.get(c) for row in rows]) for c in _PATH_COLUMNS if c in columns}
    prefixes = {c: prefix for c, prefix in prefixes.items() if prefix}
    notes = ([f"{c} under {prefix}" for c, prefix in prefixes.items()]
             + [f"{HEADERS.get(c, c)} {cell_text(value)}" for c, value in shared.items()] + ([caption] if caption else []))
    cells = [[_table_cell(_relative(row.get(c), prefixes.get(c))) for c in columns] for row in rows]
    table = Table(title=Text(safe_text(title)) if title else None,
                  caption=Text(safe_text("; ".join(notes))) if notes else None, show_lines=False)
    for i, column in enumerate(columns):
        header = HEADERS.get(column, column)
        whole = all(len(row[i].plain) <= _SHORT and " " not in row[i].plain for row in cells)
        if whole:  # a number, a flag, a short name: never broken
            table.add_column(header, no_wrap=True, min_width=len(header))
        else:  # text: wraps at spaces, a path folds
            table.add_column(header, overflow="fold", min_width=min(len(header), _SHORT))
    for row in cells:
        table.add_row(*row)
    return table


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _table_cell(value: Any) -> Text:
    """A cell for people: yes/no for flags, long DICOM UIDs shortened to their last digits
    (JSONL/CSV keep them whole); plain text, never Rich markup (a file name like ``x[/bold].avi`` is shown as it is),
    with control characters escaped."""
    text = {True: "yes", False: "no"}.get(value, "") if isinstance(value, bool) else safe_text(cell_text(value))
    if len(text) > 24:  # a UID, or a path or URL made of them (an archive's instance): each shortened
        text = "/".join(f"…{part[-8:]}" if len(part) > 24 and _LONG_UID.fullmatch(part) else part
                        for part in text.split("/"))
    return Text(text)


def _shared_folder(values: Sequence[Any]) -> str | None:
    """The folder every path in a table column lies under, when it is long enough to be worth
    printing once in the caption instead of on every row."""
    paths = [v for v in values if isinstance(v, str) and v]
    if len(paths) < 2 or len(paths) != len(values):
        return None
    if all("://" in p for p in paths):  # URLs (an archive's instances): whole segments, "//" kept
        parts = [p.split("/") for p in paths]
        common = 0
        while common < min(len(p) for p in parts) - 1 and len({p[common] for p in parts}) == 1:
            common += 1
        folder = "/".join(parts[0][:common])
        return folder if len(folder) >= 16 else None
    try:
        folder = os.path.commonpath(paths)
    except ValueError:  # absolute and relative mixed
        return None
    if folder in paths:  # one of them is the folder itself: nothing to strip
        folder = os.path.dirname(folder)
    return folder if len(folder) >= 16 else None


def _relative(value: Any, folder: str | None) -> Any:
    if folder is None or not isinstance(value, str):
        return value
    if "://" in value:
        return value[len(folder):].lstrip("/") if value.startswith(folder + "/") else value
    return os.path.relpath(value, folder)
