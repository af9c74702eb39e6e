"""The judge pool's capacity logic (pipelines/capacity.py): pool bounds from --replicas,
the units and the cluster's nodes; the bundles asked of the autoscaler and for how long.
No Ray here: the end-to-end check on an autoscaling cluster is test_autoscaling.py."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import ValidationError

from magistrate.actors.placement import actor_bundle, actor_resources
from magistrate.pipelines import capacity
from magistrate.pipelines.capacity import (
    CapacityRequest,
    PoolPlan,
    fitting_actors,
    plan_pool,
)

HEAD = {"CPU": 8.0, "memory": 3e10}
H100X8 = {"CPU": 192.0, "GPU": 8.0, "accelerator_type:H100": 1.0}
L40S = {"CPU": 8.0, "GPU": 1.0, "accelerator_type:L40S": 1.0}


def test_bundle_follows_the_actor_options():
    assert actor_bundle(actor_resources(8, True, None)) == {"CPU": 1.0, "GPU": 8.0}
    assert actor_bundle(actor_resources(4, True, "H100")) == {"CPU": 1.0, "GPU": 4.0,
                                                             "accelerator_type:H100": 0.001}
    assert actor_bundle(actor_resources(1, False, None)) == {"CPU": 1.0}  # the CPU build


def test_an_actor_never_spans_nodes():
    tp8 = actor_bundle(actor_resources(8, True, None))
    tp4 = actor_bundle(actor_resources(4, True, None))
    four_gpu_nodes = [{"CPU": 48.0, "GPU": 4.0}] * 2
    assert fitting_actors(four_gpu_nodes, tp8) == 0  # 8 GPUs in all, but on two nodes
    assert fitting_actors(four_gpu_nodes, tp4) == 2
    assert fitting_actors([HEAD, H100X8, H100X8], tp4) == 4  # two per 8-GPU node
    assert fitting_actors([HEAD, H100X8, L40S], actor_bundle(actor_resources(1, True, "L40S"))) == 1


def test_cluster_with_no_gpu_node_starts_the_pool_at_min():
    plan = plan_pool((1, 4), units=500, bundle={"CPU": 1.0, "GPU": 8.0}, nodes=[HEAD])
    assert (plan.min_size, plan.initial_size, plan.max_size) == (1, 1, 4)
    assert plan.needs_autoscaler


def test_cluster_already_big_enough_starts_every_actor():
    plan = plan_pool((1, 4), units=500, bundle={"CPU": 1.0, "GPU": 4.0}, nodes=[HEAD, H100X8, H100X8])
    assert (plan.min_size, plan.initial_size, plan.max_size) == (1, 4, 4)


def test_part_of_the_cluster_present_starts_what_fits():
    plan = plan_pool((2, 8), units=500, bundle={"CPU": 1.0, "GPU": 1.0}, nodes=[HEAD, L40S, L40S, L40S])
    assert (plan.min_size, plan.initial_size, plan.max_size) == (2, 3, 8)


def test_never_more_actors_than_units():
    plan = plan_pool((1, 16), units=3, bundle={"CPU": 1.0, "GPU": 1.0}, nodes=[HEAD] + [L40S] * 16)
    assert (plan.initial_size, plan.max_size) == (3, 3)
    plan = plan_pool((4, 8), units=2, bundle={"CPU": 1.0, "GPU": 1.0}, nodes=[HEAD])
    assert (plan.min_size, plan.initial_size, plan.max_size) == (2, 2, 2)


def test_fixed_pool():
    plan = plan_pool((2, 2), units=100, bundle={"CPU": 1.0, "GPU": 8.0}, nodes=[HEAD])
    assert (plan.min_size, plan.initial_size, plan.max_size) == (2, 2, 2)
    assert plan.describe() == "2 judge actor(s) of {CPU: 1, GPU: 8}, starting with 2"


def test_plan_refuses_inconsistent_bounds():
    with pytest.raises(ValidationError):
        PoolPlan(min_size=2, initial_size=1, max_size=4, bundle={"CPU": 1.0})
    with pytest.raises(ValidationError):
        PoolPlan(min_size=0, initial_size=0, max_size=0, bundle={"CPU": 1.0})


class RecordingSend:
    """Test double for `ray.autoscaler.sdk.request_resources` (no autoscaler here): it
    records what would have been asked for, and when."""

    def __init__(self):
        self.calls: list[tuple[float, list[dict]]] = []
        self.changed = threading.Condition()

    def __call__(self, bundles):
        with self.changed:
            self.calls.append((time.monotonic(), [dict(b) for b in bundles]))
            self.changed.notify_all()

    def wait_for(self, count: int) -> list[tuple[float, list[dict]]]:
        """The calls once there are `count` of them (a generous bound, not a speed check)."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.calls) >= count, timeout=60), self.calls
            return list(self.calls)


@pytest.fixture
def sent(monkeypatch) -> RecordingSend:
    recorder = RecordingSend()
    monkeypatch.setattr(capacity, "_send", recorder)
    return recorder


def test_gpu_pool_asks_for_max_actors_renews_the_request_and_withdraws_it(sent):
    plan = plan_pool((1, 3), units=100, bundle={"CPU": 1.0, "GPU": 4.0}, nodes=[HEAD])
    with CapacityRequest(plan, every=0.05):
        during = sent.wait_for(4)
    assert during[0][1] == [{"CPU": 1.0, "GPU": 4.0}] * 3  # at once, for MAX, not MIN
    # Re-sent while the pool runs: Ray Data's coordinator replaces requests every 20 s.
    assert all(bundles == during[0][1] for _, bundles in during)
    assert sent.calls[-1][1] == []  # released, so idle nodes can go
    count = len(sent.calls)
    time.sleep(0.2)
    assert len(sent.calls) == count, "no request after the pool ended"


def test_cpu_pool_leaves_the_autoscaler_alone(sent):
    plan = plan_pool((1, 2), units=10, bundle={"CPU": 1.0}, nodes=[HEAD])
    with CapacityRequest(plan, every=0.05):
        time.sleep(0.2)
    assert sent.calls == []


def test_a_failing_request_does_not_fail_the_job(caplog, monkeypatch):
    """The request is a hint: when it cannot be sent (Ray's `request_resources` raises, as
    it does in a process connected to no Ray), it is logged and the job goes on. The
    raising `request_resources` is a double, so the test does not depend on whether an
    earlier test left this process connected to Ray."""
    import ray.autoscaler.sdk

    events: list = []

    def refuse(bundles):
        events.append(("asked", [dict(b) for b in bundles]))
        raise RuntimeError("Ray has not been started yet")

    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources", refuse)
    plan = plan_pool((1, 2), units=10, bundle={"CPU": 1.0, "GPU": 1.0}, nodes=[])
    with caplog.at_level("WARNING", logger=capacity.__name__), CapacityRequest(plan, every=3600):
        events.append("work")  # the pool's work, reached although the request failed
    # The request was tried before the work, the withdrawal after it, and both failures
    # were logged, not raised.
    assert events == [("asked", [{"CPU": 1.0, "GPU": 1.0}] * 2), "work", ("asked", [])]
    failures = [r for r in caplog.records if "could not ask the autoscaler" in r.getMessage()]
    assert len(failures) == 2 and all("Ray has not been started yet" in r.getMessage() for r in failures)


@pytest.mark.ray
def test_a_local_output_is_checked_from_every_node(tmp_path):
    """A local --output on a multi-node cluster: each node's actors would publish to their
    own disks. Every live node is asked, by a task pinned to it, whether it sees what the
    driver wrote there (the lease, with the run's id); here both nodes share one disk, and
    a token the file does not hold stands for a node with a disk of its own."""
    import ray
    from ray.cluster_utils import Cluster

    from magistrate.pipelines.capacity import nodes_not_seeing

    path = tmp_path / "_lease.json"
    path.write_text('{"run_id": "run-here"}')
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        assert nodes_not_seeing(str(path), "run-here") == []
        assert len(nodes_not_seeing(str(path), "run-elsewhere")) == 2
        assert len(nodes_not_seeing(str(tmp_path / "missing.json"), "run-here")) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
