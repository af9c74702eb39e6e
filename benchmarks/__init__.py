"""The benchmarks (`make bench`, `python -m benchmarks.<name>`).

A run that does not name its Ray starts one of its own: without RAY_ADDRESS, ray.init()
and every magistrate command a benchmark starts would join any `ray start` on this
machine (a test suite's head, another benchmark's) and measure it. A benchmark that
starts its own head (benchmarks/sharding.py) names its address; so can a user, to
measure a cluster of theirs."""

import os

os.environ.setdefault("RAY_ADDRESS", "local")
