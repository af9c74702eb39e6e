"""`magistrate cascade` and `magistrate judge --calibration`, as a user runs them.

Stage 1 judges every pair in one order with a calibration (a `judge --calibration` run:
its rows get p_a_calibrated, confidence and decided); stage 2 judges in both orders only
what stage 1 left undecided. The cascade is killed (SIGKILL, its whole process session)
three times, each followed by `--resume`: in each stage's window between taking the
stage's lease and writing its `_run.json` (for stage 1 after cutting the input into
staged pieces and its duplicate-id pass), then once stage 2 has published a unit; the
last `--resume` finishes it without judging stage 1 again: one row per pair with
`decided_by`. One cascade run serves every test here. The real vLLM CPU engine on the
tiny random-weight judge: the mechanics are checked, not the judge (docs/cascade.md has
a run on the embedded judge)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from magistrate.judges.calibration import calibrated_fields
from tests.conftest import EXAMPLES, MAGISTRATE, REPO, invoke_cli, run_cli, session_processes
from tests.pipelines.calibrations import calibration
# The tiny judge's one-order p_a lie within 0.04 of 0.5: at this temperature the 0.7
# threshold decides a little over half of the demo pairs and leaves the rest to stage 2.
CALIBRATION = calibration(temperature=0.1, threshold=0.7, order="ab")


def _rows(path: Path) -> list[dict]:
    return pads.dataset(str(path), format="parquet").to_table().to_pylist()


def _pairs(tmp: Path) -> tuple[Path, list[dict]]:
    """The demo pairs as Parquet in one row group, which --unit-rows 2 cuts into ten staged
    pieces in stage 1's `_staged/`: ten units, so stage 2 has several."""
    rows = [json.loads(line) for line in (EXAMPLES / "llmbar-demo.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["extra"] = i  # a typed passthrough column, to come through to the final rows
    path = tmp / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, rows


# `magistrate ARGS`, parked for good when the job of the stage named in $PARK_AT writes its
# _run.json: the last step of the window that opens when the stage takes its lease.
_PARKED = """
import os, sys, time
from magistrate.cli import main
from magistrate.pipelines import judge_job
write = judge_job.write_run_file
def parked(settings, loc, *rest):
    if loc.path.rstrip("/").endswith(os.environ["PARK_AT"]):
        open(os.environ["PARKED"], "w").close()
        time.sleep(3600)
    return write(settings, loc, *rest)
judge_job.write_run_file = parked
main(sys.argv[1:], prog_name="magistrate")
"""


def _kill_session(proc: subprocess.Popen) -> None:
    for p in session_processes(proc.pid):  # the driver and whatever it started; Ray then ends its job
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)


def _alive(holder: dict) -> bool:
    """The lease holder's process (pid and start time) still runs on this host."""
    try:
        return abs(psutil.Process(holder["pid"]).create_time() - holder["pid_started"]) < 1.0
    except psutil.NoSuchProcess:
        return False


def _killed_in_window(args: list[str], stage: Path, log: Path, env: dict) -> dict:
    """Run the cascade until the stage's job is about to write its _run.json, SIGKILL it
    there, and say what the stage output holds then."""
    parked = log.with_suffix(".parked")
    with open(log, "w") as out:
        proc = subprocess.Popen([*MAGISTRATE[:1], "-c", _PARKED, *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **env, "PARK_AT": f"/stages/{stage.name}", "PARKED": str(parked)})
        deadline = time.monotonic() + 600
        while not parked.exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"stage {stage.name} never reached its _run.json"
            time.sleep(0.1)
        _kill_session(proc)
    lease = stage / "_lease.json"
    return {"files": sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file()),
            "lease_holder_live": _alive(json.loads(lease.read_text())) if lease.exists() else None,
            "stages_done": sorted(p.parent.name for p in stage.parent.glob("*/_SUCCESS")),
            "log": log.read_text()}


@pytest.fixture(scope="module")
def cascaded(tmp_path_factory, tiny_model, shared_ray):
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
    # Killed in each stage's window between its lease and its _run.json (no engine has
    # started by then), each time resumed.
    in_window = [_killed_in_window(args, out / "stages" / "1-small", tmp / "window-1.log", shared_ray.join()),
                 _killed_in_window([*args, "--resume"], out / "stages" / "2-big", tmp / "window-2.log",
                                   shared_ray.join())]
    # Stage 1 is done by now, so only stage 2's actor judges: it holds before its second
    # publish (magistrate/faults.py), and the kill comes with exactly one unit published.
    log = open(tmp / "in-stage-2.log", "w")
    proc = subprocess.Popen([*MAGISTRATE, *args, "--resume"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, **shared_ray.join(), "MAGISTRATE_FAULT": "publish=2",
                                                         "MAGISTRATE_FAULT_DIR": str(tmp / "faults")})
    stage2 = out / "stages" / "2-big" / "verdicts"
    deadline = time.monotonic() + 600
    while not (tmp / "faults" / "publish-2.reached").exists():
        assert proc.poll() is None, (tmp / "in-stage-2.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "stage 2 never came to its second publish"
        time.sleep(0.1)
    _kill_session(proc)
    log.close()
    killed = {"stage2_complete": (stage2.parent / "_SUCCESS").exists(),
              "published": len(list(stage2.glob("unit-*.parquet"))), "log": (tmp / "in-stage-2.log").read_text()}
    resumed = run_cli(*args, "--resume", env=shared_ray.join())
    return {"tmp": tmp, "src": src, "rows": rows, "out": out, "args": args, "killed": killed,
            "in_window": in_window, "resumed": resumed, "tiny_model": tiny_model}


@pytest.mark.engine
def test_killed_between_a_stages_lease_and_its_run_file_and_resumed(cascaded):
    """Issue 31, finding 4: a stage killed after taking its lease and before writing its
    _run.json leaves a stale lease (and staged pieces) and no _run.json; `--resume` takes
    the stage over and starts it again, whichever stage it was."""
    one, two = cascaded["in_window"]
    # What the kill left: a lease whose holder is dead, stage 1's staged input, no _run.json.
    assert one["lease_holder_live"] is False and "_run.json" not in one["files"] and not one["stages_done"]
    assert sum(f.startswith("_staged/part-") and f.endswith(".parquet") for f in one["files"]) == 10
    assert not any(f.startswith("verdicts/") for f in one["files"])
    assert two["lease_holder_live"] is False and "_run.json" not in two["files"]
    assert not any(f.startswith("verdicts/") for f in two["files"])
    # The resume after the first kill finished stage 1 (it then stopped in stage 2's window).
    assert two["stages_done"] == ["1-small"] and "Traceback" not in two["log"], two["log"][-3000:]
    for resumed in (two["log"], cascaded["killed"]["log"]):
        assert "taking over the lease" in resumed and "stopped heartbeating" in resumed
    assert "stage 1 of 2 (small): judge mt-bench (starting it again" in two["log"], two["log"][-3000:]
    assert "stage 2 of 2 (big): judge mt-bench (starting it again" in cascaded["killed"]["log"]
    final, out = cascaded["resumed"], cascaded["out"]
    assert final.returncode == 0, final.stderr[-3000:]
    assert (out / "_SUCCESS").exists() and not list(out.rglob("_lease.json"))
    ids = [r["id"] for r in _rows(out / "verdicts")]
    assert sorted(ids) == sorted(r["id"] for r in cascaded["rows"]) and len(set(ids)) == len(ids)


@pytest.mark.engine
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


@pytest.mark.engine
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


@pytest.mark.engine
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


@pytest.mark.engine
def test_the_outputs_read_as_judge_outputs(cascaded):
    out, tmp = cascaded["out"], cascaded["tmp"]
    report = invoke_cli("report", str(out), "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["pairs"] == 20
    # `select` on stage 1 uses its stored decisions, without --calibration.
    result = invoke_cli("select", str(out / "stages" / "1-small"), "--min-confidence", "0",
                        "--output", str(tmp / "dpo.parquet"))
    assert result.returncode == 0, result.stderr
    kept = {r["id"]: r["confidence"] for r in pq.read_table(tmp / "dpo.parquet").to_pylist()}
    want = {r["id"]: r["confidence"] for r in _rows(out / "stages" / "1-small" / "verdicts")
            if r["decided"] and r["winner"] in ("A", "B")}
    assert kept.keys() == want.keys() and all(kept[i] == pytest.approx(want[i]) for i in kept)


@pytest.mark.engine
def test_resumes_with_other_settings_are_refused(cascaded, shared_ray):
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
    result = run_cli(*judge, "--calibration", str(tmp / "cal.json"), env=shared_ray.join())
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r" (\d+) units \(\1 already done\)", result.stderr), result.stderr[-2000:]


@pytest.mark.engine
def test_a_map_fitted_on_another_run_is_warned_of(cascaded, tmp_path, shared_ray):
    src, tiny = cascaded["src"], cascaded["tiny_model"]
    cal = calibration(temperature=1.0, threshold=None)
    (tmp_path / "cal.json").write_text(cal.model_copy(update={"source": {"judge": ["con-j"]}}).model_dump_json())
    result = run_cli("judge", "--input", str(src), "--output", str(tmp_path / "o"), "--model", tiny,
                     "--mode", "logprob", "--calibration", str(tmp_path / "cal.json"), "--dry-run",
                     env=shared_ray.join())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fitted on judge con-j (this run: judge mt-bench)" in result.stderr
    result = run_cli("judge", "--input", str(src), "--output", str(tmp_path / "p"),
                     "--calibration", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "cannot read the calibration file" in result.stderr
    assert not (tmp_path / "p").exists()


def test_a_config_that_cannot_decide_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("stages:\n  - {name: a}\n  - {name: b}\n")
    result = invoke_cli("cascade", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(tmp_path / "o"),
                     "--config", str(tmp_path / "c.yaml"))
    assert result.returncode == 2 and "need a calibration" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "d.yaml").write_text("stages: [{name: a, calibration: x.json}]\n")
    result = invoke_cli("cascade", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(tmp_path / "o"),
                     "--config", str(tmp_path / "d.yaml"))
    assert result.returncode == 2 and "at least 2" in result.stderr
    assert not (tmp_path / "o").exists()
