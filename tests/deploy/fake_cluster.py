"""A local Ray cluster that autoscales: Ray's fake multi-node provider, which starts each
"node" the autoscaler launches as another raylet on this machine.

`ray.cluster_utils.AutoscalingCluster` does the same, but cannot be used here: its config
template (autoscaler/_private/fake_multi_node/example.yaml) is missing from the Ray 2.60
wheel, and it starts and stops with `ray stop --force`, which kills every Ray on the
machine. This starts the head with tests.conftest.ray_head, which stops exactly the
processes it started."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from tests.conftest import free_port, ray_head


def fake_config(head: dict, workers: dict, gcs_address: str) -> dict:
    """A cluster config for the fake provider (the fields of Ray's example.yaml)."""
    return {
        "cluster_name": "magistrate-fake",
        "max_workers": sum(t["max_workers"] for t in workers.values()),
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": gcs_address},
        "available_node_types": {
            **workers,
            "ray.head.default": {"resources": head, "node_config": {}, "max_workers": 0},
        },
        "head_node_type": "ray.head.default",
        "auth": {}, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 30,  # nodes stay up after the job, so the test can count them
        "docker": {}, "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


@contextlib.contextmanager
def autoscaling_cluster(tmp: Path, head: dict, workers: dict, env: dict | None = None):
    """Yields (GCS address, environment for clients). `head` holds CPU/GPU of the head.
    The nodes the autoscaler starts join the head's session, so they stop with it."""
    config = tmp / "fake-cluster.json"

    def port() -> int:
        """The head's port, in the config before the head starts: a new one for each
        attempt of ray_head (a port another process took meanwhile fails the start)."""
        chosen = free_port()
        config.write_text(json.dumps(fake_config(head, workers, f"127.0.0.1:{chosen}")))
        return chosen

    with ray_head({**(env or {}), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"},
                  f"--num-cpus={head.get('CPU', 0)}", f"--num-gpus={head.get('GPU', 0)}",
                  f"--autoscaling-config={config}", log=tmp / "ray-head.log", port=port,
                  ) as (address, _, client_env):
        yield address, client_env
