"""`magistrate verify` over a synthetic output of 10M rows: its wall time, the peak memory
of the verify process (Ray's driver) and of Ray's worker processes.

    .venv/bin/python -m benchmarks.verify [--rows 10000000] [--unit-rows 2048] [--files 10]

The input is --files Parquet files of synthetic pairs (row groups of --unit-rows, so its
units are read in place), the output unit files of --unit-rows verdict rows written with
magistrate's own publish() (benchmarks/summary_scale.py), ids p0..pN-1 on both sides, and
a `_run.json` naming the input. Then `magistrate verify OUTPUT --json` runs on a local Ray
(RAY_ADDRESS=local) while every process of its tree is sampled: the verify process itself,
each Ray worker (`ray::...`), and the whole tree. A worker's RSS counts the object-store
pages it has mapped, which the others count too, so the workers' sum overstates them.

Prints one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from benchmarks.common import run_watched, synthetic_pairs
from benchmarks.summary_scale import write_output

CHUNK = 500_000  # rows built in memory at once while the input is written


def write_input(folder: Path, rows: int, files: int, row_group: int) -> None:
    folder.mkdir(parents=True)
    per_file = -(-rows // files)
    for k, start in enumerate(range(0, rows, per_file)):
        stop = min(start + per_file, rows)
        with pq.ParquetWriter(folder / f"part-{k:03d}.parquet", synthetic_pairs(0, 1).schema) as writer:
            for at in range(start, stop, CHUNK):
                writer.write_table(synthetic_pairs(at, min(CHUNK, stop - at)), row_group_size=row_group)


def write_run_record(src: Path, out: Path, unit_rows: int) -> None:
    """The output's _run.json, as `magistrate judge` writes it."""
    from magistrate.pipelines.commit import write_run_file
    from magistrate.pipelines.judge_job import JobSettings, plan_input
    from magistrate.pipelines.sources import locate

    settings = JobSettings(input=str(src), output=str(out), unit_rows=unit_rows)
    write_run_file(settings, locate(str(out)), "synthetic", plan_input(settings).identities)


class Peaks:
    """Peak RSS of the verify process, of its largest Ray worker, of the workers together
    and of its whole process tree, sampled; and a worker's peak private memory (its RSS
    less its resident shared pages, the object store's among them)."""

    def __init__(self):
        self.driver = self.worker = self.workers = self.tree = self.private = 0
        self.worker_name = self.private_name = ""

    def __call__(self, me: psutil.Process) -> None:
        driver = me.memory_info().rss
        workers, tree = [], driver
        for child in me.children(recursive=True):
            try:
                memory, name = child.memory_info(), " ".join(child.cmdline()[:1])
            except psutil.Error:
                continue
            tree += memory.rss
            if name.startswith("ray::"):
                workers.append((memory.rss, name))
                if memory.rss - memory.shared > self.private:
                    self.private, self.private_name = memory.rss - memory.shared, name
        self.driver = max(self.driver, driver)
        self.tree = max(self.tree, tree)
        self.workers = max(self.workers, sum(rss for rss, _ in workers))
        if workers and max(workers)[0] > self.worker:
            self.worker, self.worker_name = max(workers)

    def as_dict(self) -> dict:
        mib = lambda n: round(n / 2**20)  # noqa: E731
        return {"driver_peak_rss_mib": mib(self.driver), "worker_peak_rss_mib": mib(self.worker),
                "worker_peak_name": self.worker_name, "worker_peak_private_mib": mib(self.private),
                "worker_peak_private_name": self.private_name,
                "workers_peak_sum_rss_mib": mib(self.workers),
                "tree_peak_rss_mib": mib(self.tree)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--unit-rows", type=int, default=2048)
    parser.add_argument("--files", type=int, default=10, help="input Parquet files")
    parser.add_argument("--keep", help="build the input and output here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="magistrate-verify-bench-"))
    src, out = work / "in", work / "out"
    try:
        started = time.monotonic()
        if not (out / "_run.json").exists():
            shutil.rmtree(work, ignore_errors=True)
            write_input(src, args.rows, args.files, args.unit_rows)
            files = write_output(out, args.rows, args.unit_rows)
            write_run_record(src, out, args.unit_rows)
        else:
            files = len(list((out / "verdicts").glob("unit-*.parquet")))
        built = time.monotonic() - started
        print(f"benchmark verify: {args.rows:,} rows, {files:,} unit files built in {built:.0f} s; verifying",
              file=sys.stderr, flush=True)
        peaks = Peaks()
        seconds, stdout = run_watched([sys.executable, "-m", "magistrate.cli", "verify", str(out), "--json"],
                                      peaks, env={**os.environ, "RAY_ADDRESS": "local"}, every=0.25)
        at = 0 if stdout.startswith("{") else stdout.index("\n{") + 1  # Ray may have printed first
        result = json.JSONDecoder().raw_decode(stdout, at)[0]
        print(json.dumps({"rows": args.rows, "unit_files": files, "input_files": args.files, "build_s": round(built, 1),
                          "verify_s": round(seconds, 1), "complete": result["complete"],
                          "ids_checked": result["ids_checked"], "cpus": os.cpu_count(), **peaks.as_dict()}))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
