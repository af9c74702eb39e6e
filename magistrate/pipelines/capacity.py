"""Capacity for the judge pool: size it from the cluster, and ask the autoscaler for all of it.

The trap (ray-project/ray#59144): Ray Data gives an actor pool a budget cut from the
resources the cluster has *now*. On an autoscaling cluster that starts with zero GPU
nodes, a MIN:MAX pool of GPU actors starts MIN pending actors, whose demand brings up MIN
nodes; actor MIN+1 has no budget until its node exists. In the Ray versions of that issue
nothing ever asked for that node. Ray 2.60's Data does ask, but late and in steps: its
cluster autoscaler waits until it has measured the pool's throughput under load, then
asks for at most twice the resources, at most every 10 s. For 70B engines that take
minutes to load on nodes that take minutes to boot, every doubling costs a boot-and-load
cycle. Measured on Ray's fake autoscaler (a 1:2 pool of 1-GPU actors, 60 units of 1 s,
one run each): without the request below the second GPU node joined 30 s after the
first and the second actor took its first unit at 47 s; with it, 3 s and 14 s.

What magistrate does:
- it asks the autoscaler itself for MAX actors' worth of resources, for as long as the
  pool runs (`CapacityRequest`): all the nodes boot in parallel, Ray Data's budget grows
  as they join, and the pool grows to MAX;
- the pool's initial size is what fits in the cluster's nodes at the start (at least MIN),
  so on a cluster that is already big enough every actor starts at once;
- the pool never has more actors than units to judge: an actor takes a whole unit at a
  time, so extra actors (and the GPU nodes under them) would sit idle.

`ray.autoscaler.sdk.request_resources` is one request per cluster: each call replaces the
previous one, whoever made it. Ray Data's own AutoscalingCoordinator (a detached actor
that lives on once any dataset has run) sends its merged requests through that same call
every 20 s, so one call from us would be overwritten within seconds; hence the request is
re-sent every few seconds while the pool runs, and cleared when it ends (a standing
request would keep the cluster at that size, idle). Registering with that coordinator
instead would be worse: it reserves what a requester asks for, and Ray Data sizes its own
budget from what is left, so the pool could not use the nodes asked for. One batch job
per cluster is assumed: two jobs asking at once overwrite each other's request (their
pending actors still ask for MIN each).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydantic import BaseModel, model_validator

logger = logging.getLogger(__name__)
RENEW_S = 2.0  # well under the coordinator's 20 s, and a request costs one small GCS call


class PoolPlan(BaseModel):
    """The judge pool's bounds and the resources of one actor (a Ray resource bundle)."""

    min_size: int
    max_size: int
    initial_size: int
    bundle: dict[str, float]

    @model_validator(mode="after")
    def _ordered(self) -> "PoolPlan":
        if not 1 <= self.min_size <= self.initial_size <= self.max_size:
            raise ValueError(f"need 1 <= min <= initial <= max, got {self.min_size}, "
                             f"{self.initial_size}, {self.max_size}")
        return self

    @property
    def needs_autoscaler(self) -> bool:
        # GPU pools are the ones that run on autoscaling clusters; judging on CPU (vLLM's
        # CPU build) is the laptop path, which has no autoscaler and leaves it alone.
        return self.bundle.get("GPU", 0) > 0

    def describe(self) -> str:
        shape = ", ".join(f"{k}: {v:g}" for k, v in self.bundle.items())
        size = (f"{self.min_size}" if self.min_size == self.max_size
                else f"{self.min_size}..{self.max_size}")
        return f"{size} judge actor(s) of {{{shape}}}, starting with {self.initial_size}"


def fitting_actors(nodes: list[dict[str, float]], bundle: dict[str, float]) -> int:
    """How many actors of this bundle the nodes hold. An actor never spans nodes, so a
    tensor-parallel-8 actor needs one node with 8 GPUs, not two with 4."""
    if not bundle:
        return 0
    # The small epsilon keeps float noise (8 * 0.125 != 1.0) from losing an actor.
    return sum(min(int(node.get(k, 0.0) / v + 1e-9) for k, v in bundle.items()) for node in nodes)


def plan_pool(replicas: tuple[int, int], units: int, bundle: dict[str, float],
              nodes: list[dict[str, float]]) -> PoolPlan:
    """The pool for `units` units of work, `replicas` = (MIN, MAX) from --replicas, on a
    cluster whose nodes have `nodes` resources now."""
    low, high = replicas
    max_size = max(1, min(high, units))
    min_size = min(low, max_size)
    initial = min(max_size, max(min_size, fitting_actors(nodes, bundle)))
    return PoolPlan(min_size=min_size, max_size=max_size, initial_size=initial, bundle=bundle)


def cluster_nodes() -> list[dict[str, float]]:
    """The total resources of each live node of the connected cluster."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def _send(bundles: list[dict[str, float]]) -> None:
    from ray.autoscaler.sdk import request_resources

    try:
        request_resources(bundles=bundles)
    except Exception as exc:  # noqa: BLE001 - a hint to the autoscaler never fails the job
        logger.warning("could not ask the autoscaler for resources: %s", exc)


class CapacityRequest:
    """Context manager: asks the autoscaler for MAX actors' bundles while the pool runs
    (re-sent every RENEW_S, see the module's note), and withdraws the request after."""

    def __init__(self, plan: PoolPlan, every: float = RENEW_S):
        self.bundles = [dict(plan.bundle) for _ in range(plan.max_size)]
        self.active = plan.needs_autoscaler
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="magistrate-capacity")

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            _send(self.bundles)

    def __enter__(self) -> "CapacityRequest":
        if self.active:
            _send(self.bundles)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            self._stop.set()
            self._thread.join(timeout=10)
            _send([])  # release: a standing request keeps idle nodes from scaling down


def _sees(path: str, token: str) -> bool:
    try:
        with open(path) as f:
            return token in f.read()
    except OSError:
        return False


def nodes_not_seeing(path: str, token: str) -> list[str]:
    """The live nodes (their addresses) on which a local `path` does not hold `token`: on
    those, an actor would publish to its own disk. One small task pinned to each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        return []
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return []
    check = ray.remote(num_cpus=0)(_sees)
    refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(path, token) for n in nodes]
    return [n.get("NodeManagerAddress", n["NodeID"]) for n, seen in zip(nodes, ray.get(refs)) if not seen]
