"""`magistrate judge --calibration FILE`, as a user runs it: every row gets p_a_calibrated,
confidence and decided, the summary counts the decisions, a resume must apply the same
map, and `select` uses the stored decisions. The real vLLM CPU engine on the tiny
random-weight judge (what it says does not matter here: the map is checked, not the judge)."""

from __future__ import annotations

import json

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from magistrate.judges.calibration import Calibration, Decision, Figures, calibrated_fields
from tests.conftest import EXAMPLES, run_cli

pytestmark = pytest.mark.engine
FIGURES = Figures(pairs=100, accuracy=0.7, log_loss=0.6, brier=0.2, ece=0.05)


def calibration(temperature: float, threshold: float | None) -> Calibration:
    decision = Decision(target=0.9, risk=0.1, threshold=threshold, min_pairs=30, tested=3, pairs=100,
                        decided=40, coverage=0.4, agreement=0.95, lower_bound=0.91, message="hand-made")
    return Calibration(method="temperature", parameters={"temperature": temperature}, n_labelled=100,
                       excluded={}, folds=5, cv_log_loss={"temperature": 0.6, "platt": 0.61, "uncalibrated": 0.7},
                       before=FIGURES, after=FIGURES, decision=decision,
                       source={"output": "hand-made", "judge": ["mt-bench"], "mode": ["logprob"], "order": ["both"]})


@pytest.fixture(scope="module")
def judged(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("calibrated")
    # The tiny judge's probabilities sit near 0.5: a low temperature spreads them, so
    # some confidences fall on each side of the threshold.
    cal = calibration(temperature=0.02, threshold=0.7)
    (tmp / "cal.json").write_text(cal.model_dump_json())
    out = tmp / "out"
    result = run_cli("judge", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(out),
                     "--model", tiny_model, "--mode", "logprob", "--calibration", str(tmp / "cal.json"),
                     "--unit-rows", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()
    return tmp, out, cal, rows, result, tiny_model


def test_every_row_carries_the_map(judged):
    _, out, cal, rows, result, _ = judged
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20
    for row in rows:
        want = calibrated_fields(cal, row)
        assert row["decided"] == want["decided"] and row["confidence"] == pytest.approx(want["confidence"])
        assert row["p_a_calibrated"] == pytest.approx(want["p_a_calibrated"])
    decided = sum(bool(r["decided"]) for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    judged_pairs = sum(r["winner"] in ("A", "B", "tie") for r in rows)
    assert summary["calibrated"]["decided"] == decided
    assert summary["calibrated"]["coverage"] == pytest.approx(decided / judged_pairs)
    labelled = [r for r in rows if r["decided"] and r["label"] in ("A", "B")]
    assert summary["calibrated"]["labelled_decided"] == len(labelled)
    assert "decided (calibrated)" in result.stdout
    assert "was fitted on" not in result.stderr  # the file's judge, mode and order are this run's


def test_select_uses_the_stored_decisions(judged):
    tmp, out, _, rows, _, _ = judged
    result = run_cli("select", str(out), "--min-confidence", "0", "--output", str(tmp / "dpo.parquet"))
    assert result.returncode == 0, result.stderr
    kept = {r["id"]: r["confidence"] for r in pq.read_table(tmp / "dpo.parquet").to_pylist()}
    want = {r["id"]: r["confidence"] for r in rows if r["decided"] and r["winner"] in ("A", "B")}
    assert kept.keys() == want.keys()
    assert all(kept[i] == pytest.approx(want[i]) for i in kept)


def test_resume_with_another_map_is_refused(judged):
    tmp, out, _, _, _, tiny_model = judged
    (tmp / "other.json").write_text(calibration(temperature=0.5, threshold=0.7).model_dump_json())
    for extra in (["--calibration", str(tmp / "other.json")], []):
        result = run_cli("judge", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(out),
                         "--model", tiny_model, "--mode", "logprob", "--unit-rows", "8", "--resume", *extra)
        assert result.returncode == 2 and "cannot resume" in result.stderr and "calibration_digest" in result.stderr
    result = run_cli("judge", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(out),
                     "--model", tiny_model, "--mode", "logprob", "--unit-rows", "8", "--resume",
                     "--calibration", str(tmp / "cal.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 units (3 already done)" in result.stderr


def test_a_map_fitted_on_another_run_is_warned_of(judged, tmp_path):
    _, _, _, _, _, tiny_model = judged
    cal = calibration(temperature=1.0, threshold=None)
    (tmp_path / "cal.json").write_text(cal.model_copy(update={"source": {"judge": ["con-j"]}}).model_dump_json())
    result = run_cli("judge", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(tmp_path / "o"),
                     "--model", tiny_model, "--mode", "logprob", "--calibration", str(tmp_path / "cal.json"),
                     "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fitted on judge con-j (this run: judge mt-bench)" in result.stderr
    result = run_cli("judge", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(tmp_path / "p"),
                     "--calibration", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "cannot read the calibration file" in result.stderr
    assert not (tmp_path / "p").exists()
