"""What a person does at a terminal: real commands under a pseudo-terminal, with redirects and pipes.

CliRunner never has a terminal, so it cannot see a progress bar that takes stdout away. Here
stderr (and stdin) are a pty, as in an interactive shell, so the progress bar is live, and stdout
is a file, a pipe, or the pty itself.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media_factory import echo_frames, make_dicom, make_video

ECHOCLIP = f"{shlex.quote(sys.executable)} -m echoclip_cli"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_pty(shell_command: str, cwd: Path, timeout: float = 120, columns: int = 120) -> tuple[int, str]:
    """Run ``shell_command`` with stdin, stdout and stderr on a new pty ``columns`` wide (the
    command's own redirects and pipes apply on top); return its exit code and everything the pty
    showed."""
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    os.set_blocking(leader, False)
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(["bash", "-c", shell_command], stdin=follower, stdout=follower, stderr=follower,
                            cwd=cwd, env=env, start_new_session=True)
    os.close(follower)
    shown = bytearray()
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"no output for {timeout} s: {shell_command}")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has closed the pty
                break
            if not chunk:
                break
            shown.extend(chunk)
    finally:
        os.close(leader)
    return proc.wait(timeout=timeout), shown.decode("utf-8", "replace")


def lines_of(shown: str) -> list[str]:
    """What a person reads: escape codes and carriage-return redraws removed."""
    out = []
    for line in ANSI.sub("", shown).replace("\r\n", "\n").split("\n"):
        line = line.split("\r")[-1]  # a redrawn line shows its last version
        if line.strip():
            out.append(line)
    return out


@pytest.fixture()
def clips(tmp_path, tiny_bundle):
    """Five short inputs: with --batch-size 4 the bar is live while records are written."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = [make_video(folder / f"v{i}.avi", echo_frames(10, 48, 64, seed=i)) for i in range(3)]
    paths += [make_dicom(folder / f"d{i}.dcm", echo_frames(10, 48, 64, seed=5 + i), "jpeg", seed=20 + i)
              for i in range(2)]
    return folder, sorted(p.name for p in paths)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_predict_ef_csv_redirected_to_a_file_gets_every_record(clips):
    folder, names = clips
    code, shown = run_in_pty(f"{ECHOCLIP} predict-ef {' '.join(names)} -w tiny -b 4 --format csv > ef.csv", folder)
    assert code == 0, shown
    rows = (folder / "ef.csv").read_text().splitlines()
    assert rows[0].startswith("level,source,")
    assert sorted(r.split(",")[1] for r in rows[1:] if r.startswith("video,")) == names
    assert sum(r.startswith("study,") for r in rows) >= 1
    assert not any("video," in line for line in lines_of(shown))  # nothing of the data on the screen


def test_embed_jsonl_through_a_pipe_gets_every_record(clips):
    folder, names = clips
    code, shown = run_in_pty(f"{ECHOCLIP} embed {' '.join(names)} -w tiny -b 4 --format jsonl | cat > e.jsonl", folder)
    assert code == 0, shown
    records = _records(folder / "e.jsonl")
    assert sorted(r["source"] for r in records) == names
    assert all(len(r["embedding"]) > 0 for r in records)


def test_preprocess_jsonl_redirected_gets_every_record(clips):
    folder, names = clips
    code, shown = run_in_pty(f"{ECHOCLIP} preprocess {' '.join(names)} --out frames --format jsonl > log.jsonl", folder)
    assert code == 0, shown
    records = _records(folder / "log.jsonl")
    assert sorted(Path(r["source"]).name for r in records) == names
    assert {r["status"] for r in records} == {"ok"}


def test_quiet_and_stderr_discarded_keep_stdout_whole(clips):
    folder, names = clips
    code, shown = run_in_pty(f"{ECHOCLIP} predict-ef {' '.join(names)} -w tiny -b 4 -q --format jsonl > q.jsonl", folder)
    assert code == 0 and lines_of(shown) == []  # -q: nothing on the screen at all
    records = _records(folder / "q.jsonl")
    assert sorted(r["source"] for r in records if r["level"] == "video") == names
    assert any(r["level"] == "study" for r in records)
    code, shown = run_in_pty(f"{ECHOCLIP} predict-ef {' '.join(names)} -w tiny -b 4 2>/dev/null", folder)
    assert code == 0
    table = "\n".join(lines_of(shown))
    assert all(name in table for name in names)  # stdout is the terminal: a table of every video


def test_records_and_the_bar_on_one_terminal_never_share_a_line(clips):
    folder, names = clips
    code, shown = run_in_pty(f"{ECHOCLIP} predict-ef {' '.join(names)} -w tiny -b 4 --format jsonl", folder)
    assert code == 0, shown
    assert "videos" in shown  # the bar was drawn
    records = [json.loads(line) for line in lines_of(shown) if line.startswith("{")]
    assert sorted(r["source"] for r in records if r["level"] == "video") == names


@pytest.mark.parametrize("command, expect", [
    ("detect-devices {inputs} -w tiny -b 4 --format csv", "video,"),
    ("zero-shot --task tavr {inputs} -w tiny -b 4 --format jsonl", '"level": "video"'),
    ("match-patients {inputs} -w tiny -b 4 --format jsonl", '"level": '),
])
def test_other_model_commands_redirected_from_a_terminal(clips, command, expect):
    folder, names = clips
    code, shown = run_in_pty(f"{ECHOCLIP} {command.format(inputs=' '.join(names))} > out.txt", folder)
    assert code == 0, shown
    written = (folder / "out.txt").read_text()
    assert expect in written
    if "match-patients" not in command:
        assert all(name in written for name in names)
    assert expect not in ANSI.sub("", shown)


def test_hostile_values_reach_no_terminal_and_no_spreadsheet_raw(monkeypatch, capsys):
    """File names and header values are data: Rich markup in them is shown, not parsed (it
    crashed the table after all the work); escape sequences (C0 and C1) are escaped; CSV cells that
    a spreadsheet would run as formulas are prefixed; a non-UTF-8 file name keeps JSONL valid UTF-8."""
    from echoclip_cli.cli.common import OutputFormat, RecordSink, emit_records

    records = [
        {"source": "/in/x[/bold].avi", "study": "1.2[/x]", "score": -0.25, "note": "\x1b[2Jgone\x9b31m"},
        {"source": "=HYPERLINK(\"http://x\")", "study": "+1", "score": 0.5, "note": "@SUM(A1)"},
    ]
    emit_records(records, OutputFormat.table)
    shown = capsys.readouterr().out
    assert "x[/bold].avi" in shown and "1.2[/x]" in shown
    assert "\x1b" not in shown and "\x9b" not in shown and "\\x1b[2Jgone\\x9b31m" in shown

    emit_records(records, OutputFormat.csv, columns=["source", "study", "score", "note"])
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].startswith("/in/x[/bold].avi,1.2[/x],-0.25,")  # a negative number stays a number
    assert rows[2].startswith("\"'=HYPERLINK(\"\"http://x\"\")\",'+1,0.5,'@SUM(A1)")
    assert "\x1b" not in "".join(rows)
    with RecordSink(OutputFormat.csv, columns=["source", "score"]) as sink:
        sink.write({"source": "-cmd", "score": -1.0})
    assert capsys.readouterr().out.splitlines()[1] == "'-cmd,-1,"  # (the empty extra column)

    name = b"/in/caf\xe9.dcm".decode("utf-8", "surrogateescape")  # a Latin-1 file name
    with RecordSink(OutputFormat.jsonl) as sink:
        sink.write({"source": name})
    line = capsys.readouterr().out
    line.encode("utf-8")  # valid UTF-8 text
    assert json.loads(line)["source"] == name  # and the same name back


def _table_lines(stdout: str) -> tuple[list[str], list[str]]:
    """The header lines and the body lines of the tables on ``stdout``."""
    lines = stdout.splitlines()
    return [ln for ln in lines if ln.startswith("┃")], [ln for ln in lines if ln.startswith("│")]


@pytest.mark.parametrize("width", [80, 120])
def test_terminal_tables_keep_one_line_per_row_at_80_and_120_columns(clips, width, monkeypatch):
    """The tables a new user sees first never break a row, a number or a header: detect-devices
    shows one row per video with the four devices side by side, match-patients one table per
    level, weights list the columns that fit (the rest stays in JSONL/CSV)."""
    from tests.cli_helpers import run_cli

    folder, names = clips
    monkeypatch.chdir(folder)
    monkeypatch.setenv("COLUMNS", str(width))
    assert run_cli("embed", *names, "-w", "tiny", "--keep-frames", "--out", "s.store", "-q").exit_code == 0
    expected = {  # command: (body rows, header words)
        ("detect-devices", "--store", "s.store", "-q"): (5 + 3, ["pacemaker", "tavr", "mitraclip", "impella"]),
        ("predict-ef", "--store", "s.store", "-q"): (5 + 3, ["source", "study", "ef", "frames", "videos"]),
        ("match-patients", "--store", "s.store", "--timeline", "-q"): (None, ["study", "other", "score", "days"]),
        ("weights", "list"): (None, ["name", "installed", "verified", "tokenizer", "tasks"]),
    }
    for command, (n_rows, words) in expected.items():
        result = run_cli(*command, "--format", "table")
        assert result.exit_code == 0, result.stderr
        headers, body = _table_lines(result.stdout)
        assert all(len(line) <= width for line in result.stdout.splitlines()), result.stdout
        header_cells = {cell.strip() for line in headers for cell in line.strip("┃").split("┃")}
        assert set(words) <= header_cells, result.stdout  # every header whole, on one line
        if n_rows is not None:
            assert len(body) == n_rows, result.stdout  # one line per record: nothing wrapped
        else:  # long text may wrap, at its spaces only
            assert "detect-devices" in result.stdout or "reference" in result.stdout, result.stdout
    devices = run_cli("detect-devices", "--store", "s.store", "-q", "--format", "table").stdout
    video_rows = [line for line in _table_lines(devices)[1] if any(name in line for name in names)]
    assert len(video_rows) == 5 and all(re.search(r"-?0\.\d{3} (yes|no)", row) for row in video_rows)


@pytest.mark.parametrize("width", [80, 120])
def test_on_a_real_terminal_of_80_and_120_columns_every_record_is_one_unbroken_row(clips, width):
    """Issue 30's done-when, under a pseudo-terminal: the default output of predict-ef and
    detect-devices on a terminal (a table, the progress bar on stderr) fits the window, one line
    per record, numbers and headers whole."""
    folder, names = clips
    code, _ = run_in_pty(f"{ECHOCLIP} embed {' '.join(names)} -w tiny --keep-frames --out s.store -q > /dev/null",
                         folder, columns=width)
    assert code == 0
    for command, words in (("predict-ef --store s.store", ["ef", "frames"]),
                           ("detect-devices --store s.store", ["pacemaker", "tavr", "mitraclip", "impella"])):
        code, shown = run_in_pty(f"{ECHOCLIP} {command}", folder, columns=width)
        lines = lines_of(shown)
        assert code == 0, shown
        assert all(len(line) <= width for line in lines), "\n".join(lines)
        header_cells = {cell.strip() for line in lines if line.startswith("┃") for cell in line.strip("┃").split("┃")}
        assert set(words) <= header_cells, "\n".join(lines)
        body = [line for line in lines if line.startswith("│")]
        assert len([line for line in body if any(name in line for name in names)]) == 5, "\n".join(lines)


def test_archive_instance_urls_are_one_short_row_each_under_their_server(monkeypatch, capsys):
    """Records from --dicomweb name instances by WADO-RS URLs of ~250 characters: the table says
    the server once (with its "//" intact) and each row shows the study/series/instance UIDs
    shortened, one line per record at 100 columns."""
    from echoclip_cli.cli.common import OutputFormat, emit_records

    monkeypatch.setenv("COLUMNS", "100")
    base = "http://127.0.0.1:8042/dicom-web/studies"
    uid = "1.2.826.0.1.3680043.8.498.{}"
    rows = [{"level": "video", "source": f"{base}/{uid.format(10**30 + k)}/series/{uid.format(10**31 + k)}/instances/"
             f"{uid.format(10**32 + k)}", "study": uid.format(10**30 + k), "ef": 50.0 + k} for k in range(3)]
    emit_records(rows, OutputFormat.table, columns=["level", "source", "study", "ef"])
    out = capsys.readouterr().out
    assert f"source under {base}" in out, out
    body = [line for line in out.splitlines() if line.startswith("│")]
    assert len(body) == 3 and all(len(line) <= 100 for line in out.splitlines()), out
