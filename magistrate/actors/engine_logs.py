"""Where a judge engine's own output goes: by default, to a log file beside Ray's logs,
not to the job's terminal; with `--verbose`, to the terminal as before.

vLLM's engine start prints ~90 lines per engine (INFO lines from three processes, CPU
warnings about the settings magistrate chooses on purpose, torch's C++ NUMA notes, a
weight-loading bar), and its shutdown ~10 more, after the job's summary, from every
actor; Ray forwards all of it to the driver. Most of it is written by the EngineCore
and worker processes vLLM starts, which inherit the actor's stdout and stderr and are out
of reach of any logging setting made in the actor. So while an engine starts and while it
stops, this process's stdout and stderr (file descriptors 1 and 2, which those processes
inherit) point at the engine's log file; in between, vLLM's logger in the actor passes
warnings and errors only. What magistrate itself must say about an engine (a failure and
its cause, actors/judge_host.py) it logs itself, and the log file's path is there too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time

QUIET_LEVEL = logging.WARNING


def engine_log_path() -> str:
    """`<Ray session>/logs/magistrate-engine-<pid>.log` (where `ray logs` looks), or the
    temporary directory outside Ray."""
    folder = None
    with contextlib.suppress(Exception):
        import ray

        folder = ray._private.worker._global_node.get_logs_dir_path()
    folder = folder or tempfile.gettempdir()
    return os.path.join(folder, f"magistrate-engine-{os.getpid()}.log")


@contextlib.contextmanager
def engine_output(verbose: bool):
    """Inside: this process's stdout and stderr go to the engine log file (unless
    verbose), and the child processes started here keep writing there. Yields the path
    (None when verbose)."""
    if verbose:
        yield None
        return
    path = engine_log_path()
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield path
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)
        logging.getLogger("vllm").setLevel(QUIET_LEVEL)


def wait_until(done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
