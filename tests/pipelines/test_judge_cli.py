"""`magistrate judge` end to end, as a user runs it: a fresh process that joins a running
Ray (the session's head, tests/conftest.py `shared_ray`), reads JSONL, judges on a Ray
Data actor hosting the real vLLM CPU engine, writes Parquet and summary.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from tests.conftest import EXAMPLES, invoke_cli, run_cli


def _input_rows() -> list[dict]:
    with open(EXAMPLES / "llmbar-demo.jsonl") as f:
        good = [json.loads(line) for line in f][:3]
    for i, row in enumerate(good):
        row["extra"] = f"keep-me-{i}"
    no_id = dict(good[0], extra="no-id")
    del no_id["id"]
    no_id["prompt"] = "A different question, so the derived id is new."
    bad = [
        {"id": "bad-empty-prompt", "prompt": "   ", "response_a": "x", "response_b": "y", "extra": "e1"},
        {"id": "bad-missing-b", "prompt": "Why?", "response_a": "x", "response_b": None, "extra": "e2"},
        {"id": "bad-too-long", "prompt": "word " * 3000, "response_a": "x", "response_b": "y", "extra": "e3"},
        {"id": "bad-messages", "prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
         "response_a": "x", "response_b": "y", "extra": "e4"},
    ]
    return good + [no_id] + bad


@pytest.fixture(scope="module")
def judged(tmp_path_factory, embedded_model, shared_ray):
    tmp = tmp_path_factory.mktemp("judge")
    rows = _input_rows()
    src = tmp / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp / "out"
    result = run_cli("judge", "--input", str(src), "--output", str(out),
                     "--max-model-len", "2048", "--gpu-memory-utilization", "0.2", env=shared_ray.join())
    return rows, out, result


def _read(out) -> list[dict]:
    return pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()


@pytest.mark.engine
def test_every_row_exactly_once(judged):
    rows, out, result = judged
    assert result.returncode == 0, result.stderr[-3000:]
    written = _read(out)
    assert len(written) == len(rows)
    ids = [r["id"] for r in written]
    assert len(set(ids)) == len(ids)
    given = {r["id"] for r in rows if "id" in r}
    assert given <= set(ids)
    derived = set(ids) - given
    assert len(derived) == 1 and next(iter(derived)).startswith("sha256-")


@pytest.mark.engine
def test_verdicts_and_errors(judged):
    _, out, _ = judged
    by_id = {r["id"]: r for r in _read(out)}
    assert "prompt is empty" in by_id["bad-empty-prompt"]["error"]
    assert "response_b is missing" in by_id["bad-missing-b"]["error"]
    assert "prompt too long" in by_id["bad-too-long"]["error"]
    assert "must end with a user message" in by_id["bad-messages"]["error"]
    for row in by_id.values():
        assert row["winner"] in {"A", "B", "tie", "error"}
        if row["winner"] == "error":
            assert row["error"] and row["p_a"] is None
        else:
            assert 0.0 <= row["p_a"] <= 1.0
            assert row["consistent"] in (True, False)
            assert row["judge"] == "mt-bench" and row["mode"] == "logprob"
    good = [r for r in by_id.values() if not r["id"].startswith("bad-")]
    assert all(r["winner"] != "error" for r in good)


@pytest.mark.engine
def test_passthrough_columns_intact(judged):
    rows, out, _ = judged
    by_id = {r["id"]: r for r in _read(out)}
    for row in rows:
        if "id" in row:
            assert by_id[row["id"]]["extra"] == row["extra"]
            assert by_id[row["id"]].get("subset") == row.get("subset")


@pytest.mark.engine
def test_summary_and_table(judged):
    rows, out, result = judged
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == len(rows)
    assert summary["winners"]["error"] == 4
    assert sum(summary["winners"].values()) == len(rows)
    assert "agreement with labels" in result.stdout and "pairs/s" in result.stdout


@pytest.mark.engine
def test_existing_output_is_refused_without_overwrite(judged, tmp_path):
    _, out, _ = judged
    again = run_cli("judge", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(out))
    assert again.returncode == 2
    assert "already holds output" in again.stderr and "--overwrite" in again.stderr and "--resume" in again.stderr
    assert "Traceback" not in again.stderr


def test_input_errors_are_one_clear_line(tmp_path):
    src = tmp_path / "wrong.jsonl"
    src.write_text(json.dumps({"question": "q", "answer1": "a", "answer2": "b"}) + "\n")
    result = invoke_cli("judge", "--input", str(src), "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "no column for prompt" in result.stderr and "--columns" in result.stderr
    assert "Traceback" not in result.stderr
    unknown = invoke_cli("judge", "--input", str(src), "--output", str(tmp_path / "o"), "--judge", "mtbench")
    assert unknown.returncode == 2 and "Did you mean 'mt-bench'" in unknown.stderr


@pytest.mark.ray
def test_duplicate_ids_are_reported_before_judging(tmp_path, shared_ray):
    rows = [{"id": f"x{i % 3}", "prompt": f"q{i}", "response_a": "a", "response_b": "b"} for i in range(5)]
    src = tmp_path / "dups.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    result = run_cli("judge", "--input", str(src), "--output", str(out), env=shared_ray.join())
    assert result.returncode == 2, result.stderr[-2000:]
    assert "duplicate ids" in result.stderr and "'x0' (2 times)" in result.stderr
    assert "'x1' (2 times)" in result.stderr and "'x2'" not in result.stderr
    assert not (out / "verdicts").exists(), "nothing may be judged"


_BOTH_PASSES = """
import json, sys
import ray
from magistrate.pipelines import duplicate_ids
from magistrate.pipelines.sharding import plan_units
from magistrate.pipelines.sources import locate

src, out = sys.argv[1:3]
units = plan_units(locate(src), [src], unit_rows=4)
args = (src, out, None, units, {}, "standard", 100_000)
found = {"units": len(units), "driver": sorted(duplicate_ids.find_duplicate_ids(*args))}
duplicate_ids.IN_DRIVER_ROWS = -1  # as for an input over it
ray.init(logging_level="ERROR")
found["ray"] = sorted(duplicate_ids.find_duplicate_ids(*args))
print(json.dumps(found))
"""


@pytest.mark.ray
def test_the_distributed_duplicate_id_pass_finds_what_the_driver_finds(tmp_path, shared_ray):
    """An input over IN_DRIVER_ROWS is checked by Ray Data's group-by, a small one in the
    driver: forced onto Ray here (a process joining the session's head), a small input's
    duplicates are reported the same by both."""
    import subprocess
    import sys

    from tests.conftest import REPO

    rows = [{"id": f"x{i % 7}", "prompt": f"q{i}", "response_a": "a", "response_b": "b"} for i in range(20)]
    src = tmp_path / "dups.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run([sys.executable, "-c", _BOTH_PASSES, str(src), str(tmp_path / "out")], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **shared_ray.join()})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["units"] > 2
    expected = [[f"x{k}", 3 if k < 6 else 2] for k in range(7)]
    assert found["driver"] == expected and found["ray"] == expected


@pytest.mark.engine
def test_resume_with_other_settings_is_refused(judged):
    _, out, _ = judged
    result = run_cli("judge", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(out),
                     "--resume", "--judge", "skywork-critic")
    assert result.returncode == 2
    assert "cannot resume" in result.stderr and "judge ('mt-bench' -> 'skywork-critic')" in result.stderr


@pytest.mark.ray
def test_a_cluster_that_is_gone_is_not_waited_for(tmp_path):
    """A killed `ray start` leaves its address in RAY_TMPDIR/ray/ray_current_cluster; a
    plain ray.init() would wait on it for many minutes instead of starting a local Ray."""
    import tempfile

    from tests.conftest import free_port

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    rows = [{"id": "x", "prompt": f"q{i}", "response_a": "a", "response_b": "b"} for i in range(2)]
    src = tmp_path / "dups.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("judge", "--input", str(src), "--output", str(tmp_path / "out"),
                     env={"RAY_TMPDIR": str(ray_tmp), "RAY_ADDRESS": ""}, timeout=300)
    assert "is gone; starting a local Ray" in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2 and "duplicate ids" in result.stderr, result.stderr[-2000:]


@pytest.mark.engine
def test_the_continuous_path_gives_the_rows_of_one_synchronous_engine_call(judged, engine):
    """The batch job judges on the async engine with several units and batches in flight;
    the same pairs given to one synchronous engine call in this process (the path of
    earlier versions) get the same verdicts and token counts, p_a within float32 noise."""
    from magistrate.judges.core import Judge, JudgeSettings

    _, out, result = judged
    assert result.returncode == 0, result.stderr[-3000:]
    written = [r for r in _read(out) if r["winner"] != "error"]
    pairs = [{k: r[k] for k in ("id", "prompt", "response_a", "response_b")} for r in written]
    direct = Judge(engine, JudgeSettings()).judge(pairs)
    for row, same in zip(written, direct):
        assert (row["winner"], row["ab_verdict"], row["ba_verdict"]) == (same["winner"], same["ab_verdict"],
                                                                          same["ba_verdict"]), row["id"]
        assert (row["ab_prompt_tokens"], row["ba_prompt_tokens"]) == (same["ab_prompt_tokens"],
                                                                      same["ba_prompt_tokens"])
        assert row["p_a"] == pytest.approx(same["p_a"], abs=1e-4)
