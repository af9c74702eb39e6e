"""Calibration (temperature / Platt scaling) and decisions with a guarantee
(docs/calibration.md), on synthetic labelled outputs with a stated miscalibration:
the true P(A is better) is sigmoid(z), and the judge's order-averaged log-odds are k * z,
so the temperature to recover is k. No engine."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.stats import norm

from magistrate.analysis.calibrate import Labelled, calibrated_figures, fit, fit_temperature
from magistrate.analysis.guarantee import MIN_PAIRS, choose_threshold
from magistrate.analysis.output import open_verdicts
from magistrate.pipelines import InputError
from magistrate.judges.calibration import (ADDED_COLUMNS, apply, calibrated_fields, logit, parse_calibration,
                                           sigmoid)
from magistrate.schema import CALIBRATED_FIELDS
from tests.analysis.conftest import write_output
from tests.conftest import invoke_cli


def judged_rows(n: int, k: float, seed: int, spread: float = 2.0, bias: float = 0.4) -> list[dict]:
    """Labelled pairs judged in both orders. Each order's log-odds are k*z plus or minus a
    position bias that the order average cancels; labels are drawn from sigmoid(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, spread, n)
    label_a = rng.random(n) < sigmoid(z)
    rows = []
    for i in range(n):
        ab, ba = float(sigmoid(k * z[i] + bias)), float(sigmoid(k * z[i] - bias))
        ab_v, ba_v = ("A" if ab > 0.5 else "B"), ("A" if ba > 0.5 else "B")
        rows.append({"id": f"p{i}", "prompt": f"q{i}", "response_a": f"a{i}", "response_b": f"b{i}",
                     "label": "A" if label_a[i] else "B", "ab_p_a": ab, "ba_p_a": ba, "p_a": (ab + ba) / 2,
                     "ab_verdict": ab_v, "ba_verdict": ba_v, "winner": ab_v if ab_v == ba_v else "tie",
                     "consistent": ab_v == ba_v, "judge": "mt-bench", "judge_version": 1, "mode": "logprob",
                     "order": "both", "model": "synthetic", "run_id": "r"})
    return rows


def _labelled(z: np.ndarray, y: np.ndarray) -> Labelled:
    return Labelled(z, y, sigmoid(z), np.where(z > 0, "A", "B").astype(object), {})


@pytest.mark.parametrize("k", [0.5, 2.0, 3.0])
def test_a_known_temperature_is_recovered_within_5_percent(k):
    rng = np.random.default_rng(int(k * 10))
    z = rng.normal(0.0, 2.0, 5000)
    y = rng.random(5000) < sigmoid(z)
    assert fit_temperature(k * z, y)["temperature"] == pytest.approx(k, rel=0.05)
    calibration = fit(_labelled(k * z, y))
    if calibration.method == "temperature":  # chosen by CV; Platt must then say the same
        assert calibration.parameters["temperature"] == pytest.approx(k, rel=0.05)
    else:
        assert 1 / calibration.parameters["a"] == pytest.approx(k, rel=0.05)
        assert abs(calibration.parameters["b"]) < 0.1


@pytest.mark.parametrize("k", [1.0, 0.5, 3.0])
def test_held_out_log_loss_is_never_worse_beyond_noise(tmp_path, k):
    """Fitted on one output, measured on another drawn alike; k = 1 is a calibrated judge."""
    train = write_output(tmp_path / "train", judged_rows(1500, k, seed=1), files=2)
    test_rows = judged_rows(1500, k, seed=2)
    test = write_output(tmp_path / "test", test_rows, files=2)
    result = invoke_cli("calibrate", str(train), "--out", str(tmp_path / "cal.json"))
    assert result.returncode == 0, result.stderr
    calibration = parse_calibration((tmp_path / "cal.json").read_text())
    fig = calibrated_figures(open_verdicts(str(test)), calibration)
    # noise: three standard errors of the mean per-pair difference in log-loss, recomputed here
    p_raw = np.clip([r["p_a"] for r in test_rows], 1e-6, 1 - 1e-6)
    p_cal, _, _ = apply(calibration, [r["ab_p_a"] for r in test_rows], [r["ba_p_a"] for r in test_rows],
                        [r["p_a"] for r in test_rows], [r["winner"] for r in test_rows])
    y = np.array([r["label"] == "A" for r in test_rows])
    loss = lambda p: -np.where(y, np.log(p), np.log1p(-p))  # noqa: E731
    diff = loss(np.clip(p_cal, 1e-6, 1 - 1e-6)) - loss(p_raw)
    assert fig["before"]["log_loss"] == pytest.approx(loss(p_raw).mean())
    assert fig["after"]["log_loss"] == pytest.approx(loss(np.clip(p_cal, 1e-6, 1 - 1e-6)).mean())
    assert fig["after"]["log_loss"] <= fig["before"]["log_loss"] + 3 * diff.std() / math.sqrt(len(diff))
    if k != 1.0:  # a miscalibrated judge gains clearly
        assert fig["after"]["log_loss"] < fig["before"]["log_loss"] - 0.01
        assert fig["after"]["ece"] < fig["before"]["ece"]


def test_the_guarantee_holds_in_simulation():
    """2,000 trials: each draws a calibration set from a judge whose accuracy curve is known
    (P(correct | |z|) = sigmoid(|z|), the judge overconfident by k = 2), fits the temperature
    and chooses the threshold on the same set, then the true agreement above the threshold
    is computed from the curve. The share of trials below the target is at most the risk
    plus three binomial standard errors; coverage is reported."""
    trials, n, k, spread, target, risk = 2000, 600, 2.0, 2.0, 0.9, 0.1
    # the truth, from the curve: agreement and mass of |z| >= t, by integration on a fine grid
    u = np.linspace(0.0, 12.0, 24001)
    density = 2 * norm.pdf(u, scale=spread)
    du = u[1] - u[0]
    mass = np.cumsum((density * du)[::-1])[::-1]
    hits = np.cumsum((density * sigmoid(u) * du)[::-1])[::-1]
    rng = np.random.default_rng(2025)
    failed, coverage, nothing = 0, [], 0
    for _ in range(trials):
        z = rng.normal(0.0, spread, n)
        y = rng.random(n) < sigmoid(z)
        temperature = fit_temperature(k * z, y)["temperature"]
        confidence = sigmoid(k * np.abs(z) / temperature)
        decision = choose_threshold(confidence, (z > 0) == y, target, risk)
        if decision.threshold is None:
            nothing += 1
            coverage.append(0.0)
            continue
        t = temperature * float(logit(decision.threshold)) / k  # decided iff |z| >= t
        i = min(np.searchsorted(u, t), len(u) - 1)
        failed += hits[i] / mass[i] < target
        coverage.append(mass[i])
    slack = 3 * math.sqrt(risk * (1 - risk) / trials)
    print(f"failure share {failed / trials:.4f} (risk {risk}), mean coverage {np.mean(coverage):.3f}, "
          f"nothing decided in {nothing} trials")
    assert failed / trials <= risk + slack
    assert np.mean(coverage) > 0.1


def _rows_with_ties_and_errors(n: int = 800, k: float = 2.0) -> list[dict]:
    rows = judged_rows(n, k, seed=5)
    rows[0].update(winner="error", p_a=None, ab_p_a=None, ba_p_a=None, error="prompt is empty")
    rows[1]["label"] = "tie"
    rows[2]["label"] = None
    return rows


def test_calibrate_writes_the_json_and_prints_the_figures(tmp_path):
    rows = _rows_with_ties_and_errors()
    out = write_output(tmp_path / "out", rows)
    result = invoke_cli("calibrate", str(out), "--out", str(tmp_path / "c" / "cal.json"),
                     "--target-agreement", "0.9", "--risk", "0.1", "--folds", "4")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "c" / "cal.json").read_text())
    assert data["format"] == "magistrate-calibration" and data["version"] == 1
    assert data["method"] in ("temperature", "platt") and data["folds"] == 4
    assert data["n_labelled"] == len(rows) - 3
    assert data["excluded"] == {"error": 1, "label tie": 1, "unlabelled": 1}
    assert set(data["cv_log_loss"]) == {"temperature", "platt", "uncalibrated"}
    for when in ("before", "after"):
        assert set(data[when]) == {"pairs", "accuracy", "log_loss", "brier", "ece"}
    assert data["after"]["log_loss"] < data["before"]["log_loss"]
    decision = data["decision"]
    assert decision["target"] == 0.9 and decision["risk"] == 0.1 and decision["threshold"] is not None
    assert decision["lower_bound"] >= 0.9 and decision["agreement"] >= decision["lower_bound"]
    assert 0 < decision["coverage"] < 1
    assert data["source"]["judge"] == ["mt-bench"] and data["source"]["output"] == str(out)
    assert "log-loss" in result.stdout and f"{decision['threshold']:.3f}" in result.stdout


@pytest.mark.parametrize("args, rows, message", [
    ([], [dict(r, label=None) for r in judged_rows(50, 2.0, seed=3)], "labelled pairs"),
    ([], judged_rows(10, 2.0, seed=3), "at least 20 labelled pairs"),
    (["--target-agreement", "1.2", "--risk", "0.1"], judged_rows(100, 2.0, seed=3), "--target-agreement"),
    (["--target-agreement", "0.9", "--risk", "0"], judged_rows(100, 2.0, seed=3), "--risk"),
    (["--target-agreement", "0.9"], judged_rows(100, 2.0, seed=3), "go together"),
    # a judge whose p_a runs against the labels: the best map would flip it (a Platt slope
    # below 0), which no calibration file may hold
    ([], judged_rows(300, -2.0, seed=3), "runs against the labels"),
])
def test_calibrate_refuses_clearly(tmp_path, args, rows, message):
    out = write_output(tmp_path / "out", rows, files=1)
    result = invoke_cli("calibrate", str(out), "--out", str(tmp_path / "cal.json"), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "cal.json").exists()


def test_a_map_that_would_flip_p_a_is_never_fitted():
    """On labels that run against the judge, Platt fits a slope below 0: the file it would
    write is one every reader refuses (judges/calibration.py), so calibrate refuses first."""
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 2.0, 400)
    with pytest.raises(InputError, match="runs against the labels") as excinfo:
        fit(_labelled(z, rng.random(400) < sigmoid(-z)))
    assert "\n" not in str(excinfo.value)


def test_an_output_without_a_label_column(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "label"} for r in judged_rows(50, 2.0, seed=3)]
    out = write_output(tmp_path / "out", rows, files=1)
    result = invoke_cli("calibrate", str(out), "--out", str(tmp_path / "cal.json"))
    assert result.returncode == 2 and "no label column" in result.stderr


def test_a_broken_calibration_file_is_one_line(tmp_path):
    out = write_output(tmp_path / "out", judged_rows(50, 2.0, seed=3), files=1)
    (tmp_path / "bad.json").write_text(json.dumps({"method": "platt", "parameters": {"temperature": 2}}))
    for args in (["report", str(out)], ["select", str(out), "--min-confidence", "0", "--output", str(tmp_path / "d")]):
        result = invoke_cli(*args, "--calibration", str(tmp_path / "bad.json"))
        assert result.returncode == 2 and "not a magistrate calibration" in result.stderr, result.stderr
        result = invoke_cli(*args, "--calibration", str(tmp_path / "missing.json"))
        assert result.returncode == 2 and "cannot read the calibration file" in result.stderr


@pytest.fixture
def calibrated(tmp_path):
    rows = _rows_with_ties_and_errors()
    out = write_output(tmp_path / "out", rows)
    result = invoke_cli("calibrate", str(out), "--out", str(tmp_path / "cal.json"),
                     "--target-agreement", "0.9", "--risk", "0.1")
    assert result.returncode == 0, result.stderr
    return rows, out, parse_calibration((tmp_path / "cal.json").read_text()), tmp_path / "cal.json"


def test_report_with_a_calibration(calibrated, tmp_path):
    rows, out, calibration, path = calibrated
    result = invoke_cli("report", str(out), "--json", "--calibration", str(path))
    assert result.returncode == 0, result.stderr
    cal = json.loads(result.stdout)["calibrated"]
    assert cal["method"] == calibration.method and cal["after"]["pairs"] == len(rows) - 3
    assert cal["after"]["log_loss"] == pytest.approx(calibration.after.log_loss)  # the same pairs
    assert cal["before"]["log_loss"] == pytest.approx(calibration.before.log_loss)
    _, confidence, decided = apply(calibration, *([r.get(c) for r in rows] for c in ("ab_p_a", "ba_p_a", "p_a", "winner")))
    d = cal["decisions"]
    assert d["decided"] == int(decided.sum()) and d["threshold"] == calibration.decision.threshold
    assert d["coverage"] == pytest.approx(decided.sum() / (len(rows) - 1))  # over judged rows
    chosen = [c for c in cal["curve"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["threshold"] == d["threshold"]
    assert chosen[0]["agreement"] == pytest.approx(calibration.decision.agreement)
    html = (out / "report.html").read_text()
    for key in ("plot-reliability-raw", "plot-reliability-calibrated", "plot-coverage", 'id="decided-coverage"',
                'id="cal-log_loss-after"', "(chosen)"):
        assert key in html
    text = invoke_cli("report", str(out), "--calibration", str(path)).stdout
    assert "decided (confidence >= threshold)" in text and "log-loss" in text


def test_documented_calibrated_keys(calibrated):
    from tests.conftest import REPO

    _, out, _, path = calibrated
    cal = json.loads(invoke_cli("report", str(out), "--json", "--calibration", str(path)).stdout)["calibrated"]
    doc = (REPO / "docs" / "analysis.md").read_text()
    for key, value in cal.items():
        if key in ("before", "after", "decisions"):
            for sub in value:
                assert f"`calibrated.{key}.{sub}`" in doc, f"calibrated.{key}.{sub}"
        else:
            assert f"`calibrated.{key}`" in doc, f"calibrated.{key}"


def test_select_with_a_calibration_keeps_the_decided(calibrated, tmp_path):
    rows, out, calibration, path = calibrated
    _, confidence, decided = apply(calibration, *([r.get(c) for r in rows] for c in ("ab_p_a", "ba_p_a", "p_a", "winner")))
    for extra, keep in (([], decided), (["--include-undecided"], ~np.isnan(confidence) & (confidence >= 0.6))):
        target = tmp_path / f"dpo{len(extra)}.parquet"
        result = invoke_cli("select", str(out), "--min-confidence", "0.6", "--output", str(target),
                         "--calibration", str(path), *extra)
        assert result.returncode == 0, result.stderr
        got = {r["id"]: r["confidence"] for r in pq.read_table(target).to_pylist()}
        want = {r["id"]: c for r, c, k in zip(rows, confidence, keep) if k and c >= 0.6}
        assert got.keys() == want.keys() and got
        assert all(got[i] == pytest.approx(want[i]) for i in got)
        assert ("undecided" in result.stdout) == (not extra)


def test_one_row_as_judge_and_serve_apply_it(calibrated):
    rows, _, calibration, _ = calibrated
    p, c, d = apply(calibration, *([r.get(k) for r in rows] for k in ("ab_p_a", "ba_p_a", "p_a", "winner")))
    for i in (0, 3, 4, 5):  # an error row, then verdicts
        fields = calibrated_fields(calibration, rows[i])
        assert set(fields) == {"p_a_calibrated", "confidence", "decided"}
        if rows[i]["winner"] == "error":
            assert fields == {"p_a_calibrated": None, "confidence": None, "decided": False}
        else:
            assert fields["p_a_calibrated"] == pytest.approx(p[i]) and fields["decided"] == bool(d[i])
    tie = next(r for r in rows if r["winner"] == "tie")
    assert calibrated_fields(calibration, tie)["confidence"] is None
    assert calibrated_fields(calibration, tie)["decided"] is False
    one_order = dict(rows[3], ba_p_a=None)
    z = logit(rows[3]["ab_p_a"])
    assert calibrated_fields(calibration, one_order)["p_a_calibrated"] == pytest.approx(float(calibration.probability(z)))
    assert CALIBRATED_FIELDS.names == list(ADDED_COLUMNS)
    no_decision = calibration.model_copy(update={"decision": None})
    assert calibrated_fields(no_decision, rows[3])["decided"] is None


def test_no_threshold_passes_says_so():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 400)
    decision = choose_threshold(confidence, rng.random(400) < 0.6, target=0.9, risk=0.1)
    assert decision.threshold is None and decision.decided == 0 and decision.message.startswith("nothing decided")
    decision = choose_threshold(confidence[:10], np.ones(10, dtype=bool), target=0.9, risk=0.1)
    assert decision.threshold is None and f"{MIN_PAIRS} labelled verdicts" in decision.message
