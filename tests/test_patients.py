"""Patient matching on a synthetic store with planted patients, conflicts and a planted transplant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from echoclip_cli import patients as P
from echoclip_cli.records import VideoEmbedding
from echoclip_cli.preprocess_config import PreprocessConfig
from echoclip_cli.store import StoreWriter, read_store
from tests.cli_helpers import run_cli

DIM = 32
# study -> (heart, patient key or None, study date). Hearts are orthogonal directions; each study
# is its heart plus its own noise, each video the study plus a little more.
PLAN = {
    "A1": ("a", "kA", "20200101"), "A2": ("a", "kA", "20200601"), "A3": ("a", "kA", "20210101"),
    "M": ("e", "kA", "20210601"),  # planted mislabel: another heart filed under kA
    "B1": ("b", "kB", "20190101"), "B2": ("b", "kB", "20190301"),
    "C1": ("c", None, "20180101"), "C2": ("c", None, "20180505"),  # no keys: found as a group
    "D1": ("d", "kD", "20200101"),
    "F1": ("f", "kF1", "20200101"), "F2": ("f", "kF2", "20200202"),  # planted duplicate patient
    "T3": ("t2", "kT", "20201101"), "T1": ("t", "kT", "20190101"),  # planted transplant between T2 and T3
    "T4": ("t2", "kT", "20211001"), "T2": ("t", "kT", "20191201"),
}
HEARTS = sorted({heart for heart, _, _ in PLAN.values()})


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def planted_videos(seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].T  # orthonormal rows
    heart = {name: basis[i] for i, name in enumerate(HEARTS)}
    vectors, rows = [], []
    for n, (study, (h, key, day)) in enumerate(PLAN.items()):
        centre = unit(heart[h] + 0.4 * unit(rng.standard_normal(DIM)))
        for v in range(2):
            video = unit(centre + 0.15 * unit(rng.standard_normal(DIM)))
            row = {"source": f"/echo/{study}/v{v}.dcm", "source_sha256": f"{study}-{v}", "study_date": day}
            if study[0] != "C":
                row["study_instance_uid"] = f"1.2.{study}"
            if key:
                row["patient_key"] = key
            vectors.append(video * 0.95)  # store vectors are means of unit frame vectors
            rows.append(row)
    return np.asarray(vectors, np.float32), rows


def name(study_key: str) -> str:
    return study_key.rsplit(".", 1)[-1].rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def matches() -> P.PatientMatches:
    vectors, rows = planted_videos()
    return P.match_patients(vectors, rows, P.MatchSettings(k=2, timeline=True), device="cpu", block_rows=4)


def test_defaults_follow_the_papers_means() -> None:
    assert (P.SAME_PATIENT_THRESHOLD, P.MISLABEL_THRESHOLD, P.DUPLICATE_THRESHOLD, P.DROP_THRESHOLD) == (0.52, 0.40, 0.64, 0.52)
    from typer.main import get_command

    from echoclip_cli.cli import app

    params = {p.name: p.default for p in get_command(app).commands["match-patients"].params}
    assert (params["threshold"], params["mislabel_threshold"], params["duplicate_threshold"], params["drop_threshold"]) == (
        P.SAME_PATIENT_THRESHOLD, P.MISLABEL_THRESHOLD, P.DUPLICATE_THRESHOLD, P.DROP_THRESHOLD)


def test_planted_groups_are_found_exactly(matches: P.PatientMatches) -> None:
    found = {frozenset(name(s) for s in g.studies) for g in matches.groups}
    assert found == {frozenset(g) for g in (["A1", "A2", "A3"], ["B1", "B2"], ["C1", "C2"], ["F1", "F2"],
                                            ["T1", "T2"], ["T3", "T4"])}
    assert len(matches.studies) == len(PLAN)  # C1/C2 have no UID: grouped by folder
    assert all(g.min_score >= P.SAME_PATIENT_THRESHOLD for g in matches.groups)


def test_neighbours_are_within_the_planted_patient(matches: P.PatientMatches) -> None:
    first = {name(r.study): r for r in matches.neighbours if r.rank == 1}
    assert name(first["A1"].other) in {"A2", "A3"} and first["A1"].same_patient and first["A1"].same_key
    assert not first["M"].same_patient and not first["D1"].same_patient
    assert first["F1"].same_key is False and name(first["C1"].other) == "C2" and first["C1"].same_key is None
    assert len(matches.neighbours) == 2 * len(PLAN)


def test_planted_conflicts_are_found_exactly(matches: P.PatientMatches) -> None:
    found = {(r.flag, name(r.study), *([name(r.other)] if r.flag == "possible_duplicate" else [])) for r in matches.conflicts}
    assert found == {("possible_mislabel", "M"), ("possible_duplicate", "F1", "F2")}


def test_planted_timeline_drop_is_found_exactly(matches: P.PatientMatches) -> None:
    t = [r for r in matches.timeline if r.patient == "kT"]
    assert [name(r.study) for r in t] == ["T1", "T2", "T3", "T4"]  # ordered by date, not by input
    assert [r.flag for r in t] == ["reference", None, "drop", "drop"]
    assert {name(r.other) for r in t} == {"T1"} and t[2].days == 670
    drops = {(r.patient, name(r.study)) for r in matches.timeline if r.drop}
    assert drops == {("kT", "T3"), ("kT", "T4"), ("kA", "M")}
    keyless = [r for r in matches.timeline if r.patient_source == "group"]
    assert [name(r.study) for r in keyless] == ["C1", "C2"]


def test_window_days_compares_with_the_earliest_study_in_the_window() -> None:
    vectors, rows = planted_videos()
    result = P.match_patients(vectors, rows, P.MatchSettings(timeline=True, window_days=400), device="cpu")
    t = [r for r in result.timeline if r.patient == "kT"]
    assert [name(r.other) for r in t] == ["T1", "T1", "T2", "T3"]
    assert [r.drop for r in t] == [False, False, True, False]  # only the first echo after the change


def test_scan_pairs_in_blocks_matches_the_full_matrix() -> None:
    rng = np.random.default_rng(3)
    vectors = unit(rng.standard_normal((23, 8))).astype(np.float32)
    full = vectors @ vectors.T
    np.fill_diagonal(full, -np.inf)
    scan = P.scan_pairs(vectors, 3, 0.3, device="cpu", block_rows=5)
    np.testing.assert_array_equal(scan.top_index, np.argsort(-full, axis=1)[:, :3])
    want = {(i, j) for i in range(23) for j in range(i + 1, 23) if full[i, j] >= 0.3}
    assert {(i, j) for i, j, _ in scan.pairs} == want


def test_too_many_pairs_is_a_usage_error() -> None:
    vectors = unit(np.ones((10, 4), np.float32))
    with pytest.raises(P.UsageError, match="study pairs score 0.5 or more"):
        P.scan_pairs(vectors, 1, 0.5, device="cpu", max_pairs=20)


def test_connected_groups() -> None:
    assert P.connected_groups(6, [(4, 1), (1, 2), (3, 5)]) == [[1, 2, 4], [3, 5]]
    assert P.connected_groups(3, []) == []


def test_parse_study_date() -> None:
    assert str(P.parse_study_date("20240102")) == "2024-01-02"
    assert str(P.parse_study_date("2024-01-02")) == "2024-01-02"
    assert P.parse_study_date("") is None and P.parse_study_date("2024xx02") is None


# --------------------------------------------------------------------------- command


def write_store(path: Path, weights_name: str = "tiny", keys: bool = True) -> Path:
    vectors, rows = planted_videos()
    if not keys:
        rows = [{k: v for k, v in row.items() if k != "patient_key"} for row in rows]
    with StoreWriter(path, weights_name=weights_name, weights_sha256="w" * 64, cfg=PreprocessConfig(),
                     embed_dim=DIM) as writer:
        for vector, row in zip(vectors, rows, strict=True):
            writer.add(VideoEmbedding(source=row["source"], embedding=vector, meta=row))
    return path


def test_match_patients_command_on_a_store(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s")
    assert len(read_store(store)) == 2 * len(PLAN)
    result = run_cli("match-patients", "--store", store, "--timeline", "--format", "jsonl", "-k", "1")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = {r["level"] for r in records}
    assert kinds == {"neighbour", "group", "conflict", "timeline"}
    assert sum(r["level"] == "group" for r in records) == 6
    assert "not EchoCLIP-R" in result.stderr  # the store was made with weights named "tiny"

    csv = run_cli("match-patients", "--store", write_store(tmp_path / "r", "echo-clip-r"), "--format", "csv",
                  "--threshold", "0.99")
    assert csv.exit_code == 0 and "not EchoCLIP-R" not in csv.stderr
    assert csv.stdout.splitlines()[0].startswith("level,study,other,rank,score")
    assert not any(line.startswith("group,") for line in csv.stdout.splitlines())  # nothing is that similar


def test_a_timeline_with_nothing_to_order_says_so(tmp_path: Path) -> None:
    """--timeline used to end silently when no patient had two studies (no patient keys, no
    same-patient group at the threshold given)."""
    store = write_store(tmp_path / "s", keys=False)
    result = run_cli("match-patients", "--store", store, "--timeline", "--threshold", "0.99", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert not any(json.loads(line)["level"] == "timeline" for line in result.stdout.splitlines())
    assert "timeline: no patient has two or more studies" in result.stderr
    shown = run_cli("match-patients", "--store", store, "--timeline", "--format", "jsonl")
    assert "timeline: no patient" not in shown.stderr  # groups found: their timelines are shown


def test_match_patients_usage_errors(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s")
    both = run_cli("match-patients", "x.dcm", "--store", store)
    assert both.exit_code == 2
    bad = run_cli("match-patients", "--store", store, "--threshold", "1.5")
    assert bad.exit_code == 2 and "[-1, 1]" in bad.stderr


def test_match_patients_embeds_inputs(tmp_path: Path, tiny_bundle) -> None:
    from tests.media_factory import echo_frames, make_dicom

    files = [make_dicom(tmp_path / f"{i}.dcm", echo_frames(6, 64, 64, seed=i), "rgb", seed=i,
                        patient={"PatientID": f"P{i % 2}"}) for i in range(3)]
    result = run_cli("match-patients", *files, "--weights", "tiny", "--format", "jsonl", "--quiet")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["level"] for r in records} >= {"neighbour"} and sum(r["level"] == "neighbour" for r in records) == 6
    assert "not EchoCLIP-R" in result.stderr
