"""Progress of a running job: judge actors report each finished batch to one small Ray
actor; a driver thread shows pairs judged, errors, pairs/s and an ETA from the planned
rows. On a terminal it is one line rewritten in place; anywhere else (a log, CI,
`ray job submit`) a plain line every few seconds while the counts move, never a `\\r`.

The counter also hears when a judge actor's engine has started and stopped, so the
driver can wait for the engines to be shut down before it prints the summary: what they
print while stopping then comes before the table, not after it."""

from __future__ import annotations

import threading
import time
from typing import Callable, TextIO

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
class ProgressCounter:
    def __init__(self):
        self.pairs = 0
        self.errors = 0
        self.engines: dict[str | None, int] = {}  # the engines running, by the Ray actor hosting them

    def add(self, pairs: int, errors: int) -> None:
        self.pairs += pairs
        self.errors += errors

    def engine(self, event: str, actor: str | None = None) -> None:
        self.engines[actor] = self.engines.get(actor, 0) + (1 if event == "started" else -1)

    def read(self) -> tuple[int, int]:
        return self.pairs, self.errors

    def engines_running(self) -> dict[str | None, int]:
        return {actor: n for actor, n in self.engines.items() if n > 0}


def _is_dead(actor_id: str | None) -> bool:
    """The GCS says the actor is dead (False when it cannot tell). Asked of the GCS, not
    the dashboard's state API: that one needs the dashboard, and a loaded head answered
    it too slowly to be of use. A restarted pool actor keeps its id: it counts as dead once
    Ray Data releases it at the end of the round."""
    if actor_id is None:
        return False
    try:
        from ray._private.state import actors

        return actors(actor_id=actor_id).get("State") == "DEAD"
    except Exception:  # noqa: BLE001 - an unknown actor, a busy GCS: keep waiting up to the timeout
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(pairs: int, errors: int, elapsed: float, total: int | None, warm_rate: float | None) -> str:
    """`12 / 20 pairs judged (60%), 0 errors, 0.85 pairs/s, ETA 9s`; before the first
    pair, what is happening instead of a rate of zero. The ETA uses the rate since the
    first batch came back (engine start excluded), once there is one."""
    if pairs == 0:
        return f"magistrate: starting the judge engine(s)... ({_duration(elapsed)})"
    rate = pairs / elapsed if elapsed > 0 else 0.0
    of = f" / {total}" if total else ""
    share = f" ({100 * pairs / total:.0f}%)" if total else ""
    line = f"magistrate: {pairs}{of} pairs judged{share}, {errors} errors, {rate:.2f} pairs/s"
    speed = warm_rate or rate
    if total and pairs < total and speed > 0:
        line += f", ETA {_duration((total - pairs) / speed)}"
    return line


class ProgressPrinter:
    """Context manager: starts the counter, shows progress while the job runs, stops after.
    `live`: a terminal stream to rewrite one line on (every `refresh` s); None: plain
    lines through `say` every `every` s when the counts moved."""

    def __init__(self, say: Callable[[str], None], every: float = 10.0, total: int | None = None,
                 live: TextIO | None = None, refresh: float = 0.5):
        self.say, self.every, self.total, self.live, self.refresh = say, every, total, live, refresh
        # On the driver's node: a lost worker node must not take the job's progress with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.counter = ProgressCounter.options(scheduling_strategy=here).remote()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._first: tuple[float, int] | None = None  # (when, pairs) the first batch was seen
        self._width = 0

    def __enter__(self) -> "ProgressPrinter":
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _line(self, pairs: int, errors: int) -> str:
        now = time.monotonic()
        if pairs and self._first is None:
            self._first = (now, pairs)
        warm = None
        if self._first and pairs > self._first[1] and now > self._first[0]:
            warm = (pairs - self._first[1]) / (now - self._first[0])
        return progress_line(pairs, errors, now - self.started, self.total, warm)

    def _loop(self) -> None:
        last, said = None, None
        tick = self.refresh if self.live else self.every
        while not self._stop.wait(tick):
            try:
                pairs, errors = ray.get(self.counter.read.remote(), timeout=max(tick, 5))
            except ray.exceptions.RayError:  # a busy or restarting cluster: skip this tick
                continue
            line = self._line(pairs, errors)
            if self.live is not None:
                self._rewrite(line)
            elif (pairs, errors) != last and line != said:
                self.say(line)
                last, said = (pairs, errors), line

    def _rewrite(self, line: str) -> None:
        pad = max(self._width - len(line), 0)
        self.live.write("\r" + line + " " * pad)
        self.live.flush()
        self._width = len(line)

    def wait_for_engines(self, timeout: float = 30.0) -> None:
        """Until every engine that started has stopped (Ray Data releases its pool actors
        once the dataset is consumed, and each stops its engine), or `timeout`. An actor
        that crashed never reports its stop: one Ray says is dead is not waited for."""
        deadline = time.monotonic() + timeout
        dead: set = set()
        while time.monotonic() < deadline:
            try:
                running = ray.get(self.counter.engines_running.remote(), timeout=5)
            except ray.exceptions.RayError:
                return
            waiting = [actor for actor in running if actor not in dead]
            if not waiting:
                return
            dead |= {actor for actor in waiting if _is_dead(actor)}
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.live is not None and self._width:
            try:
                pairs, errors = ray.get(self.counter.read.remote(), timeout=5)
                self._rewrite(self._line(pairs, errors))
            except ray.exceptions.RayError:
                pass
            self.live.write("\n")
            self.live.flush()
        ray.kill(self.counter)
