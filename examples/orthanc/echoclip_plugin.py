"""Orthanc Python plugin: run echoclip on each echo study once it is stable, and store the
results back into the study as a DICOM Structured Report (STOW-RS).

Install the Debian package ``orthanc-python`` (or Orthanc's Python plugin), ``pip install
'echoclip[pacs]'`` where Orthanc's user can run it, and add to Orthanc's configuration::

    "Plugins": ["/usr/share/orthanc/plugins"],
    "PythonScript": "/etc/orthanc/echoclip_plugin.py",
    "StableAge": 60,
    "EchoclipOutput": "/var/lib/orthanc/echoclip"

(``EchoclipDicomWebUrl``: the DICOMweb root echoclip reads and stores through, default this
Orthanc's own; ``EchoclipCommand``: the echoclip executable, default ``echoclip`` on Orthanc's
PATH; ``EchoclipWeights``: other weights than the released EchoCLIP.) Credentials for the
DICOMweb URL come from Orthanc's environment (ECHOCLIP_DICOMWEB_USER and
ECHOCLIP_DICOMWEB_PASSWORD, or a netrc entry), never from this file. Studies are scored one at a
time on a thread of their own, so Orthanc's callbacks never wait for the model. A study that
already holds echoclip's report (its series description starts with "echoclip") is skipped:
storing the report makes the study change, and stable again, once more.
"""

import json
import os
import queue
import subprocess
import threading

import orthanc  # provided by Orthanc's Python plugin

_config = json.loads(orthanc.GetConfiguration())
# this Orthanc's own DICOMweb root unless told otherwise
_root = (_config.get("DicomWeb") or {}).get("Root", "/dicom-web/").rstrip("/")
URL = _config.get("EchoclipDicomWebUrl", f"http://localhost:{_config.get('HttpPort', 8042)}{_root}")
OUT = _config.get("EchoclipOutput", "/var/lib/orthanc/echoclip")
COMMAND = _config.get("EchoclipCommand", "echoclip")
WEIGHTS = _config.get("EchoclipWeights")  # default: echoclip's own (the released EchoCLIP)
_jobs: "queue.Queue[str]" = queue.Queue()


def _is_echo_without_our_report(orthanc_id: str) -> str | None:
    """The study's UID when it holds ultrasound and no echoclip report yet, else None."""
    study = json.loads(orthanc.RestApiGet(f"/studies/{orthanc_id}"))
    series = json.loads(orthanc.RestApiGet(f"/studies/{orthanc_id}/series"))
    tags = [s.get("MainDicomTags", {}) for s in series]
    if not any(t.get("Modality") == "US" for t in tags):
        return None
    if any(t.get("Modality") == "SR" and t.get("SeriesDescription", "").lower().startswith("echoclip") for t in tags):
        return None
    return study["MainDicomTags"]["StudyInstanceUID"]


def _on_change(change_type, level, resource_id):
    if change_type == orthanc.ChangeType.STABLE_STUDY:
        uid = _is_echo_without_our_report(resource_id)
        if uid:
            _jobs.put(uid)


def _worker():
    while True:
        uid = _jobs.get()
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, f"{uid}.jsonl"), "w") as records:
            done = subprocess.run(
                [COMMAND, "predict-ef", "--dicomweb", URL, "--study", uid, "--sr", os.path.join(OUT, "sr"),
                 "--stow", "--format", "jsonl", "--quiet", *(["--weights", WEIGHTS] if WEIGHTS else [])],
                stdout=records, stderr=subprocess.PIPE, text=True)
        # exit 1: some clips failed (their records say why), the report was still stored
        log = orthanc.LogWarning if done.returncode <= 1 else orthanc.LogError
        log(f"echoclip: study {uid} exit {done.returncode} {done.stderr.strip()[-500:]}")


threading.Thread(target=_worker, name="echoclip", daemon=True).start()
orthanc.RegisterOnChangeCallback(_on_change)
