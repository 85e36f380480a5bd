"""echoclip report: a self-contained HTML folder (every image inline or present, every study
linked, no network), one wide row per study, and it renders in a headless browser where one is."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli
from tests.media_factory import echo_frames, make_dicom, make_video, region_item


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.remote: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if str(attrs.get(key, "")).startswith(("http:", "https:", "//")):
                self.remote.append(attrs[key])


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture()
def archive(tmp_path):
    from pydicom.data import get_testdata_file

    root = tmp_path / "pacs"
    root.mkdir()
    make_dicom(root / "cine.dcm", echo_frames(24, 48, 64, seed=1), "jpeg", seed=2,
               regions=[region_item((0, 0, 63, 47))])
    make_video(root / "a4c.avi", echo_frames(16, 48, 64, seed=3))
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "ct.dcm")
    (root / "broken.dcm").write_bytes(b"DICM but not really")
    return root


def test_report_is_self_contained_and_links_every_study(tiny_bundle, archive, tmp_path):
    out = tmp_path / "report"
    result = run_cli("report", "--dir", archive, "-w", "tiny", "--out", out, "-f", "csv")
    assert result.exit_code == 1  # broken.dcm: one error record, the rest reported
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) >= 3 and all(r["level"] == "study" for r in rows)
    assert sum(r["ef"] != "" for r in rows) == 2  # the cine's and the video's studies; not the CT's
    index = _parse(out / "index.html")
    pages = [link for link in index.links if link.startswith("study-")]
    assert len(pages) == len(rows) and all((out / p).is_file() for p in pages)
    assert {p.name for p in out.glob("study-*.html")} == set(pages)
    svg = (out / "index.html").read_text()
    assert svg.count("<svg") == 5  # EF + four device score distributions, drawn without matplotlib
    animations = 0
    for page in [out / "index.html", *(out / p for p in pages)]:
        parsed = _parse(page)
        assert not parsed.remote and parsed.scripts == 0
        assert "index.html" in parsed.links or page.name == "index.html"
        for src in parsed.images:
            assert src.startswith("data:image/gif;base64,") or (out / src).is_file()
            animations += src.startswith("data:")
    assert animations >= 2
    text = "".join(p.read_text() for p in out.glob("*.html"))
    assert "not_ultrasound" in text and "Modality CT" in text and "not read" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tiny_bundle, archive, tmp_path):
    out = tmp_path / "report"
    run_cli("report", "--dir", archive, "-w", "tiny", "--out", out, "-f", "jsonl")
    for page in sorted(out.glob("*.html"))[:3]:
        done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                               "--enable-logging=stderr", "--v=0", f"--screenshot={tmp_path / (page.stem + '.png')}",
                               "--window-size=1200,900", page.as_uri()], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        console_errors = [line for line in done.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
        assert not console_errors, console_errors
        assert (tmp_path / (page.stem + ".png")).stat().st_size > 5000  # something was drawn
