"""Evaluation against labels: metrics, thresholds, bootstrap CIs, the join, and the two commands."""

from __future__ import annotations

import csv
import io
import json
import math
import sys

import numpy as np
import pytest

from echoclip_cli import evaluation as E
from tests.cli_helpers import one_error_line, run_cli

# --------------------------------------------------------------------------- metrics


def test_regression_metrics_on_known_arrays():
    y, p = [1, 2, 3, 4], [2, 2, 2, 2]  # errors -1, 0, 1, 2
    assert E.mae(y, p) == pytest.approx(1.0)
    assert E.rmse(y, p) == pytest.approx(math.sqrt(6 / 4))
    assert E.r2(y, p) == pytest.approx(1 - 6 / 5)  # SS_tot = 2.25 + .25 + .25 + 2.25
    assert E.r2(y, y) == 1.0 and E.mae(y, y) == 0.0
    assert math.isnan(E.r2([3, 3], [1, 2]))  # labels that do not vary
    assert math.isnan(E.mae([], []))


def test_auc_with_ties_counts_half():
    # pairs (pos, neg): (.5,.1)=1, (.5,.5)=½, (.9,.1)=1, (.9,.5)=1 → 3.5 / 4
    assert E.roc_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
    assert E.average_ranks([3, 1, 3, 2]).tolist() == [3.5, 1, 3.5, 2]


def test_auc_perfect_random_inverted_and_one_class():
    y = [0, 0, 0, 1, 1]
    assert E.roc_auc(y, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert E.roc_auc(y, [0.9, 0.8, 0.7, 0.2, 0.1]) == 0.0
    assert E.roc_auc(y, [0.5] * 5) == 0.5
    rng = np.random.default_rng(0)
    assert E.roc_auc(rng.integers(0, 2, 4000), rng.random(4000)) == pytest.approx(0.5, abs=0.03)
    assert math.isnan(E.roc_auc([1, 1], [0.2, 0.3]))


def test_roc_curve_points_and_area_match_rank_auc():
    fpr, tpr, thresholds = E.roc_curve([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9])
    assert thresholds.tolist() == [np.inf, 0.9, 0.5, 0.1]
    assert tpr.tolist() == [0, 0.5, 1, 1] and fpr.tolist() == [0, 0, 0.5, 1]
    rng = np.random.default_rng(1)
    y, s = rng.integers(0, 2, 300), rng.integers(0, 20, 300) / 20  # many ties
    fpr, tpr, _ = E.roc_curve(y, s)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(E.roc_auc(y, s))


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("method", E.METHODS)
def test_threshold_on_separable_data_lies_between_the_classes(method):
    choice = E.choose_threshold([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7], method)
    assert 0.3 < choice.threshold < 0.6 and choice.threshold == pytest.approx(0.45)
    assert (choice.sensitivity, choice.specificity, choice.f1, choice.auc) == (1.0, 1.0, 1.0, 1.0)
    assert (choice.n, choice.positives, choice.method) == (5, 2, method)


def test_f1_and_youden_differ_on_an_imbalanced_set():
    # 10 positives (5 at .9, 5 at .5) among 100: 30 negatives at .6, 60 at .1.
    # cut .9: TP 5, FP 0 → F1 10/15 = .667, J .5;  cut .5: TP 10, FP 30 → F1 20/50 = .4, J .667
    scores = [0.9] * 5 + [0.5] * 5 + [0.6] * 30 + [0.1] * 60
    labels = [1] * 10 + [0] * 90
    f1 = E.choose_threshold(labels, scores, "f1")
    youden = E.choose_threshold(labels, scores, "youden")
    assert f1.threshold == pytest.approx(0.75) and f1.f1 == pytest.approx(2 / 3)
    assert (f1.sensitivity, f1.specificity) == (0.5, 1.0)
    assert youden.threshold == pytest.approx(0.3)
    assert youden.sensitivity == 1.0 and youden.specificity == pytest.approx(60 / 90)


def test_threshold_needs_both_classes():
    with pytest.raises(E.LabelsError, match="both positive and negative"):
        E.choose_threshold([1, 1], [0.2, 0.3])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_narrows_with_n_and_is_seeded():
    rng = np.random.default_rng(2)

    def width(n):
        y = rng.normal(50, 10, n)
        p = y + rng.normal(0, 8, n)
        low, high = E.bootstrap_ci(E.mae, y, p, n_boot=300, seed=0)
        assert low <= E.mae(y, p) <= high
        return high - low

    assert width(2000) < width(50) / 3
    y, s = rng.integers(0, 2, 200), rng.random(200)
    assert E.bootstrap_ci(E.roc_auc, y, s, n_boot=100, seed=7) == E.bootstrap_ci(E.roc_auc, y, s, n_boot=100, seed=7)
    assert all(math.isnan(v) for v in E.bootstrap_ci(E.mae, y, s, n_boot=0))


def test_bootstrap_by_group_keeps_groups_together():
    sizes = []

    def size(x):
        sizes.append(len(x))
        return float(len(x))

    groups = np.repeat(np.arange(10), 3)  # 10 studies of 3 videos
    E.bootstrap_ci(size, np.arange(30), n_boot=50, groups=groups)
    assert set(sizes) == {30}  # 10 whole groups per resample
    uneven = np.r_[np.zeros(1), np.ones(9)]
    sizes.clear()
    E.bootstrap_ci(size, np.arange(10), n_boot=50, seed=3, groups=uneven)
    assert set(sizes) <= {2, 10, 18} and len(set(sizes)) > 1


def test_bootstrap_drops_undefined_resamples():
    y, s = [0] * 19 + [1], np.linspace(0, 1, 20)  # one positive: many resamples lack it
    low, high = E.bootstrap_ci(E.roc_auc, y, s, n_boot=200)
    assert low == high == 1.0


# --------------------------------------------------------------------------- synthetic site data

N_VIDEOS = 40


def _site(seed: int = 0):
    """Prediction records (as predict-ef / detect-devices write them) and the matching truth."""
    rng = np.random.default_rng(seed)
    true_ef = rng.uniform(20, 70, N_VIDEOS).round(1)
    pace = np.arange(N_VIDEOS) % 4 == 0
    tavr = np.arange(N_VIDEOS) % 5 == 0
    records = []
    for i in range(N_VIDEOS):
        base = {"level": "video", "source": f"/data/site/v{i:02d}.dcm", "study": f"S{i // 2}", "n_frames": 20,
                "weights": "echo-clip", "weights_sha256": "x"}
        records.append({**base, "task": "ejection_fraction", "ef": float(true_ef[i] + rng.normal(0, 6)),
                        "single_frame_ef_sd": 1.0, "aggregation": "released", "prompts": "default", "error": None})
        p_score = 0.30 + 0.02 * pace[i] + rng.normal(0, 0.008)
        records.append({**base, "task": "pacemaker", "score": float(p_score), "threshold": 0.298, "calibrated": True,
                        "detected": bool(p_score >= 0.298), "threshold_source": "published", "error": None})
        t_score = 0.20 + 0.03 * tavr[i] + rng.normal(0, 0.01)
        records.append({**base, "task": "tavr", "score": float(t_score), "threshold": None, "calibrated": False,
                        "detected": None, "threshold_source": None, "error": None})
    records.append({"level": "video", "source": "/data/site/broken.dcm", "study": "S99", "error": "cannot decode"})
    return records, {"ef": true_ef, "pacemaker": pace, "tavr": tavr}


def _jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _labels_csv(truth, columns=("ef", "pacemaker", "tavr"), extra_rows=(), by_name=True) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["source", *columns])
    words = {True: "yes", False: "no"}
    for i in range(N_VIDEOS):
        source = f"v{i:02d}.dcm" if by_name and i % 2 else f"/data/site/v{i:02d}.dcm"
        row = [source]
        for c in columns:
            row.append(truth[c][i] if c == "ef" else (words if i % 3 else {True: 1, False: 0})[bool(truth[c][i])])
        writer.writerow(row)
    for row in extra_rows:
        writer.writerow(row)
    return buffer.getvalue()


@pytest.fixture
def site(tmp_path):
    records, truth = _site()
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text(_jsonl(records))
    labels = tmp_path / "labels.csv"
    labels.write_text(_labels_csv(truth, extra_rows=[["/elsewhere/x.dcm", 50, 0, 0], ["nope.dcm", 40, 1, 0]]))
    return predictions, labels, truth


def test_join_matches_by_path_then_file_name(site):
    predictions, labels, truth = site
    joined = E.join(E.read_predictions(predictions.read_text()), E.read_labels(labels.read_text()))
    assert (joined.unmatched, joined.by_name, joined.label_rows) == (2, N_VIDEOS // 2, N_VIDEOS + 2)
    assert set(joined.pairs) == {"ejection_fraction", "pacemaker", "tavr"}
    ef = joined.pairs["ejection_fraction"]
    assert ef.kind == "regression" and ef.n == N_VIDEOS and np.allclose(ef.y_true, truth["ef"])
    pace = joined.pairs["pacemaker"]
    assert pace.threshold == 0.298 and pace.detected is not None and pace.y_true.tolist() == truth["pacemaker"].tolist()
    assert joined.pairs["tavr"].detected is None
    assert ef.groups[0] == "S0" and ef.groups[3] == "S1"


def test_study_labels_meet_study_means():
    records, _ = _site()
    labels = E.read_labels("study,ef\nS0,40\nS1,55\nS404,30\n")
    joined = E.join(E.read_predictions(_jsonl(records)), labels)
    ef = joined.pairs["ejection_fraction"]
    expected = np.mean([r["ef"] for r in records[:6] if r.get("ef") is not None])
    assert ef.level == "study" and ef.n == 2 and ef.y_pred[0] == pytest.approx(expected) and joined.unmatched == 1


def test_predictions_from_csv_as_predict_ef_writes_it():
    text = ("level,source,study,ef,n_frames,n_videos,single_frame_ef_sd,error\n"
            "video,a/v1.dcm,a,55.5,20,,1.2,\nvideo,a/v2.dcm,a,,0,,,cannot decode\nstudy,,a,55.5,,1,,\n")
    records = E.read_predictions(text)
    assert [(r["level"], r["task"], r["value"]) for r in records] == [("video", "ejection_fraction", 55.5),
                                                                      ("study", "ejection_fraction", 55.5)]


def test_bad_label_value_names_its_row():
    labels = E.read_labels("source,pacemaker\na.dcm,1\nb.dcm,maybe\n")
    with pytest.raises(E.LabelsError, match="row 3: pacemaker"):
        labels.binary("pacemaker")


def test_evaluate_metrics_have_paper_values_and_cis(site):
    predictions, labels, _ = site
    joined = E.join(E.read_predictions(predictions.read_text()), E.read_labels(labels.read_text()))
    metrics = {(m.task, m.metric): m for m in E.evaluate(joined.pairs, n_boot=200)}
    assert set(metrics) == {("ejection_fraction", "mae"), ("ejection_fraction", "rmse"), ("ejection_fraction", "r2"),
                            ("pacemaker", "auc"), ("pacemaker", "sensitivity"), ("pacemaker", "specificity"),
                            ("tavr", "auc")}
    assert metrics[("ejection_fraction", "mae")].paper == 7.1 and metrics[("tavr", "auc")].paper == 0.92
    assert metrics[("pacemaker", "sensitivity")].threshold == 0.298
    for m in metrics.values():
        assert m.ci_low <= m.value <= m.ci_high, m


# --------------------------------------------------------------------------- commands


def test_calibrate_writes_thresholds_that_detect_devices_reads(site, tmp_path):
    from echoclip_cli.prompts import load_thresholds

    predictions, labels, _ = site
    out = tmp_path / "thresholds.json"
    out.write_text(json.dumps({"impella": {"threshold": 0.25, "method": "f1"}, "pacemaker": 0.1}))
    result = run_cli("calibrate", "--labels", labels, "--predictions", predictions, "--out", out, "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert "2 of 42 label rows did not match" in result.stderr
    data = json.loads(out.read_text())
    assert set(data) == {"impella", "pacemaker", "tavr"} and data["impella"]["threshold"] == 0.25
    for task in ("pacemaker", "tavr"):
        assert data[task]["method"] == "f1" and data[task]["n"] == N_VIDEOS
        assert set(data[task]) >= {"threshold", "positives", "auc", "sensitivity", "specificity", "f1"}
    thresholds = load_thresholds(out)
    assert thresholds["pacemaker"] == data["pacemaker"]["threshold"] and thresholds["impella"] == 0.25
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["task"] for r in rows] == ["pacemaker", "tavr"]


def test_calibrate_one_task_from_stdin_to_stdout(site):
    predictions, labels, _ = site
    result = run_cli("calibrate", "--labels", labels, "--predictions", "-", "--task", "tavr", "--method", "youden",
                     input=predictions.read_text())
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == ["tavr"] and data["tavr"]["method"] == "youden"


def test_calibrate_missing_label_column_is_one_error_line(site, tmp_path):
    predictions, _, truth = site
    labels = tmp_path / "ef_only.csv"
    labels.write_text(_labels_csv(truth, columns=("ef", "pacemaker")))
    result = run_cli("calibrate", "--labels", labels, "--predictions", predictions, "--task", "tavr")
    assert result.exit_code == 1
    assert "no label column for tavr" in one_error_line(result)


def test_evaluate_missing_label_columns_is_one_error_line(site, tmp_path):
    predictions, _, _ = site
    labels = tmp_path / "none.csv"
    labels.write_text("source,weight\nv01.dcm,70\n")
    result = run_cli("evaluate", "--labels", labels, "--predictions", predictions)
    assert result.exit_code == 1
    assert "no label column for any predicted task" in one_error_line(result)


def test_evaluate_records_and_unmatched_warning(site):
    predictions, labels, _ = site
    result = run_cli("evaluate", "--labels", labels, "--predictions", predictions, "--bootstrap", "200",
                     "--by", "study", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert "warning: 2 of 42 label rows did not match a prediction" in result.stderr
    assert "'/elsewhere/x.dcm', 'nope.dcm'" in result.stderr  # which rows: the user can fix them
    rows = {(r["task"], r["metric"]): r for r in map(json.loads, result.stdout.splitlines())}
    mae = rows[("ejection_fraction", "mae")]
    assert mae["paper"] == 7.1 and mae["n"] == N_VIDEOS and mae["ci_low"] <= mae["value"] <= mae["ci_high"]
    assert rows[("pacemaker", "auc")]["paper"] == 0.84 and rows[("pacemaker", "auc")]["positives"] == 10
    assert rows[("pacemaker", "specificity")]["threshold"] == 0.298
    assert ("tavr", "sensitivity") not in rows


def test_evaluate_table_shows_paper_column(site):
    predictions, labels, _ = site
    result = run_cli("evaluate", "--labels", labels, "--predictions", predictions, "--bootstrap", "20",
                     "--format", "table")
    assert result.exit_code == 0, result.stderr
    assert "paper" in result.stdout and "0.84" in result.stdout and "7.1" in result.stdout


def test_evaluate_plot(site, tmp_path):
    pytest.importorskip("matplotlib")
    predictions, labels, _ = site
    image = tmp_path / "eval.png"
    result = run_cli("evaluate", "--labels", labels, "--predictions", predictions, "--bootstrap", "0",
                     "--plot", image, "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_plot_without_matplotlib_says_how_to_install(site, tmp_path, monkeypatch):
    predictions, labels, _ = site
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    result = run_cli("evaluate", "--labels", labels, "--predictions", predictions, "--plot", tmp_path / "x.png",
                     "--bootstrap", "0", "--format", "jsonl")
    assert result.exit_code == 1  # the plot asked for was not written ...
    assert "no plot written" in result.stderr and "pip install 'echoclip[plot]'" in result.stderr
    metrics = [json.loads(line) for line in result.stdout.splitlines()]
    assert {m["task"] for m in metrics} >= {"ejection_fraction"}  # ... but the metrics are all there
    assert not (tmp_path / "x.png").exists()


def test_calibrate_names_a_task_without_positives_and_still_calibrates_the_others(site, tmp_path):
    """Issue 30 (a new user's trial): one task whose labels hold no positive failed the whole run
    without naming it; now it is one error line naming the task, the other tasks get thresholds, exit 1."""
    predictions, _, truth = site
    labels = tmp_path / "no_tavr_positives.csv"
    labels.write_text(_labels_csv({**truth, "tavr": np.zeros_like(truth["tavr"])}))
    out = tmp_path / "t.json"
    result = run_cli("calibrate", "--labels", labels, "--predictions", predictions, "--out", out, "-f", "jsonl")
    assert result.exit_code == 1
    assert "tavr: no threshold: a threshold needs both positive and negative labels (got 0 positive" in result.stderr
    assert set(json.loads(out.read_text())) == {"pacemaker"}
    alone = run_cli("calibrate", "--labels", labels, "--predictions", predictions, "--task", "tavr")
    assert alone.exit_code == 1 and "tavr: no threshold" in alone.stderr and alone.stdout == ""
