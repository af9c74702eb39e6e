"""Shared fixtures. The embedded judge is prepared once (cached across runs, like `make
setup` does) and at most one in-process vLLM engine is started per test session."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "data"
MAGISTRATE = [sys.executable, "-m", "magistrate.pipelines.cli"]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def embedded_model() -> str:
    from magistrate.models import prepare_embedded

    return str(prepare_embedded())


@pytest.fixture(scope="session")
def engine(embedded_model):
    """The real vLLM CPU engine on the embedded judge, started once per session."""
    from magistrate.actors.engine import EngineSettings, VLLMEngine

    engine = VLLMEngine(
        EngineSettings(model=embedded_model, max_model_len=2048, gpu_memory_utilization=0.2)
    )
    yield engine
    engine.shutdown()


def run_cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """`magistrate ARGS` in a fresh process, as a user runs it."""
    return subprocess.run(
        [*MAGISTRATE, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=REPO,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head(env: dict | None = None, *extra: str):
    """`ray start --head` on loopback, as a user starts a cluster; yields (GCS address,
    dashboard URL, the environment its commands need). Stopped on exit. The raylet, and
    so every worker, inherits `env`. Ray 2.60's `ray start` turns on token auth (the token
    in ~/.ray/auth_token), so every client of it runs with RAY_AUTH_MODE=token."""
    port, dashboard = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token", **(env or {})}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
         "--disable-usage-stats", *extra],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=env, timeout=120)
