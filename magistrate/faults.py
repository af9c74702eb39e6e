"""Test hooks read from the environment: fault points, and the start-ups a test run counts.

Fault points: a test stops a real run at a moment it names, then kills what it means to.

`MAGISTRATE_FAULT="publish=2"` makes the process that reaches the point `publish` for the
2nd time hold there: it writes `publish-2.reached` (its pid inside) into
`MAGISTRATE_FAULT_DIR` and waits until `publish-2.go` appears there. Until then every
later arrival at that point in the same process waits too, so units judged side by side do
not slip past. Several points are separated by commas. Unset (as users run it), a point
costs one dictionary lookup.

The points (each in the one place its step happens):
- `publish`: a unit worker about to publish a unit (pipelines/unit_worker.py); count k
  holds before the k-th publish of that actor process, once the k-1 before it have been
  published (units are judged side by side: one arriving here may overtake another
  still publishing, and a kill then would find fewer published than the count says).
- `engine_call`: a judge host about to hand a batch to its engine (actors/judge_host.py).

Counts are per process: with one judge actor (`--replicas 1`) they are the run's.

Start-ups (`starting`): each start of Ray or of a judge engine, in whatever process,
appends a line to `MAGISTRATE_STARTS_FILE` (the suite reports how many it paid), and is
refused when `MAGISTRATE_FORBID` names it (the fast tier: a test that starts an engine or
Ray without its marker fails there; each refusal is also noted in
`MAGISTRATE_REFUSED_FILE`, for a refusal that a test or a CLI run swallows).
The fault variables reach the job's Ray workers through its runtime_env (`job_env`), on
a local Ray or a running head alike; MAGISTRATE_STARTS_FILE and MAGISTRATE_FORBID reach a
running head's workers only if that head was started with them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

FAULT_ENV = ("MAGISTRATE_FAULT", "MAGISTRATE_FAULT_DIR")


def job_env() -> dict[str, str]:
    """The armed fault points' variables, for the job's runtime_env: a run that joins a
    running Ray holds at its points in its actors as one that starts its own Ray does.
    Empty as users run it (then no runtime_env is given at all)."""
    return {name: os.environ[name] for name in FAULT_ENV if os.environ.get(name)}


_counts: dict[str, int] = {}
_passed: dict[str, int] = {}
_lock = threading.Lock()


def _armed() -> dict[str, int]:
    spec = os.environ.get("MAGISTRATE_FAULT", "")
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, k = item.partition("=")
        points[name] = int(k or 1)
    return points


async def point_async(name: str) -> None:
    """`point` for a coroutine: held off the event loop, free when nothing is armed."""
    if name in _armed():
        import asyncio

        await asyncio.to_thread(point, name)


@contextlib.asynccontextmanager
async def step_async(name: str):
    """The point `name` at the start of the step this guards, which counts as passed when
    it ends (however): the k-th arrival holds only once the k-1 before it have passed."""
    if name not in _armed():
        yield
        return
    import asyncio

    await asyncio.to_thread(point, name, True)
    try:
        yield
    finally:
        with _lock:
            _passed[name] = _passed.get(name, 0) + 1


def point(name: str, after_passed: bool = False) -> None:
    """Hold here if a test armed this point and its count is reached (blocking: call it
    from a thread in async code). `after_passed`: the k-th arrival first waits for the
    k-1 before it to pass their step (step_async)."""
    armed = _armed()
    if name not in armed:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        count = _counts[name]
    k = armed[name]
    if count < k:
        return
    folder = Path(os.environ.get("MAGISTRATE_FAULT_DIR", "."))
    go = folder / f"{name}-{k}.go"
    if count == k:
        while after_passed and _passed.get(name, 0) < k - 1:
            time.sleep(0.05)
        folder.mkdir(parents=True, exist_ok=True)
        # Whole or absent: the test reads the pid as soon as the file is there.
        (folder / f"{name}-{k}.reached.part").write_text(str(os.getpid()))
        os.replace(folder / f"{name}-{k}.reached.part", folder / f"{name}-{k}.reached")
    while not go.exists():
        time.sleep(0.05)


def starting(kind: str, how: str = "") -> None:
    """Called once where Ray (`ray`) or a judge engine (`engine`) is started. `how` goes
    on the recorded line: for Ray, `local` (a new one), `joins` (RAY_ADDRESS names a
    running one), `auto` (Ray's own rule: a `ray start` cluster if one is recorded, else
    a new one), `head` (a `ray start --head`), `in-process` (a Ray node in a test's own
    process)."""
    if kind in os.environ.get("MAGISTRATE_FORBID", "").split(","):
        # Noted as well as raised: a test may catch the error, or a CLI run exit with it.
        _append(os.environ.get("MAGISTRATE_REFUSED_FILE"), f"{kind} {os.getpid()} {' '.join(sys.argv)}")
        raise RuntimeError(f"this test run forbids starting {kind} (MAGISTRATE_FORBID): a test that starts "
                           f"{kind} needs the pytest marker `{kind}`")
    _append(os.environ.get("MAGISTRATE_STARTS_FILE"), f"{kind} {os.getpid()} {how}".rstrip())


def _append(record: str | None, line: str) -> None:
    if record:
        with open(record, "a") as f:  # one short line at a time: appends do not interleave
            f.write(line + "\n")
