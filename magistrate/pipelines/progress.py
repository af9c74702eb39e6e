"""Progress of a running job: judge actors report each finished batch to one small Ray
actor; a driver thread prints pairs done, errors and pairs/s every few seconds."""

from __future__ import annotations

import threading
import time
from typing import Callable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
class ProgressCounter:
    def __init__(self):
        self.pairs = 0
        self.errors = 0

    def add(self, pairs: int, errors: int) -> None:
        self.pairs += pairs
        self.errors += errors

    def read(self) -> tuple[int, int]:
        return self.pairs, self.errors


class ProgressPrinter:
    """Context manager: starts the counter, prints while the job runs, stops after."""

    def __init__(self, say: Callable[[str], None], every: float = 10.0):
        self.say, self.every = say, every
        # On the driver's node: a lost worker node must not take the job's progress with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.counter = ProgressCounter.options(scheduling_strategy=here).remote()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "ProgressPrinter":
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _loop(self) -> None:
        last = -1
        while not self._stop.wait(self.every):
            try:
                pairs, errors = ray.get(self.counter.read.remote(), timeout=self.every)
            except ray.exceptions.RayError:  # a busy or restarting cluster: skip this tick
                continue
            if pairs != last:
                rate = pairs / (time.monotonic() - self.started)
                self.say(f"magistrate: {pairs} pairs judged, {errors} errors, {rate:.2f} pairs/s")
                last = pairs

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        ray.kill(self.counter)
