"""A synthetic echo study for the SR and FHIR tests: two cines of one study (one patient), a still
of the same study (read, not scored), and their headers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.media_factory import echo_frames, make_dicom

PATIENT = {"PatientID": "MRN-55555", "PatientName": "Doe^Jane", "PatientBirthDate": "19600203", "PatientSex": "F",
           "AccessionNumber": "ACC-1", "StudyID": "S1", "StudyTime": "101500"}
PHI_VALUES = ("MRN-55555", "Doe", "Jane", "19600203", "1960-02-03", "ACC-1")


def make_study(folder: Path) -> dict[str, Path]:
    """Two cines and a still sharing the first cine's study (each its own SOP instance)."""
    from pydicom import dcmread

    folder.mkdir(parents=True, exist_ok=True)
    first = make_dicom(folder / "a.dcm", echo_frames(12, 48, 64, seed=1), "jpeg", seed=3, patient=PATIENT)
    study = dcmread(first, stop_before_pixels=True).StudyInstanceUID
    others = {"b": make_dicom(folder / "b.dcm", echo_frames(12, 48, 64, seed=2), "rgb", seed=4, patient=PATIENT),
              "still": make_dicom(folder / "still.dcm", echo_frames(1, 48, 64, seed=5), "rgb", seed=5, patient=PATIENT)}
    for path in others.values():
        ds = dcmread(path)
        ds.StudyInstanceUID = study
        ds.save_as(path, enforce_file_format=True)
    return {"a": first, **others}


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """dicom3tools' validator on ``path``: its error lines and its warning lines; none when the
    tool is not installed (``test_sr.py`` has one test that skips then, and says so)."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        return [], []
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    lines = (out.stdout + out.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]
