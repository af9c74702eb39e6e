"""`magistrate cascade`, as a user runs it: stage 1 judges every pair in one order, stage 2
judges in both orders only what stage 1's calibration left undecided; a SIGKILL during
stage 2, then --resume, finishes without judging stage 1 again; one row per pair with
`decided_by`. The real vLLM CPU engine on the tiny random-weight judge: the mechanics are
checked, not the judge (docs/cascade.md has a run on the embedded judge)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from magistrate.judges.calibration import calibrated_fields
from tests.conftest import EXAMPLES, MAGISTRATE, REPO, run_cli, session_processes
from tests.pipelines.test_calibrated_run import calibration

pytestmark = pytest.mark.engine
PAIRS = EXAMPLES / "llmbar-demo.jsonl"


def _rows(path: Path) -> list[dict]:
    return pads.dataset(str(path), format="parquet").to_table().to_pylist()


def _config(tmp: Path, tiny_model: str) -> Path:
    # One order at a low temperature: the tiny judge's near-0.5 probabilities spread out,
    # so the threshold decides some pairs and leaves the rest to stage 2.
    cal = calibration(temperature=0.02, threshold=0.7)
    cal = cal.model_copy(update={"source": {**cal.source, "order": ["ab"]}})
    (tmp / "cal.json").write_text(cal.model_dump_json())
    config = tmp / "cascade.yaml"
    config.write_text(
        "stages:\n"
        f"  - {{name: small, model: {tiny_model}, mode: logprob, order: ab, calibration: {tmp / 'cal.json'}}}\n"
        f"  - {{name: big, model: {tiny_model}, mode: logprob, order: both}}\n")
    return config


@pytest.fixture(scope="module")
def cascaded(tmp_path_factory, tiny_model):
    """A cascade killed (SIGKILL, its whole process session) once stage 2 has published a
    unit, then resumed."""
    tmp = tmp_path_factory.mktemp("cascade")
    config, out = _config(tmp, tiny_model), tmp / "out"
    args = ["cascade", "--input", str(PAIRS), "--output", str(out), "--config", str(config), "--unit-rows", "2"]
    log = open(tmp / "first.log", "w")
    proc = subprocess.Popen([*MAGISTRATE, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    stage2 = out / "stages" / "2-big" / "verdicts"
    deadline = time.monotonic() + 600
    while not (stage2.exists() and any(p.name.startswith("unit-") for p in stage2.iterdir())):
        assert proc.poll() is None, (tmp / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "stage 2 never published a unit"
        time.sleep(0.1)
    stage2_done_when_killed = (stage2.parent / "_SUCCESS").exists()
    published_when_killed = len(list(stage2.glob("unit-*.parquet")))
    for p in session_processes(proc.pid):
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    log.close()
    resumed = run_cli(*args, "--resume")
    return tmp, out, resumed, stage2_done_when_killed, published_when_killed


def test_killed_in_stage_2_and_resumed_without_rejudging_stage_1(cascaded):
    tmp, out, resumed, stage2_done_when_killed, published = cascaded
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not stage2_done_when_killed and published >= 1
    summary = json.loads((out / "summary.json").read_text())
    small, big = summary["stages"]
    assert small["pairs_this_run"] == 0 and small["units_this_run"] == 0  # stage 1 was not judged again
    assert 0 < big["pairs_this_run"] < big["pairs"]  # stage 2 finished only what it had not published
    assert summary["complete"] and (out / "_SUCCESS").exists()


def test_every_pair_once_and_stage_2_judged_only_the_undecided(cascaded):
    tmp, out, *_ = cascaded
    stage1 = {r["id"]: r for r in _rows(out / "stages" / "1-small" / "verdicts")}
    stage2 = _rows(out / "stages" / "2-big" / "verdicts")
    final = _rows(out / "verdicts")
    ids = [json.loads(line)["id"] for line in PAIRS.read_text().splitlines()]
    assert sorted(r["id"] for r in final) == sorted(ids) and len(stage1) == len(ids)
    undecided = {i for i, r in stage1.items() if not r["decided"]}
    assert undecided and len(undecided) < len(ids)  # the threshold split them
    assert sorted(r["id"] for r in stage2) == sorted(undecided)  # exactly once each, nothing else
    assert all(r["order"] == "both" and r["ab_verdict"] and r["ba_verdict"] for r in stage2)
    by_stage2 = {r["id"]: r for r in stage2}
    for row in final:
        if row["id"] in undecided:
            assert row["decided_by"] == "big" and row["order"] == "both"
            assert row["winner"] == by_stage2[row["id"]]["winner"] and row["p_a"] == by_stage2[row["id"]]["p_a"]
        else:
            one = stage1[row["id"]]
            assert row["decided_by"] == "small" and row["order"] == "ab" and row["decided"] is True
            assert row["winner"] == one["winner"] and row["confidence"] == calibrated_fields(
                calibration(0.02, 0.7), one)["confidence"]
        assert row["label"] in ("A", "B")  # stage 1's input columns, kept
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decided_by"] == {"small": len(ids) - len(undecided), "big": len(undecided)}
    small, big = summary["stages"]
    assert small["escalated"] == len(undecided) and big["pairs"] == len(undecided)
    for stage in (small, big):
        assert stage["prompt_tokens"] > 0 and stage["gpu_hours_estimate_h100"] > 0
        assert stage["gpus_per_actor"] == 0 and stage["gpu_hours_this_run"] == 0  # vLLM's CPU build
    # stage 2 sees both orders of each pair, stage 1 one: tokens per pair about double
    assert big["prompt_tokens"] / big["pairs"] > 1.5 * small["prompt_tokens"] / small["pairs"]


def test_the_cascade_output_reads_as_a_judge_output(cascaded, tmp_path):
    _, out, *_ = cascaded
    report = run_cli("report", str(out), "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["pairs"] == 20
    again = run_cli("cascade", "--input", str(PAIRS), "--output", str(out), "--config",
                    str(out.parent / "cascade.yaml"), "--unit-rows", "2")
    assert again.returncode == 2 and "--resume" in again.stderr
    changed = run_cli("cascade", "--input", str(PAIRS), "--output", str(out), "--config",
                      str(out.parent / "cascade.yaml"), "--unit-rows", "4", "--resume")
    assert changed.returncode == 2 and "unit_rows" in changed.stderr


def test_a_config_that_cannot_decide_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("stages:\n  - {name: a}\n  - {name: b}\n")
    result = run_cli("cascade", "--input", str(PAIRS), "--output", str(tmp_path / "o"), "--config",
                     str(tmp_path / "c.yaml"))
    assert result.returncode == 2 and "need a calibration" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "d.yaml").write_text("stages: [{name: a, calibration: x.json}]\n")
    result = run_cli("cascade", "--input", str(PAIRS), "--output", str(tmp_path / "o"), "--config",
                     str(tmp_path / "d.yaml"))
    assert result.returncode == 2 and "at least 2" in result.stderr
    assert not (tmp_path / "o").exists()
