"""A local Ray cluster that autoscales: Ray's fake multi-node provider, which starts each
"node" the autoscaler launches as another raylet on this machine.

`ray.cluster_utils.AutoscalingCluster` does the same, but cannot be used here: its config
template (autoscaler/_private/fake_multi_node/example.yaml) is missing from the Ray 2.60
wheel, and it starts and stops with `ray stop --force`, which kills every Ray on the
machine. This starts the head with `ray start --head --block` in a session of its own and
stops exactly the processes of that session."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.conftest import BIN, free_port


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


def _session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (ProcessLookupError, psutil.Error, OSError):
            pass
    return found


@contextlib.contextmanager
def autoscaling_cluster(tmp: Path, head: dict, workers: dict, env: dict | None = None):
    """Yields (GCS address, environment for clients). `head` holds CPU/GPU of the head."""
    port, dashboard = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    config = tmp / "fake-cluster.json"
    config.write_text(json.dumps(fake_config(head, workers, address)))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {}),
           "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp / "ray-head.log", "w")
    head_proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
         "--node-ip-address=127.0.0.1", f"--num-cpus={head.get('CPU', 0)}",
         f"--num-gpus={head.get('GPU', 0)}", f"--autoscaling-config={config}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    sid = head_proc.pid  # a new session's id is its leader's pid
    try:
        deadline = time.monotonic() + 180
        while subprocess.run([str(BIN / "ray"), "status", f"--address={address}"], env=env,
                             capture_output=True, timeout=60).returncode != 0:
            assert head_proc.poll() is None, (tmp / "ray-head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the fake cluster's head did not come up"
            time.sleep(2)
        yield address, env
    finally:
        head_proc.send_signal(signal.SIGTERM)  # --block: stops the processes it started
        try:
            head_proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        # The fake nodes the autoscaler started, and anything else left, by process id.
        left = _session_processes(sid)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(left, timeout=30)
        log.close()
