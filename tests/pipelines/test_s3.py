"""`magistrate judge` and `magistrate render` against a real S3-compatible server: moto in
server mode on 127.0.0.1, reached through s3fs exactly as on AWS (only the endpoint
differs). The output is read back with other clients (pyarrow's own S3 filesystem for the
Parquet, boto3 for summary.json), so what is checked is what landed in the bucket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

from tests.conftest import EXAMPLES, run_cli

BUCKET = "magistrate-s3-test"
INPUT_KEY = "in/pairs.jsonl"
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory) -> dict:
    """Fake credentials only: no profile, config file or instance metadata can leak in."""
    home = tmp_path_factory.mktemp("aws")
    return {
        **CREDENTIALS,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


@pytest.fixture(scope="module")
def moto_url(aws_env, tmp_path_factory):
    """A moto S3 server in its own process on a free loopback port; killed at the end."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    moto_server = Path(sys.executable).parent / "moto_server"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **aws_env},
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"moto_server did not answer on {url} within 60 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _input_rows() -> list[dict]:
    with open(EXAMPLES / "llmbar-demo.jsonl") as f:
        good = [json.loads(line) for line in f][:4]
    for i, row in enumerate(good):
        row["extra"] = f"keep-me-{i}"
    bad = {"id": "bad-empty-prompt", "prompt": "", "response_a": "x", "response_b": "y",
           "extra": "keep-me-bad"}
    return good + [bad]


@pytest.fixture(scope="module")
def s3(moto_url):
    """boto3 client on the moto server, with a bucket holding the input JSONL."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_url, region_name=REGION,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    rows = _input_rows()
    client.put_object(Bucket=BUCKET, Key=INPUT_KEY,
                      Body="".join(json.dumps(r) + "\n" for r in rows).encode())
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


@pytest.fixture(scope="module")
def judged(s3, moto_url, aws_env, embedded_model):
    client, rows = s3
    started = time.monotonic()
    result = run_cli("judge", "--input", f"s3://{BUCKET}/{INPUT_KEY}",
                     "--output", f"s3://{BUCKET}/out", "--s3-endpoint-url", moto_url,
                     "--max-model-len", "2048", "--gpu-memory-utilization", "0.2", env=aws_env)
    print(f"\njudge on S3 took {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr[-4000:]
    return client, rows, result


def _pyarrow_s3(moto_url: str) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        endpoint_override=moto_url.removeprefix("http://"), scheme="http",
        access_key="testing", secret_key="testing", region=REGION,
    )


@pytest.mark.engine
def test_verdicts_on_s3_read_by_pyarrow(judged, moto_url):
    client, rows, _ = judged
    fs = _pyarrow_s3(moto_url)
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/out/verdicts", recursive=True))
    files = [i.path for i in infos if i.is_file and i.path.endswith(".parquet")]
    assert files, [i.path for i in infos]
    written = pads.dataset(files, filesystem=fs, format="parquet").to_table().to_pylist()

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
    client, rows, result = judged
    summary = json.loads(client.get_object(Bucket=BUCKET, Key="out/summary.json")["Body"].read())
    assert summary["pairs"] == len(rows)
    assert summary["winners"]["error"] == sum(1 for r in rows if not r["prompt"])
    assert sum(summary["winners"].values()) == len(rows)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="out/verdicts/")["Contents"]]
    assert summary["files"] == sum(k.endswith(".parquet") for k in keys)
    assert f"s3://{BUCKET}/out" in result.stdout


@pytest.mark.engine
def test_existing_s3_output_is_refused(judged, moto_url, aws_env):
    client, _, _ = judged
    before = client.get_object(Bucket=BUCKET, Key="out/summary.json")["Body"].read()
    again = run_cli("judge", "--input", f"s3://{BUCKET}/{INPUT_KEY}",
                    "--output", f"s3://{BUCKET}/out", "--s3-endpoint-url", moto_url, env=aws_env)
    assert again.returncode == 2, again.stderr[-3000:]
    assert "already holds output" in again.stderr and "Traceback" not in again.stderr
    assert client.get_object(Bucket=BUCKET, Key="out/summary.json")["Body"].read() == before
