"""Exactly once, whatever fails: real processes are killed, no mocks of Ray or vLLM.

Each test judges a Parquet input cut into small units (one row group of 2 pairs each), so
some units are published before the fault and some after. Every kill happens at a known
point (magistrate/faults.py: the run holds there until the test has killed what it
meant to), never in a race with the judge's pace, so the tiny random-weight judge does:
what it says does not matter here, only that each pair gets exactly one verdict row."""

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
               "--unit-rows", "2", "--order", "ab", "--mode", "logprob", "--replicas", "1"]
PAIRS = 20


def _input(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    rows = [json.loads(line) for line in open(EXAMPLES / "llmbar.jsonl")]
    rows = sorted(rows, key=lambda r: len(r["prompt"] + r["response_a"] + r["response_b"]))[:n]
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    return path, [r["id"] for r in rows]


def _armed(tmp_path: Path, fault: str) -> dict:
    """The environment of a run that holds at `fault` (magistrate/faults.py)."""
    return {"MAGISTRATE_FAULT": fault, "MAGISTRATE_FAULT_DIR": str(tmp_path / "faults")}


def _held(tmp_path: Path, fault: str, proc=None, timeout: float = 600) -> int:
    """Waits until the run holds at `fault`; the pid of the process holding."""
    name, _, k = fault.partition("=")
    reached = tmp_path / "faults" / f"{name}-{k}.reached"
    deadline = time.monotonic() + timeout
    while not reached.exists() or not reached.read_text():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended before {fault}: {_err(proc)[-3000:]}")
        assert time.monotonic() < deadline, f"the run never reached {fault}"
        time.sleep(0.1)
    return int(reached.read_text())


def _release(tmp_path: Path, fault: str) -> None:
    name, _, k = fault.partition("=")
    (tmp_path / "faults" / f"{name}-{k}.go").touch()


def _err(proc) -> str:
    return Path(proc.err_path).read_text() if Path(proc.err_path).exists() else ""


@contextlib.contextmanager
def _judging(tmp_path: Path, *args: str, env: dict | None = None):
    """`magistrate judge ARGS` in a child process, its output in files (a pipe nobody
    reads can fill and stall it); whatever of its process tree a failed test leaves
    running is killed on the way out, so it cannot hang the session."""
    err = tmp_path / f"judge-{time.monotonic_ns()}.err"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([*MAGISTRATE, "judge", *args], stdout=subprocess.DEVNULL, stderr=stderr,
                                text=True, cwd=REPO, env={**os.environ, "RAY_ADDRESS": "local", **(env or {})})
    proc.err_path = str(err)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            _kill_family(proc.pid)
            proc.wait(timeout=60)


def _kill_family(pid: int) -> None:
    family = [pid] + [p.pid for p in psutil.Process(pid).children(recursive=True)]
    for member in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    psutil.wait_procs([p for p in map(_process, family) if p], timeout=60)


def _published(out: Path) -> list[Path]:
    return sorted((out / "verdicts").glob("unit-*.parquet")) if (out / "verdicts").exists() else []


def _ids(out: Path) -> list[str]:
    return pads.dataset(str(out / "verdicts"), format="parquet").to_table(columns=["id"]).column("id").to_pylist()


def _rows(out: Path) -> list[dict]:
    return pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()


def _process(pid: int):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _engine_cores(pid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline()):
                found.append(p)
    return found


def _tree(pid: int) -> list[str]:
    """What runs below `pid`, for a failure's message."""
    found = []
    with contextlib.suppress(psutil.Error):
        for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                found.append(f"{p.pid} {p.name()} {' '.join(p.cmdline())[:120]}")
    return found


def _finished(proc, timeout: float = 800) -> tuple[int, str]:
    proc.wait(timeout=timeout)
    return proc.returncode, _err(proc)


def test_killed_judge_actor_costs_a_retry_not_the_job(tmp_path, tiny_model, shared_ray):
    """The judge actor is killed after publishing its first unit, with two more in hand:
    Ray restarts it, the units it held are judged by the new actor, nothing twice."""
    src, ids = _input(tmp_path, PAIRS)
    out = tmp_path / "out"
    with _judging(tmp_path, "--input", str(src), "--output", str(out), "--model", tiny_model, *ENGINE_ARGS,
                  env={**_armed(tmp_path, "publish=2"), "MAGISTRATE_LEASE_HEARTBEAT_SECONDS": "0.5",
                       **shared_ray.join()}) as proc:
        actor = _held(tmp_path, "publish=2", proc)
        assert len(_published(out)) == 1
        # A second run on the same output, while this one holds its lease: refused, once
        # it has seen the lease rewritten by the live run's heartbeat.
        second = subprocess.run([*MAGISTRATE, "judge", "--input", str(src), "--output", str(out),
                                 "--resume", "--model", tiny_model, *ENGINE_ARGS], capture_output=True, text=True,
                                cwd=REPO, timeout=300, env={**os.environ, "RAY_ADDRESS": "local"})
        assert second.returncode == 2, second.stderr[-3000:]
        assert "in use by a live run" in second.stderr and f"pid {proc.pid}" in second.stderr
        assert "UnitWorker" in " ".join(psutil.Process(actor).cmdline()), "the held process is the judge actor"
        cores = _engine_cores(actor)
        assert len(cores) == 1, (actor, _tree(actor))
        os.kill(actor, signal.SIGKILL)
        psutil.wait_procs([p for p in [_process(actor)] if p], timeout=60)
        # Its engine's process does not outlive it, holding memory the restarted actor needs.
        # (On this CPU build the EngineCore ends by itself once its host is gone: this
        # passed with the reaper, actors/reaper.py, turned off; the reaper is for what does
        # not, such as a GPU engine's worker processes.)
        _, alive = psutil.wait_procs(cores, timeout=30)
        assert not alive, f"the killed actor's EngineCore {cores[0].pid} lives on"
        _release(tmp_path, "publish=2")  # the restarted actor's own second publish goes on
        code, stderr = _finished(proc)
    assert code == 0, stderr[-3000:]
    assert sorted(_ids(out)) == sorted(ids)  # every id exactly once
    assert all(r["winner"] in {"A", "B", "tie"} for r in _rows(out)), "the retried units were judged"
    summary = json.loads((out / "summary.json").read_text())
    # The retry, counted: units came from two actor processes, the killed one and its restart.
    assert summary["this_run"]["actors"] == 2 and summary["this_run"]["units"] == PAIRS // 2, summary["this_run"]
    assert not list((out / "verdicts").glob("*.tmp"))


@pytest.mark.parametrize("max_tries", [2, 1])
def test_killed_engine_is_rebuilt_in_its_actor(tmp_path, tiny_model, max_tries, shared_ray):
    """The vLLM engine dies under a live judge actor (its EngineCore process is killed
    while the actor holds before its 4th batch): the actor rebuilds the engine and tries
    the batch again. With --max-tries 2 that second try judges it; with --max-tries 1 the
    batch's pairs become error rows naming the cause, and the rebuilt engine judges every
    later batch."""
    src, ids = _input(tmp_path, PAIRS)
    out = tmp_path / "out"
    fault = "engine_call=4"
    with _judging(tmp_path, "--input", str(src), "--output", str(out), "--model", tiny_model, *ENGINE_ARGS,
                  "--max-tries", str(max_tries), env={**_armed(tmp_path, fault), **shared_ray.join()}) as proc:
        actor = _held(tmp_path, fault, proc)
        cores = _engine_cores(actor)
        assert len(cores) == 1, (actor, _tree(actor), _err(proc)[-3000:])
        cores[0].kill()
        psutil.wait_procs(cores, timeout=60)
        _release(tmp_path, fault)
        code, stderr = _finished(proc)
        assert psutil.pid_exists(actor) or code is not None
    # Rows written off: the run says so in its exit code (docs/reliability.md), 0 otherwise.
    assert code == (0 if max_tries == 2 else 3), stderr[-3000:]
    assert "judge engine failed (try 1 of" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["actors"] == 1, "the same actor lived on: the engine, not the actor, was replaced"
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == sorted(ids)  # every id exactly once
    failed = [r for r in rows if r["winner"] == "error"]
    if max_tries == 2:
        assert not failed, [r["error"] for r in failed]
    else:
        # The batches (--batch-size 2, one per unit) that met the dead engine: the held
        # 4th, and those of the other units in hand that came to the engine meanwhile.
        assert len(failed) in range(2, 2 * UNITS_AT_ONCE + 1, 2), [r["error"] for r in failed]
        assert all(r["error"].startswith("the judge engine failed 1 times; last error: EngineDeadError")
                   for r in failed), failed[0]["error"]
        assert all(r["written_off"] for r in failed)
        assert not (out / "_SUCCESS").exists() and "rerun the same command with --resume" in stderr
    assert all(r["winner"] in {"A", "B", "tie"} for r in rows if r not in failed)
    if max_tries == 1:
        # --resume judges exactly the written-off rows, and the output is then whole.
        resumed = subprocess.run([*MAGISTRATE, "judge", "--input", str(src), "--output", str(out), "--resume",
                                  "--model", tiny_model, *ENGINE_ARGS, "--max-tries", "1"],
                                 capture_output=True, text=True, cwd=REPO, timeout=800,
                                 env={**os.environ, **shared_ray.join()})
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["this_run"]["pairs"] == len(failed) and summary["this_run"]["units"] == len(failed) // 2
        assert summary["written_off_rows"] == 0 and summary["complete"] and (out / "_SUCCESS").exists()
        again = _rows(out)
        assert sorted(r["id"] for r in again) == sorted(ids)
        assert all(r["winner"] in {"A", "B", "tie"} for r in again), [r["error"] for r in again]
        kept = {r["id"]: r for r in rows if r not in failed}
        assert all(r == kept[r["id"]] for r in again if r["id"] in kept), "judged rows are kept as they were"


def test_killed_driver_then_resume_judges_only_what_is_missing(tmp_path, tiny_model, shared_ray):
    """A lost head: the driver and every process of the local Ray it started die at once,
    with exactly two units published."""
    src, ids = _input(tmp_path, PAIRS)
    out = tmp_path / "out"
    args = ["--input", str(src), "--output", str(out), "--model", tiny_model, *ENGINE_ARGS]
    with _judging(tmp_path, *args, env=_armed(tmp_path, "publish=3")) as proc:
        _held(tmp_path, "publish=3", proc)
        _kill_family(proc.pid)
        proc.wait(timeout=60)
    done_before = len(_ids(out))
    assert done_before == 4

    env = {**os.environ, **shared_ray.join()}  # the lost head is gone: the resume runs on another
    refused = subprocess.run([*MAGISTRATE, "judge", *args], capture_output=True, text=True, cwd=REPO, timeout=120,
                             env=env)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = subprocess.run([*MAGISTRATE, "judge", *args, "--resume"], capture_output=True, text=True, cwd=REPO,
                             timeout=800, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(_ids(out)) == sorted(ids)  # every id exactly once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["pairs"] == len(ids) - done_before  # only the missing ones
    # Busy time, not the sum of units judged side by side (nor the engine's start).
    assert 0 < summary["this_run"]["unit_seconds"] <= summary["seconds"]
    assert summary["units_skipped"] == done_before // 2
    assert summary["pairs"] == len(ids)


def test_lost_worker_node_costs_a_retry_not_the_job(tmp_path, tiny_model, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from magistrate.pipelines.judge_job import JobSettings, run

    src, ids = _input(tmp_path, 10)
    out = tmp_path / "out"
    # The nodes' processes inherit the environment: the actor holds before its 2nd publish.
    for key, value in _armed(tmp_path, "publish=2").items():
        monkeypatch.setenv(key, value)
    # The head runs no tasks, so the judge actor lands on a worker node that can be lost.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    ray.init(address=cluster.address)
    try:
        settings = JobSettings(input=str(src), output=str(out), max_model_len=2048, gpu_memory_utilization=0.2,
                               batch_size=2, unit_rows=2, order="ab", replicas="1", model=tiny_model, mode="logprob")
        result: dict = {}
        job = threading.Thread(target=lambda: result.update(run(settings, progress=lambda _: None)))
        job.start()
        actor = _held(tmp_path, "publish=2")
        # The node whose raylet started the held actor (not the state API: it needs the
        # dashboard, which a loaded machine brought up too late).
        ancestors = {p.pid for p in psutil.Process(actor).parents()}
        doomed = next(n for n in workers if n.all_processes["raylet"][0].process.pid in ancestors)
        cluster.remove_node(doomed, allow_graceful=False)
        lost_at = time.time()
        _release(tmp_path, "publish=2")  # for the actor that takes its place
        job.join(timeout=900)
        assert not job.is_alive()
        assert result["pairs"] == len(ids)
        assert sorted(_ids(out)) == sorted(ids)
        # The lost node's units were judged again elsewhere, not written off as errors.
        assert all(r["winner"] in {"A", "B", "tie"} for r in _rows(out)), [r["error"] for r in _rows(out)]
        assert result["this_run"].get("failed_units", 0) == 0
        # The retry, counted from the files: every unit but the one published before the
        # node was lost was published after it, so by another actor (the lost one is dead).
        # The summary's actor count cannot tell: the lost node may take the first actor's
        # results with it (they lived in its object store), and a retry may come in the
        # same round or the next.
        later = [p for p in _published(out) if p.stat().st_mtime > lost_at]
        assert len(later) >= len(ids) // 2 - 1 and not psutil.pid_exists(actor), (len(later), result["this_run"])
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_an_engine_that_cannot_start_stops_the_run_after_two_tries(tmp_path, tiny_model, shared_ray):
    """A setting vLLM refuses (a context longer than the model's) fails every start the
    same way: the actor tries twice, the run stops after one round naming vLLM's reason,
    writes nothing off, and --resume with the setting fixed judges every pair."""
    src, ids = _input(tmp_path, 6)
    out = tmp_path / "out"
    args = ["judge", "--input", str(src), "--output", str(out), "--model", tiny_model,
            *[a for a in ENGINE_ARGS if a not in ("--max-model-len", "2048")]]
    env = {**os.environ, **shared_ray.join()}
    refused = subprocess.run([*MAGISTRATE, *args, "--max-model-len", "1000000"], capture_output=True, text=True,
                             cwd=REPO, timeout=600, env=env)
    assert refused.returncode == 3, refused.stderr[-3000:]
    said = refused.stderr
    assert "the judge engine could not start (each actor tried 2 times)" in said, said[-3000:]
    assert "max_model_len" in said.split("could not start", 1)[1], said[-3000:]  # vLLM's own reason
    assert "(round 2 of" not in said, "no second round of refused starts"
    assert not _published(out) and not (out / "_SUCCESS").exists()  # nothing judged, nothing written off
    summary = json.loads((out / "summary.json").read_text())
    assert "max_model_len" in summary["this_run"]["engine_failed"] and summary["this_run"]["units"] == 0

    resumed = subprocess.run([*MAGISTRATE, *args, "--max-model-len", "2048", "--resume"], capture_output=True,
                             text=True, cwd=REPO, timeout=800, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(_ids(out)) == sorted(ids)
