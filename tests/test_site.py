"""A site's own labels and heads: harvesting planted SRs and reports, fitting heads on planted
embeddings (R², conformal coverage, abstention), head files, and the commands end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import echoclip_cli
from echoclip_cli import evaluation as E
from echoclip_cli.cli.app import app
from echoclip_cli.errors import UsageError
from echoclip_cli.options import FitOptions, LabelOptions
from echoclip_cli.site import Head, TrainingSet, fit_head, labels_from_text, settle
from echoclip_cli.site.context import StudyContext
from tests.media_factory import echo_frames, make_dicom
from tests.site_factory import (BIPLANE, LVEF_SCT, LVEF_TEICHHOLZ_MM, LVEF_US, RATIO, RIGHT_VENTRICLE, TEICHHOLZ,
                                VISUAL, Planted, image_header, make_echo_sr, planted_embeddings)

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

# --------------------------------------------------------------------------- harvesting

# study seed -> (patient, what is planted, the EFs and methods harvest must find, whether the study conflicts)
PLANTED = {
    1: ("P1", [Planted(LVEF_US, 55.0, method=BIPLANE), Planted(LVEF_TEICHHOLZ_MM, 0.58, unit=RATIO, nested=True),
               Planted(LVEF_SCT, 0.40, unit=None, site=RIGHT_VENTRICLE)],
        {(55.0, "simpson_biplane"), (58.0, "teichholz")}, False),
    2: ("P1", [Planted(LVEF_SCT, 0.35, unit=None, method=VISUAL)], {(35.0, "visual")}, False),  # same patient, 2nd study
    3: ("P2", [Planted(LVEF_US, 62.0, method=TEICHHOLZ), Planted(LVEF_US, 40.0, method=BIPLANE, nested=True)],
        {(62.0, "teichholz"), (40.0, "simpson_biplane")}, True),
    4: ("P3", [Planted(LVEF_US, 45.0)], {(45.0, None)}, False),
}
REPORTS = {  # study seed -> report text beside the study's images, and the EF it states
    2: ("THE LEFT VENTRICULAR EJECTION FRACTION IS ESTIMATED TO BE 35%. THE PREVIOUS EF WAS 60%.", (35.0, "visual")),
    5: ("Normal LV size. LV EJECTION FRACTION IS 55-60%. Pacer lead in the right ventricle.", (57.5, "report")),
}


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    for seed, (patient, measurements, _, _) in PLANTED.items():
        folder = root / patient / f"study{seed}"
        folder.mkdir(parents=True)
        make_echo_sr(folder / f"SR{seed}", image_header(seed, patient, model="EPIQ 7" if seed % 2 else "Vivid E95"),
                     measurements, seed=seed)
    for seed, (text, _) in REPORTS.items():
        folder = root / f"P{seed}" / f"study{seed}" if seed not in PLANTED else root / PLANTED[seed][0] / f"study{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        image_header(seed, "P9").save_as(folder / "image.dcm", enforce_file_format=True)
        (folder / "report.txt").write_text(text)
    (root / "notes.md").write_text("not a report")
    return root


def _uid(seed: int) -> str:
    return str(image_header(seed, "x").StudyInstanceUID)


def test_every_planted_ef_is_harvested_with_its_method_and_study(archive):
    records = echoclip_cli.harvest_labels([archive])
    assert not [r.error for r in records if r.error]
    efs = [r for r in records if r.measurement == "ef"]
    for seed, (_, _, expected, _) in PLANTED.items():
        found = {(r.value, r.method) for r in efs if r.source_kind == "sr" and r.study == _uid(seed)}
        assert found == expected, seed  # the right-ventricular EF is not an LVEF
    for seed, (_, (value, method)) in REPORTS.items():
        found = [(r.value, r.method) for r in efs if r.source_kind == "text" and r.study == _uid(seed)]
        assert found == [(value, method)], seed  # "THE PREVIOUS EF WAS 60%" speaks of another study
    seed_of = {_uid(seed): seed for seed in PLANTED}
    mixed = [r for r in efs if r.source_kind == "sr" and (r.value, r.method) not in PLANTED[seed_of[r.study]][2]]
    assert mixed == []  # 0 cross-study mix-ups, also between the two studies of patient P1


def test_conflicts_are_reported_not_averaged_and_each_study_has_one_primary_label(archive):
    records = echoclip_cli.harvest_labels([archive], options=LabelOptions(tolerance=5.0))
    by_study = {}
    for r in records:
        if r.measurement == "ef":
            by_study.setdefault(r.study, []).append(r)
    conflicted = {s for s, rs in by_study.items() if any(r.conflict for r in rs)}
    assert conflicted == {_uid(3)}  # 62 (Teichholz) against 40 (biplane)
    assert all(not r.primary for r in by_study[_uid(3)]) and "40 (simpson_biplane, sr)" in by_study[_uid(3)][0].conflict
    primary = {s: [r for r in rs if r.primary] for s, rs in by_study.items()}
    assert all(len(p) == 1 for s, p in primary.items() if s not in conflicted)
    assert primary[_uid(1)][0].method == "simpson_biplane"  # 55 and 58 agree within 5: biplane is the label
    assert {r.value for r in by_study[_uid(2)]} == {35.0}  # the SR's visual 0.35 and the report's 35 % agree
    table = E.labels_from_records([r.as_dict() for r in records])
    assert {row["study"]: row.get("ef") for row in table.rows}[_uid(1)] == "55"
    assert _uid(3) not in {row["study"] for row in table.rows if "ef" in row}


def test_labels_carry_the_machine_and_a_salted_patient_key_never_the_patient(archive, tmp_path):
    records = echoclip_cli.harvest_labels([archive])
    text = json.dumps([r.as_dict() for r in records])
    assert "Doe" not in text and "19600101" not in text and '"P1"' not in text
    sr = next(r for r in records if r.study == _uid(1))
    assert sr.manufacturer_model == "EPIQ 7" and len(sr.patient_key) == 16
    same_patient = {r.patient_key for r in records if r.study in (_uid(1), _uid(2)) and r.source_kind == "sr"}
    assert len(same_patient) == 1  # two studies of one patient: one key, two studies
    kept = echoclip_cli.harvest_labels([archive], options=LabelOptions(keep_phi=True))
    assert any((r.phi or {}).get("patient_name") == "Doe^Jane" for r in kept)


@pytest.mark.parametrize(("text", "value", "method", "note"), [
    ("LV EJECTION FRACTION IS 55%.", 55.0, "report", None),
    ("The left ventricular ejection fraction is estimated at 40 %.", 40.0, "visual", None),
    ("LVEF: 55-60% by biplane Simpson.", 57.5, "simpson_biplane", "midpoint"),
    ("EF 0.45 by Teichholz.", 45.0, "teichholz", "ratio"),
    ("Ejection fraction greater than 70 percent.", 70.0, "report", "bound"),
    ("EF was 35% - 40%.", 37.5, "report", "midpoint"),
])
def test_report_text_patterns(text, value, method, note):
    found = [r for r in labels_from_text(text, source="r.txt", context=StudyContext("s")) if r.measurement == "ef"]
    assert [(r.value, r.method) for r in found] == [(value, method)]
    assert (note is None and found[0].note is None) or note in found[0].note


@pytest.mark.parametrize("text", ["RIGHT VENTRICULAR EJECTION FRACTION IS 45%.", "Compared with the prior study, EF 30%.",
                                  "EF IS NORMAL.", "LV EJECTION FRACTION IS 155%."])
def test_report_text_that_states_no_lvef_of_this_study(text):
    assert not [r for r in labels_from_text(text, source="r.txt", context=StudyContext("s")) if r.measurement == "ef"]


def test_devices_from_report_text_feed_calibrate(reference_dir):
    records = labels_from_text((reference_dir / "example_report.txt").read_text(), source="r.txt",
                               context=StudyContext("s"))
    values = {r.measurement: r.value for r in records}
    assert values == {"ef": 20.0, "pacemaker": 1.0, "tavr": 1.0, "mitraclip": 1.0, "impella": 0.0}
    negated = labels_from_text("Left ventricle normal. No evidence of pacer lead.", source="r.txt",
                               context=StudyContext("s"))
    assert {r.measurement: r.value for r in negated}["pacemaker"] == 0.0


def test_settle_with_zero_tolerance_makes_any_disagreement_a_conflict():
    ctx = StudyContext("s")
    records = settle(labels_from_text("EF 55%. LVEF 56% by biplane.", source="a", context=ctx), 0.0)
    assert all(r.conflict for r in records if r.measurement == "ef")


def test_labels_command_writes_records_that_evaluate_and_fit_read(archive, tmp_path):
    result = runner.invoke(app, ["labels", "--dir", str(archive), "--format", "jsonl"])
    assert result.exit_code == 0, result.stderr
    assert "conflict" in result.stderr and "(no ef label)" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    table = E.read_labels(result.stdout, "labels.jsonl")
    assert table.key == "study" and "ef" in table.columns and "manufacturer_model" in table.columns
    assert len({r["study"] for r in records if r["measurement"] == "ef"}) == 5
    csv_out = runner.invoke(app, ["labels", str(archive), "--format", "csv"])
    assert E.read_labels(csv_out.stdout, "labels.csv").rows == table.rows


def test_labels_command_reports_a_damaged_sr_and_goes_on(archive):
    broken = make_echo_sr(archive / "broken.dcm", image_header(9, "P9"), [Planted(LVEF_US, 55.25)], seed=9)
    broken.write_bytes(broken.read_bytes().replace(b"55.25", b"5x.25"))  # a number that is not one
    result = runner.invoke(app, ["labels", str(archive), "--format", "jsonl"])
    assert result.exit_code == 1 and "broken.dcm" in result.stderr
    assert sum(1 for line in result.stdout.splitlines() if '"ef"' in line) >= 6  # the others are all there
    missing = runner.invoke(app, ["labels", str(archive / "nope")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr


# --------------------------------------------------------------------------- heads on planted embeddings


def _groups(n: int) -> np.ndarray:
    return np.asarray([f"s{i}" for i in range(n)])


def test_head_r2_is_within_5_percent_of_the_true_models_at_n200():
    pool, test = planted_embeddings(200, seed=1), planted_embeddings(5000, seed=100)
    result = fit_head(TrainingSet(pool.X, pool.y, _groups(200)), "ejection_fraction", "regression",
                      FitOptions(zero_shot=False), {})
    head_r2 = E.r2(test.y, result.head.predict(test.X).value)
    true_r2 = E.r2(test.y, test.signal)
    assert head_r2 >= 0.95 * true_r2, (head_r2, true_r2)
    assert {(m.model, m.split) for m in result.metrics} == {("head", "cv"), ("head", "calibration")}


def test_shifted_inputs_abstain_and_in_distribution_inputs_do_not():
    pool = planted_embeddings(200, seed=1)
    head = fit_head(TrainingSet(pool.X, pool.y, _groups(200)), "ejection_fraction", "regression",
                    FitOptions(zero_shot=False), {}).head
    inside = head.predict(planted_embeddings(5000, seed=100).X).abstain.mean()
    shifted = head.predict(planted_embeddings(1000, seed=101, shift=0.3).X).abstain.mean()
    assert shifted >= 0.95 and inside < 0.05, (shifted, inside)


@pytest.mark.slow
def test_conformal_coverage_over_1000_random_splits_and_the_other_figures():
    """The statistical figures of bench/site_figures.py, run in a process of its own (one BLAS
    thread: thousands of small eigendecompositions crawl when two threads fight for shared cores)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "site_figures.py"), "--json"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert abs(figures["coverage_mean"] - 0.90) <= 0.015, figures
    assert figures["r2_ratio"] >= 0.95 and figures["shifted_abstain"] >= 0.95 and figures["inside_abstain"] < 0.05


def test_binary_head_gives_probabilities_and_prediction_sets():
    pool = planted_embeddings(300, seed=4)
    y = (pool.y > 55).astype(float)
    result = fit_head(TrainingSet(pool.X, y, _groups(300)), "pacemaker", "binary", FitOptions(zero_shot=False), {})
    test = planted_embeddings(2000, seed=5)
    out = result.head.predict(test.X)
    assert E.roc_auc(test.y > 55, out.value) > 0.9
    truth = np.where(test.y > 55, "yes", "no")
    assert np.mean([t in s for t, s in zip(truth, out.sets)]) >= 0.85  # 90 % sets, one draw of 75 calibration rows
    assert {m.metric for m in result.metrics} == {"auc"}


def test_a_head_file_gives_bit_identical_outputs_across_loads_and_processes(tmp_path):
    pool = planted_embeddings(200, seed=1)
    zero_shot = pool.y + np.random.default_rng(0).normal(0, 8, 200)
    result = fit_head(TrainingSet(pool.X, pool.y, _groups(200), zero_shot), "ejection_fraction", "regression",
                      FitOptions(), {"weights_sha256": "ab" * 32, "preprocess_digest": "d1"})
    path = result.head.save(tmp_path / "ef.head")
    test = planted_embeddings(500, seed=7)
    np.save(tmp_path / "x.npy", test.X)
    first = Head.load(path).predict(test.X, np.full(500, 50.0))
    second = Head.load(path).predict(test.X, np.full(500, 50.0))
    assert first.value.tobytes() == second.value.tobytes() and first.low.tobytes() == second.low.tobytes()
    assert np.array_equal(first.value, result.head.predict(test.X, np.full(500, 50.0)).value)
    code = ("import sys, hashlib, numpy as np; from echoclip_cli.site import Head; "
            "p = Head.load(sys.argv[1]).predict(np.load(sys.argv[2]), np.full(500, 50.0)); "
            "print(hashlib.sha256(p.value.tobytes() + p.low.tobytes() + p.distance.tobytes()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.npy")], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")}).stdout.strip()
               for _ in range(2)}
    import hashlib
    here = hashlib.sha256(first.value.tobytes() + first.low.tobytes() + first.distance.tobytes()).hexdigest()
    assert digests == {here}
    loaded = Head.load(path)
    assert loaded.provenance["n"] == 200 and loaded.provenance["weights_sha256"] == "ab" * 32
    with pytest.raises(UsageError, match="weights"):
        loaded.check("cd" * 32, "d1")
    with pytest.raises(UsageError, match="preprocessed otherwise"):
        loaded.check("ab" * 32, "d2")


def test_options_are_checked():
    with pytest.raises(UsageError):
        FitOptions(coverage=1.5)
    with pytest.raises(UsageError):
        LabelOptions(tolerance=-1)
    with pytest.raises(UsageError, match="too few|between"):
        FitOptions(calibration=0.0)


def test_too_few_labels_is_one_clear_error():
    pool = planted_embeddings(12, seed=1)
    with pytest.raises(E.LabelsError, match="too few"):
        fit_head(TrainingSet(pool.X, pool.y, _groups(12)), "ejection_fraction", "regression", FitOptions(zero_shot=False), {})


# --------------------------------------------------------------------------- end to end: store, labels, fit, --head


@pytest.fixture()
def site(tmp_path, tiny_bundle):
    """An archive of 24 studies (12 patients, two studies each, two machines): a tiny echo DICOM and
    its measurement SR in each study folder, embedded into a store with the tiny model."""
    root = tmp_path / "site"
    for s in range(24):
        folder = root / f"p{s // 2}" / f"s{s}"
        folder.mkdir(parents=True)
        make_dicom(folder / "a4c.dcm", echo_frames(4, 32, 40, seed=s), "rgb", seed=s,
                   patient={"PatientID": f"P{s // 2}"})
        make_echo_sr(folder / "sr.dcm", image_header(s, f"P{s // 2}", model="EPIQ 7" if s % 2 else "Vivid E95"),
                     [Planted(LVEF_US, float(30 + s), method=BIPLANE)], seed=s)
    model = echoclip_cli.load_model("tiny", device="cpu", precision="fp32")
    store = tmp_path / "site.store"
    assert all(r.error is None for r in echoclip_cli.embed(model, [root], out=store, keep_frames=True))
    return root, store, model


def test_evaluate_labels_from_runs_with_no_hand_made_labels_and_breaks_down_by_machine(site, tmp_path):
    root, store, _ = site
    predictions = runner.invoke(app, ["predict-ef", "--store", str(store), "--format", "jsonl", "-q"])
    assert predictions.exit_code == 0, predictions.stderr
    (tmp_path / "ef.jsonl").write_text(predictions.stdout)
    result = runner.invoke(app, ["evaluate", "--labels-from", str(root), "--predictions", str(tmp_path / "ef.jsonl"),
                                 "--bootstrap", "20", "--format", "jsonl"])
    assert result.exit_code == 0, result.stderr
    metrics = [json.loads(line) for line in result.stdout.splitlines()]
    overall = [m for m in metrics if "machine" not in m]
    assert {m["metric"] for m in overall} == {"mae", "rmse", "r2"} and overall[0]["n"] == 24
    machines = {m["machine"]: m["n"] for m in metrics if m.get("machine") and m["metric"] == "mae"}
    assert machines == {"Synthetic Echo Co EPIQ 7": 12, "Synthetic Echo Co Vivid E95": 12}
    both = runner.invoke(app, ["evaluate", "--predictions", str(tmp_path / "ef.jsonl")])
    assert both.exit_code == 2 and "--labels" in both.stderr


def test_fit_then_predict_ef_with_the_head_beside_zero_shot(site, tmp_path):
    root, store, model = site
    labels = echoclip_cli.harvest_labels([root])
    result = echoclip_cli.fit(model, "ef", labels=labels, store=store, options=FitOptions(calibration=0.5))
    head = result.head
    assert head.task == "ejection_fraction" and head.zero_shot and head.provenance["n"] == 24
    assert {(m.model, m.split) for m in result.metrics} >= {("head", "cv"), ("zero-shot", "cv")}
    path = head.save(tmp_path / "ef.head")
    records = list(echoclip_cli.predict_ef(model, store=store, heads=path))
    videos = [r for r in records if r.level == "video"]
    assert all(r.ef is not None and (r.abstain or r.ef_low <= r.head_ef <= r.ef_high) for r in videos)
    studies = [r for r in records if r.level == "study"]
    assert all(r.head == "ef" for r in studies)
    again = list(echoclip_cli.predict_ef(model, store=store, heads=path))
    assert [r.as_dict() for r in again] == [r.as_dict() for r in records]  # bit-identical records
    plain = list(echoclip_cli.predict_ef(model, store=store))
    assert "head_ef" not in plain[0].as_dict() and "abstain" not in plain[0].as_dict()
    with pytest.raises(UsageError, match="is for 'ejection_fraction'"):
        list(echoclip_cli.detect_devices(model, store=store, heads=[path]))


def test_fit_command_and_a_mismatched_head_is_refused_before_any_work(site, tmp_path):
    root, store, model = site
    out = tmp_path / "ef.head"
    result = runner.invoke(app, ["fit", "--task", "ef", "--store", str(store), "--labels-from", str(root), "--out",
                                 str(out), "--calibration", "0.5", "--format", "jsonl", "-q"])
    assert result.exit_code == 0, result.stderr
    assert out.is_file() and "wrote" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["model"] for r in rows} == {"head", "zero-shot"}
    shown = runner.invoke(app, ["predict-ef", "--store", str(store), "--head", str(out), "--format", "csv", "-q"])
    assert shown.exit_code == 0 and "head_ef" in shown.stdout.splitlines()[0]
    foreign = Head.load(out)
    foreign.provenance["weights_sha256"] = "0" * 64
    foreign.save(tmp_path / "foreign.head")
    refused = runner.invoke(app, ["predict-ef", "--store", str(store), "--head", str(tmp_path / "foreign.head"), "-q"])
    assert refused.exit_code == 2 and "fitted on embeddings of weights" in refused.stderr
    other = runner.invoke(app, ["predict-ef", "--dir", str(root), "--weights", "tiny", "--head", str(out), "--frames", "3",
                                "-q"])
    assert other.exit_code == 2 and "preprocessed otherwise" in other.stderr, other.stderr
    notahead = tmp_path / "x.head"
    notahead.write_text("nope")
    assert runner.invoke(app, ["predict-ef", "--store", str(store), "--head", str(notahead)]).exit_code == 2
    usage = runner.invoke(app, ["fit", "--task", "left_ventricle_size", "--store", str(store), "--labels-from", str(root)])
    assert usage.exit_code == 2 and "categorical" in usage.stderr


def test_fit_from_an_embeddings_file_made_elsewhere(site, tmp_path):
    from echoclip_cli.store import read_store

    root, store, model = site
    held = read_store(store)
    np.savez(tmp_path / "vectors.npz", embeddings=held.embeddings, ids=np.asarray([r["source"] for r in held.rows]),
             weights_sha256=held.weights_sha256, preprocess_digest=held.preprocess_digest)
    table = runner.invoke(app, ["labels", "--dir", str(root), "--format", "csv"]).stdout
    labels = E.read_labels(table, "labels.csv")
    by_source = "source,ef\n" + "".join(
        f"{r['source']},{dict((row['study'], row['ef']) for row in labels.rows)[r['study_uid']]}\n" for r in held.rows)
    (tmp_path / "ef.csv").write_text(by_source)
    result = runner.invoke(app, ["fit", "--embeddings", str(tmp_path / "vectors.npz"), "--labels",
                                 str(tmp_path / "ef.csv"), "--no-zero-shot", "--calibration", "0.5", "--out",
                                 str(tmp_path / "ef.head"), "--format", "jsonl"])
    assert result.exit_code == 0, result.stderr
    assert not Head.load(tmp_path / "ef.head").zero_shot
    np.savez(tmp_path / "bad.npz", embeddings=held.embeddings)
    bad = runner.invoke(app, ["fit", "--embeddings", str(tmp_path / "bad.npz"), "--labels", str(tmp_path / "ef.csv"),
                              "--no-zero-shot"])
    assert bad.exit_code == 2 and "no ids" in bad.stderr


def test_report_shows_the_head_beside_zero_shot(site, tmp_path):
    root, store, model = site
    head = echoclip_cli.fit(model, "ef", labels=echoclip_cli.harvest_labels([root]), store=store,
                            options=FitOptions(calibration=0.5)).head
    path = head.save(tmp_path / "ef.head")
    studies = echoclip_cli.report(model, store=store, out=tmp_path / "report", devices=["pacemaker"],
                                  content=echoclip_cli.ReportContent(animations=False, maps=False, sentences="none",
                                                                     heads=(path,)))
    assert all("ejection_fraction" in c.heads for s in studies for c in s.scored)
    page = next((tmp_path / "report").glob("study-*.html")).read_text()
    assert "site head" in page and "zero-shot" in page


def test_an_sr_echoclip_wrote_is_never_read_back_as_a_label(tiny_bundle, tmp_path):
    """predict-ef --sr (or --stow into the PACS) writes the model's EF into an SR beside the
    sonographer's: harvesting it would label the model with its own answer. Only the people's
    measurements become labels."""
    import echoclip_cli
    from tests.cli_helpers import run_cli
    from tests.sr_helpers import make_study
    from tests.site_factory import BIPLANE, LVEF_US, Planted, image_header, make_echo_sr

    study = make_study(tmp_path / "study")
    folder = study["a"].parent
    written = run_cli("predict-ef", "--dir", folder, "-w", "tiny", "-f", "jsonl", "--sr", folder)
    assert written.exit_code == 0, written.stderr
    import pydicom

    header = image_header(0, "P0")
    header.StudyInstanceUID = pydicom.dcmread(study["a"]).StudyInstanceUID
    make_echo_sr(folder / "sonographer.dcm", header, [Planted(LVEF_US, 41.0, method=BIPLANE)], seed=1)
    labels = echoclip_cli.harvest_labels([folder])
    assert [(r.value, r.source.rsplit("/", 1)[-1]) for r in labels if r.ok] == [(41.0, "sonographer.dcm")]
