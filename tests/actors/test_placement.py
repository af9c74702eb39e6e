"""Placement on a multi-node Ray cluster with logical GPUs: judge actors with tensor
parallel size 2 each hold 2 GPUs, and a MIN:MAX pool stays within its bounds.

The GPUs are logical (`ray.cluster_utils.Cluster` nodes that advertise GPUs): the vLLM
CPU build runs each engine on CPU and ignores them. What is under test is Ray's placement
of the actors that a GPU run would get, through the same `run()` a user's job calls."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.engine


@pytest.fixture
def gpu_cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=2, num_gpus=2, resources={"gpu_node": 1})
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_tensor_parallel_actors_get_their_gpus(gpu_cluster, tmp_path, embedded_model):
    import pyarrow.dataset as pads
    from ray.util.state import list_actors, list_nodes

    from magistrate.pipelines.judge_job import JobSettings, run
    from tests.conftest import EXAMPLES

    src = tmp_path / "pairs.jsonl"
    rows = [json.loads(line) for line in open(EXAMPLES / "llmbar-demo.jsonl")][:4]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = JobSettings(
        input=str(src), output=str(tmp_path / "out"), device="gpu", tensor_parallel_size=2,
        replicas="1:2", batch_size=1, max_model_len=2048, gpu_memory_utilization=0.2,
    )
    summary = run(settings, progress=lambda _: None)
    assert summary["pairs"] == 4

    actors = [a for a in list_actors(detail=True, limit=1000) if "UnitWorker" in a.class_name]
    assert 1 <= len(actors) <= 2, [a.class_name for a in actors]
    gpu_nodes = {n.node_id for n in list_nodes(detail=True) if n.resources_total.get("GPU") == 2}
    for actor in actors:
        assert actor.required_resources.get("GPU") == 2, actor.required_resources
        assert actor.node_id in gpu_nodes
    written = pads.dataset(str(tmp_path / "out" / "verdicts"), format="parquet").to_table()
    assert sorted(written.column("id").to_pylist()) == sorted(r["id"] for r in rows)
