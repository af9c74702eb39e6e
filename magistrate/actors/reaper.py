"""Stops an engine's processes when their host dies: `python -m magistrate.actors.reaper
HOST_PID PID...`, started beside the engine as a child of its host (engine.py).

When the host dies (SIGKILL, Ray's OOM killer, a crash) this process is re-parented, and
kills the processes vLLM started, which would otherwise live on and hold the memory (on a
GPU node: the GPU memory) that the restarted actor's new engine needs."""

from __future__ import annotations

import os
import signal
import sys
import time


def reap_when_orphaned(host: int, pids: list[int], every: float = 1.0) -> None:
    while os.getppid() == host:
        time.sleep(every)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


if __name__ == "__main__":
    reap_when_orphaned(int(sys.argv[1]), [int(p) for p in sys.argv[2:]])
