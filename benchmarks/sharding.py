"""Issue 30's benchmark: one big file judged as wide as the pool. A single-file Parquet of
one row group and a JSONL file of the same rows, each judged as a dry run (the short
judge, one order, --unit-rows 2048, --batch-size 2048) by 2, 4 and 8 actors on a Ray head
started here with 8 logical CPUs (so 8 one-CPU actors fit on a 2-core machine).

    .venv/bin/python -m benchmarks.sharding [--rows 2000000] [--actors 2,4,8]
        [--formats parquet,jsonl] [--no-reads]

Prints one JSON line per format and actor count. Each is two runs of the same command:

- a timed run: wall time and summary.json's seconds, units, and the peak RSS of the
  driver, of each judge actor (`MapWorker`/`UnitWorker`) and of each planning task
  (`_cut_task`), every process sampled every 0.5 s (the head's processes are found by a
  tag in their environment; Ray's own services are left out). Also `rchar` (the bytes of
  every read() call, /proc/PID/io) over the driver and the head's Ray workers, by role;
- a traced run (not with --no-reads): the same command with strace following the driver,
  the raylet (so every worker it starts) and the workers already there, counting the
  bytes that read(), pread64() and their vector forms return from the input file and from
  the output's staged pieces (`_staged/`). Those bytes / the input's size is "bytes read
  per input byte": page-cache hits count, as rchar counts them, but a Python import, a
  tokenizer file, a pipe or a socket does not. Tracing slows the run, so its time is not
  the timed run's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from benchmarks.common import HERE, run_watched, synthetic_pairs
# The suite's head: token auth on loopback, stopped by its session's process ids, never by
# `ray stop` (which would stop every Ray on this shared machine).
from tests.conftest import ray_head

MAGISTRATE = [sys.executable, "-m", "magistrate.cli", "judge"]
TAG = "MAGISTRATE_BENCH_HEAD"
UNIT_ROWS = 2048
# What a process of the run is, from its command line (a Ray worker sets it to `ray::<what
# it runs>`); Ray's own services (raylet, GCS, dashboard and its agents) have no role.
SERVICES = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
ROLES = (("actor", ("MapWorker", "UnitWorker")), ("cut task", ("_cut_task",)),
         ("other worker", ("ray::", "default_worker.py")))
STRACE = ["strace", "-f", "-qq", "-y", "-s", "0", "-e", "signal=none", "-e", "status=successful",
          "-e", "trace=read,pread64,readv,preadv,preadv2"]
DONE = re.compile(r"^(\d+)\s+\w+\(\d+<([^>]*)>.*\)\s+= (\d+)$")
STARTED = re.compile(r"^(\d+)\s+\w+\(\d+<([^>]*)>.*<unfinished \.\.\.>$")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. \w+ resumed>.*\)\s+= (\d+)$")


def write_input(fmt: str, rows: int, path: Path) -> Path:
    """`rows` synthetic pairs: Parquet with pyarrow's defaults but one row group whatever
    `rows` (pyarrow's default caps a group at 1,048,576 rows), or JSONL of the same rows."""
    table = synthetic_pairs(0, rows)
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=rows)
        assert pq.ParquetFile(path).metadata.num_row_groups == 1
    else:
        with open(path, "w") as f:
            for batch in table.to_batches(max_chunksize=65536):
                f.writelines(json.dumps(row) + "\n" for row in batch.to_pylist())
    return path


def role(cmdline: str) -> str | None:
    if any(cmdline.startswith(s) for s in SERVICES):
        return None
    return next((name for name, marks in ROLES if any(mark in cmdline for mark in marks)), None)


class Watch:
    """The driver and every process of the head tagged `tag`: peak RSS per process and
    role, and rchar per role since the run started."""

    def __init__(self, tag: str):
        self.tag, self.mine, self.last = tag, {}, {}
        self.peak: dict[tuple[int, str], int] = {}
        self.read: dict[str, int] = defaultdict(int)

    def _ours(self, p: psutil.Process) -> bool:
        if p.pid not in self.mine:
            self.mine[p.pid] = p.environ().get(TAG) == self.tag
        return self.mine[p.pid]

    def processes(self, driver: psutil.Process | None = None):
        """(process, role): the driver (and what it runs under, strace aside) is 'driver';
        the head's processes have their role, None for Ray's services."""
        family = {driver.pid, *(c.pid for c in driver.children(recursive=True))} if driver else set()
        for p in psutil.process_iter():
            try:
                if p.pid in family:
                    if p.name() != "strace":
                        yield p, "driver"
                elif self._ours(p):
                    yield p, role(" ".join(p.cmdline()))
            except psutil.Error:
                pass

    def prime(self) -> list[int]:
        """rchar of the head's workers before the run (what they read before is not the
        run's); returns the pids to trace: the raylet and those workers."""
        pids = []
        for p, name in self.processes():
            try:
                if name:
                    self.last[p.pid] = p.io_counters().read_chars
                    pids.append(p.pid)
                elif p.name() == "raylet":
                    pids.append(p.pid)
            except psutil.Error:
                pass
        return pids

    def sample(self, driver: psutil.Process) -> None:
        if driver.status() == psutil.STATUS_ZOMBIE:  # ends run_watched's watcher (we were stopped)
            raise psutil.NoSuchProcess(driver.pid)
        for p, name in self.processes(driver):
            if name is None:
                continue
            try:
                rss, rchar = p.memory_info().rss, p.io_counters().read_chars
            except psutil.Error:
                continue
            self.peak[p.pid, name] = max(self.peak.get((p.pid, name), 0), rss)
            self.read[name] += rchar - self.last.get(p.pid, 0)  # a new process starts at 0
            self.last[p.pid] = rchar

    def peaks_mib(self, name: str) -> list[int]:
        return sorted((round(rss / 2**20) for (_, n), rss in self.peak.items() if n == name), reverse=True)


def traced_reads(log: Path, kinds: dict[str, callable]) -> dict[str, int]:
    """Bytes read from each kind of file (a test on its path) in strace's log."""
    found, pending = defaultdict(int), {}
    with open(log, errors="replace") as f:
        for line in f:
            if (m := DONE.match(line)) or (m := RESUMED.match(line)):
                path = m[2] if m.re is DONE else pending.pop(m[1], None)
                kind = path and next((k for k, test in kinds.items() if test(path)), None)
                if kind:
                    found[kind] += int(m[m.re.groups])
            elif m := STARTED.match(line):
                pending[m[1]] = m[2]
    return dict(found)


def dry_run(src: Path, out: Path, actors: int, address: str, env: dict, tag: str, traced: bool) -> dict:
    """One `magistrate judge --dry-run` on the head at `address`, watched; traced: with the
    bytes read from the input and the staged pieces instead of memory."""
    watch = Watch(tag)
    pids = watch.prime()
    command = [*MAGISTRATE, "--input", str(src), "--output", str(out), "--dry-run", "--order", "ab",
               "--judge", str(HERE / "short_judge.yaml"), "--replicas", str(actors), "--unit-rows", str(UNIT_ROWS),
               "--batch-size", "2048"]
    tracer = None
    if traced:
        logs = (out.parent / f"{out.name}-head.strace", out.parent / f"{out.name}-driver.strace")
        tracer = subprocess.Popen([*STRACE, "-o", str(logs[0]), *(a for pid in pids for a in ("-p", str(pid)))])
        time.sleep(3)  # attached (the raylet's threads and each worker's)
        command = [*STRACE, "--seccomp-bpf", "-o", str(logs[1]), *command]
    try:
        seconds, _ = run_watched(command, watch.sample, env={**env, "RAY_ADDRESS": address, TAG: tag}, every=0.5)
    finally:
        if tracer:
            tracer.send_signal(signal.SIGINT)  # detaches from every process it follows
            tracer.wait(timeout=60)
    summary = json.loads((out / "summary.json").read_text())
    staged = f"{out}/_staged/"
    staged_bytes = sum(f.stat().st_size for f in Path(staged).glob("*.parquet"))
    shutil.rmtree(out)
    # Others' work on this machine slows a run: the load says how much there was.
    run = {"wall_s": round(seconds, 1), "summary_seconds": summary["seconds"], "units": summary["units"],
           "actors_used": summary["this_run"]["actors"], "pairs": summary["pairs"], "staged_bytes": staged_bytes,
           "load_avg_5m_after": round(os.getloadavg()[1], 1)}
    if traced:
        kinds = {"input": lambda p: p == str(src), "staged": lambda p: p.startswith(staged)}
        reads = [traced_reads(log, kinds) for log in logs]
        for log in logs:
            log.unlink()
        return {**run, "read_by_driver": reads[1], "read_by_workers": reads[0]}
    return {**run, "driver_peak_rss_mib": max(watch.peaks_mib("driver"), default=0),
            "actor_peaks_mib": watch.peaks_mib("actor"), "cut_task_peaks_mib": watch.peaks_mib("cut task"),
            "other_worker_peak_mib": max(watch.peaks_mib("other worker"), default=0),
            "rchar_mib": {k: round(v / 2**20) for k, v in watch.read.items()}}


def measure(fmt: str, rows: int, actors: int, work: Path, address: str, env: dict, tag: str,
            reads: bool) -> dict:
    """The timed run, then the traced one, on the same file."""
    src = write_input(fmt, rows, work / f"pairs-{rows}.{fmt}")
    size = src.stat().st_size
    result = {"format": fmt, "rows": rows, "actors": actors, "input_bytes": size,
              **dry_run(src, work / "out", actors, address, env, tag, traced=False)}
    result["actor_peak_mib"] = max(result["actor_peaks_mib"], default=0)
    print(f"sharding: {fmt}, {rows:,} rows, {actors} actors, timed: {json.dumps(result)}", file=sys.stderr, flush=True)
    if reads:
        traced = dry_run(src, work / "out", actors, address, env, tag, traced=True)
        total = defaultdict(int)
        for side in (traced["read_by_driver"], traced["read_by_workers"]):
            for kind, n in side.items():
                total[kind] += n
        result.update(traced_wall_s=traced["wall_s"], traced_load_avg_5m_after=traced["load_avg_5m_after"], read_by_driver=traced["read_by_driver"],
                      read_by_workers=traced["read_by_workers"],
                      input_reads_per_input_byte=round(total["input"] / size, 2),
                      staged_reads_per_input_byte=round(total["staged"] / size, 2),
                      bytes_read_per_input_byte=round((total["input"] + total["staged"]) / size, 2))
    src.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--actors", default="2,4,8", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--formats", default="parquet,jsonl", type=lambda s: s.split(","))
    parser.add_argument("--no-reads", dest="reads", action="store_false", help="no traced run")
    args = parser.parse_args()
    # Under `timeout`: SIGTERM unwinds, so the head below is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="magistrate-sharding-"))
    # The head's own temp dir: `ray start` records its address there, not in /tmp/ray, where
    # any `ray.init()` on this machine without RAY_ADDRESS (another suite's magistrate run)
    # would find it and join the head whose processes are being measured. Short: Ray's
    # socket paths must stay under 108 bytes.
    ray_dir = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    tag = uuid.uuid4().hex
    print(f"sharding: inputs, outputs and the head's log in {work}, Ray's in {ray_dir}", file=sys.stderr, flush=True)
    with ray_head({TAG: tag}, "--num-cpus=8", f"--temp-dir={ray_dir}", log=work / "head.log") as (address, _, env):
        for fmt in args.formats:
            for actors in args.actors:
                started = time.monotonic()
                result = measure(fmt, args.rows, actors, work, address, env, tag, args.reads)
                print(json.dumps(result), flush=True)
                print(f"sharding: {fmt}, {args.rows:,} rows, {actors} actors, {time.monotonic() - started:.0f} s: "
                      f"{json.dumps(result)}", file=sys.stderr, flush=True)
    shutil.rmtree(work)
    shutil.rmtree(ray_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
