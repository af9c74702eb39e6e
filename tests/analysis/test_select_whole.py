"""`magistrate select` publishes its DPO file whole or not at all (issue 31, finding 5): built
off to the side and stored in one step, locally and on the S3 server; an existing target is
refused unless --overwrite; an output without _SUCCESS is read with one warning line.

The kills are at a known point, never a race with select's pace: the real CLI runs in a
subprocess whose pyarrow ParquetWriter sends the signal to its own process right after its
Nth batch is written (KILL below), or the output's third unit file has damaged data pages
under an intact footer, so reading it fails after the writer is open."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.analysis.conftest import synthetic_rows, write_output
from tests.conftest import REPO, invoke_cli, s3_client

BUCKET = "magistrate-select-whole"
UNITS, ROWS = 4, 4000  # four unit files of 1,000 rows: one batch each

# The real CLI, with a signal sent to itself right after its KILL_AFTER-th written batch.
KILL = """
import os, signal, sys
import pyarrow.parquet as pq
from magistrate.cli import main

after, sig = int(os.environ["KILL_AFTER"]), getattr(signal, os.environ["KILL_SIGNAL"])
write = pq.ParquetWriter.write_table
written = 0

def write_then_signal(self, *args, **kwargs):
    global written
    write(self, *args, **kwargs)
    written += 1
    if written == after:
        os.kill(os.getpid(), sig)

pq.ParquetWriter.write_table = write_then_signal
main(sys.argv[1:], prog_name="magistrate")
"""


def _killed(*args: str, sig: str = "SIGINT", after: int = 2, env: dict | None = None):
    return subprocess.run([sys.executable, "-c", KILL, *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, **(env or {}), "KILL_AFTER": str(after), "KILL_SIGNAL": sig})


def _assert_killed(result, sig: str) -> None:
    if sig == "SIGINT":  # click turns KeyboardInterrupt into "Aborted!", exit 1
        assert result.returncode == 1 and "Aborted" in result.stderr, result.stderr
    else:
        assert result.returncode == -signal.SIGKILL, result.stderr


def _damage(path: Path) -> None:
    """Garbles the data pages after the leading magic; the footer stays readable, so the
    file is listed and its schema read, and it fails only when its rows are."""
    data = bytearray(path.read_bytes())
    for i in range(8, min(4000, len(data) - 2000)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.fixture
def output(tmp_path) -> Path:
    out = write_output(tmp_path / "out", synthetic_rows(ROWS, seed=3), files=UNITS)
    (out / "_SUCCESS").write_text("")
    return out


@pytest.fixture
def damaged(tmp_path) -> Path:
    out = write_output(tmp_path / "damaged", synthetic_rows(ROWS, seed=3), files=UNITS)
    (out / "_SUCCESS").write_text("")
    _damage(sorted((out / "verdicts").iterdir())[2])
    return out


def _earlier(target: Path, out: Path) -> bytes:
    """An earlier DPO file at `target`, from a stricter selection than the runs that fail."""
    result = invoke_cli("select", str(out), "--min-confidence", "0.9", "--output", str(target))
    assert result.returncode == 0, result.stderr
    return target.read_bytes()


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_select_killed_half_way_leaves_no_file(output, tmp_path, sig):
    sets = tmp_path / "sets"
    sets.mkdir()
    result = _killed("select", str(output), "--min-confidence", "0", "--output", str(sets / "train.parquet"), sig=sig)
    _assert_killed(result, sig)
    assert _visible(sets) == []
    if sig == "SIGINT":  # its staging file is removed on the way out; SIGKILL leaves it hidden
        assert list(sets.iterdir()) == []


def test_select_killed_half_way_keeps_the_earlier_file_byte_for_byte(output, tmp_path):
    target = tmp_path / "train.parquet"
    before = _earlier(target, output)
    result = _killed("select", str(output), "--min-confidence", "0", "--output", str(target), "--overwrite")
    _assert_killed(result, "SIGINT")
    assert target.read_bytes() == before
    assert _visible(tmp_path) == ["out", "train.parquet"] and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_a_damaged_unit_fails_select_in_one_line_writing_nothing(damaged, output, tmp_path):
    target = tmp_path / "dpo"
    result = invoke_cli("select", str(damaged), "--min-confidence", "0", "--output", str(target))
    assert result.returncode == 2, result.stderr
    line, = result.stderr.splitlines()
    assert str(target / "dpo.parquet") in line and "not written" in line
    assert str(sorted((damaged / "verdicts").iterdir())[2]) in line  # the damaged unit, named
    assert not (target / "dpo.parquet").exists()

    before = _earlier(target / "dpo.parquet", output)
    result = invoke_cli("select", str(damaged), "--min-confidence", "0", "--output", str(target), "--overwrite")
    assert result.returncode == 2 and "not written" in result.stderr
    assert (target / "dpo.parquet").read_bytes() == before and _visible(target) == ["dpo.parquet"]


@pytest.mark.parametrize("name", ["train.parquet", "folder"])
def test_an_existing_target_is_refused_unless_overwrite(output, tmp_path, name):
    target = tmp_path / name
    path = target if name.endswith(".parquet") else target / "dpo.parquet"
    before = _earlier(path, output)
    result = invoke_cli("select", str(output), "--min-confidence", "0", "--output", str(target))
    assert result.returncode == 2
    line, = result.stderr.splitlines()
    assert str(path) in line and "--overwrite" in line
    assert path.read_bytes() == before

    result = invoke_cli("select", str(output), "--min-confidence", "0", "--output", str(target), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() != before
    assert pq.read_table(path).num_rows == sum(r["winner"] in ("A", "B") for r in synthetic_rows(ROWS, seed=3))
    assert _visible(path.parent) == (["dpo.parquet"] if name == "folder" else ["out", "train.parquet"])


SUMMARY = {"complete": False, "units": 6, "missing_unit_count": 2, "written_off_rows": 40}


@pytest.mark.parametrize("state", ["committed", "summary", "no summary", "summary says complete"])
def test_an_output_without_success_is_read_with_one_warning(tmp_path, state):
    rows = synthetic_rows(400, seed=5)
    out = write_output(tmp_path / "out", rows, files=4,
                       summary={"committed": {"complete": True}, "summary": SUMMARY, "no summary": None,
                                "summary says complete": {"complete": True, "units": 4}}[state])
    if state == "committed":
        (out / "_SUCCESS").write_text("")
    result = invoke_cli("select", str(out), "--min-confidence", "0", "--output", str(tmp_path / "dpo.parquet"))
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "dpo.parquet").num_rows == sum(r["winner"] in ("A", "B") for r in rows)
    if state == "committed":
        assert result.stderr == ""
        return
    line, = result.stderr.splitlines()
    assert line.startswith(f"magistrate: warning: {out} has no _SUCCESS")
    assert "4 unit files present" in line
    if state == "summary":
        assert "2 of 6 units missing" in line and "40 rows written off" in line
    elif state == "no summary":
        assert "no summary.json" in line
    else:
        assert "says complete" in line


# On the local S3 server.

def _uploaded(local: Path, moto_url: str):
    """`local` copied to s3://BUCKET/<new prefix>/out; (s3://BUCKET/<prefix>, client)."""
    client = s3_client(moto_url)
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    prefix = uuid.uuid4().hex[:8]
    for path in local.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/out/{path.relative_to(local)}")
    return f"s3://{BUCKET}/{prefix}", client


@pytest.fixture
def s3_output(output, moto_url):
    return _uploaded(output, moto_url)


def _keys(client, prefix: str) -> list[str]:
    found = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in found)


def _get(client, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_on_s3_select_killed_half_way_leaves_no_object_or_the_earlier_one(s3_output, moto_url, aws_env, tmp_path):
    root, client = s3_output
    prefix = root.split("/", 3)[3]
    local_tmp = tmp_path / "tmp"
    local_tmp.mkdir()
    env = {**aws_env, "TMPDIR": str(local_tmp)}
    endpoint = ["--s3-endpoint-url", moto_url]
    target = f"{root}/dpo/train.parquet"

    result = _killed("select", f"{root}/out", "--min-confidence", "0", "--output", target, *endpoint, env=env)
    _assert_killed(result, "SIGINT")
    assert _keys(client, f"{prefix}/dpo/") == []
    assert list(local_tmp.iterdir()) == []  # the local file it was built in is gone too

    result = invoke_cli("select", f"{root}/out", "--min-confidence", "0.9", "--output", target, *endpoint, env=env)
    assert result.returncode == 0, result.stderr
    before = _get(client, f"{prefix}/dpo/train.parquet")
    assert pq.read_table(io.BytesIO(before)).num_rows > 0

    result = invoke_cli("select", f"{root}/out", "--min-confidence", "0", "--output", target, *endpoint, env=env)
    assert result.returncode == 2
    line, = result.stderr.splitlines()
    assert target in line and "--overwrite" in line

    result = _killed("select", f"{root}/out", "--min-confidence", "0", "--output", target, "--overwrite",
                     *endpoint, env=env)
    _assert_killed(result, "SIGINT")
    assert _keys(client, f"{prefix}/dpo/") == [f"{prefix}/dpo/train.parquet"]
    assert _get(client, f"{prefix}/dpo/train.parquet") == before
    assert list(local_tmp.iterdir()) == []

    result = invoke_cli("select", f"{root}/out", "--min-confidence", "0", "--output", target, "--overwrite",
                     *endpoint, env=env)
    assert result.returncode == 0, result.stderr
    after = pq.read_table(io.BytesIO(_get(client, f"{prefix}/dpo/train.parquet")))
    assert after.num_rows == sum(r["winner"] in ("A", "B") for r in synthetic_rows(ROWS, seed=3))
    assert result.stderr == ""  # the output has _SUCCESS


def test_on_s3_a_damaged_unit_leaves_no_object(damaged, moto_url, aws_env):
    root, client = _uploaded(damaged, moto_url)
    prefix = root.split("/", 3)[3]
    target = f"{root}/dpo/train.parquet"
    result = invoke_cli("select", f"{root}/out", "--min-confidence", "0", "--output", target,
                     "--s3-endpoint-url", moto_url, env=aws_env)
    assert result.returncode == 2, result.stderr
    line, = result.stderr.splitlines()
    unit = sorted((damaged / "verdicts").iterdir())[2].name
    assert line.startswith(f"magistrate: error: {target} was not written") and f"/out/verdicts/{unit}" in line
    assert _keys(client, f"{prefix}/dpo/") == []

