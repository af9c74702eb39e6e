"""Placement on a multi-node Ray cluster with logical GPUs: judge actors with tensor
parallel size 2 each hold 2 GPUs, and a MIN:MAX pool grows to its MAX and no further.

The GPUs are logical (`ray.cluster_utils.Cluster` nodes that advertise GPUs). What is
under test is Ray's placement of the actors that a GPU run would get, through the same
`run()` a user's job calls, as `--dry-run --device gpu` rehearses it: the actors ask for
and get their GPUs, and host the judge's tokenizer instead of an engine (two vLLM CPU
engines side by side on logical GPUs cost CI two minutes and test nothing of placement)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.ray  # a dry run: actors host the tokenizer, no engine


@pytest.fixture
def gpu_cluster(monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from tests.conftest import free_port

    # Not Ray's 8265: another worker's Ray may hold it, and this head's dashboard (which the
    # state API below needs) would then not start.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "dashboard_port": free_port()})
    for _ in range(3):  # room for three TP-2 actors: the pool's MAX (2) is what bounds it
        cluster.add_node(num_cpus=2, num_gpus=2, resources={"gpu_node": 1})
    ray.init(address=cluster.address)
    # The state API below finds its cluster by RAY_ADDRESS (the suite sets `local`).
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_tensor_parallel_actors_get_their_gpus(gpu_cluster, tmp_path, tiny_model):
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq
    from ray.util.state import list_actors, list_nodes

    from magistrate.pipelines.judge_job import JobSettings, run
    from tests.conftest import EXAMPLES

    src = tmp_path / "pairs.parquet"
    rows = [json.loads(line) for line in open(EXAMPLES / "llmbar-demo.jsonl")]
    pq.write_table(pa.Table.from_pylist(rows), src, row_group_size=1)  # twenty units of one pair
    settings = JobSettings(
        input=str(src), output=str(tmp_path / "out"), device="gpu", tensor_parallel_size=2,
        replicas="1:2", batch_size=1, unit_rows=1, order="ab", max_model_len=2048, model=tiny_model,
        gpu_memory_utilization=0.2, dry_run=True,
    )
    said: list[str] = []
    summary = run(settings, progress=said.append)
    assert summary["pairs"] == 20

    # Twenty units and room for three actors: the pool starts at its MAX of two, no more.
    assert "magistrate: 1..2 judge actor(s) of {CPU: 1, GPU: 2}, starting with 2" in said, said
    actors = [a for a in list_actors(detail=True, limit=1000) if "UnitWorker" in a.class_name]
    assert len(actors) == 2, [(a.class_name, a.state) for a in actors]
    gpu_nodes = {n.node_id for n in list_nodes(detail=True) if n.resources_total.get("GPU") == 2}
    for actor in actors:
        assert actor.required_resources.get("GPU") == 2, actor.required_resources
        assert actor.node_id in gpu_nodes
    written = pads.dataset(str(tmp_path / "out" / "verdicts"), format="parquet").to_table()
    assert sorted(written.column("id").to_pylist()) == sorted(r["id"] for r in rows)
