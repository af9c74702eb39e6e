"""Exactly once, whatever fails: real processes are killed, no mocks of Ray or vLLM.

Each test judges a Parquet input cut into small units (one row group of 2 pairs each), so
some units are published before the fault and some after."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from magistrate.pipelines.unit_worker import UNITS_AT_ONCE
from tests.conftest import EXAMPLES, MAGISTRATE, REPO

pytestmark = pytest.mark.engine
ENGINE_ARGS = ["--max-model-len", "2048", "--gpu-memory-utilization", "0.2", "--batch-size", "2",
               "--unit-rows", "2", "--order", "ab"]


# Enough units that a kill after the first published one finds work left: an actor judges
# UNITS_AT_ONCE units at once, so a handful would all finish together.
PAIRS = 30


def _input(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    rows = [json.loads(line) for line in open(EXAMPLES / "llmbar.jsonl")]
    rows = sorted(rows, key=lambda r: len(r["prompt"] + r["response_a"] + r["response_b"]))[:n]
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    return path, [r["id"] for r in rows]


@contextlib.contextmanager
def _judging(*args: str):
    """`magistrate judge ARGS` in a child process; whatever of its process tree a failed
    test leaves running is killed on the way out, so it cannot hang the session."""
    proc = subprocess.Popen([*MAGISTRATE, "judge", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            family = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
            for pid in family:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=60)


def _published(out: Path) -> list[Path]:
    return sorted((out / "verdicts").glob("unit-*.parquet")) if (out / "verdicts").exists() else []


def _wait_for_units(out: Path, count: int, proc=None, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while len(_published(out)) < count:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended early: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "no unit was published in time"
        time.sleep(0.5)


def _ids(out: Path) -> list[str]:
    return pads.dataset(str(out / "verdicts"), format="parquet").to_table(columns=["id"]).column("id").to_pylist()


def _process(pid: int):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _judge_actor_pids(driver: int) -> list[int]:
    """The judge actors of this job only: processes of the local Ray its driver started
    (another Ray on the machine is none of this test's business)."""
    found = []
    for p in psutil.Process(driver).children(recursive=True):
        try:
            cmdline = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "UnitWorker" in cmdline and "ray::" in cmdline:
            found.append(p.pid)
    return found


def test_killed_judge_actor_costs_a_retry_not_the_job(tmp_path, embedded_model):
    src, ids = _input(tmp_path, PAIRS)
    out = tmp_path / "out"
    with _judging("--input", str(src), "--output", str(out), *ENGINE_ARGS) as proc:
        _wait_for_units(out, 1, proc)
        # A second run on the same output, while this one holds its lease: refused.
        second = subprocess.run([*MAGISTRATE, "judge", "--input", str(src), "--output", str(out),
                                 "--resume", *ENGINE_ARGS], capture_output=True, text=True, cwd=REPO,
                                timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        assert "in use by a live run" in second.stderr and f"pid {proc.pid}" in second.stderr
        pids = _judge_actor_pids(proc.pid)
        assert pids, "no judge actor process found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=800)
    assert proc.returncode == 0, stderr[-3000:]
    written = _ids(out)
    assert sorted(written) == sorted(ids)  # every id exactly once
    rows = pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()
    assert all(r["winner"] in {"A", "B", "tie"} for r in rows), "the retried unit was judged"
    assert not list((out / "verdicts").glob("*.tmp"))


def _engine_cores(driver: int) -> list[psutil.Process]:
    found = []
    for p in psutil.Process(driver).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline()):
                found.append(p)
    return found


@pytest.mark.parametrize("max_tries", [2, 1])
def test_killed_engine_is_rebuilt_in_its_actor(tmp_path, embedded_model, max_tries):
    """The vLLM engine dies under a live judge actor (its EngineCore process is killed):
    the actor rebuilds the engine and tries the batch again. With --max-tries 2 that
    second try judges it; with --max-tries 1 the batch's pairs become error rows naming
    the cause, and the rebuilt engine judges every later batch."""
    src, ids = _input(tmp_path, PAIRS)
    out = tmp_path / "out"
    with _judging("--input", str(src), "--output", str(out), *ENGINE_ARGS,
                  "--max-tries", str(max_tries)) as proc:
        _wait_for_units(out, 1, proc)
        # The process walk races the tree (a loaded CI machine once saw the actor but not
        # yet its engine): look again for a while before calling it wrong.
        deadline = time.monotonic() + 60
        while True:
            actors, cores = _judge_actor_pids(proc.pid), _engine_cores(proc.pid)
            if (len(actors) == 1 and len(cores) == 1) or time.monotonic() > deadline or proc.poll() is not None:
                break
            time.sleep(0.5)
        assert len(actors) == 1 and len(cores) == 1, (actors, cores)
        cores[0].kill()
        _wait_for_units(out, 2, proc)  # a later unit, judged by the rebuilt engine
        assert psutil.pid_exists(actors[0]) and _judge_actor_pids(proc.pid) == actors, \
            "the same actor lives on: the engine, not the actor, was replaced"
        stdout, stderr = proc.communicate(timeout=800)
    # Rows written off: the run says so in its exit code (docs/reliability.md), 0 otherwise.
    assert proc.returncode == (0 if max_tries == 2 else 3), stderr[-3000:]
    assert "judge engine failed (try 1 of" in stderr
    rows = pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(ids)  # every id exactly once
    failed = [r for r in rows if r["winner"] == "error"]
    if max_tries == 2:
        assert not failed, [r["error"] for r in failed]
    else:
        # The batches (--batch-size 2, one per unit) in flight when the engine died: one
        # for each unit the actor was judging at once.
        assert len(failed) in range(2, 2 * UNITS_AT_ONCE + 1, 2), [r["error"] for r in failed]
        assert all(r["error"].startswith("the judge engine failed 1 times; last error: EngineDeadError")
                   for r in failed), failed[0]["error"]
        assert all(r["written_off"] for r in failed)
        assert not (out / "_SUCCESS").exists() and "rerun the same command with --resume" in stderr
    assert all(r["winner"] in {"A", "B", "tie"} for r in rows if r not in failed)
    if max_tries == 1:
        # --resume judges exactly the written-off rows, and the output is then whole.
        resumed = subprocess.run([*MAGISTRATE, "judge", "--input", str(src), "--output", str(out),
                                  "--resume", *ENGINE_ARGS, "--max-tries", "1"],
                                 capture_output=True, text=True, cwd=REPO, timeout=800)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["this_run"]["pairs"] == len(failed) and summary["this_run"]["units"] == len(failed) // 2
        assert summary["written_off_rows"] == 0 and summary["complete"] and (out / "_SUCCESS").exists()
        again = pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()
        assert sorted(r["id"] for r in again) == sorted(ids)
        assert all(r["winner"] in {"A", "B", "tie"} for r in again), [r["error"] for r in again]
        kept = {r["id"]: r for r in rows if r not in failed}
        assert all(r == kept[r["id"]] for r in again if r["id"] in kept), "judged rows are kept as they were"


def test_killed_driver_then_resume_judges_only_what_is_missing(tmp_path, embedded_model):
    src, ids = _input(tmp_path, PAIRS)
    out = tmp_path / "out"
    proc = subprocess.Popen([*MAGISTRATE, "judge", "--input", str(src), "--output", str(out), *ENGINE_ARGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    _wait_for_units(out, 2, proc)
    # A lost head: the driver and every process of the local Ray it started die at once.
    family = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    psutil.wait_procs([p for p in map(_process, family) if p], timeout=60)
    done_before = len(_ids(out))
    assert 0 < done_before < len(ids)

    refused = subprocess.run([*MAGISTRATE, "judge", "--input", str(src), "--output", str(out), *ENGINE_ARGS],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = subprocess.run([*MAGISTRATE, "judge", "--input", str(src), "--output", str(out), "--resume",
                              *ENGINE_ARGS], capture_output=True, text=True, cwd=REPO, timeout=800)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(_ids(out)) == sorted(ids)  # every id exactly once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["pairs"] == len(ids) - done_before  # only the missing ones
    # Busy time, not the sum of units judged side by side (nor the engine's start).
    assert 0 < summary["this_run"]["unit_seconds"] <= summary["seconds"]
    assert summary["units_skipped"] == done_before // 2
    assert summary["pairs"] == len(ids)


def test_lost_worker_node_costs_a_retry_not_the_job(tmp_path, embedded_model):
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from magistrate.pipelines.judge_job import JobSettings, run

    src, ids = _input(tmp_path, 10)
    out = tmp_path / "out"
    # The head runs no tasks, so the judge actor lands on a worker node that can be lost.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    ray.init(address=cluster.address)
    try:
        settings = JobSettings(input=str(src), output=str(out), max_model_len=2048, gpu_memory_utilization=0.2,
                               batch_size=2, unit_rows=2, order="ab", replicas="1")
        result: dict = {}
        job = threading.Thread(target=lambda: result.update(run(settings, progress=lambda _: None)))
        job.start()
        _wait_for_units(out, 1)
        actor = next(a for a in list_actors(detail=True, limit=1000)
                     if "UnitWorker" in a.class_name and a.state == "ALIVE")
        doomed = next(n for n in workers if n.node_id == actor.node_id)
        cluster.remove_node(doomed, allow_graceful=False)
        job.join(timeout=900)
        assert not job.is_alive()
        assert result["pairs"] == len(ids)
        assert sorted(_ids(out)) == sorted(ids)
        rows = pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()
        # The lost node's unit was judged again elsewhere, not written off as errors.
        assert all(r["winner"] in {"A", "B", "tie"} for r in rows), [r["error"] for r in rows]
        assert result["this_run"].get("failed_units", 0) == 0
    finally:
        ray.shutdown()
        cluster.shutdown()
