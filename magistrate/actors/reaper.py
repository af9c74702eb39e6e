"""Stops an engine's processes when their host dies: `python -m magistrate.actors.reaper
HOST_PID PID:CREATED...`, started beside the engine as a child of its host (engine.py).

When the host dies (SIGKILL, Ray's OOM killer, a crash) this process is re-parented, and
kills the processes vLLM started, which would otherwise live on and hold the memory (on a
GPU node: the GPU memory) that the restarted actor's new engine needs. A process is
killed only if it is still the one recorded (its pid and its start time): a pid that was
freed and given to another process meanwhile (pids wrap within minutes on a busy node) is
left alone."""

from __future__ import annotations

import sys
import time

import psutil


def reap_when_orphaned(host: int, processes: list[tuple[int, float]], every: float = 1.0) -> None:
    while psutil.Process().ppid() == host:
        time.sleep(every)
    for pid, created in processes:
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - created) < 0.01:
                process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def _parsed(arg: str) -> tuple[int, float]:
    pid, _, created = arg.partition(":")
    return int(pid), float(created)


if __name__ == "__main__":
    reap_when_orphaned(int(sys.argv[1]), [_parsed(a) for a in sys.argv[2:]])
