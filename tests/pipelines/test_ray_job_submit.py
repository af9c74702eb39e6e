"""`ray job submit` against a Ray head started with `ray start --head` on this machine,
exactly as docs/README tell a user (Ray 2.60 starts the head with token auth: the token
lives in ~/.ray/auth_token and clients set RAY_AUTH_MODE=token)."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pyarrow.dataset as pads
import pytest

from tests.conftest import BIN, EXAMPLES, REPO, ray_head

pytestmark = pytest.mark.engine


@pytest.fixture
def head():
    with ray_head() as (_, dashboard, env):
        yield dashboard, env


def test_job_submit_judges_everything(head, tmp_path, tiny_model):
    address, env = head
    src = tmp_path / "pairs.jsonl"
    rows = [json.loads(line) for line in open(EXAMPLES / "llmbar-demo.jsonl")][:3]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
               "magistrate", "judge", "--input", str(src), "--output", str(out), "--model", tiny_model,
               "--max-model-len", "2048", "--gpu-memory-utilization", "0.2"]
    # `ray start` returns before the head's dashboard (and its agent) answers; Ray refuses
    # a submission in that window ("No available agent", or no connection to the dashboard
    # at all on a loaded machine), and a user simply submits again.
    deadline = time.monotonic() + 180
    while True:
        submit = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
        not_yet = "No available agent" in submit.stderr or "Failed to connect to Ray" in submit.stderr
        if not not_yet or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-2000:]
    # This submission's job, by the id Ray gave it, ran to the end on the head ...
    job = re.search(r"Job '(raysubmit_\w+)' submitted successfully", submit.stdout)
    assert job, submit.stdout[-3000:]
    assert f"Job '{job.group(1)}' succeeded" in submit.stdout, submit.stdout[-3000:]
    status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address, job.group(1)],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert f"Job '{job.group(1)}' succeeded" in status.stdout + status.stderr, status.stdout + status.stderr
    # ... and its driver's own output (the summary table) came back through the job's logs.
    assert str(out) in submit.stdout and "pairs" in submit.stdout
    written = pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()
    assert sorted(r["id"] for r in written) == sorted(r["id"] for r in rows)  # each id once
    for r in written:  # judged in both orders, in logprob mode (the default)
        assert r["winner"] in {"A", "B", "tie"} and r["error"] is None, r
        assert r["mode"] == "logprob" and r["judge"] == "mt-bench"
        assert 0 <= r["ab_p_a"] <= 1 and 0 <= r["ba_p_a"] <= 1
        assert r["p_a"] == pytest.approx((r["ab_p_a"] + r["ba_p_a"]) / 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 3 and summary["complete"] and summary["rows_written"] == 3
    assert summary["winners"]["error"] == 0 and sum(summary["winners"].values()) == 3
