"""Who uses the CPU during `magistrate judge`: CPU-seconds of every process the run starts,
by role (the vLLM engine, the judge actor, Ray's own services, the driver), sampled every
0.2 s. On a 2-core machine the engine competes with Ray for the same cores; this says how
much of them Ray takes (docs/performance.md, pipeline gap).

    .venv/bin/python -m benchmarks.cpu_share [--pairs 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import psutil

from benchmarks.common import llmbar_pairs, run_watched, write_jsonl

ROLES = (("engine", ("VLLM::", "EngineCore")), ("judge actor", ("UnitWorker", "MapWorker")),
         ("ray services", ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py",
                           "runtime_env", "ray::IDLE", "ray::_StatsActor", "ray::ProgressCounter",
                           "ray::AutoscalingRequester", "SplitCoordinator", "ray::")))


def role(proc_name: str, cmdline: str) -> str:
    text = f"{proc_name} {cmdline}"
    for name, marks in ROLES:
        if any(mark in text for mark in marks):
            return name
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="magistrate-cpu-"))
    src = write_jsonl(llmbar_pairs(args.pairs + 4)[4:], work / "pairs.jsonl")
    out = work / "out"
    seen: dict[int, tuple[str, float]] = {}

    def sample(driver: psutil.Process) -> None:
        for p in [driver, *driver.children(recursive=True)]:
            try:
                times = p.cpu_times()
                name = "driver" if p.pid == driver.pid else role(p.name(), " ".join(p.cmdline()))
                seen[p.pid] = (name, times.user + times.system)
            except psutil.Error:
                pass

    wall, _ = run_watched([sys.executable, "-m", "magistrate.cli", "judge", "--input", str(src),
                           "--output", str(out), "--batch-size", "64"], sample, every=0.2)
    cpu: dict[str, float] = defaultdict(float)
    for name, seconds in seen.values():
        cpu[name] += seconds
    summary = json.loads((out / "summary.json").read_text())
    total = sum(cpu.values())
    print(json.dumps({"pairs": args.pairs, "wall_s": round(wall, 1),
                      "unit_seconds": summary["this_run"]["unit_seconds"],
                      "cpu_seconds": {k: round(v, 1) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])},
                      "cpu_share": {k: round(v / total, 3) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])},
                      "cores_busy_on_average": round(total / wall, 2)}, indent=2))


if __name__ == "__main__":
    main()
