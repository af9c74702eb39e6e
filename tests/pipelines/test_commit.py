"""The output as a commit protocol, piece by piece, on local disk and on a real
S3-compatible server (moto on 127.0.0.1, through s3fs as on AWS): fresh listings, whole
units only, the lease. No engine: the end-to-end runs are in test_s3.py and test_faults.py."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import threading
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from magistrate.pipelines.sources import InputError, locate
from tests.conftest import s3_client

BUCKET = "magistrate-commit-test"


@pytest.fixture(scope="module")
def bucket(moto_url, aws_env):
    saved = {k: os.environ.get(k) for k in aws_env}
    os.environ.update(aws_env)  # s3fs in this process reads the fake credentials
    client = s3_client(moto_url)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    """(uri, endpoint, client or None) of a new, empty output."""
    if request.param == "local":
        return str(tmp_path / "out"), None, None
    client = request.getfixturevalue("bucket")
    moto_url = request.getfixturevalue("moto_url")
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/out", moto_url, client


def _table(n: int) -> pa.Table:
    return pa.table({"id": [f"p{i}" for i in range(n)], "winner": ["A"] * n,
                     "written_off": [False] * n})


def _unit_bytes(tmp_path, unit_id: str, table: pa.Table, planned: int) -> bytes:
    """A unit file as an actor on another machine writes it."""
    from magistrate.pipelines.units import publish

    elsewhere = locate(str(tmp_path / "elsewhere"))
    publish(elsewhere, unit_id, table, planned_rows=planned, metadata={})
    with open(f"{elsewhere.path}/verdicts/{unit_id}.parquet", "rb") as f:
        return f.read()


def _put(uri: str, client, name: str, data: bytes) -> None:
    """Write as another process does: not through the driver's filesystem object."""
    if client is None:
        path = f"{uri}/{name}"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    else:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)


def test_listings_see_units_published_after_them(output, tmp_path):
    """Finding 1: s3fs kept its first listing of verdicts/ for its whole life."""
    from magistrate.pipelines.units import finished_units

    uri, endpoint, client = output
    out = locate(uri, endpoint)
    assert finished_units(out) == set()
    _put(uri, client, "verdicts/unit-aaaa.parquet", _unit_bytes(tmp_path, "unit-aaaa", _table(3), 3))
    assert finished_units(out) == {"unit-aaaa"}
    _put(uri, client, "verdicts/unit-bbbb.parquet", _unit_bytes(tmp_path, "unit-bbbb", _table(2), 2))
    assert finished_units(out) == {"unit-aaaa", "unit-bbbb"}, "listed again, not from a cache"
    assert finished_units(locate(uri, endpoint)) == {"unit-aaaa", "unit-bbbb"}


def test_an_exception_inside_a_units_write_leaves_nothing(output, monkeypatch):
    """Finding 2: a write that raised still committed a valid, shorter Parquet file."""
    from magistrate.pipelines.units import finished_units, publish, unit_path

    uri, endpoint, client = output
    out = locate(uri, endpoint)
    original = pq.ParquetWriter.write_table
    calls = []

    def fail_after_first_row_group(self, table, *args, **kwargs):
        calls.append(1)
        original(self, table.slice(0, 2), *args, **kwargs)  # a row group reaches the stream
        raise OSError("disk on fire (injected)")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", fail_after_first_row_group)
    with pytest.raises(OSError, match="injected"):
        publish(out, "unit-bbbb", _table(5), planned_rows=5, metadata={})
    assert calls
    monkeypatch.undo()
    assert not out.filesystem.get_file_info(unit_path(out, "unit-bbbb")).is_file
    assert finished_units(out) == set()
    if client is None:
        left = os.listdir(f"{out.path}/verdicts") if os.path.isdir(f"{out.path}/verdicts") else []
        assert left == [], left
    else:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        assert listed == []
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_unit_file_short_of_its_planned_rows_is_not_finished(output, tmp_path):
    from magistrate.pipelines.units import finished_units, publish, unit_files

    uri, endpoint, client = output
    out = locate(uri, endpoint)
    with pytest.raises(ValueError, match="3 rows, planned 4"):
        publish(out, "unit-cccc", _table(3), planned_rows=4, metadata={})
    # A file that says 4 rows but holds 3 (a torn write by some other tool): not finished.
    whole = _unit_bytes(tmp_path, "unit-cccc", _table(4), 4)
    meta = pq.read_metadata(io.BytesIO(whole)).metadata
    short = io.BytesIO()
    pq.write_table(_table(3).replace_schema_metadata(meta), short)
    _put(uri, client, "verdicts/unit-cccc.parquet", short.getvalue())
    _put(uri, client, "verdicts/unit-dddd.parquet", _unit_bytes(tmp_path, "unit-dddd", _table(2), 2))
    files = unit_files(out)
    assert files["unit-cccc"].rows == 3 and files["unit-cccc"].planned == 4
    assert not files["unit-cccc"].finished
    assert finished_units(out) == {"unit-dddd"}


def test_written_off_rows_leave_their_unit_unfinished(output):
    from magistrate.pipelines.units import finished_units, publish, unit_files

    uri, endpoint, _ = output
    out = locate(uri, endpoint)
    table = _table(4).set_column(2, "written_off", pa.array([False, True, True, False]))
    publish(out, "unit-eeee", table, planned_rows=4, metadata={})
    assert unit_files(out)["unit-eeee"].written_off == 2
    assert finished_units(out) == set()


# The lease ------------------------------------------------------------------------------

def test_a_live_lease_refuses_a_second_run_naming_its_holder(output, monkeypatch):
    """Live: its holder keeps rewriting it (heartbeats), which a --resume watching it for
    the stale window sees."""
    from magistrate.pipelines import lease as lease_module
    from magistrate.pipelines.lease import Lease

    monkeypatch.setattr(lease_module, "HEARTBEAT_SECONDS", 0.1)
    monkeypatch.setattr(lease_module, "STALE_SECONDS", 1.0)
    uri, endpoint, _ = output
    out = locate(uri, endpoint)
    first = Lease.acquire(out, "run-one", take_over_stale=False).__enter__()
    try:
        for take_over in (False, True):
            with pytest.raises(InputError) as refused:
                Lease.acquire(out, "run-two", take_over_stale=take_over)
            text = str(refused.value)
            assert "run-one" in text and socket.gethostname() in text and f"pid {os.getpid()}" in text
            assert "since" in text
    finally:
        first.release()
    second = Lease.acquire(out, "run-two", take_over_stale=False)  # released: free again
    second.release()


def test_a_stale_lease_is_taken_over_only_by_resume(output, capsys, monkeypatch):
    from magistrate.pipelines import lease as lease_module
    from magistrate.pipelines.lease import LEASE, Lease

    monkeypatch.setattr(lease_module, "STALE_SECONDS", 0.5)  # watched this long, unchanged
    uri, endpoint, client = output
    out = locate(uri, endpoint)
    dead = {"run_id": "run-dead", "host": "gone-host", "pid": 1234, "pid_started": 0.0,
            "since": "2026-01-01T00:00:00Z", "heartbeat": time.time() - 10 * lease_module.STALE_SECONDS}
    _put(uri, client, LEASE, json.dumps(dead).encode())
    with pytest.raises(InputError, match="stopped heartbeating.*--resume"):
        Lease.acquire(out, "run-fresh", take_over_stale=False)
    taken = Lease.acquire(out, "run-resume", take_over_stale=True)
    try:
        assert "run-dead" in capsys.readouterr().err
        assert taken.holder()["run_id"] == "run-resume"
    finally:
        taken.release()


def test_a_lease_of_a_dead_process_on_this_host_is_stale_at_once(output):
    """A driver SIGKILLed here leaves a lease whose pid is gone: resume need not wait."""
    from magistrate.pipelines.lease import LEASE, Lease

    uri, endpoint, client = output
    out = locate(uri, endpoint)
    dead = {"run_id": "run-killed", "host": socket.gethostname(), "pid": 2 ** 22 + 17,
            "pid_started": 0.0, "since": "2026-01-01T00:00:00Z", "heartbeat": time.time()}
    _put(uri, client, LEASE, json.dumps(dead).encode())
    Lease.acquire(out, "run-resume", take_over_stale=True).release()


def test_the_heartbeat_refreshes_the_lease(output, monkeypatch):
    from magistrate.pipelines import lease as lease_module
    from magistrate.pipelines.lease import Lease

    monkeypatch.setattr(lease_module, "HEARTBEAT_SECONDS", 0.2)
    uri, endpoint, _ = output
    out = locate(uri, endpoint)
    with Lease.acquire(out, "run-beat", take_over_stale=False) as held:
        first = held.holder()["heartbeat"]
        deadline = time.monotonic() + 20
        while held.holder()["heartbeat"] == first:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.1)
        assert not held.lost
    assert held.holder() is None, "released on exit"


# --overwrite deletes only what magistrate wrote, and only after the input is planned ----

def _pairs(path, n: int = 3) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i} plus {i}?",
                                        "response_a": f"{2 * i}.", "response_b": f"Maybe {i}."}) + "\n"
                            for i in range(n)))
    return str(path)


@pytest.fixture(scope="module")
def dry_output(tmp_path_factory, embedded_model, shared_ray):
    """A real output of `magistrate judge --dry-run` (no engine), copied per test."""
    from tests.conftest import run_cli

    base = tmp_path_factory.mktemp("dry")
    src = _pairs(base / "in" / "pairs.jsonl")
    out = base / "out"
    done = run_cli("judge", "--input", src, "--output", str(out), "--dry-run", timeout=600, env=shared_ray.join())
    assert done.returncode == 0, done.stderr[-3000:]
    return src, out


def _tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_fresh_run_writes_success_last_and_releases_its_lease(dry_output):
    _, out = dry_output
    names = set(_tree(out))
    assert {"_SUCCESS", "summary.json", "_run.json"} <= names and "_lease.json" not in names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["rows_written"] == summary["rows_planned"] == 3
    assert summary["written_off_rows"] == 0 and summary["missing_unit_count"] == 0


def test_overwrite_refuses_an_output_holding_files_it_did_not_write(dry_output, tmp_path, shared_ray):
    import shutil

    from tests.conftest import run_cli

    src, done = dry_output
    out = tmp_path / "out"
    shutil.copytree(done, out)
    (out / "notes.txt").write_text("my notes")
    (out / "verdicts" / "mine.parquet").write_bytes(b"not magistrate's")
    before = _tree(out)
    result = run_cli("judge", "--input", src, "--output", str(out), "--dry-run", "--overwrite", env=shared_ray.join())
    assert result.returncode == 2, result.stderr[-3000:]
    assert "did not write" in result.stderr and "notes.txt" in result.stderr
    assert "verdicts/mine.parquet" in result.stderr and "Traceback" not in result.stderr
    assert _tree(out) == before, "nothing deleted"


def test_overwrite_refuses_an_output_that_holds_the_input(tmp_path):
    from tests.conftest import invoke_cli

    out = tmp_path / "out"
    src = _pairs(out / "pairs.jsonl")
    before = _tree(out)
    result = invoke_cli("judge", "--input", src, "--output", str(out), "--dry-run", "--overwrite")
    assert result.returncode == 2 and "holds the input" in result.stderr, result.stderr[-3000:]
    assert _tree(out) == before
    inside = invoke_cli("judge", "--input", str(out), "--output", str(out / "verdicts-here"), "--dry-run")
    assert inside.returncode == 2 and "inside the input directory" in inside.stderr, inside.stderr[-3000:]


def test_overwrite_with_a_mistyped_input_keeps_the_earlier_verdicts(dry_output, tmp_path):
    import shutil

    from tests.conftest import run_cli

    src, done = dry_output
    out = tmp_path / "out"
    shutil.copytree(done, out)
    before = _tree(out)
    result = run_cli("judge", "--input", src + ".typo", "--output", str(out), "--dry-run", "--overwrite")
    assert result.returncode == 2 and "no such file" in result.stderr, result.stderr[-3000:]
    assert _tree(out) == before


def test_overwrite_replaces_only_magistrates_files(dry_output, tmp_path, shared_ray):
    import shutil

    from tests.conftest import run_cli

    src, done = dry_output
    out = tmp_path / "out"
    shutil.copytree(done, out)
    (out / "verdicts" / ".unit-0123.parquet.89abcdef.tmp").write_bytes(b"a killed run's staging file")
    old_run = json.loads((out / "summary.json").read_text())["run_id"]
    result = run_cli("judge", "--input", src, "--output", str(out), "--dry-run", "--overwrite", timeout=600,
                     env=shared_ray.join())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "deleting the" in result.stderr
    assert not list((out / "verdicts").glob(".*.tmp"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] != old_run and summary["complete"] and (out / "_SUCCESS").exists()
    assert summary["this_run"]["pairs"] == 3


def test_overwrite_on_s3_refuses_objects_it_did_not_write(bucket, moto_url, aws_env, tmp_path, shared_ray):
    from tests.conftest import run_cli

    src = _pairs(tmp_path / "pairs.jsonl")
    prefix = f"{uuid.uuid4().hex[:8]}/out"
    for key in ("_run.json", "summary.json", "verdicts/unit-0000.parquet", "theirs/data.csv"):
        bucket.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=b"x")
    result = run_cli("judge", "--input", src, "--output", f"s3://{BUCKET}/{prefix}", "--dry-run",
                     "--overwrite", "--s3-endpoint-url", moto_url, env={**aws_env, **shared_ray.join()})
    assert result.returncode == 2 and "theirs/" in result.stderr, result.stderr[-3000:]
    keys = sorted(o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"])
    assert len(keys) == 4, keys
    bucket_root = run_cli("judge", "--input", src, "--output", f"s3://{BUCKET}/", "--dry-run",
                          "--overwrite", "--s3-endpoint-url", moto_url, env={**aws_env, **shared_ray.join()})
    assert bucket_root.returncode == 2 and "did not write" in bucket_root.stderr, bucket_root.stderr[-3000:]
    assert len(bucket.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]) == 4


@pytest.mark.parametrize("flags", [[False, True, False, True, True], [True] * 5])
def test_redo_judges_only_the_written_off_rows_and_keeps_the_rest(tmp_path, embedded_model, flags):
    """The worker's --resume path for a unit with written-off rows, on a dry-run judge
    (its tokenizer, no engine): rows written off are judged again in place, the others
    are kept byte for byte, and the unit is whole and finished afterwards."""
    from magistrate.actors.engine import EngineSettings
    from magistrate.judges.core import JudgeSettings
    from magistrate.pipelines.prepare import prepare_unit
    from magistrate.pipelines.lease import Lease
    from magistrate.pipelines.sharding import plan_units
    from magistrate.pipelines.unit_worker import UnitWorker
    from magistrate.pipelines.units import finished_units, unit_files

    src = _pairs(tmp_path / "in" / "pairs.jsonl", 5)
    out = locate(str(tmp_path / "out"))
    loc = locate(src)
    (unit,) = plan_units(loc, [loc.path])

    def worker(run_id: str) -> UnitWorker:
        return UnitWorker(src, out.uri, None, {}, "standard", 2,
                          {"engine": EngineSettings(model=embedded_model), "judge": JudgeSettings().resolved(),
                           "run_id": run_id, "dry_run": True})

    first = worker("run-first")
    with Lease.acquire(out, "run-first", take_over_stale=False):  # an actor publishes under its run's lease
        asyncio.run(first(pa.Table.from_pylist([unit.as_row()])))
    path = f"{out.path}/verdicts/{unit.unit_id}.parquet"
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("written_off"), "written_off", pa.array(flags))
    meta = json.loads(table.schema.metadata[b"magistrate"])
    table = table.replace_schema_metadata({b"magistrate": json.dumps({**meta, "written_off": sum(flags)}).encode()})
    pq.write_table(table, path)
    assert unit_files(out)[unit.unit_id].written_off == sum(flags) and finished_units(out) == set()
    assert prepare_unit(loc, unit, {}, "standard").num_rows == 5

    import dataclasses

    with Lease.acquire(out, "run-second", take_over_stale=False):
        result = asyncio.run(worker("run-second")(pa.Table.from_pylist([dataclasses.replace(unit, redo=True).as_row()])))
    assert result.column("rows").to_pylist() == [sum(flags)], "exactly the written-off rows were judged"
    after = pq.read_table(path).to_pylist()
    before = table.to_pylist()
    assert [r["id"] for r in after] == [r["id"] for r in before], "rows keep their places"
    assert [r["run_id"] for r in after] == ["run-second" if f else "run-first" for f in flags]
    assert [a for a, f in zip(after, flags) if not f] == [b for b, f in zip(before, flags) if not f]
    assert not any(r["written_off"] for r in after)
    assert finished_units(out) == {unit.unit_id}


def _earlier_output(src: str, out, model: str):
    """An output as an earlier run left it (its unit, _run.json, summary.json, _SUCCESS),
    written by the helpers a run uses, without Ray."""
    from magistrate.pipelines.commit import commit, write_run_file
    from magistrate.pipelines.judge_job import JobSettings, cut_units, plan_input
    from magistrate.pipelines.units import publish

    settings = JobSettings(input=src, output=str(out), model=model, dry_run=True)
    loc = locate(str(out))
    planned = cut_units(settings, plan_input(settings), loc)
    assert planned.units
    for unit in planned.units:
        publish(loc, unit.unit_id, _table(3), planned_rows=3, metadata={})
    write_run_file(settings, loc, model, planned.identities)
    commit(loc, {"complete": True})


@pytest.mark.parametrize("refusal", ["duplicate ids", "ray unreachable"])
def test_overwrite_refused_after_the_output_checks_keeps_the_earlier_verdicts(tmp_path, embedded_model,
                                                                               monkeypatch, refusal):
    """Duplicate ids, or no Ray to look for them with: the run stops before it deletes."""
    from magistrate.pipelines import judge_job

    src = _pairs(tmp_path / "in" / "pairs.jsonl")
    out = tmp_path / "out"
    _earlier_output(src, out, embedded_model)
    before = _tree(out)

    def unreachable():
        raise ConnectionError("the Ray cluster is unreachable (a test double)")

    def duplicates_found(*args, **kwargs):  # a test double of the distributed group-by
        return [("p1", 2)]

    monkeypatch.setattr(judge_job, "connect_ray", unreachable if refusal == "ray unreachable" else lambda: None)
    monkeypatch.setattr(judge_job, "find_duplicate_ids", duplicates_found)
    settings = judge_job.JobSettings(input=src, output=str(out), model=embedded_model, dry_run=True,
                                     overwrite=True)
    with pytest.raises(ConnectionError if refusal == "ray unreachable" else InputError):
        judge_job.run(settings, progress=lambda *a: None)
    assert _tree(out) == before, "nothing deleted"


def _create_ignoring_if_none_match(loc, path, data):
    """A test double of store.create_exclusive on a store that ignores `If-None-Match: *`:
    every create is an ordinary PUT."""
    from magistrate.pipelines.store import write_whole

    return write_whole(loc, path, data)


def _write_ignoring_if_match(loc, path, data, if_match=None):
    """A test double of store.write_whole on a store that ignores `If-Match`."""
    from magistrate.pipelines.store import write_whole

    return write_whole(loc, path, data)


@pytest.mark.parametrize("double", ["create_exclusive", "write_whole"])
def test_a_store_that_ignores_conditional_writes_is_refused_naming_it(bucket, moto_url, monkeypatch, double):
    """Such a store would let any later run take a live lease: found at acquisition."""
    from magistrate.pipelines import lease as lease_module
    from magistrate.pipelines.lease import LEASE, Lease
    from magistrate.pipelines.store import join, read_bytes

    fake = _create_ignoring_if_none_match if double == "create_exclusive" else _write_ignoring_if_match
    monkeypatch.setattr(lease_module, double, fake)
    out = locate(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/out", moto_url)
    with pytest.raises(InputError) as refused:
        Lease.acquire(out, "run-one", take_over_stale=False)
    text = str(refused.value)
    assert moto_url in text and ("If-None-Match" in text if double == "create_exclusive" else "If-Match" in text)
    assert read_bytes(out, join(out, LEASE)) is None, "its lease is not left behind"


def test_units_no_round_finished_are_written_off_and_resume_judges_them_again(tmp_path, embedded_model,
                                                                              monkeypatch):
    """Every judge actor dies in every round: after --max-tries rounds the unit's pairs are
    written off, the output is not committed, and --resume takes the unit up again."""
    from magistrate.pipelines import judge_job

    rounds = []

    def every_actor_dies(self, pending, progress):  # a test double of one round on the actor pool
        rounds.append([u.unit_id for u in pending])
        return iter(())

    monkeypatch.setattr(judge_job, "connect_ray", lambda: None)
    monkeypatch.setattr(judge_job, "find_duplicate_ids", lambda *args, **kwargs: [])
    monkeypatch.setattr(judge_job.Job, "_round", every_actor_dies)
    src = _pairs(tmp_path / "in" / "pairs.jsonl")
    out = tmp_path / "out"
    settings = judge_job.JobSettings(input=src, output=str(out), model=embedded_model, dry_run=True, max_tries=2)
    summary = judge_job.run(settings, progress=lambda *a: None)
    assert len(rounds) == 2 and summary["this_run"]["failed_units"] == 1
    assert summary["complete"] is False and summary["written_off_rows"] == 3
    assert json.loads((out / "summary.json").read_text()) == summary and not (out / "_SUCCESS").exists()
    judge_job.run(settings.model_copy(update={"resume": True}), progress=lambda *a: None)
    assert rounds[2] == rounds[0], "the written-off unit is judged again"


def test_two_takers_of_a_stale_local_lease_one_wins(tmp_path, monkeypatch):
    """Both read the stale lease before either replaces it, and the second acts only after
    the first holds the lease: the second must find it changed, not take it."""

    from magistrate.pipelines import lease as lease_module
    from magistrate.pipelines.lease import LEASE, Lease
    from magistrate.pipelines.store import read_bytes

    monkeypatch.setattr(lease_module, "STALE_SECONDS", 0.5)  # watched this long, unchanged
    uri = str(tmp_path / "out")
    out = locate(uri)
    dead = {"run_id": "run-dead", "host": "gone-host", "pid": 1234, "pid_started": 0.0,
            "since": "2026-01-01T00:00:00Z", "heartbeat": time.time() - 10 * lease_module.STALE_SECONDS}
    _put(uri, None, LEASE, json.dumps(dead).encode())
    both_read, first_holds = threading.Barrier(2), threading.Event()
    seen = threading.local()

    def read_then_wait(loc, path):  # a test double of store.read_bytes: the takers' worst order
        found = read_bytes(loc, path)
        if threading.current_thread().name in ("first", "second") and not getattr(seen, "read", False):
            seen.read = True
            both_read.wait(timeout=30)
            if threading.current_thread().name == "second":
                first_holds.wait(timeout=30)
        return found

    monkeypatch.setattr(lease_module, "read_bytes", read_then_wait)
    results = {}

    def take(name):
        try:
            results[name] = Lease.acquire(out, f"run-{name}", take_over_stale=True)
        except InputError as exc:
            results[name] = exc
        finally:
            if name == "first":
                first_holds.set()

    takers = [threading.Thread(target=take, args=(n,), name=n) for n in ("first", "second")]
    for t in takers:
        t.start()
    for t in takers:
        t.join(timeout=60)
    assert isinstance(results["first"], Lease), results
    assert isinstance(results["second"], InputError) and "took over the stale lease first" in str(results["second"])
    assert results["first"].holder()["run_id"] == "run-first"
    results["first"].release()


def test_a_local_conditional_replace_refuses_a_changed_file(tmp_path):
    """The heartbeat's replace, locally as on S3: only over the bytes it last wrote."""
    from magistrate.pipelines.store import AlreadyExists, create_exclusive, read_bytes, write_whole

    out = locate(str(tmp_path / "out"))
    path = f"{out.path}/_lease.json"
    etag = create_exclusive(out, path, b"mine")
    assert etag and read_bytes(out, path)[1] == etag
    etag = write_whole(out, path, b"mine, later", if_match=etag)
    _put(out.uri, None, "_lease.json", b"another run's")
    with pytest.raises(AlreadyExists):
        write_whole(out, path, b"mine, again", if_match=etag)
    assert read_bytes(out, path)[0] == b"another run's"


def test_a_released_local_lease_leaves_no_lock_file(tmp_path, monkeypatch):
    from magistrate.pipelines import lease as lease_module
    from magistrate.pipelines.lease import Lease

    monkeypatch.setattr(lease_module, "HEARTBEAT_SECONDS", 0.1)
    out = locate(str(tmp_path / "out"))
    with Lease.acquire(out, "run-beat", take_over_stale=False) as held:
        first = held.holder()["heartbeat"]
        deadline = time.monotonic() + 20
        while held.holder()["heartbeat"] == first:  # a conditional replace: under the lock
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.05)
    assert os.listdir(out.path) == []


# The lease is a fence, and staleness is seen on the taker's own clock (issue 31) --------

_HOLDER = r"""
import sys, time
skew = float(sys.argv[3])
real = time.time
time.time = lambda: real() + skew  # this process's wall clock is off by `skew` seconds
from magistrate.pipelines import lease as L
L.HEARTBEAT_SECONDS = 0.2
from magistrate.pipelines.sources import locate
out = locate(sys.argv[1], sys.argv[2] or None)
with L.Lease.acquire(out, "run-holder", take_over_stale=False) as held:
    print("held", flush=True)
    sys.stdin.readline()
    print("lost:", held.lost, flush=True)
"""


def _holder(uri: str, endpoint, skew: float = 0.0):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, uri, endpoint or "", str(skew)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def test_a_live_holder_whose_clock_is_behind_is_never_taken_over(output, monkeypatch):
    """Staleness compared the taker's clock with the holder's heartbeat time: a live run
    whose clock was 150 s behind lost its lease at once to a --resume."""
    from magistrate.pipelines import lease as lease_module
    from magistrate.pipelines.lease import Lease

    monkeypatch.setattr(lease_module, "STALE_SECONDS", 1.5)
    uri, endpoint, _ = output
    holder = _holder(uri, endpoint, skew=-150)
    try:
        started = time.monotonic()
        with pytest.raises(InputError, match="in use by a live run.*run-holder"):
            Lease.acquire(locate(uri, endpoint), "run-taker", take_over_stale=True)
        assert time.monotonic() - started < 30
    finally:
        out, _ = holder.communicate("\n", timeout=60)
    assert "lost: None" in out


def test_a_paused_holder_is_taken_over_after_the_window_and_told(output, monkeypatch):
    """SIGSTOP (a VM pause, a laptop asleep): not stale before the window has passed on the
    taker's clock; after it, the take-over happens, and the holder, woken, finds it lost."""
    import signal

    from magistrate.pipelines import lease as lease_module
    from magistrate.pipelines.lease import Lease

    monkeypatch.setattr(lease_module, "STALE_SECONDS", 1.5)
    uri, endpoint, _ = output
    holder = _holder(uri, endpoint)
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        taken = Lease.acquire(locate(uri, endpoint), "run-taker", take_over_stale=True)
        assert time.monotonic() - started >= 1.5  # watched for the whole window first
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    try:
        time.sleep(1.0)  # a few of the holder's heartbeats
        out, err = holder.communicate("\n", timeout=60)
        assert "lost: run run-taker" in out, out + err
        assert taken.holder()["run_id"] == "run-taker", "the woken holder wrote nothing"
    finally:
        taken.release()


def test_a_lease_released_while_watched_is_taken_at_once(output, monkeypatch, capsys):
    """A --resume that watched a live run's lease while that run finished: the lease was
    gone, and the resume was refused as if another run had taken it."""
    from magistrate.pipelines import lease as lease_module
    from magistrate.pipelines.lease import LEASE, Lease
    from magistrate.pipelines.store import delete, join

    monkeypatch.setattr(lease_module, "STALE_SECONDS", 20.0)
    uri, endpoint, client = output
    out = locate(uri, endpoint)
    other = {"run_id": "run-finishing", "host": "another-host", "machine": "another-machine", "pid": 99,
             "pid_started": 0.0, "since": "2026-01-01T00:00:00Z", "heartbeat": time.time()}
    _put(uri, client, LEASE, json.dumps(other).encode())
    threading.Timer(0.5, delete, args=(out, join(out, LEASE))).start()  # the holder finishes
    started = time.monotonic()
    taken = Lease.acquire(out, "run-resume", take_over_stale=True)
    try:
        assert time.monotonic() - started < 20, "it waited out the window for a released lease"
        assert taken.holder()["run_id"] == "run-resume"
        assert "run run-finishing" in capsys.readouterr().err
    finally:
        taken.release()


def test_a_heartbeat_sent_twice_keeps_the_lease(output):
    """The SDK retries a conditional PUT whose answer was lost: the retry gets 412 for the
    run's own write. That was read as a take-over: the run stopped heartbeating, judged on
    and committed nothing. The same lost answer on the exclusive create refused the run's
    own lease as 'a live run'."""
    from magistrate.pipelines.lease import LEASE, Lease
    from magistrate.pipelines.store import create_exclusive, join, write_whole

    uri, endpoint, _ = output
    out = locate(uri, endpoint)
    held = Lease.acquire(out, "run-twice", take_over_stale=False)
    try:
        first = dict(held.record, beats=1, heartbeat=time.time())
        write_whole(out, join(out, LEASE), json.dumps(first).encode(), if_match=held.etag)  # answer lost
        held.beat()  # the retry, under the ETag the run last knew: 412
        assert held.holder()["run_id"] == "run-twice" and held.holder()["beats"] == 1
        held.beat()
        assert held.holder()["beats"] == 2 and not held.lost
    finally:
        held.release()
    # The exclusive create: the first PUT stored the lease, its retry found the name taken.
    record = {"run_id": "run-create", "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}
    create_exclusive(out, join(out, LEASE), json.dumps(record).encode())
    Lease.acquire(out, "run-create", take_over_stale=False).release()


def test_a_unit_published_by_a_run_that_lost_the_lease_is_not_counted():
    """A lost run's actor checked the lease, then the take-over happened, then it wrote: its
    file (or one of a run outside the output's lineage) counts as missing, so the output is
    not complete and the unit is judged again, never counted done."""
    from magistrate.pipelines.commit import fenced, reconcile
    from magistrate.pipelines.units import Unit, UnitFile

    units = [Unit(f"unit-{k}", "in.parquet", "parquet", 10 * k, 10 * k + 10, 10) for k in range(3)]
    files = {"unit-0": UnitFile(10, 10, 0, "run-old"),  # adopted when the run opened the output
             "unit-1": UnitFile(10, 10, 0, "run-now"),
             "unit-2": UnitFile(10, 10, 0, "run-lost")}  # published after the take-over
    counted = fenced(files, "run-now", adopted={"unit-0": "run-old"})
    assert set(counted) == {"unit-0", "unit-1"}
    result = reconcile(units, counted)
    assert not result.complete and result.missing_units == ["unit-2"]
    assert reconcile(units, fenced(files, "run-now", adopted={"unit-0": "run-old", "unit-2": "run-lost"})).complete


def _damage(path) -> None:
    """Bytes of the first data page flipped; the footer stays intact."""
    meta = pq.read_metadata(path)
    offset = meta.row_group(0).column(0).data_page_offset + 40
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_unit_file_damaged_after_it_was_published_is_found(tmp_path):
    """Its footer agrees, so it counted as finished and _SUCCESS was written beside it;
    readers failed later. Unit files carry page checksums; reading them finds the damage."""
    from magistrate.pipelines.summary import summarise
    from magistrate.pipelines.units import damaged, finished_units, publish, unit_path

    out = locate(str(tmp_path / "out"))
    table = pa.table({"id": [f"p{i}" for i in range(500)], "winner": ["A"] * 500,
                      "error": pa.array([None] * 500, pa.string()),
                      "consistent": [True] * 500, "written_off": [False] * 500})
    for unit in ("unit-good", "unit-bad"):
        publish(out, unit, table, planned_rows=500, metadata={})
    assert damaged(out, {"unit-good", "unit-bad"}) == set()
    _damage(unit_path(out, "unit-bad"))
    assert finished_units(out) == {"unit-good", "unit-bad"}  # the footer cannot tell
    assert damaged(out, {"unit-good", "unit-bad"}) == {"unit-bad"}
    summary = summarise(out, 1.0)
    assert summary["damaged_units"] == ["unit-bad"] and summary["pairs"] == 500


def test_a_write_off_never_replaces_a_whole_unit_of_its_run(tmp_path, embedded_model):
    """On a store that lists late, the last round did not see a unit its actor had
    published, and the write-off overwrote the good unit with error rows."""
    from magistrate.judges.core import JudgeSettings
    from magistrate.pipelines.judge_job import Job, JobSettings, cut_units, plan_input
    from magistrate.pipelines.lease import Lease
    from magistrate.pipelines.units import publish, unit_path

    src = _pairs(tmp_path / "in" / "pairs.jsonl", 3)
    settings = JobSettings(input=src, output=str(tmp_path / "out"), dry_run=True)
    out = locate(settings.output)
    job = Job(settings, cut_units(settings, plan_input(settings), out), out, JudgeSettings().resolved(),
              embedded_model, "run-1")
    (unit,) = job.planned.units
    with Lease.acquire(out, "run-1", take_over_stale=False):
        publish(out, unit.unit_id, _table(3), planned_rows=3, metadata={"run_id": "run-1"})
        before = open(unit_path(out, unit.unit_id), "rb").read()
        job.write_off(unit)  # the round's listing missed it
        assert open(unit_path(out, unit.unit_id), "rb").read() == before
        publish(out, unit.unit_id, _table(2), planned_rows=3 - 1, metadata={"run_id": "run-0"})  # another run's
        job.write_off(unit)
    written = pq.read_table(unit_path(out, unit.unit_id))
    assert written.num_rows == 3 and all(written.column("written_off").to_pylist())
