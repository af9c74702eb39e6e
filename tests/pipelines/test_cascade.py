"""`magistrate cascade` and `magistrate judge --calibration`, as a user runs them.

Stage 1 judges every pair in one order with a calibration (a `judge --calibration` run:
its rows get p_a_calibrated, confidence and decided); stage 2 judges in both orders only
what stage 1 left undecided. The cascade is killed (SIGKILL, its whole process session)
once stage 2 has published a unit, and `--resume` finishes it without judging stage 1
again: one row per pair with `decided_by`. One cascade run serves every test here. The
real vLLM CPU engine on the tiny random-weight judge: the mechanics are checked, not the
judge (docs/cascade.md has a run on the embedded judge)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from magistrate.judges.calibration import calibrated_fields
from tests.conftest import EXAMPLES, MAGISTRATE, REPO, run_cli, session_processes
from tests.pipelines.calibrations import calibration

pytestmark = pytest.mark.engine
# The tiny judge's one-order p_a lie within 0.04 of 0.5: at this temperature the 0.7
# threshold decides a little over half of the demo pairs and leaves the rest to stage 2.
CALIBRATION = calibration(temperature=0.1, threshold=0.7, order="ab")


def _rows(path: Path) -> list[dict]:
    return pads.dataset(str(path), format="parquet").to_table().to_pylist()


def _pairs(tmp: Path) -> tuple[Path, list[dict]]:
    """The demo pairs as Parquet in row groups of 2: ten units, so stage 2 has several."""
    rows = [json.loads(line) for line in (EXAMPLES / "llmbar-demo.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["extra"] = i  # a typed passthrough column, to come through to the final rows
    path = tmp / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    return path, rows


@pytest.fixture(scope="module")
def cascaded(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("cascade")
    src, rows = _pairs(tmp)
    (tmp / "cal.json").write_text(CALIBRATION.model_dump_json())
    config = tmp / "cascade.yaml"
    config.write_text(
        "stages:\n"
        f"  - {{name: small, model: {tiny_model}, mode: logprob, order: ab, calibration: {tmp / 'cal.json'}}}\n"
        f"  - {{name: big, model: {tiny_model}, mode: logprob, order: both}}\n")
    out = tmp / "out"
    args = ["cascade", "--input", str(src), "--output", str(out), "--config", str(config), "--unit-rows", "2"]
    log = open(tmp / "first.log", "w")
    proc = subprocess.Popen([*MAGISTRATE, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    stage2 = out / "stages" / "2-big" / "verdicts"
    deadline = time.monotonic() + 600
    while not (stage2.exists() and any(p.name.startswith("unit-") for p in stage2.iterdir())):
        assert proc.poll() is None, (tmp / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "stage 2 never published a unit"
        time.sleep(0.1)
    for p in session_processes(proc.pid):  # the driver and its local Ray at once: a lost head
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    log.close()
    killed = {"stage2_complete": (stage2.parent / "_SUCCESS").exists(),
              "published": len(list(stage2.glob("unit-*.parquet")))}
    resumed = run_cli(*args, "--resume")
    return {"tmp": tmp, "src": src, "rows": rows, "out": out, "args": args, "killed": killed,
            "resumed": resumed, "tiny_model": tiny_model}


def test_killed_in_stage_2_and_resumed_without_rejudging_stage_1(cascaded):
    out, resumed, killed = cascaded["out"], cascaded["resumed"], cascaded["killed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not killed["stage2_complete"] and killed["published"] >= 1
    summary = json.loads((out / "summary.json").read_text())
    small, big = summary["stages"]
    assert small["pairs_this_run"] == 0 and small["units_this_run"] == 0  # stage 1 was not judged again
    assert 0 < big["pairs_this_run"] < big["pairs"]  # stage 2 finished only what it had not published
    assert summary["complete"] and (out / "_SUCCESS").exists()
    assert "decided by: small" in resumed.stdout and "Traceback" not in resumed.stderr


def test_stage_1_rows_carry_the_calibration(cascaded):
    """Stage 1 is `magistrate judge --calibration`: every row has the map applied, and its
    summary counts the decisions."""
    stage1 = cascaded["out"] / "stages" / "1-small"
    rows = _rows(stage1 / "verdicts")
    assert len(rows) == 20
    for row in rows:
        want = calibrated_fields(CALIBRATION, row)
        assert row["decided"] == want["decided"] and row["confidence"] == pytest.approx(want["confidence"])
        assert row["p_a_calibrated"] == pytest.approx(want["p_a_calibrated"])
    decided = sum(bool(r["decided"]) for r in rows)
    summary = json.loads((stage1 / "summary.json").read_text())
    judged = sum(r["winner"] in ("A", "B", "tie") for r in rows)
    assert summary["calibrated"]["decided"] == decided and 0 < decided < 20
    assert summary["calibrated"]["coverage"] == pytest.approx(decided / judged)
    labelled = [r for r in rows if r["decided"] and r["label"] in ("A", "B")]
    assert summary["calibrated"]["labelled_decided"] == len(labelled)
    assert summary["calibrated"]["agreement_on_decided"] == pytest.approx(
        sum(r["winner"] == r["label"] for r in labelled) / len(labelled))


def test_every_pair_once_and_stage_2_judged_only_the_undecided(cascaded):
    out, rows = cascaded["out"], cascaded["rows"]
    stage1 = {r["id"]: r for r in _rows(out / "stages" / "1-small" / "verdicts")}
    stage2 = _rows(out / "stages" / "2-big" / "verdicts")
    final = _rows(out / "verdicts")
    ids = [r["id"] for r in rows]
    assert sorted(r["id"] for r in final) == sorted(ids) and len(stage1) == len(ids)
    undecided = {i for i, r in stage1.items() if not r["decided"]}
    assert undecided and len(undecided) < len(ids)  # the threshold split them
    assert sorted(r["id"] for r in stage2) == sorted(undecided)  # exactly once each, nothing else
    assert all(r["order"] == "both" and r["ab_verdict"] and r["ba_verdict"] for r in stage2)
    by_stage2 = {r["id"]: r for r in stage2}
    extra = {r["id"]: r["extra"] for r in rows}
    for row in final:
        if row["id"] in undecided:
            assert row["decided_by"] == "big" and row["order"] == "both"
            assert row["winner"] == by_stage2[row["id"]]["winner"] and row["p_a"] == by_stage2[row["id"]]["p_a"]
        else:
            one = stage1[row["id"]]
            assert row["decided_by"] == "small" and row["order"] == "ab" and row["decided"] is True
            assert row["winner"] == one["winner"] and row["confidence"] == pytest.approx(one["confidence"])
        assert row["label"] in ("A", "B") and row["extra"] == extra[row["id"]]  # stage 1's input columns
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decided_by"] == {"small": len(ids) - len(undecided), "big": len(undecided)}
    small, big = summary["stages"]
    assert small["escalated"] == len(undecided) and big["pairs"] == len(undecided)
    for stage in (small, big):
        assert stage["prompt_tokens"] > 0 and stage["gpu_hours_estimate_h100"] > 0
        assert stage["gpus_per_actor"] == 0 and stage["gpu_hours_this_run"] == 0  # vLLM's CPU build
    # stage 2 sees both orders of each pair, stage 1 one: tokens per pair about double
    assert big["prompt_tokens"] / big["pairs"] > 1.5 * small["prompt_tokens"] / small["pairs"]


def test_the_outputs_read_as_judge_outputs(cascaded):
    out, tmp = cascaded["out"], cascaded["tmp"]
    report = run_cli("report", str(out), "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["pairs"] == 20
    # `select` on stage 1 uses its stored decisions, without --calibration.
    result = run_cli("select", str(out / "stages" / "1-small"), "--min-confidence", "0",
                     "--output", str(tmp / "dpo.parquet"))
    assert result.returncode == 0, result.stderr
    kept = {r["id"]: r["confidence"] for r in pq.read_table(tmp / "dpo.parquet").to_pylist()}
    want = {r["id"]: r["confidence"] for r in _rows(out / "stages" / "1-small" / "verdicts")
            if r["decided"] and r["winner"] in ("A", "B")}
    assert kept.keys() == want.keys() and all(kept[i] == pytest.approx(want[i]) for i in kept)


def test_resumes_with_other_settings_are_refused(cascaded):
    out, tmp, args, src, tiny = (cascaded[k] for k in ("out", "tmp", "args", "src", "tiny_model"))
    again = run_cli(*args)
    assert again.returncode == 2 and "--resume" in again.stderr
    changed = run_cli(*[a if a != "2" else "4" for a in args], "--resume")
    assert changed.returncode == 2 and "unit_rows" in changed.stderr
    # A judge output resumed with another calibration, or none: refused, as any other setting.
    (tmp / "other.json").write_text(calibration(0.5, 0.7, order="ab").model_dump_json())
    judge = ["judge", "--input", str(src), "--output", str(out / "stages" / "1-small"), "--model", tiny,
             "--mode", "logprob", "--order", "ab", "--unit-rows", "2", "--resume"]
    for extra in (["--calibration", str(tmp / "other.json")], []):
        result = run_cli(*judge, *extra)
        assert result.returncode == 2 and "cannot resume" in result.stderr and "calibration_digest" in result.stderr
    result = run_cli(*judge, "--calibration", str(tmp / "cal.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r" (\d+) units \(\1 already done\)", result.stderr), result.stderr[-2000:]


def test_a_map_fitted_on_another_run_is_warned_of(cascaded, tmp_path):
    src, tiny = cascaded["src"], cascaded["tiny_model"]
    cal = calibration(temperature=1.0, threshold=None)
    (tmp_path / "cal.json").write_text(cal.model_copy(update={"source": {"judge": ["con-j"]}}).model_dump_json())
    result = run_cli("judge", "--input", str(src), "--output", str(tmp_path / "o"), "--model", tiny,
                     "--mode", "logprob", "--calibration", str(tmp_path / "cal.json"), "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fitted on judge con-j (this run: judge mt-bench)" in result.stderr
    result = run_cli("judge", "--input", str(src), "--output", str(tmp_path / "p"),
                     "--calibration", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "cannot read the calibration file" in result.stderr
    assert not (tmp_path / "p").exists()


def test_a_config_that_cannot_decide_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("stages:\n  - {name: a}\n  - {name: b}\n")
    result = run_cli("cascade", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(tmp_path / "o"),
                     "--config", str(tmp_path / "c.yaml"))
    assert result.returncode == 2 and "need a calibration" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "d.yaml").write_text("stages: [{name: a, calibration: x.json}]\n")
    result = run_cli("cascade", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(tmp_path / "o"),
                     "--config", str(tmp_path / "d.yaml"))
    assert result.returncode == 2 and "at least 2" in result.stderr
    assert not (tmp_path / "o").exists()
