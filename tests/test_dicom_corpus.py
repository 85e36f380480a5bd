"""The DICOM regression corpus: every public echo file the tests use reads as it did.

The record (tests/golden/dicom_corpus.json, made by scripts/make_dicom_corpus.py) holds, per
file, exact digests of the decoded and the preprocessed frames and grey-level means. The means are
checked everywhere; the digests where the decoders (and, for the preprocessed frames, torch and
the CPU) are the recorded ones, and the test says so when they are skipped.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import pytest

from tests.golden.dicom_corpus import CORPUS, JSON_PATH, TOLERANCE, environment, find_file, measure, preprocess_digest

pytest.importorskip("pydicom")

RECORD = json.loads(JSON_PATH.read_text())
NAMES = [name for name, _ in CORPUS]
REGENERATE = "if the change is deliberate, run scripts/make_dicom_corpus.py and review the diff"


@functools.lru_cache(maxsize=None)
def _measured(name: str) -> dict[str, Any]:
    path = find_file(name)
    if path is None:
        pytest.skip(f"{name} not available (install pydicom-data)")
    return measure(path)


def test_the_record_covers_the_corpus_and_the_files_other_tests_read() -> None:
    from tests.test_media import OTHER_FILES, REAL_FILES

    assert list(RECORD["files"]) == NAMES, "the corpus list changed: " + REGENERATE
    used = {name for name, *_ in REAL_FILES} | {name for name, _ in OTHER_FILES} | {"US1_UNCR.dcm"}
    assert used <= set(NAMES), f"files read by the tests but not in the corpus: {sorted(used - set(NAMES))}"
    assert RECORD["preprocess_digest"] == preprocess_digest(), "default preprocessing changed: " + REGENERATE


@pytest.mark.parametrize("name", NAMES)
def test_corpus_file_reads_as_recorded(name: str) -> None:
    got, want = _measured(name), RECORD["files"][name]
    assert got["file_sha256"] == want["file_sha256"], f"{name} is not the file the corpus was made from"
    for key in ("decoder", "frame_indices", "decoded_shape"):
        assert got[key] == want[key], key
    for key in ("frame_means", "thumbnail"):
        difference = np.abs(np.asarray(got[key]) - np.asarray(want[key])).max()
        assert difference <= TOLERANCE, f"{name}: {key} moved by {difference:.2f} grey levels; {REGENERATE}"


def _differences(part: str) -> list[str]:
    here, recorded = environment()[part], RECORD["environment"][part]
    return [f"{k} {recorded.get(k)} -> {here.get(k)}" for k in sorted(set(here) | set(recorded))
            if here.get(k) != recorded.get(k)]


@pytest.mark.parametrize("name", NAMES)
def test_corpus_file_pixels_are_exactly_the_recorded_ones(name: str) -> None:
    decoders = _differences("decoders")
    if decoders:
        pytest.skip("exact digests need the recorded decoders: " + ", ".join(decoders))
    got, want = _measured(name), RECORD["files"][name]
    assert got["decoded_sha256"] == want["decoded_sha256"], f"{name}: decoded pixels changed; {REGENERATE}"
    preprocess = _differences("preprocess")
    if preprocess:
        pytest.skip("decoded pixels match; preprocessed digests need the recorded " + ", ".join(preprocess))
    assert got["preprocessed_sha256"] == want["preprocessed_sha256"], f"{name}: model frames changed; {REGENERATE}"
