"""The progress line of a running job, from a real Ray counter actor: judge actors add
their batches, the driver prints pairs, errors and pairs/s while the counts move."""

from __future__ import annotations

import re
import threading

import ray

from magistrate.pipelines.progress import ProgressPrinter


def test_progress_line_reports_pairs_errors_and_rate():
    lines: list[str] = []
    printed = threading.Event()

    def say(line: str) -> None:
        lines.append(line)
        printed.set()

    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    try:
        with ProgressPrinter(say, every=0.2) as printer:
            ray.get([printer.counter.add.remote(2, 0), printer.counter.add.remote(3, 1)])
            assert printed.wait(timeout=60), "no progress line"  # a bound, not a speed check
            counted = list(lines)
            printed.clear()
            ray.get(printer.counter.add.remote(4, 0))
            assert printed.wait(timeout=60)
    finally:
        ray.shutdown()
    match = re.fullmatch(r"magistrate: 5 pairs judged, 1 errors, (\d+\.\d\d) pairs/s", counted[0])
    assert match and float(match.group(1)) > 0, counted
    assert lines[-1].startswith("magistrate: 9 pairs judged, 1 errors, ")
    assert len(set(lines)) == len(lines), "a line is printed only when the counts moved"
