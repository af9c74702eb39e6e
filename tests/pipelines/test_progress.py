"""The progress line of a running job, from a real Ray counter actor: judge actors add
their batches, the driver prints pairs, errors, pairs/s and an ETA while the counts move:
plain lines in a log, one line rewritten in place on a terminal."""

from __future__ import annotations

import io
import re
import threading
import time

import pytest
import ray

from magistrate.pipelines.progress import ProgressPrinter, progress_line


@pytest.mark.ray
def test_progress_line_reports_pairs_errors_and_rate():
    lines: list[str] = []
    judged = lambda: [line for line in lines if "pairs judged" in line]  # noqa: E731

    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    try:
        with ProgressPrinter(lines.append, every=0.2) as printer:
            ray.get([printer.counter.add.remote(2, 0), printer.counter.add.remote(3, 1)])
            _wait_for(judged)
            counted = judged()
            ray.get(printer.counter.add.remote(4, 0))
            _wait_for(lambda: lines[-1].startswith("magistrate: 9 pairs"))  # not "21.69 pairs/s"
    finally:
        ray.shutdown()
    match = re.fullmatch(r"magistrate: 5 pairs judged, 1 errors, (\d+\.\d\d) pairs/s", counted[0])
    assert match and float(match.group(1)) > 0, counted
    assert lines[-1].startswith("magistrate: 9 pairs judged, 1 errors, ")
    assert len(set(lines)) == len(lines), "a line is printed only when the counts moved"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.ray
def test_plain_lines_never_rewrite_and_say_what_happens_before_the_first_pair():
    """Not a terminal (a log, CI, `ray job submit`): whole lines, no carriage return; the
    first line says the engine is starting, not "0 pairs judged, 0.00 pairs/s"."""
    lines: list[str] = []
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    try:
        with ProgressPrinter(lines.append, every=0.2, total=10) as printer:
            _wait_for(lambda: lines)
            ray.get(printer.counter.add.remote(4, 1))
            _wait_for(lambda: len(lines) > 1)
    finally:
        ray.shutdown()
    assert lines[0].startswith("magistrate: starting the judge engine(s)..."), lines
    assert re.fullmatch(r"magistrate: 4 / 10 pairs judged \(40%\), 1 errors, \d+\.\d\d pairs/s, ETA \d+m?\d*s",
                        lines[1]), lines
    assert not any("\r" in line or ": 0 pairs judged" in line for line in lines), lines


@pytest.mark.ray
def test_a_terminal_gets_one_line_rewritten_in_place_and_ended_at_exit():
    stream, said = _Terminal(), []
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    try:
        with ProgressPrinter(said.append, total=5, live=stream, refresh=0.1) as printer:
            ray.get(printer.counter.add.remote(5, 0))
            _wait_for(lambda: "5 / 5 pairs" in stream.getvalue())
    finally:
        ray.shutdown()
    text = stream.getvalue()
    assert said == [] and text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1, text
    assert text.rstrip().rsplit("\r", 1)[-1].startswith("magistrate: 5 / 5 pairs judged (100%), 0 errors")


@ray.remote(num_cpus=0)
class _EngineHost:
    """Reports an engine started, as a judge actor does (actors/judge_host.py)."""

    def start(self, counter) -> None:
        ray.get(counter.engine.remote("started", ray.get_runtime_context().get_actor_id()))


@pytest.mark.ray
def test_the_driver_waits_for_live_engines_to_stop_but_not_for_a_dead_actor():
    """An actor that crashed never reports its engine stopped: once Ray says the actor
    is dead, the driver stops waiting for it (it waited its whole timeout before)."""
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    try:
        with ProgressPrinter(lambda _: None, every=60) as printer:
            alive, crashed = _EngineHost.remote(), _EngineHost.remote()
            ray.get([alive.start.remote(printer.counter), crashed.start.remote(printer.counter)])
            ray.kill(crashed)
            waiter = threading.Thread(target=printer.wait_for_engines, kwargs={"timeout": 600})
            waiter.start()
            waiter.join(timeout=3)  # fifteen of its 0.2 s polls, with the dead actor seen dead
            assert waiter.is_alive(), "the live actor's engine has not stopped: the driver must wait"
            ray.get(printer.counter.engine.remote("stopped", alive._actor_id.hex()))
            waiter.join(timeout=120)  # a bound, not a speed check
            assert not waiter.is_alive(), "still waiting for the dead actor's engine"
    finally:
        ray.shutdown()


def test_progress_line_eta_uses_the_warm_rate_and_is_left_out_without_a_total():
    assert progress_line(10, 0, 20.0, 30, warm_rate=2.0).endswith("0.50 pairs/s, ETA 10s")
    assert progress_line(10, 0, 20.0, 130, warm_rate=1.0).endswith("ETA 2m00s")
    assert progress_line(10, 2, 20.0, None, None) == "magistrate: 10 pairs judged, 2 errors, 0.50 pairs/s"
    assert progress_line(0, 0, 7.2, 30, None) == "magistrate: starting the judge engine(s)... (7s)"


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout  # a bound, not a speed check
    while not condition():
        assert time.monotonic() < deadline, "no progress line"
        time.sleep(0.05)
