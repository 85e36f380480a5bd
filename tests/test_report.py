"""echoclip report: a self-contained HTML folder (every image inline or present, every study
linked, no network), one wide row per study, and it renders in a headless browser where one is."""

from __future__ import annotations

import base64
import csv
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import echoclip_cli
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
            assert src.startswith(("data:image/gif;base64,", "data:image/png;base64,")) or (out / src).is_file()
            animations += src.startswith("data:image/gif")
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


def _overlays(out: Path) -> list[str]:
    return [src for page in out.glob("study-*.html") for src in _parse(page).images if src.startswith("data:image/png")]


def test_report_shows_the_evidence_behind_each_number_and_no_maps_leaves_it_out(tiny_bundle, tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    make_video(root / "a4c.avi", echo_frames(16, 48, 64, seed=3))
    make_video(root / "a2c.avi", echo_frames(16, 48, 64, seed=4))
    out = tmp_path / "with"
    result = run_cli("report", "--dir", root, "-w", "tiny", "--out", out, "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    page = next(out.glob("study-*.html")).read_text()
    # per clip: the pacemaker's best frame (the one device with a threshold) and EF's nearest and
    # furthest frames (one map when every frame gives the clip's EF)
    overlays = _overlays(out)
    assert 4 <= len(overlays) <= 6 and page.count("<b>pacemaker</b>") == 2
    assert "scored highest" in page and "nearest to the clip" in page
    assert "Nearest sentences" in page and page.count("cosine ") == 5 and "the prompt library" in page
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(overlays[0].split(",", 1)[1])))
    assert image.size == (64, 64) and image.mode == "RGB"  # the tiny model's input, coloured

    bare = tmp_path / "without"
    result = run_cli("report", "--dir", root, "-w", "tiny", "--out", bare, "--no-maps", "--sentences", "none",
                     "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert _overlays(bare) == [] and "Nearest sentences" not in next(bare.glob("study-*.html")).read_text()
    assert run_cli("report", "--dir", root, "--sentences", "some").exit_code == 2


def test_report_sentences_come_from_echoclip_r_when_it_is_installed(tiny_bundle, tiny_checkpoint, tmp_path):
    from echoclip_cli.weights import import_openclip

    phrases = ["THERE IS <#> REGURGITATION OF THE MITRAL VALVE. ", "THE LEFT VENTRICLE IS NORMAL IN SIZE. ",
               "<#> PERICARDIAL EFFUSION. ", "A PACER WIRE IS SEEN IN THE RIGHT VENTRICLE. ",
               "NORMAL LEFT ATRIAL SIZE. ", "THE AORTIC VALVE IS TRILEAFLET. ", "NO PERICARDIAL EFFUSION. ",
               "THE RIGHT VENTRICLE IS NORMAL IN SIZE. "]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(phrases) + "\n")
    import_openclip(tiny_checkpoint, "tiny-r", tokenizer="template", template_vocab=vocab)  # a fine-tuned EchoCLIP-R
    root = tmp_path / "study"
    root.mkdir()
    make_video(root / "a4c.avi", echo_frames(16, 48, 64, seed=3))
    studies = echoclip_cli.report(echoclip_cli.load_model("tiny", device="cpu"), [root], out=tmp_path / "r",
                                  devices=["pacemaker"], content=echoclip_cli.ReportContent(maps=False))
    (study,) = studies
    assert study.sentence_source.startswith("EchoCLIP-R report sentences")
    texts = [text for text, _ in study.sentences]
    assert len(texts) == 5 and set(texts) <= {p.strip() for p in phrases if "<#>" not in p}  # the slot-free ones
    scores = [score for _, score in study.sentences]
    assert scores == sorted(scores, reverse=True)
    page = next((tmp_path / "r").glob("study-*.html")).read_text()
    assert "EchoCLIP-R report sentences (tiny-r)" in page
    prompts = echoclip_cli.report(echoclip_cli.load_model("tiny", device="cpu"), [root], out=tmp_path / "p",
                                  content=echoclip_cli.ReportContent(maps=False, sentences="prompts"))
    assert prompts[0].sentence_source == "the prompt library"


def test_report_pages_replace_planted_links_and_a_file_as_out_is_refused_first(tiny_bundle, tmp_path):
    """Page names are predictable: a symbolic link planted under one is replaced, never written
    through; an --out that is a file is a usage error before anything is embedded."""
    import json as _json

    from echoclip_cli.report_html import page_name
    from tests.cli_helpers import run_cli
    from tests.media_factory import echo_frames, make_video

    folder = tmp_path / "studies" / "s1"
    folder.mkdir(parents=True)
    make_video(folder / "a.avi", echo_frames(8, 48, 64, seed=1))
    out, target = tmp_path / "report", tmp_path / "precious.txt"
    out.mkdir()
    target.write_text("keep me")
    (out / "index.html").symlink_to(target)
    (out / page_name(str(folder))).symlink_to(target)
    result = run_cli("report", str(folder), "-w", "tiny", "--out", str(out), "--no-maps", "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert target.read_text() == "keep me"
    assert not (out / "index.html").is_symlink() and "echoclip report" in (out / "index.html").read_text()
    assert _json.loads(result.stdout.splitlines()[0])["study"] == str(folder)

    refused = run_cli("report", str(folder), "-w", "tiny", "--out", str(target))
    assert refused.exit_code == 2 and "is a file" in refused.stderr and "loading weights" not in refused.stderr


def test_report_places_studies_on_a_patient_and_a_date_and_polishes_what_a_new_user_saw(tiny_bundle, tmp_path):
    """The pages named studies only by UIDs or folder paths (a folder name can be a patient's
    name) and left patient and date out; plots had no axis values and an unlabelled threshold;
    a copy of a clip read as a second scored clip; a CT page said "EF – %"; animations were 112 px."""
    import json as _json
    import re

    from pydicom.data import get_testdata_file

    root = tmp_path / "Doe_Jane_19600101"
    root.mkdir()
    make_dicom(root / "late.dcm", echo_frames(8, 48, 64, seed=1), "jpeg", seed=1,
               patient={"PatientID": "P1", "StudyDate": "20240305"})
    make_dicom(root / "early.dcm", echo_frames(8, 48, 64, seed=2), "jpeg", seed=2,
               patient={"PatientID": "P1", "StudyDate": "20230101"})
    make_video(root / "a4c.avi", echo_frames(8, 48, 64, seed=3))
    shutil.copy(root / "a4c.avi", root / "copy.avi")
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "ct.dcm")
    out = tmp_path / "report"
    result = run_cli("report", "--dir", root, "-w", "tiny", "--out", out, "--no-maps", "--sentences", "none",
                     "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = {r["study_date"]: r for r in map(_json.loads, result.stdout.splitlines()) if r["study_date"]}
    key = rows["20230101"]["patient_key"]
    assert key and rows["20240305"]["patient_key"] == key and rows["20230101"]["modality"] == "US"

    pages = {p.name: p.read_text() for p in out.glob("*.html")}
    assert not any("Doe_Jane" in text for text in pages.values())  # the folder's study: named by its hash
    index = pages["index.html"]
    assert index.index("20230101") < index.index("20240305") and key in index  # by date, with the patient key
    dated = [text for name, text in pages.items() if "20230101" in text and name != "index.html"]
    assert len(dated) == 1 and f"patient key {key}" in dated[0] and "modality US" in dated[0]
    folder_page = next(text for text in pages.values() if "copy.avi" in text)
    assert "a copy of a4c.avi (the same SOP instance or content): counted once" in folder_page
    assert "mean of 1 scored clips" in folder_page and 'width="224"' in folder_page
    ct_page = next(text for name, text in pages.items() if "ct.dcm" in text)
    assert "EF: no scored clip" in ct_page and "– %" not in ct_page
    assert "threshold 0.298</text>" in index  # the pacemaker line is labelled
    ef_plot = index[index.index("Study EF (%)"):index.index("</svg>")]
    assert {">0<", ">25<", ">50<", ">75<", ">100<"} <= set(re.findall(r">\d+<", ef_plot))  # axis values

    shown = run_cli("report", "--dir", root, "-w", "tiny", "--out", tmp_path / "phi", "--no-maps", "--sentences",
                    "none", "--keep-phi", "-f", "jsonl")
    assert shown.exit_code == 0 and "Doe_Jane" in (tmp_path / "phi" / "index.html").read_text()
