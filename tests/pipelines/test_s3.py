"""`magistrate judge` and `magistrate render` against a real S3-compatible server: moto in
server mode on 127.0.0.1, reached through s3fs exactly as on AWS (only the endpoint
differs). The output is read back with other clients (pyarrow's own S3 filesystem for the
Parquet, boto3 for summary.json), so what is checked is what landed in the bucket."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests.conftest import BUCKET_REGION as REGION, EXAMPLES, MAGISTRATE, REPO, run_cli, s3_client

BUCKET = "magistrate-s3-test"
INPUT_KEY = "in/pairs.jsonl"
PARQUET_KEY = "in/pairs.parquet"  # the same rows in row groups of 4: 4 units of --unit-rows 4
OUT = f"s3://{BUCKET}/out"
# The tiny random-weight judge, one order, log-probabilities: what is checked here is where
# the verdicts land and that each id lands once, not what the judge says.
ENGINE_ARGS = ["--max-model-len", "2048", "--gpu-memory-utilization", "0.2", "--unit-rows", "4",
               "--batch-size", "4", "--mode", "logprob", "--order", "ab"]


def _input_rows() -> list[dict]:
    with open(EXAMPLES / "llmbar-demo.jsonl") as f:
        good = [json.loads(line) for line in f][:12]
    for i, row in enumerate(good):
        row["extra"] = f"keep-me-{i}"
    bad = {"id": "bad-empty-prompt", "prompt": "", "response_a": "x", "response_b": "y",
           "extra": "keep-me-bad"}
    return good + [bad]


@pytest.fixture(scope="module")
def s3(moto_url):
    """boto3 client on the moto server, with a bucket holding the input JSONL."""
    client = s3_client(moto_url)
    client.create_bucket(Bucket=BUCKET)
    rows = _input_rows()
    client.put_object(Bucket=BUCKET, Key=INPUT_KEY,
                      Body="".join(json.dumps(r) + "\n" for r in rows).encode())
    parquet = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=4)
    client.put_object(Bucket=BUCKET, Key=PARQUET_KEY, Body=parquet.getvalue())
    return client, rows


def test_render_reads_s3_with_endpoint_from_env(s3, moto_url, aws_env):
    """No --s3-endpoint-url: the endpoint comes from $AWS_ENDPOINT_URL_S3. No engine needed."""
    _, rows = s3
    result = run_cli("render", "--input", f"s3://{BUCKET}/{INPUT_KEY}",
                     env={**aws_env, "AWS_ENDPOINT_URL_S3": moto_url}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    good = [r for r in rows if r["prompt"]]
    errors = [r for r in records if "error" in r]
    rendered = [r for r in records if "messages" in r]
    assert [e["id"] for e in errors] == ["bad-empty-prompt"]
    assert "prompt is empty" in errors[0]["error"]
    # Both orders for every good pair, each pair's prompt in what the judge sees.
    assert sorted((r["id"], r["order"]) for r in rendered) == sorted(
        (g["id"], o) for g in good for o in ("ab", "ba"))
    by_id = {g["id"]: g for g in good}
    for r in rendered:
        text = "\n".join(m["content"] for m in r["messages"])
        assert by_id[r["id"]]["prompt"] in text


def _judge(moto_url: str, model: str, *extra: str) -> list[str]:
    return [*MAGISTRATE, "judge", "--input", f"s3://{BUCKET}/{PARQUET_KEY}", "--output", OUT,
            "--s3-endpoint-url", moto_url, "--model", model, *ENGINE_ARGS, *extra]


@contextlib.contextmanager
def _running(command: list[str], env: dict):
    """A judge run in a child process; what a failed test leaves of its tree is killed. Its
    output goes to files, read with `proc.output()`: a pipe nobody reads while the run goes
    on fills up and blocks it."""
    with tempfile.TemporaryDirectory(prefix="magistrate-s3-run-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, cwd=REPO,
                                    env={**os.environ, **env})
        proc.output = lambda: (out.read_text(errors="replace"), err.read_text(errors="replace"))
        try:
            yield proc
        finally:
            if proc.poll() is None:
                _kill_tree(proc)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and the local Ray it started, at once: a lost head node."""
    family = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    alive = []
    for pid in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            alive.append(psutil.Process(pid))
    psutil.wait_procs(alive, timeout=60)


def _wait(condition, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.output()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _objects(client, prefix: str = "out/verdicts/") -> dict[str, str]:
    """Key -> ETag of the objects under prefix, as another S3 client sees them."""
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


def _summary(client) -> dict:
    return json.loads(client.get_object(Bucket=BUCKET, Key="out/summary.json")["Body"].read())


@pytest.fixture(scope="module")
def judged(s3, moto_url, aws_env, tiny_model, shared_ray):
    """The first run, and a second run on the same output started while the first holds
    its lease."""
    client, rows = s3
    started = time.monotonic()
    with _running(_judge(moto_url, tiny_model), {**aws_env, **shared_ray.join()}) as first:
        _wait(lambda: "out/_lease.json" in _objects(client, "out/"), first, "the lease")
        second = subprocess.run(_judge(moto_url, tiny_model), capture_output=True, text=True, timeout=300,
                                cwd=REPO, env={**os.environ, **aws_env})
        first.wait(timeout=900)
        stdout, stderr = first.output()
    print(f"\njudge on S3 took {time.monotonic() - started:.1f} s")
    assert first.returncode == 0, stderr[-4000:]
    return client, rows, subprocess.CompletedProcess(first.args, 0, stdout, stderr), second, _landed(client, moto_url)


def _landed(client, moto_url: str) -> dict:
    """What the bucket holds under out/ now, read by other clients (the tests of a run read
    this, not the bucket later: a later test changes the output, and tests may run in any
    order): summary.json and the object listing by boto3, the verdict files by pyarrow's
    own S3 filesystem."""
    fs = _pyarrow_s3(moto_url)
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/out/verdicts", recursive=True))
    files = [i.path for i in infos if i.is_file and i.path.endswith(".parquet")]
    written = pads.dataset(files, filesystem=fs, format="parquet").to_table().to_pylist() if files else []
    return {"summary": _summary(client), "objects": _objects(client, "out/"), "verdicts": _objects(client),
            "files": files, "listed": [i.path for i in infos], "written": written}


def _pyarrow_s3(moto_url: str) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        endpoint_override=moto_url.removeprefix("http://"), scheme="http",
        access_key="testing", secret_key="testing", region=REGION,
    )


@pytest.mark.engine
def test_verdicts_on_s3_read_by_pyarrow(judged):
    _, rows, _, _, landed = judged
    assert landed["files"], landed["listed"]
    written = landed["written"]

    assert len(written) == len(rows)
    ids = [r["id"] for r in written]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # every id, each exactly once
    by_id = {r["id"]: r for r in written}
    for row in rows:
        out = by_id[row["id"]]
        assert out["extra"] == row["extra"]
        if row["prompt"]:
            assert out["winner"] in {"A", "B", "tie"}, out
            assert out["error"] is None
            assert 0.0 <= out["p_a"] <= 1.0
        else:
            assert out["winner"] == "error"
            assert "prompt is empty" in out["error"]
            assert out["p_a"] is None


@pytest.mark.engine
def test_summary_on_s3_read_by_boto3(judged):
    _, rows, result, _, landed = judged
    summary = landed["summary"]
    assert summary["pairs"] == len(rows)
    assert summary["winners"]["error"] == sum(1 for r in rows if not r["prompt"])
    assert sum(summary["winners"].values()) == len(rows)
    assert summary["files"] == sum(k.endswith(".parquet") for k in landed["verdicts"])
    assert f"s3://{BUCKET}/out" in result.stdout


@pytest.mark.engine
def test_existing_s3_output_is_refused(judged, moto_url, aws_env):
    client = judged[0]
    before = client.get_object(Bucket=BUCKET, Key="out/summary.json")["Body"].read()
    again = run_cli("judge", "--input", f"s3://{BUCKET}/{INPUT_KEY}",
                    "--output", f"s3://{BUCKET}/out", "--s3-endpoint-url", moto_url, env=aws_env)
    assert again.returncode == 2, again.stderr[-3000:]
    assert "already holds output" in again.stderr and "Traceback" not in again.stderr
    assert client.get_object(Bucket=BUCKET, Key="out/summary.json")["Body"].read() == before


@pytest.mark.engine
def test_a_second_run_on_a_live_s3_output_is_refused(judged):
    _, rows, _, second, landed = judged
    assert second.returncode == 2, second.stderr[-3000:]
    assert "in use by a live run" in second.stderr and "pid" in second.stderr
    assert "Traceback" not in second.stderr
    summary = landed["summary"]  # the first run finished, alone
    assert summary["complete"] and summary["rows_written"] == len(rows)
    assert "out/_SUCCESS" in landed["objects"] and "out/_lease.json" not in landed["objects"]


def _unit_rows(client, key: str) -> int:
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return pq.read_metadata(io.BytesIO(body)).num_rows


def _all_ids(moto_url: str) -> list[str]:
    fs = _pyarrow_s3(moto_url)
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/out/verdicts", recursive=True))
    files = [i.path for i in infos if i.is_file and i.path.endswith(".parquet")]
    return pads.dataset(files, filesystem=fs, format="parquet").to_table(columns=["id"]).column("id").to_pylist()


@pytest.fixture(scope="module")
def resumed_one(judged, moto_url, aws_env, tiny_model, shared_ray):
    """One unit object deleted, then --resume."""
    client = judged[0]
    before = _objects(client)
    assert len(before) == 4, before  # 13 rows in units of 4
    gone = sorted(before)[0]
    gone_rows = _unit_rows(client, gone)
    client.delete_object(Bucket=BUCKET, Key=gone)
    result = subprocess.run(_judge(moto_url, tiny_model, "--resume"), capture_output=True, text=True, timeout=900,
                            cwd=REPO, env={**os.environ, **aws_env, **shared_ray.join()})
    # What the resume left, read now: the kill test below deletes and rewrites these units.
    done = result.returncode == 0
    return client, before, gone, gone_rows, result, {
        "summary": _summary(client) if done else None, "verdicts": _objects(client),
        "objects": _objects(client, "out/"), "ids": _all_ids(moto_url) if done else None}


@pytest.mark.engine
def test_resume_on_s3_judges_exactly_the_missing_unit(resumed_one, moto_url):
    _, before, gone, gone_rows, result, landed = resumed_one
    assert result.returncode == 0, result.stderr[-3000:]
    summary = landed["summary"]
    assert summary["this_run"]["units"] == 1 and summary["this_run"]["pairs"] == gone_rows
    assert summary["units_skipped"] == 3
    after = landed["verdicts"]
    assert set(after) == set(before)
    assert {k: v for k, v in after.items() if k != gone} == {k: v for k, v in before.items() if k != gone}, \
        "the other unit objects are untouched (same ETags)"
    assert summary["written_off_rows"] == 0 and summary["complete"]
    assert "out/_SUCCESS" in landed["objects"]
    assert sorted(landed["ids"]) == sorted(r["id"] for r in _input_rows())  # every input id exactly once


@pytest.mark.engine
def test_driver_killed_on_s3_then_resume_finishes_exactly_once(resumed_one, moto_url, aws_env, tiny_model,
                                                               shared_ray):
    client = resumed_one[0]
    doomed = sorted(_objects(client))
    for key in doomed:
        client.delete_object(Bucket=BUCKET, Key=key)
    # A Ray of its own, killed with it; its actor holds before its second publish
    # (magistrate/faults.py), so the kill comes with one unit published and three to go.
    with tempfile.TemporaryDirectory(prefix="magistrate-s3-fault-") as faults, \
            _running(_judge(moto_url, tiny_model, "--resume", "--replicas", "1"),
                     {**aws_env, "MAGISTRATE_FAULT": "publish=2", "MAGISTRATE_FAULT_DIR": faults}) as proc:
        _wait(lambda: os.path.exists(os.path.join(faults, "publish-2.reached")), proc, "the second publish")
        _kill_tree(proc)
    assert "out/_SUCCESS" not in _objects(client, "out/"), "a killed run's output is not committed"
    survivors = _objects(client)
    assert len(set(doomed) - set(survivors)) == 3, "the kill left three units to judge"
    again = subprocess.run(_judge(moto_url, tiny_model, "--resume"), capture_output=True, text=True, timeout=900,
                           cwd=REPO, env={**os.environ, **aws_env, **shared_ray.join()})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "taking over the lease" in again.stderr  # the killed driver's, stale at once here
    after = _objects(client)
    assert {k: after[k] for k in survivors} == survivors, "units finished before the kill are unchanged"
    assert sorted(_all_ids(moto_url)) == sorted(r["id"] for r in _input_rows())  # every input id exactly once
    summary = _summary(client)
    assert summary["complete"] and summary["this_run"]["units"] == len(set(doomed) - set(survivors))
