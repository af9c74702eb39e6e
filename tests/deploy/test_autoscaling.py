"""A GPU judge job on a cluster that autoscales from zero GPU nodes: it asks for MAX
actors' worth of GPU nodes up front, gets them, and finishes with every row written.

The cluster is Ray's fake multi-node autoscaler (tests/deploy/fake_cluster.py): a head
with no GPU and a worker type with one logical GPU and `min_workers: 0`, which the real
autoscaler launches as raylets on this machine. The job is `magistrate judge --dry-run
--device gpu --replicas 1:2`, run as a user runs it: a dry run places and scales its
actors exactly as a GPU run does, with no engine (these machines have no GPU; vLLM's CPU
build would ignore logical GPUs anyway). Without the capacity request
(pipelines/capacity.py) this job gets one GPU node: measured, see that module's note."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from tests.conftest import MAGISTRATE, REPO
from tests.deploy.fake_cluster import autoscaling_cluster

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # a fake autoscaling cluster: ray start heads and nodes

ROWS, UNIT_ROWS = 200, 2  # 100 units: more than the pool's MAX of 2
GPU_NODE = {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}

# Run in a fresh process (the token and the cluster are this test's alone): the live
# nodes and every judge actor the job started, as JSON.
_STATE = """
import json, sys, ray
from ray.util.state import list_actors
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
nodes = [{"id": n["NodeID"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]]
actors = [{"node": a.node_id, "resources": a.required_resources, "state": a.state}
          for a in list_actors(detail=True, limit=1000) if "UnitWorker" in a.class_name]
print(json.dumps({"nodes": nodes, "actors": actors}))
"""


def _state(address: str, env: dict) -> dict:
    # The state API finds its cluster by RAY_ADDRESS (the suite sets `local`).
    out = subprocess.run([sys.executable, "-c", _STATE, address], env={**env, "RAY_ADDRESS": address},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # The JSON line; Ray may print its own lines around it.
    return json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith("{")))


def _gpu_nodes(state: dict) -> set[str]:
    return {n["id"] for n in state["nodes"] if n["resources"].get("GPU", 0) > 0}


def test_gpu_judge_job_scales_gpu_nodes_from_zero_and_finishes(tmp_path, embedded_model):
    src, out = tmp_path / "pairs.parquet", tmp_path / "out"
    ids = [f"p{i}" for i in range(ROWS)]
    pq.write_table(pa.table({
        "id": ids,
        "prompt": [f"What is {i} plus {i}?" for i in range(ROWS)],
        "response_a": [f"{2 * i}." for i in range(ROWS)],
        "response_b": [f"Perhaps {i}." for i in range(ROWS)],
    }), src, row_group_size=UNIT_ROWS)
    # Token auth as on a real Ray 2.60 cluster: one token shared by the nodes and clients.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    with autoscaling_cluster(tmp_path, {"CPU": 2}, {"gpu1": GPU_NODE}, auth) as (address, env):
        assert not _gpu_nodes(_state(address, env)), "the cluster starts with no GPU node"
        started = time.monotonic()
        job = subprocess.run(
            [*MAGISTRATE, "judge", "--input", str(src), "--output", str(out), "--dry-run",
             "--device", "gpu", "--replicas", "1:2", "--unit-rows", str(UNIT_ROWS), "--batch-size", "2"],
            env={**env, "RAY_ADDRESS": address}, cwd=REPO, capture_output=True, text=True, timeout=600,
        )
        took = time.monotonic() - started
        assert job.returncode == 0, job.stderr[-4000:]
        state = _state(address, env)

    # The pool as planned: none of the actors fit at the start, MAX is asked for.
    assert "1..2 judge actor(s) of {CPU: 1, GPU: 1}, starting with 1" in job.stderr
    gpu_nodes = _gpu_nodes(state)
    assert len(gpu_nodes) == 2, f"scaled to MAX's two GPU nodes, got {len(gpu_nodes)}: {state['nodes']}"
    assert state["actors"], "the job's judge actors are listed"
    for actor in state["actors"]:
        assert actor["resources"].get("GPU") == 1 and actor["node"] in gpu_nodes, actor
    written = pads.dataset(str(out / "verdicts"), format="parquet").to_table()
    assert sorted(written.column("id").to_pylist()) == sorted(ids)  # every row, once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == ROWS and summary["errors"] == 0
    print(f"\njob {took:.0f} s; {len(gpu_nodes)} GPU nodes; {len(state['actors'])} judge actor(s)")
