"""Regenerate tests/golden/dicom_corpus.json: what echoclip reads from each public echo DICOM file.

    pip install -e '.[dev]'              # pydicom-data holds most of the files
    python scripts/make_dicom_corpus.py  # rewrites tests/golden/dicom_corpus.json

Run it after a deliberate change to reading or preprocessing (or a new decoder version) and read
the diff before committing it: each changed digest is a file whose pixels changed. The files and
what is recorded are described in tests/golden/dicom_corpus.py; tests/test_dicom_corpus.py
checks the record.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.golden.dicom_corpus import CORPUS, JSON_PATH, TOLERANCE, environment, find_file, measure, preprocess_digest  # noqa: E402


def _compact(text: str) -> str:
    """Put each innermost list of numbers on one line (the means would take a line per number)."""
    return re.sub(r"\[\s+([-0-9.,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def main() -> int:
    files = {}
    for name, about in CORPUS:
        path = find_file(name)
        if path is None:
            print(f"{name} is not installed (pip install pydicom-data)", file=sys.stderr)
            return 1
        files[name] = {"about": about, **measure(path)}
        print(f"{name}: {files[name]['decoder']}, {files[name]['decoded_shape']}", file=sys.stderr)
    record = {
        "source": "scripts/make_dicom_corpus.py",
        "preprocess_digest": preprocess_digest(),
        "tolerance_grey_levels": TOLERANCE,
        "environment": environment(),
        "files": files,
    }
    JSON_PATH.write_text(_compact(json.dumps(record, indent=1, ensure_ascii=False)) + "\n")
    print(f"wrote {JSON_PATH.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
