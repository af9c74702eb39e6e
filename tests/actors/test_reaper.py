"""actors/reaper.py: an orphaned reaper kills the engine processes it was given, and only
those: a pid now held by another process (a later start time) is left alone."""

from __future__ import annotations

import subprocess
import sys

import psutil

from magistrate.actors.reaper import reap_when_orphaned


def test_the_reaper_kills_the_recorded_process_and_spares_a_reused_pid():
    recorded, other = (subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) for _ in range(2))
    try:
        started = psutil.Process(recorded.pid).create_time()
        # `other` stands for a process that got a recorded pid after the recorded one ended:
        # same pid, another start time. Host 0 is no process's parent: orphaned at once.
        reap_when_orphaned(0, [(recorded.pid, started), (other.pid, started - 5.0)])
        assert recorded.wait(timeout=10) == -9
        assert other.poll() is None, "a process that is not the one recorded was killed"
    finally:
        for proc in (recorded, other):
            proc.kill()
            proc.wait()
